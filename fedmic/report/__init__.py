"""Tables and figures of the paper, as views over one tidy results file.

- ``collect`` (``fedmic collect``): run JSONs -> the tidy long-format results file
  (fedmic.report.tidy; results/README.md lists its columns), optionally with a provenance
  record;
- ``build_table`` / ``build_figure`` (``fedmic table`` / ``fedmic figure``): t2 ... t9 and
  the figures learning_curves, acc_vs_bytes, svd_ranks from that file (or from run JSONs,
  collected on the fly); t1 and f3 describe the partitions and read partition files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np


def labels_loader(root: str | None = None) -> Callable[..., Mapping[str, np.ndarray]]:
    """(dataset, image size) -> {split: labels}, each file read once (for T1 and F3)."""
    from fedmic.data.medmnist import load_dataset

    cache: dict[tuple[str, int], dict[str, np.ndarray]] = {}

    def load(dataset: str, size: int = 28) -> Mapping[str, np.ndarray]:
        if (dataset, size) not in cache:
            data = load_dataset(dataset, root, size=size)
            cache[dataset, size] = {s: data.split(s)[1].numpy() for s in ("train", "val", "test")}
        return cache[dataset, size]

    return load


def collect(inputs: Sequence[str | Path], out: str | Path, provenance: str | Path | None = None,
            config: dict | None = None, source: str | None = None) -> list[Path]:
    """Write the tidy results file of the run JSONs ``inputs`` (and their provenance record)."""
    from fedmic.report import tidy

    written = [tidy.write(tidy.collect(inputs), out)]
    if provenance is not None:
        from fedmic.report import provenance as prov

        written.append(prov.write(provenance, inputs, config, source))
    return written


def build_table(name: str, inputs: Sequence[str | Path], out_stem: str | Path,
                root: str | None = None, target: float | None = None) -> list[Path]:
    """Write table ``name`` as ``<out_stem>.csv/.md/.tex``. t1: ``inputs`` are partition
    files; t2..t9: a results file or run JSONs. ``target``: T4's absolute target global ACC."""
    key = name.lower()
    if key == "t1":
        from fedmic.report.partitions import table_t1
        return table_t1([Path(p) for p in inputs], labels_loader(root), out_stem)
    from fedmic.report import tables, tidy
    return tables.build(key, tidy.load(inputs), target=target).write(out_stem)


def build_figure(name: str, inputs: Sequence[str | Path], out_stem: str | Path,
                 root: str | None = None, target: float | None = None) -> list[Path]:
    """Write figure ``name`` as ``<out_stem>.png/.pdf``. f3: ``inputs`` are partition files;
    the others: a results file or run JSONs. ``target`` is unused by the figures."""
    key = name.lower().replace("-", "_")
    if key == "f3":
        from fedmic.report.partitions import figure_f3
        return figure_f3([Path(p) for p in inputs], labels_loader(root), out_stem)
    from fedmic.report import figures, tidy
    from fedmic.report.io import save_figure
    return save_figure(figures.build(key, tidy.load(inputs)), out_stem)


__all__ = ["collect", "build_table", "build_figure", "labels_loader"]
