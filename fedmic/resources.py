"""What a training job asks a cluster scheduler for (SLURM through Snakemake's `resources:`),
sized from the dataset registry's split sizes so a new dataset needs no entry here."""
from __future__ import annotations

from .data import registry


def _samples(dataset: str) -> dict[str, int]:
    if dataset not in registry.DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of: {', '.join(registry.DATASETS)}")
    return registry.DATASETS[dataset]["n_samples"]


def train_runtime_min(dataset: str, rounds: int, join_ratio: float, local_epochs: int) -> int:
    """Minutes: grows with the images trained (rounds x join ratio x epochs over the training
    split); ~2000 images/s per model on a GPU, with a 4x margin, plus 10 minutes of start-up."""
    images = _samples(dataset)["train"] * rounds * join_ratio * local_epochs
    return int(10 + images / 2000 / 60 * 4)


def train_mem_mb(dataset: str, image_size: int, clients: int) -> int:
    """MB: every split held as float32 tensors, plus per-client persistent state (~20 MB a
    client) and 2 GB for the interpreter and torch."""
    images = sum(_samples(dataset).values())
    channels = int(registry.DATASETS[dataset]["n_channels"])
    return int(2000 + images * image_size * image_size * channels * 4 / 2**20 + 20 * clients)
