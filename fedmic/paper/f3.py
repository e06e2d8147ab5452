"""Figure F3: the Dirichlet partitions, one bubble per client and class."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from fedmic import paper
from fedmic.data.partition import Partition
from fedmic.paper import t1
from fedmic.report.partitions import LabelsLoader, load_all
from fedmic.report.views import class_names, pretty_dataset

KIND = "figure"
ORDER = 3
CAPTION = """\
**Figure F3 — Dirichlet partitions, training images per client and class.** One bubble per client and class, its area
proportional to the client's training images of that class; rows are datasets, columns the
Dirichlet concentration λ. Partition files of the workflow config."""
OPTIONS = ()


def partitions(config: dict) -> list[tuple]:
    """T1's partitions."""
    return t1.partitions(config)


def render(inputs: paper.Inputs, options: dict, select: str):
    return figure(inputs.partition_paths(), inputs.labels())


def _lam_label(lam: float) -> str:
    return f"{lam:g}"


def _class_tick(name: str) -> str:
    """A class name short enough for a tick label: at most two lines of about 26 characters."""
    import textwrap

    return textwrap.fill(name, width=26, max_lines=2, placeholder="…")


def figure(partition_paths: Sequence[Path], labels_loader: LabelsLoader, panel_width: float = 3.4):
    """The paper's Figure 3: rows = datasets, columns = lambda, one bubble per
    (client, class) with area proportional to the client's training images of it; classes
    by their names in the MedMNIST registry, on the first panel of each row."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    loaded = load_all(partition_paths, labels_loader)
    if not loaded:
        raise ValueError("f3: no partition files given")
    cells: dict[tuple[str, float], tuple[Partition, np.ndarray]] = {}
    for p, part, labels in loaded:
        key = (part.dataset, part.lam)
        if key in cells:
            raise ValueError(
                f"f3: two partitions for {part.dataset}, lambda={part.lam:g} ({p}); "
                "pass one partition per dataset and lambda"
            )
        cells[key] = (part, part.counts("train", labels))
    datasets = list(dict.fromkeys(d for d, _ in sorted(cells)))
    lams = sorted({lam for _, lam in cells})

    row_h = [1.3 + 0.22 * max(cells[k][0].n_classes for k in cells if k[0] == d) for d in datasets]
    fig, axes = plt.subplots(
        len(datasets), len(lams), squeeze=False,
        figsize=(panel_width * len(lams) + 1.2, sum(row_h) + 0.3),
        gridspec_kw={"height_ratios": row_h},
    )
    for r, d in enumerate(datasets):
        row = [cells.get((d, lam)) for lam in lams]
        # one size scale per row so panels of a dataset compare directly
        row_max = max(int(c[1].max()) for c in row if c is not None)
        n_cls = max(c[0].n_classes for c in row if c is not None)
        n_cli = max(c[0].clients for c in row if c is not None)
        # largest bubble spans about one grid step, so bubbles touch but rarely cover
        ax_w_pt = (panel_width - 0.6) * 72
        ax_h_pt = (row_h[r] - 0.7) * 72
        step = min(ax_w_pt / (n_cli + 1), ax_h_pt / (n_cls + 0.5))
        s_max = (0.95 * step) ** 2
        labelled = False
        for c, lam in enumerate(lams):
            ax = axes[r, c]
            if row[c] is None:
                ax.set_axis_off()
                ax.set_title(f"{pretty_dataset(d)}, λ = {_lam_label(lam)}\n(no partition)", fontsize=9)
                continue
            part, counts = row[c]
            ci, cl = np.nonzero(counts)
            ax.scatter(ci, cl, s=counts[ci, cl] / max(row_max, 1) * s_max,
                       facecolor="tab:red", edgecolor="darkred", linewidth=0.4, alpha=0.75)
            ax.set_xlim(-0.8, part.clients - 0.2)
            ax.set_ylim(-0.6, part.n_classes - 0.4)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
            ax.set_yticks(range(part.n_classes))
            names = class_names(d)
            if len(names) != part.n_classes:
                raise ValueError(f"f3: the partition of {d} has {part.n_classes} classes, the "
                                 f"registry names {len(names)}; rerun the partition step")
            ax.set_title(f"{pretty_dataset(d)}, λ = {_lam_label(lam)}", fontsize=10)
            ax.set_xlabel("Client", fontsize=9)
            if not labelled:  # first drawn panel of the row, even when column 0 is empty
                ax.set_yticklabels([_class_tick(n) for n in names], fontsize=8)
                ax.set_ylabel("Class", fontsize=9)
                labelled = True
            else:  # the row's classes are named once, on its first panel
                ax.tick_params(axis="y", labelleft=False)
            ax.tick_params(labelsize=8)
            ax.grid(True, linewidth=0.3, alpha=0.5)
            ax.set_axisbelow(True)
        # size key for the row, outside the last panel
        ref = [row_max, max(row_max // 4, 1)]
        handles = [axes[r, -1].scatter([], [], s=v / max(row_max, 1) * s_max, facecolor="tab:red",
                                       edgecolor="darkred", linewidth=0.4, alpha=0.75)
                   for v in ref]
        axes[r, -1].legend(handles, [f"{v} images" for v in ref], loc="center left",
                           bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False,
                           labelspacing=1.2, borderpad=0.8)
    fig.tight_layout()
    return fig
