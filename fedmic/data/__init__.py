"""Dataset access for fedmic."""

from fedmic.data.medmnist import (
    DatasetError,
    DatasetInfo,
    MedMNISTData,
    available_datasets,
    dataset_info,
    ensure_dataset,
    file_md5,
    load_dataset,
    resolve_root,
    verify_md5,
)

__all__ = [
    "DatasetError",
    "DatasetInfo",
    "MedMNISTData",
    "available_datasets",
    "dataset_info",
    "ensure_dataset",
    "file_md5",
    "load_dataset",
    "resolve_root",
    "verify_md5",
]
