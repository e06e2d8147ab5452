"""How the workflow finds the GPUs and hands each training job one (fedmic/gpus.py)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedmic.gpus import claim_slot, visible_gpus


def fake_nvidia_smi(tmp_path: Path, n: int) -> str:
    script = tmp_path / "nvidia-smi"
    lines = "".join(f"GPU {i}: NVIDIA H200 (UUID: GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd)\\n" for i in range(n))
    script.write_text(f"#!/bin/sh\nprintf '{lines}'\n")
    script.chmod(0o755)
    return str(script)


def test_cuda_visible_devices_decides_when_set(tmp_path):
    smi = fake_nvidia_smi(tmp_path, 4)
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, smi) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, smi) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}, smi) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, smi) == []  # SLURM, no GPU asked
    # CUDA stops reading at the first entry that names no device
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}, smi) == ["1"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-8a1b2c3d-0000-1111"}, smi) == ["GPU-8a1b2c3d-0000-1111"]


def test_nvidia_smi_counts_otherwise(tmp_path):
    assert visible_gpus({}, fake_nvidia_smi(tmp_path, 3)) == ["0", "1", "2"]
    assert visible_gpus({}, None) == []  # no driver: a CPU machine
    broken = tmp_path / "broken-smi"
    broken.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2; exit 9\n")
    broken.chmod(0o755)
    assert visible_gpus({}, str(broken)) == []


def test_slots_are_exclusive_while_held(tmp_path):
    slot_a, fd_a = claim_slot(2, tmp_path)
    slot_b, fd_b = claim_slot(2, tmp_path)
    assert {slot_a, slot_b} == {0, 1}
    os.close(fd_a)  # a job ended: its slot is free again
    slot_c, fd_c = claim_slot(2, tmp_path)
    assert slot_c == slot_a
    for fd in (fd_b, fd_c):
        os.close(fd)


def launch(tmp_path, slots, seconds, visible="4,7"):
    """A job through the launcher that prints the GPU it got, then holds it for `seconds`."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=visible, TMPDIR=str(tmp_path))
    code = f"import os, time; print(os.environ['CUDA_VISIBLE_DEVICES'], time.time(), flush=True); time.sleep({seconds})"
    return subprocess.Popen([sys.executable, "-m", "fedmic.gpus", "--slots", str(slots), "--",
                             sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)


def test_launcher_gives_concurrent_jobs_different_gpus_and_a_third_waits(tmp_path):
    t0 = time.time()
    jobs = [launch(tmp_path, 2, 2.0) for _ in range(2)]
    time.sleep(0.5)
    third = launch(tmp_path, 2, 0.0)
    got = [j.communicate(timeout=60)[0].split() for j in (*jobs, third)]
    assert sorted(g[0] for g in got[:2]) == ["4", "7"]
    # the command kept the lock after exec: the third job started only when one had ended
    assert float(got[2][1]) - t0 >= 1.9
    assert got[2][0] in ("4", "7")


def test_launcher_packs_two_slots_per_gpu(tmp_path):
    jobs = [launch(tmp_path, 4, 1.5, visible="0,1") for _ in range(4)]
    devices = sorted(j.communicate(timeout=60)[0].split()[0] for j in jobs)
    assert devices == ["0", "0", "1", "1"]


def test_launcher_without_gpus_runs_the_command_as_is(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TMPDIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "fedmic.gpus", "--slots", "1", "--", sys.executable, "-c",
                          "import os; print(repr(os.environ['CUDA_VISIBLE_DEVICES']))"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "''"
    assert not any(tmp_path.glob("fedmic-gpu-slots-*/slot*.lock"))


@pytest.mark.parametrize("argv", [["--slots", "2"], ["--slots", "0", "--", "true"]])
def test_launcher_rejects_a_missing_command_or_no_slots(argv):
    res = subprocess.run([sys.executable, "-m", "fedmic.gpus", *argv], capture_output=True, text=True)
    assert res.returncode == 2 and "--slots N" in res.stderr
