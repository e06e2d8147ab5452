"""What a run is computed from, built alike by the server and every site: the device, the
partitioned data, the algorithm's context and the algorithm itself."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..algorithms import ClientData, Context, get_algorithm
from ..config import RunConfig
from ..metrics import floors
from ..utils import derive_seed


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but torch sees no CUDA device "
                           f"(torch {torch.__version__}); use device: auto or cpu")
    return torch.device(name)


def resolve_memory_format(name: str, device: torch.device) -> torch.memory_format:
    if name == "auto":
        name = "channels_last" if device.type == "cpu" else "contiguous"
    return torch.channels_last if name == "channels_last" else torch.contiguous_format


def memory_format_name(memory_format: torch.memory_format) -> str:
    return "channels_last" if memory_format == torch.channels_last else "contiguous"


def load_partitioned(cfg: RunConfig, partition_path: str | Path, data_root: str | None):
    """(the dataset, the partition checked against the run config, each split's (images, labels))."""
    from ..data.medmnist import load_dataset
    from ..data.partition import PartitionError, load_partition, partition_command

    data = load_dataset(cfg.dataset, data_root, size=cfg.image_size)
    expect = {"dataset": cfg.dataset, "scheme": cfg.scheme, "lam": cfg.lam, "clients": cfg.clients,
              "seed": cfg.partition_seed, "min_size": cfg.min_size, "dataset_md5": data.info.md5(cfg.image_size)}
    part = load_partition(partition_path, expect=expect, root=data.path.parent)
    split = {s: data.split(s) for s in ("train", "val", "test")}
    for s, (x, _) in split.items():
        if part.n_images[s] != len(x):  # a stamped partition's counts come from the data; a made one's too
            raise PartitionError(f"partition file {partition_path} is for {part.n_images[s]} {s} images, {data.path} "
                                 f"has {len(x)}; Fix: `{partition_command(expect, partition_path, data.path.parent)}`")
    return data, part, split


def make_context(cfg: RunConfig, data, device: torch.device) -> Context:
    return Context(model=cfg.model, in_channels=data.n_channels, n_classes=data.n_classes,
                   image_size=cfg.image_size, device=device, rounds=cfg.rounds,
                   local_epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                   momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                   transport_dtype=torch.float16 if cfg.transport == "float16" else torch.float32,
                   memory_format=resolve_memory_format(cfg.memory_format, device))


def make_algorithm(cfg: RunConfig, ctx: Context):
    """Every party (server and each client) constructs the algorithm under the same seed, so the
    constants set in its __init__ (initial weights) agree everywhere."""
    torch.manual_seed(derive_seed(cfg.seed, "init", "server"))
    return get_algorithm(cfg.method)(ctx, cfg.resolved_hp())


@dataclass
class RunData:
    """The partitioned data on the run's device: each split whole (the global model is scored on
    the official val and test splits), each client's indices into it, and each client's training
    set gathered once (batches are then plain index lookups)."""

    device: torch.device
    n_classes: int
    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    idx: dict[str, list[torch.Tensor]]   # split -> per client, its indices into the split
    train: list[ClientData]
    n_train: list[int]
    n_test: list[int]
    floors: dict                         # trivial predictors' scores (docs/method.md, "Floors")

    def eval_sets(self, cid: int) -> dict[str, torch.Tensor]:
        """Client `cid`'s local val and test images."""
        return {s: self.x[s][self.idx[s][cid]] for s in ("val", "test")}


def place_data(dataset, part, split: dict, device: torch.device) -> RunData:
    x = {s: split[s][0].to(device) for s in split}
    y = {s: split[s][1].to(device) for s in split}
    idx = {s: [torch.as_tensor(np.asarray(i, dtype=np.int64), device=device) for i in part.indices[s]] for s in split}
    train = [ClientData(x["train"][i], y["train"][i]) for i in idx["train"]]
    labels = {s: split[s][1].numpy() for s in ("train", "test")}
    return RunData(
        device=device, n_classes=dataset.n_classes, x=x, y=y, idx=idx, train=train,
        n_train=[d.n for d in train], n_test=[len(i) for i in part.indices["test"]],
        floors=floors([labels["train"][np.asarray(i, dtype=np.int64)] for i in part.indices["train"]],
                      [labels["test"][np.asarray(i, dtype=np.int64)] for i in part.indices["test"]],
                      dataset.n_classes))
