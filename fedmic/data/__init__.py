"""Dataset access for fedmic. The names come from fedmic.data.medmnist on first use, so the
workflow can read fedmic.data.registry (file names) without importing torch."""

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


def __getattr__(name):
    if name in __all__:
        from fedmic.data import medmnist
        return getattr(medmnist, name)
    raise AttributeError(f"module 'fedmic.data' has no attribute {name!r}")
