"""What T1 (datasets and partitions) and F3 (partition bubbles) read: partition files
with their labels, summarised (fedmic/paper/t1.py, f3.py).

Labels come through a ``labels_loader(dataset) -> {split: labels}`` callable so
this module does not depend on how datasets are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from fedmic.data.partition import Partition, image_size_of, load_partition

LabelsLoader = Callable[[str], Mapping[str, np.ndarray]]

T1_COLUMNS = [
    "dataset", "scheme", "lambda", "clients", "seed", "classes",
    "train", "val", "test",
    "train_min", "train_median", "train_max",
    "classes_mean", "classes_min", "classes_max",
    "client_prior_floor", "global_majority_floor", "redraws",
]


def load_all(paths: Sequence[Path], labels_loader: LabelsLoader):
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
            for _, part, labels in load_all(partition_paths, labels_loader)]
    df = pd.DataFrame(rows, columns=T1_COLUMNS)
    key = ["dataset", "scheme", "lambda", "clients", "seed"]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        raise ValueError(f"T1: several partition files for {df.loc[dup, key].drop_duplicates().values.tolist()}")
    return df.sort_values(key, kind="stable").reset_index(drop=True)


def _lam_label(lam: float) -> str:
    return f"{lam:g}"


def _class_tick(name: str) -> str:
    """A class name short enough for a tick label: at most two lines of about 26 characters."""
    import textwrap

    return textwrap.fill(name, width=26, max_lines=2, placeholder="…")
