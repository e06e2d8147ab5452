"""Small helpers shared by every stage: stable seeds, atomic writes, JSON without NaN, and
one-line reports of file-system failures."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
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
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _WRITE_ERRORS and e.filename in (None, str(tmp)):
            # name the file being written, not its temporary twin (a failed write() names none)
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


# what writing a file can meet (a network error inside the block, e.g. a download, keeps its own)
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM}


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


def check_writable(*paths: str | Path) -> None:
    """Fail now, not after hours of training, if these files cannot be written: a folder where
    a file should be, a folder that cannot be created or written, a file system without room
    for a small test write (a nearly full disk can still pass; the real write then fails
    cleanly). Nothing is left behind and nothing that exists is changed."""
    for path in map(Path, paths):
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.probe")
        try:
            with open(probe, "xb") as f:
                try:
                    f.write(b"\0" * 4096)
                    f.flush()
                    os.fsync(f.fileno())
                finally:
                    probe.unlink()
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(path.parent)) from e


_FIXES = {
    errno.ENOSPC: "free space on that file system (df -h {folder}) or write elsewhere",
    errno.EDQUOT: "free space within your quota or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "give yourself access to {path} (chmod/chown) or use another folder",
    errno.EPERM: "give yourself access to {path} (chmod/chown) or use another folder",
    errno.EISDIR: "a folder is where a file should be: remove or rename the folder {path}",
    errno.ENOTDIR: "a file is where a folder should be on the way to {path}: remove or rename it",
    errno.EEXIST: "a file is where the folder {path} should be: remove or rename it",
    errno.ENOENT: "check the path (a typo? a file not made yet?)",
}


def describe_os_error(e: OSError, path: str | Path | None = None) -> str:
    """One line: the path (the error's, else `path`), the cause and the fix."""
    path = Path(e.filename) if e.filename else Path(path) if path else None
    cause = e.strerror or str(e)
    if e.errno == errno.ENOSPC and path is not None:
        with contextlib.suppress(OSError):
            cause += f" ({shutil.disk_usage(_existing_parent(path)).free} bytes free)"
    fix = _FIXES.get(e.errno)
    if fix and path is not None:
        fix = fix.format(folder=path if path.is_dir() else path.parent, path=path)
    where = f"{path}: " if path is not None else ""
    return f"{where}{cause}" + (f". Fix: {fix}" if fix else "")


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# --- one workflow per results folder ----------------------------------------------------------
LOCK_NAME = ".fedmic.lock"
_held_locks: dict[str, object] = {}  # folder -> its open lock file, kept open for the process's life


class FolderLocked(RuntimeError):
    """Another process holds the lock of a results folder."""


def hold_folder_lock(folder: str | Path) -> Path:
    """Lock `folder` for this process until it exits: flock on `<folder>/.fedmic.lock`,
    whose text names the holder. Snakemake's own lock lives in the working directory, so two
    clones (or two working directories) writing one absolute results folder would otherwise
    delete and rewrite each other's files. The kernel drops the lock when the process ends,
    however it ends, so a killed run never leaves a stale one; the file stays (removing it
    would race with a process about to lock it). Raises FolderLocked naming the holder."""
    import fcntl
    import socket
    import time

    folder = Path(folder).resolve()
    if str(folder) in _held_locks:
        return folder / LOCK_NAME
    path = folder / LOCK_NAME
    folder.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+", encoding="utf-8")  # not truncated: the holder's text stays readable
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = " ".join(f.read().split()) or "a process that has not written its name yet"
        f.close()
        raise FolderLocked(f"results folder {folder} is in use by another workflow ({holder}); wait for it to "
                           "finish, or give this config another results folder") from None
    except OSError:
        f.close()
        raise
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}, working directory {os.getcwd()}, "
            f"since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
    f.flush()
    _held_locks[str(folder)] = f
    return path
