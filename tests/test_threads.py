"""The thread policy (docs/performance.md, "Threads"): a run uses one torch thread unless told
otherwise, and importing fedmic (as the command line does first) makes OpenMP's idle threads
sleep instead of spinning, set before torch loads its OpenMP runtime, leaving a value the user
set alone."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA

REPO = Path(__file__).resolve().parents[1]

PROBE = ("import os, sys; import {module}; loaded = 'torch' in sys.modules; import torch; "
         "print(loaded, os.environ.get('OMP_WAIT_POLICY'))")


def probe(module: str, **env_extra) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True,
                         env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("module", ["fedmic", "fedmic.cli"])
def test_passive_wait_policy_is_set_before_torch_loads(module):
    assert probe(module) == "False PASSIVE"


def test_a_wait_policy_the_user_set_wins():
    assert probe("fedmic.cli", OMP_WAIT_POLICY="ACTIVE") == "False ACTIVE"


def test_train_command_runs_one_thread_by_default(tmp_path):
    """`fedmic train` without --threads: one torch thread (torch's own default is one per core)."""
    fedmic = [sys.executable, "-m", "fedmic.cli"]
    part = tmp_path / "p.json"
    subprocess.run(fedmic + ["partition", "--dataset", "breastmnist", "--root", str(DATA), "--lam", "0.5",
                             "--clients", "2", "--out", str(part)], check=True, capture_output=True)
    cfg = json.dumps({"dataset": "breastmnist", "method": "fedavg", "lam": 0.5, "clients": 2, "rounds": 1,
                      "scheme": "dirichlet_label", "checkpoint_every": 0})
    out = tmp_path / "run.json"
    res = subprocess.run(fedmic + ["train", "--config", cfg, "--partition", str(part), "--root", str(DATA),
                                   "--out", str(out), "--no-progress"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(out.with_suffix(".timing.json").read_text())["env"]["threads"] == 1
