"""Small helpers shared by every stage: stable seeds, atomic writes, JSON without NaN."""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path


def derive_seed(*parts) -> int:
    """A stable 63-bit seed for one purpose (e.g. ('batches', round, client)): independent
    streams that do not shift when another stream draws more numbers, and that a resumed run
    recomputes without saving any generator state."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers see all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def json_clean(obj):
    """NaN/inf become null: JSON has no NaN, and a table must show 'undefined', not a number."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    return obj


def dump_json(obj, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(json_clean(obj), indent=1, sort_keys=True, allow_nan=False) + "\n")
