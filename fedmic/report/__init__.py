"""Tables and figures of the paper (SPEC §3), built from run JSONs or partition files.

``build_table`` / ``build_figure`` are what ``fedmic table`` / ``fedmic figure`` call:
- tables t1 (partition files), t2 ... t9 (run JSONs; ``<name>_valsel`` uses the test value
  at the validation-selected round instead of the mean over the last rounds);
- figures f3 (partition files), learning_curves, acc_vs_bytes, svd_ranks (run JSONs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np


def labels_loader(root: str | None = None) -> Callable[[str], Mapping[str, np.ndarray]]:
    """dataset -> {split: labels}, each dataset read once (for T1 and F3)."""
    from fedmic.data.medmnist import load_dataset

    cache: dict[str, dict[str, np.ndarray]] = {}

    def load(dataset: str) -> Mapping[str, np.ndarray]:
        if dataset not in cache:
            data = load_dataset(dataset, root)
            cache[dataset] = {s: data.split(s)[1].numpy() for s in ("train", "val", "test")}
        return cache[dataset]

    return load


def build_table(name: str, inputs: Sequence[str | Path], out_stem: str | Path,
                root: str | None = None, target: float | None = None) -> list[Path]:
    """Write table ``name`` as ``<out_stem>.csv/.md/.tex``; returns the paths.

    t1: ``inputs`` are partition files. t2..t9: run JSONs (timing sidecars among them are
    ignored). ``target``: T4's target accuracy (default: 0.95 × FedAvg's reported
    personalised accuracy in the same setting)."""
    key = name.lower()
    if key == "t1":
        from fedmic.report.partitions import table_t1
        return table_t1([Path(p) for p in inputs], labels_loader(root), out_stem)
    from fedmic.report.tables import run_table
    return run_table(key, inputs, out_stem, target=target)


def build_figure(name: str, inputs: Sequence[str | Path], out_stem: str | Path,
                 root: str | None = None, target: float | None = None) -> list[Path]:
    """Write figure ``name`` as ``<out_stem>.png/.pdf``; returns the paths.

    f3: ``inputs`` are partition files; the others take run JSONs. ``target`` is accepted
    for the CLI's sake and unused by the figures."""
    key = name.lower().replace("-", "_")
    if key == "f3":
        from fedmic.report.partitions import figure_f3
        return figure_f3([Path(p) for p in inputs], labels_loader(root), out_stem)
    from fedmic.report.figures import run_figure
    return run_figure(key, inputs, out_stem)


__all__ = ["build_table", "build_figure", "labels_loader"]
