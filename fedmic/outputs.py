"""No command writes over one of its own inputs, or over a file of another kind.

Every command that writes names its outputs (with the kind of file each is) and its inputs
here before any work; a clash is refused in one line. Kinds are told apart by content, not by
name: a run JSON and a partition are both `.json`. A file of an unknown kind (a truncated
JSON, a user's notes) is not protected: rewriting a corrupt output must stay possible.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Iterable, Mapping

PARTITION = "partition file"
RUN = "run JSON"
TIMING = "timing file"
CHECKPOINT = "checkpoint"
RESULTS = "results file"
PROVENANCE = "provenance record"
DATASET = "MedMNIST dataset file"
TABLE = "table"
FIGURE = "figure"
FLOWER_APP = "Flower app"
SELECTION = "tuning selection"
OTHER_PROJECT = "pyproject.toml of another project"

PROVENANCE_HEAD = "# Provenance of these results"
FLOWER_APP_HEAD = "# The Flower app of fedmic"
# the first columns of the tidy results file (fedmic/report/tidy.py COLUMNS)
RESULTS_HEAD = "dataset,scheme,lam,clients,join_ratio,arm,"
_JSON_LIMIT = 1 << 30


class OutputError(ValueError):
    """An output would replace an input, or a file of another kind."""


def file_kind(path: str | Path) -> str | None:
    """What a file that exists is, by its content (None: unknown, unreadable or a folder)."""
    path = Path(path)
    try:
        if not path.is_file():
            return None
        name = path.name
        if name.endswith(".ckpt"):
            return CHECKPOINT
        if name.endswith(".npz"):
            return DATASET
        with open(path, "rb") as f:
            head = f.read(4096)
        if name.endswith(".csv.gz"):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return RESULTS if f.readline().startswith(RESULTS_HEAD) else None
        text = head.decode("utf-8", errors="replace")
        if name.endswith(".csv"):
            return RESULTS if text.startswith(RESULTS_HEAD) else TABLE
        if text.startswith(PROVENANCE_HEAD):
            return PROVENANCE
        if name == "pyproject.toml":
            return FLOWER_APP if text.startswith(FLOWER_APP_HEAD) else OTHER_PROJECT
        if name.endswith((".md", ".tex")):
            return TABLE
        if name.endswith((".png", ".pdf")):
            return FIGURE
        if text.lstrip().startswith("{") and path.stat().st_size < _JSON_LIMIT:
            d = json.loads(path.read_text(encoding="utf-8"))
            fmt = str(d.get("format", "")) if isinstance(d, dict) else ""
            if fmt.startswith("fedmic-partition/"):
                return PARTITION
            if fmt.startswith("fedmic-run/"):
                return RUN
            if name.endswith(".timing.json") and isinstance(d, dict) and "rounds" in d:
                return TIMING
            if isinstance(d, dict) and {"chosen", "trials"} <= set(d):
                return SELECTION
    except (OSError, ValueError, EOFError):  # unreadable or not what it looks like: unknown
        return None
    return None


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_outputs(command: str, outputs: Mapping[str | Path, tuple[str, str]],
                  inputs: Iterable[tuple[str, str | Path]]) -> None:
    """Refuse before any work. `outputs`: path -> (the flag that names it, the kind written
    there); `inputs`: (flag, path) pairs."""
    inputs = [(flag, Path(p)) for flag, p in inputs]
    for out, (flag, kind) in outputs.items():
        out = Path(out)
        for in_flag, src in inputs:
            if _same(out, src):
                what = file_kind(src) or "input"
                raise OutputError(f"{out} ({flag}) is also an input ({in_flag} {src}): `fedmic {command}` would "
                                  f"replace that {what}. Fix: choose another {flag}")
        have = file_kind(out)
        if have is not None and have != kind:
            raise OutputError(f"{out} holds a {have}; `fedmic {command}` would replace it with a {kind} ({flag}). "
                              f"Fix: choose another {flag}, or move {out} away if it is no longer needed")
