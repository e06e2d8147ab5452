"""The GPUs a training job may use: how many this machine has, and which one each job takes.

``visible_gpus()`` lists the devices CUDA would show a job: ``CUDA_VISIBLE_DEVICES`` when it
is set (empty or ``-1`` hides every GPU), else one per ``GPU n:`` line of ``nvidia-smi -L``,
else none. workflow/rules/common.smk reads it when the workflow is parsed and, unless
``--resources gpu=N`` (or a profile) sets the pool, makes Snakemake's ``gpu`` pool that count,
so a CPU machine runs as many training jobs as ``--cores`` allows and a GPU machine no more
than it has GPUs.

``python -m fedmic.gpus --slots N -- CMD ...`` runs CMD on one of N slots, slot s on the
(s mod G)-th of the G visible GPUs, each slot held by a file lock for the life of CMD, so two
jobs never take the same slot: with N = G every job has a GPU of its own, with N = 2G two
small runs share each GPU. The workflow wraps training jobs in it only when a machine shows
more than one GPU (with one, every job uses it anyway; on SLURM, each job is given its own).
"""
from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_DEVICE = re.compile(r"^(\d+|GPU-[0-9A-Fa-f-]+|MIG-[\w/-]+)$")


def visible_gpus(env=None, nvidia_smi: str | None = "auto") -> list[str]:
    """Device names to put in CUDA_VISIBLE_DEVICES, one per GPU a job may use."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        devices = []
        # CUDA reads the list up to the first entry that names no device
        for entry in env["CUDA_VISIBLE_DEVICES"].split(","):
            entry = entry.strip()
            if not _DEVICE.match(entry):
                break
            devices.append(entry)
        return devices
    smi = shutil.which("nvidia-smi") if nvidia_smi == "auto" else nvidia_smi
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []  # a driver that does not answer: no GPU a job could use
    return re.findall(r"^GPU (\d+):", out, re.M)


def lock_dir() -> Path:
    """Shared by every workflow of this user on this machine, so two at once share the GPUs."""
    return Path(tempfile.gettempdir()) / f"fedmic-gpu-slots-{os.getuid()}"


def claim_slot(n_slots: int, folder: Path, poll_s: float = 1.0) -> tuple[int, int]:
    """(slot, fd): the first free slot, locked through fd; waits while all are taken."""
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        for slot in range(n_slots):
            fd = os.open(folder / f"slot{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return slot, fd
            except BlockingIOError:
                os.close(fd)
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m fedmic.gpus", description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, required=True, help="jobs allowed at once (the gpu pool)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    a = ap.parse_args(argv)
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command or a.slots < 1:
        ap.error("give --slots N (N >= 1), then -- and the command")
    gpus = visible_gpus()
    env = dict(os.environ)
    if gpus:
        slot, fd = claim_slot(a.slots, lock_dir())
        os.set_inheritable(fd, True)  # the command holds the lock until it exits
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
        print(f"fedmic.gpus: slot {slot} of {a.slots}, CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}",
              file=sys.stderr, flush=True)
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main()
