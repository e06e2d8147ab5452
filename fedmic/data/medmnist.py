"""MedMNIST 2D datasets: registry, verified download and loading into tensors.

The registry (names, classes, URLs, MD5s) is carried in ``fedmic.data.registry`` and checked
against ``medmnist.INFO`` by the tests, so the package needs neither medmnist nor torchvision.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..dataroot import ENV_ROOT, default_root
from ..utils import atomic_open
from . import registry

# how to point fedmic at a folder that has the files (command line, workflow, environment)
ROOT_HINT = f"--root DIR, data_root: DIR in the workflow config, or ${ENV_ROOT}=DIR"
SIZES = registry.SIZES
SPLITS = ("train", "val", "test")
_CHUNK = 1 << 20


class DatasetError(RuntimeError):
    """A dataset file is missing, corrupt, of the wrong version or cannot be fetched."""


@dataclass(frozen=True)
class DatasetInfo:
    flag: str
    name: str  # display name, e.g. PneumoniaMNIST
    n_channels: int
    n_classes: int
    label_names: list[str]
    task: str
    n_samples: dict[str, int]
    _urls: dict[int, str] = field(repr=False)
    _md5s: dict[int, str] = field(repr=False)

    def _check_size(self, size: int) -> int:
        if size not in SIZES:
            raise ValueError(f"image size must be one of {SIZES}, got {size!r}")
        return size

    def url(self, size: int = 28) -> str:
        return self._urls[self._check_size(size)]

    def md5(self, size: int = 28) -> str:
        return self._md5s[self._check_size(size)]

    def filename(self, size: int = 28) -> str:
        return registry.filename(self.flag, self._check_size(size))


def available_datasets() -> list[str]:
    return list(registry.DATASETS)


def dataset_info(flag: str) -> DatasetInfo:
    if flag not in registry.DATASETS:
        raise ValueError(f"unknown MedMNIST 2D dataset {flag!r}; choose one of: {', '.join(registry.DATASETS)}")
    meta = registry.DATASETS[flag]
    labels = meta["label"]
    return DatasetInfo(
        flag=flag,
        name=meta["python_class"],
        n_channels=int(meta["n_channels"]),
        n_classes=len(labels),
        label_names=[labels[k] for k in sorted(labels, key=int)],
        task=meta["task"],
        n_samples={k: int(v) for k, v in meta["n_samples"].items()},
        _urls={s: registry.url(flag, s) for s in SIZES},
        _md5s=dict(meta["md5"]),
    )


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """Explicit argument, else fedmic.dataroot.default_root() ($FEDMIC_MEDMNIST_ROOT,
    ../shared/data/medmnist beside the checkout, ~/.medmnist)."""
    return Path(root).expanduser() if root is not None else default_root()


def file_md5(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: str | os.PathLike, expected: str) -> bool:
    return file_md5(path) == expected.lower()


def download_command(flag: str, size: int, folder: Path) -> str:
    """The `fedmic download` that puts this file where the command that failed looks for it."""
    return f"fedmic download --dataset {flag} --size {size} --root {shlex.quote(str(folder))}"


def _refuse_folder(info: DatasetInfo, path: Path, size: int) -> None:
    if path.is_dir():
        raise DatasetError(
            f"MedMNIST dataset '{info.flag}': {path} is a folder, where the dataset file belongs. Fix: remove or "
            f"rename that folder, then download the file: `rmdir {shlex.quote(str(path))} && "
            f"{download_command(info.flag, size, path.parent)}` (an empty folder), or copy the .npz there."
        )


def _check_existing(info: DatasetInfo, path: Path, size: int, url: str) -> None:
    actual = file_md5(path)
    if actual != info.md5(size):
        # Never deleted here: the file may be the user's only copy or a deliberate replacement.
        raise DatasetError(
            f"MedMNIST dataset '{info.flag}': {path} has MD5 {actual}, expected {info.md5(size)} "
            f"(truncated, corrupt or another release). Fix: delete it and download it again, "
            f"`rm {shlex.quote(str(path))} && {download_command(info.flag, size, path.parent)}` (fetches {url}), "
            "or put the right file there by hand."
        )


def ensure_dataset(
    flag: str,
    root: str | os.PathLike | None = None,
    size: int = 28,
    url: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Return the path of a verified ``<root>/<filename>``, downloading it if missing."""
    info = dataset_info(flag)
    folder = resolve_root(root)
    target = folder / info.filename(size)
    source = url or info.url(size)
    expected = info.md5(size)
    _refuse_folder(info, target, size)
    if target.exists():
        _check_existing(info, target, size, source)
        return target

    folder.mkdir(parents=True, exist_ok=True)
    hint = (
        f"Expected MD5 {expected}. Offline? download {source} elsewhere and copy it to {target} "
        f"(folder {folder}), or point fedmic at a folder that has it ({ROOT_HINT})."
    )
    try:
        digest, received = hashlib.md5(), 0
        # atomic_open renames the file into place only when the block ends cleanly, so a
        # short or corrupt download leaves nothing behind.
        with atomic_open(target) as out, urllib.request.urlopen(source, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise DatasetError(f"connection closed after {received} of {total} bytes")
            if digest.hexdigest() != expected:
                raise DatasetError(f"downloaded file has MD5 {digest.hexdigest()}")
    except BaseException as exc:
        if not isinstance(exc, (Exception, KeyboardInterrupt)):
            raise  # SystemExit and friends keep their meaning
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        raise DatasetError(
            f"could not download MedMNIST dataset '{flag}' from {source} ({reason}). {hint}"
        ) from exc
    return target


@dataclass
class MedMNISTData:
    """All three splits as tensors: images float32 (N, C, H, W) in [-1, 1], labels int64 (N,)."""

    info: DatasetInfo
    path: Path
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
        return getattr(self, f"{name}_images"), getattr(self, f"{name}_labels")

    @property
    def n_classes(self) -> int:
        return self.info.n_classes

    @property
    def n_channels(self) -> int:
        return self.info.n_channels


def _to_tensors(info: DatasetInfo, size: int, split: str, images: np.ndarray, labels: np.ndarray):
    rgb = info.n_channels == 3
    want = f"(N, {size}, {size}, 3)" if rgb else f"(N, {size}, {size})"
    if images.dtype != np.uint8 or images.shape[1:] != ((size, size, 3) if rgb else (size, size)):
        raise ValueError(f"{split}_images is {images.dtype} {images.shape}, expected uint8 {want}")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (len(images),):
        raise ValueError(f"{split}_labels has shape {labels.shape}, expected ({len(images)}, 1)")
    if labels.size and (labels.min() < 0 or labels.max() >= info.n_classes):
        raise ValueError(f"{split}_labels outside [0, {info.n_classes}): min {labels.min()}, max {labels.max()}")
    x = torch.from_numpy(images)
    x = x.permute(0, 3, 1, 2).contiguous() if rgb else x.unsqueeze(1)
    x = x.to(torch.float32).div_(255.0).sub_(0.5).div_(0.5)
    return x, torch.from_numpy(labels.astype(np.int64))


def load_dataset(
    flag: str, root: str | os.PathLike | None = None, size: int = 28, verify: bool = True
) -> MedMNISTData:
    """Load a downloaded dataset into memory; never touches the network."""
    info = dataset_info(flag)
    if "multi-label" in info.task:
        raise DatasetError(
            f"MedMNIST dataset '{flag}' is {info.task} (several labels per image); fedmic "
            "trains single-label classifiers only and does not support it."
        )
    path = resolve_root(root) / info.filename(size)
    download = download_command(flag, size, path.parent)
    fix = f"Fix: `rm {shlex.quote(str(path))} && {download}`."
    _refuse_folder(info, path, size)
    if not path.exists():
        raise DatasetError(
            f"MedMNIST dataset '{flag}' ({size}x{size} images) not found at {path}. Run `{download}`, "
            f"or copy {info.url(size)} there by hand, or point fedmic at a folder that has it ({ROOT_HINT})."
        )
    if verify:
        _check_existing(info, path, size, info.url(size))
    tensors = {}
    try:
        with open(path, "rb") as fh:
            # Checked here because numpy's own error for non-zip bytes talks about pickles.
            if fh.read(4) != b"PK\x03\x04":
                raise ValueError("not a .npz (zip) archive")
        # allow_pickle=False: a tampered file cannot run code.
        with np.load(path, allow_pickle=False) as npz:
            for split in SPLITS:
                x, y = _to_tensors(info, size, split, npz[f"{split}_images"], npz[f"{split}_labels"])
                tensors[f"{split}_images"], tensors[f"{split}_labels"] = x, y
    except Exception as exc:  # zipfile/zlib/OSError/KeyError/ValueError all mean the same to the user
        detail = f"missing array {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise DatasetError(
            f"MedMNIST dataset '{flag}': cannot read {path} as a MedMNIST .npz ({detail}). {fix}"
        ) from exc
    return MedMNISTData(info=info, path=path, **tensors)
