"""What made a set of results: the workflow's source and version, the resolved configuration,
the software of the process that collected them, and the environment each run recorded."""
from __future__ import annotations

import json
import platform
import sys
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Sequence

import yaml

from fedmic.utils import atomic_write_text

PACKAGES = ("fedmic", "torch", "numpy", "pandas", "scipy", "matplotlib", "seaborn", "pyyaml", "jsonschema",
            "snakemake", "snakemake-executor-plugin-slurm")
RUN_ENV = ("fedmic", "torch", "cuda", "python", "device", "gpu", "memory_format", "threads")


def versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    from fedmic import __version__

    out = {}
    for name in packages:
        if name == "fedmic":  # the code that runs, even where an older install left metadata
            out[name] = __version__
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_environments(run_paths: Sequence[str | Path]) -> list[dict]:
    """Each distinct environment the runs recorded (run JSON `env`), with how many runs had it."""
    seen = Counter()
    for p in run_paths:
        if str(p).endswith(".timing.json"):
            continue
        with open(p, encoding="utf-8") as f:
            env = json.load(f).get("env") or {}
        seen[json.dumps({k: env.get(k) for k in RUN_ENV})] += 1
    return [{**json.loads(k), "runs": n} for k, n in seen.most_common()]


def record(run_paths: Sequence[str | Path], config: dict | None, source: str | None) -> dict:
    from fedmic import __version__

    return {
        "workflow": {"fedmic": __version__, "source": source or "not given"},
        "collected_with": {"python": platform.python_version(), "platform": platform.platform(),
                           "executable": sys.executable, "packages": versions()},
        "runs": {"count": sum(not str(p).endswith(".timing.json") for p in run_paths),
                 "environments": run_environments(run_paths)},
        "config": config if config is not None else "not given",
    }


def write(path: str | Path, run_paths: Sequence[str | Path], config: dict | None, source: str | None) -> Path:
    from fedmic.outputs import PROVENANCE_HEAD  # how fedmic.outputs knows the file

    text = (f"{PROVENANCE_HEAD} (fedmic collect): the workflow, the software that\n"
            "# collected them, what each run recorded, and the resolved workflow configuration.\n")
    text += yaml.safe_dump(record(run_paths, config, source), sort_keys=False, allow_unicode=True, width=100)
    return atomic_write_text(path, text)
