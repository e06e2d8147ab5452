"""Table T1: datasets and partitions, one row per partition file."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fedmic import grid, paper
from fedmic.report.partitions import LabelsLoader, t1_frame
from fedmic.report.tables import Table

KIND = "table"
ORDER = 1
CAPTION = """\
**Table T1 — datasets and partitions.** One row per dataset, Dirichlet concentration λ,
number of clients and partition seed: images per split, training images per client
(min/median/max), classes held per client, and the two floors: the client-prior floor (each
client outputs its own training label distribution, so its ACC is that of predicting the
client's training majority class) and the global-majority floor.
Built from the partition files of the workflow config (datasets × lambdas × clients)."""
OPTIONS = ()
TABLE_CAPTION = (
        "Datasets and partitions. train/val/test: images in the official splits, all "
        "assigned to clients. train_min/median/max: training images per client. "
        "classes_*: classes a client holds (at least one training image) across clients. "
        "client_prior_floor: test accuracy of the client-prior floor (each client outputs its "
        "own training label distribution, i.e. predicts its own training majority class); "
        "global_majority_floor: every client predicts the majority class of all training images. "
        "redraws: rejected Dirichlet draws before every client had min_size images."
)


def partitions(config: dict) -> list[tuple]:
    """Each (dataset, λ) of T2 once: train.clients, the first seed."""
    o = paper.options(config, "t2")
    seed = int(o["seeds"][0])
    return [(d, float(lam), grid.default_clients(config), seed) for d in o["datasets"] for lam in o["lams"]]


def table(partition_paths: Sequence[Path], labels_loader: LabelsLoader) -> Table:
    """One row per dataset, scheme, lambda, clients, seed."""
    return Table(t1_frame(partition_paths, labels_loader), TABLE_CAPTION,
                 formats={"lambda": "g", "train_median": "g", "classes_mean": ".2f"})


def render(inputs: paper.Inputs, options: dict, select: str) -> Table:
    return table(inputs.partition_paths(), inputs.labels())
