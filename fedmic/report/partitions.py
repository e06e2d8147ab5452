"""Table T1 (datasets and partitions) and Figure F3 (partition bubbles).

Labels come through a ``labels_loader(dataset) -> {split: labels}`` callable so
this module does not depend on how datasets are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from fedmic.data.partition import Partition, image_size_of, load_partition
from fedmic.report.io import save_figure, write_table
from fedmic.report.views import class_names, pretty_dataset

LabelsLoader = Callable[[str], Mapping[str, np.ndarray]]

T1_COLUMNS = [
    "dataset", "scheme", "lambda", "clients", "seed", "classes",
    "train", "val", "test",
    "train_min", "train_median", "train_max",
    "classes_mean", "classes_min", "classes_max",
    "client_prior_floor", "global_majority_floor", "redraws",
]


def _load_all(paths: Sequence[Path], labels_loader: LabelsLoader):
    """Partitions with their labels, each dataset's labels loaded once."""
    cache: dict[str, dict[str, np.ndarray]] = {}
    out = []
    for p in paths:
        part = load_partition(p)
        if part.dataset not in cache:
            # the partition was made from the file of this size (labels are the same at every size)
            size = image_size_of(part.dataset, part.dataset_md5)
            raw = labels_loader(part.dataset, size) if size not in (None, 28) else labels_loader(part.dataset)
            cache[part.dataset] = {s: np.asarray(y).reshape(len(y), -1)[:, 0].astype(np.int64)
                                   for s, y in raw.items()}
        labels = cache[part.dataset]
        for s in part.splits:
            if s not in labels:
                raise ValueError(f"{p}: labels_loader gave no {s!r} labels for {part.dataset}")
            n = part.n_images.get(s)
            if n is not None and n != len(labels[s]):
                raise ValueError(
                    f"{p}: partition was made for {n} {s} images of {part.dataset}, the loaded "
                    f"labels have {len(labels[s])}; the data changed, rerun the partition step"
                )
        out.append((Path(p), part, labels))
    return out


def partition_summary(part: Partition, labels: Mapping[str, np.ndarray]) -> dict:
    """One T1 row: sizes, classes held and majority floors of a partition."""
    train = part.counts("train", labels)
    test = part.counts("test", labels) if "test" in part.indices else None
    sizes = train.sum(axis=1)
    held = (train > 0).sum(axis=1)
    row = {
        "dataset": part.dataset, "scheme": part.scheme, "lambda": part.lam,
        "clients": part.clients, "seed": part.seed, "classes": part.n_classes,
    }
    for s in ("train", "val", "test"):
        row[s] = int(part.sizes(s).sum()) if s in part.indices else 0
    row.update(
        train_min=int(sizes.min()), train_median=float(np.median(sizes)),
        train_max=int(sizes.max()), classes_mean=float(held.mean()),
        classes_min=int(held.min()), classes_max=int(held.max()),
    )
    if test is not None and test.sum() > 0:
        # the client prior's ACC: each client predicts its own training majority class (ties: lowest id)
        local_major = train.argmax(axis=1)
        row["client_prior_floor"] = float(test[np.arange(part.clients), local_major].sum() / test.sum())
        global_major = int(train.sum(axis=0).argmax())
        row["global_majority_floor"] = float(test[:, global_major].sum() / test.sum())
    else:
        row["client_prior_floor"] = row["global_majority_floor"] = float("nan")
    row["redraws"] = part.redraws
    return row


def t1_frame(partition_paths: Sequence[Path], labels_loader: LabelsLoader) -> pd.DataFrame:
    rows = [partition_summary(part, labels)
            for _, part, labels in _load_all(partition_paths, labels_loader)]
    df = pd.DataFrame(rows, columns=T1_COLUMNS)
    key = ["dataset", "scheme", "lambda", "clients", "seed"]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        raise ValueError(f"T1: several partition files for {df.loc[dup, key].drop_duplicates().values.tolist()}")
    return df.sort_values(key, kind="stable").reset_index(drop=True)


def table_t1(partition_paths: Sequence[Path], labels_loader: LabelsLoader, stem: str | Path,
             caption: str | None = None) -> list[Path]:
    """Write T1 (one row per dataset, scheme, lambda, clients, seed)."""
    df = t1_frame(partition_paths, labels_loader)
    caption = caption or (
        "Datasets and partitions. train/val/test: images in the official splits, all "
        "assigned to clients. train_min/median/max: training images per client. "
        "classes_*: classes a client holds (at least one training image) across clients. "
        "client_prior_floor: test accuracy of the client-prior floor (each client outputs its "
        "own training label distribution, i.e. predicts its own training majority class); "
        "global_majority_floor: every client predicts the majority class of all training images. "
        "redraws: rejected Dirichlet draws before every client had min_size images."
    )
    return write_table(df, stem, caption, digits=3,
                       formats={"lambda": "g", "train_median": "g", "classes_mean": ".2f"})


def _lam_label(lam: float) -> str:
    return f"{lam:g}"


def _class_tick(name: str) -> str:
    """A class name short enough for a tick label: at most two lines of about 26 characters."""
    import textwrap

    return textwrap.fill(name, width=26, max_lines=2, placeholder="…")


def figure_f3(partition_paths: Sequence[Path], labels_loader: LabelsLoader, stem: str | Path,
              panel_width: float = 3.4) -> list[Path]:
    """Write F3 (``f3_figure``) as ``<stem>.png/.pdf``."""
    return save_figure(f3_figure(partition_paths, labels_loader, panel_width), stem)


def f3_figure(partition_paths: Sequence[Path], labels_loader: LabelsLoader, panel_width: float = 3.4):
    """The paper's Figure 3: rows = datasets, columns = lambda, one bubble per
    (client, class) with area proportional to the client's training images of it; classes
    by their names in the MedMNIST registry, on the first panel of each row."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    loaded = _load_all(partition_paths, labels_loader)
    if not loaded:
        raise ValueError("figure_f3: no partition files given")
    cells: dict[tuple[str, float], tuple[Partition, np.ndarray]] = {}
    for p, part, labels in loaded:
        key = (part.dataset, part.lam)
        if key in cells:
            raise ValueError(
                f"figure_f3: two partitions for {part.dataset}, lambda={part.lam:g} ({p}); "
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
                raise ValueError(f"figure_f3: the partition of {d} has {part.n_classes} classes, the "
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
