"""The MedMNIST folder every test reads, and helpers shared by the workflow tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedmic.dataroot import ENV_ROOT, default_root

REPO = Path(__file__).resolve().parents[1]
# the command line's rule: $FEDMIC_MEDMNIST_ROOT, ../shared/data/medmnist, ~/.medmnist
DATA = default_root(REPO).absolute()
DATASETS = ("breastmnist", "pneumoniamnist", "retinamnist")  # the three small ones (about 8 MB)


def pytest_sessionstart(session):
    """Every file present and verified (MD5), or downloaded, before any test; else the suite
    stops here with one line instead of failing or skipping test by test."""
    from fedmic.data.medmnist import DatasetError, ensure_dataset

    for flag in DATASETS:
        try:
            ensure_dataset(flag, DATA, timeout=15)
        except (DatasetError, OSError) as e:
            if isinstance(e, DatasetError) and e.__cause__ is None:  # a file there, but not the right one
                reason = str(e).rstrip(".")
            else:
                cause = e.__cause__ or e
                reason = f"{flag}.npz is missing and could not be downloaded ({type(cause).__name__}: {cause})"
            raise pytest.UsageError(
                f"the tests need {', '.join(f + '.npz' for f in DATASETS)} in {DATA}: {reason}. "
                f"Set {ENV_ROOT} to a folder that has them, or run the tests once online") from None


def mark_outputs_done(snakefile: Path, workdir: Path, configfile: Path, env: dict) -> None:
    """Make every output of `snakemake all` exist and count as up to date, in seconds instead
    of a real run: each file is created (a small JSON mapping) and `snakemake --touch` records
    it as done. Files under the data root (downloads) are left alone."""
    sm = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir), "--cores", "1",
          "all", "--configfile", str(configfile)]
    env = dict(os.environ, **env)
    planned = subprocess.run([*sm, "-n"], capture_output=True, text=True, env=env, check=True).stdout
    for line in planned.splitlines():
        if line.strip().startswith("output:"):
            for name in line.split(":", 1)[1].split(","):
                target = workdir / name.strip()
                if not target.is_absolute() or str(target).startswith(str(workdir)):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(json.dumps({"an earlier output": name.strip()}) + "\n")
    subprocess.run([*sm, "--touch"], capture_output=True, text=True, env=env, check=True)
    done = subprocess.run([*sm, "-n"], capture_output=True, text=True, env=env).stdout
    assert "Nothing to be done" in done, done[-3000:]


def real_partition(folder: Path, flag: str, clients: int, min_size: int, lam: float = 0.5) -> Path:
    """A label-skewed partition (seed 0) of a real dataset, saved in `folder`."""
    from fedmic.data.medmnist import load_dataset
    from fedmic.data.partition import make_partition, save_partition

    data = load_dataset(flag, DATA)
    labels = {s: data.split(s)[1].numpy() for s in ("train", "val", "test")}
    p = make_partition("dirichlet_label", labels, clients, lam, 0, min_size, n_classes=data.n_classes,
                       dataset=flag, dataset_md5=data.info.md5(28))
    return save_partition(p, folder / f"{flag}_lam{lam:g}_K{clients}.json")


@pytest.fixture(scope="module")
def restore_torch_threads():
    """Runs set threads=1 (fast and reproducible on a busy 2-core box); the rest of the session
    gets its thread count back."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
