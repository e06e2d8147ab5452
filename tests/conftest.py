"""Helpers shared by the workflow tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def mark_outputs_done(snakefile: Path, workdir: Path, configfile: Path, env: dict) -> None:
    """Make every output of `snakemake all` exist and count as up to date, in seconds instead
    of a real run: each file is created (a small JSON mapping) and `snakemake --touch` records
    it as done. Files under the data root (downloads) are left alone."""
    sm = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir), "--cores", "1",
          "all", "--configfile", str(configfile)]
    env = dict(os.environ, **env)
    planned = subprocess.run([*sm, "-n"], capture_output=True, text=True, env=env, check=True).stdout
    for line in planned.splitlines():
        if line.strip().startswith("output:"):
            for name in line.split(":", 1)[1].split(","):
                target = workdir / name.strip()
                if not target.is_absolute() or str(target).startswith(str(workdir)):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(json.dumps({"an earlier output": name.strip()}) + "\n")
    subprocess.run([*sm, "--touch"], capture_output=True, text=True, env=env, check=True)
    done = subprocess.run([*sm, "-n"], capture_output=True, text=True, env=env).stdout
    assert "Nothing to be done" in done, done[-3000:]
