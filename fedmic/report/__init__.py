"""Tables and figures of the paper, as views over one tidy results file.

- ``collect`` (``fedmic collect``): run JSONs -> the tidy long-format results file
  (fedmic.report.tidy; results/README.md lists its columns), optionally with a provenance
  record;
- ``build_table`` / ``build_figure`` (``fedmic table`` / ``fedmic figure``): the tables and
  figures of the paper, one module each in fedmic/paper/, from that file (or from run JSONs,
  collected on the fly), or from partition files for those that describe the partitions.

The rest of this package is what those modules share: tables.py (Table, Rows), figures.py
(panels, styles), views.py, stats.py, partitions.py.
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
                root: str | None = None, options: Mapping | None = None) -> list[Path]:
    """Write table ``name`` (fedmic/paper/<name>.py) as ``<out_stem>.csv/.md/.tex`` from
    ``inputs``: what it reads (a results file or run JSONs, or partition files; ``root``: the
    MedMNIST folder their labels come from). ``options``: its config section's values."""
    from fedmic import paper

    return paper.build("table", name, inputs, out_stem, root, options)


def build_figure(name: str, inputs: Sequence[str | Path], out_stem: str | Path,
                 root: str | None = None, options: Mapping | None = None) -> list[Path]:
    """Write figure ``name`` (fedmic/paper/<name>.py) as ``<out_stem>.png/.pdf``; as
    ``build_table``."""
    from fedmic import paper

    return paper.build("figure", name, inputs, out_stem, root, options)


__all__ = ["collect", "build_table", "build_figure", "labels_loader"]
