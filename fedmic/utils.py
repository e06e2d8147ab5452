"""Small helpers shared by every stage: stable seeds, atomic writes, JSON without NaN."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import uuid
from pathlib import Path


def derive_seed(*parts) -> int:
    """A stable 63-bit seed for one purpose (e.g. ('batches', round, client)): independent
    streams that do not shift when another stream draws more numbers, and that a resumed run
    recomputes without saving any generator state."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb"):
    """Every file the pipeline writes goes through here: a temporary file beside `path`
    (same file system, so the rename is atomic), synced and renamed onto `path` when the block
    ends cleanly, removed on any error. Readers, and Snakemake after a crash, see the old file
    or the new one, never half of one. open(..., "x") rather than mkstemp: the file gets the
    usual umask permissions, not 0600."""
    if "w" not in mode:
        raise ValueError(f"atomic_open writes whole files; mode must contain 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, mode.replace("w", "x"), **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


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
