"""A run's checkpoint beside its run JSON (docs/robustness.md): the server state, what the
clients keep (their seam's `saved`), the history so far; a resumed run continues bit for bit."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..utils import atomic_open, describe_os_error

if TYPE_CHECKING:
    from .loop import Run

log = logging.getLogger("fedmic.engine")


class CheckpointError(RuntimeError):
    pass


# What the saved state is made of; a new format when the algorithms' state keys change (2:
# teacher/student names, 0.2.0), so an older checkpoint is refused or replaced, never loaded
# into code that cannot read it.
FORMAT = "fedmic-checkpoint/2"


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def save_checkpoint(run: Run, out: Path, rnd: int) -> None:
    # Streamed into the file: serialising to memory first held two extra copies of every
    # client's state (+0.8x the checkpoint in peak RSS, measured at 100 clients).
    path = checkpoint_path(out)
    try:
        with atomic_open(path) as f:
            torch.save({"format": FORMAT, "fingerprint": run.cfg.fingerprint(), "partition_digest": run.part.digest,
                        "partition_file": str(run.partition_path), "round": rnd, "server": run.server,
                        "clients": run.clients.saved(), "history": run.history, "timing": run.timing}, f)
    except (OSError, RuntimeError) as e:
        # torch reports a failed write as its C++ writer's RuntimeError (inline_container.cc);
        # the OSError it met says why
        cause = e if isinstance(e, OSError) else e.__context__
        if not isinstance(cause, OSError):
            raise
        raise CheckpointError(
            f"round {rnd}: cannot write the checkpoint, "
            f"{describe_os_error(cause, path)}; the run stopped, and its "
            "previous checkpoint (if any) is kept for the rerun (checkpoint_every: 0 trains without)") from e


def resume(run: Run, out: Path, replace_stale: bool = False) -> None:
    """Resume from the checkpoint beside `out`, if any. One of another configuration is
    refused (it may be a run someone still wants), unless `replace_stale`: the workflow
    passes that, as it has already deleted that configuration's run JSON to retrain it
    with changed settings (a checkpoint kept by keep_checkpoint, or left by a stopped run)."""
    path = checkpoint_path(out)
    if not path.exists():
        return
    fingerprint = run.cfg.fingerprint()
    try:
        ck = torch.load(path, map_location=run.device, weights_only=False)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({e}); delete it to restart the run from round 1") from e
    if ck.get("format") != FORMAT and replace_stale:
        path.unlink()
        log.warning("checkpoint %s was written by an older fedmic (format %s, this one reads %s): removed, "
                    "the run starts from round 1", path, ck.get("format", 1), FORMAT)
        return
    if ck.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} was written by an older fedmic (format {ck.get('format', 1)}, "
                              f"this one reads {FORMAT}); delete it to start the run from round 1")
    if ck.get("fingerprint") != fingerprint and replace_stale:
        path.unlink()
        log.warning("checkpoint %s was written by another configuration (fingerprint %s, this run %s): "
                    "removed, the run starts from round 1", path, ck.get("fingerprint"), fingerprint)
        return
    if ck.get("fingerprint") != fingerprint:
        raise CheckpointError(f"checkpoint {path} was written by another configuration "
                              f"(fingerprint {ck.get('fingerprint')} != {fingerprint}); "
                              "delete it to start this configuration from round 1")
    if ck.get("partition_digest") != run.part.digest:
        made = ck.get("partition_file", "a partition fedmic did not record")
        raise CheckpointError(f"checkpoint {path} was written with another partition ({made}, digest "
                              f"{str(ck.get('partition_digest'))[:12]}) than {run.partition_path} (digest "
                              f"{run.part.digest[:12]}); resuming would mix the two. Fix: give the partition it "
                              f"was made with, or `rm {path}` to start from round 1 on this one")
    run.server = ck["server"]
    run.clients.restore(ck["clients"])
    run.history, run.timing = ck["history"], ck["timing"]
    run.start_round = ck["round"] + 1
    log.info("resumed from %s at round %d", path, run.start_round)
