"""Nothing is lost: resume after SIGKILL is exact, runs are deterministic, outputs are atomic,
divergence and client faults are handled and counted, and a client's persistent state has a
known size. Real data (BreastMNIST, 546 training images), tiny models, a few rounds."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fedmic import utils
from fedmic.algorithms.fedavg import FedAvg
from fedmic.cli import main as cli_main
from fedmic.comm import dense_payload
from fedmic.config import RunConfig
from fedmic.engine import Simulation
from fedmic.simulation import checkpoint, loop, setup
from fedmic.simulation.checkpoint import CheckpointError, save_checkpoint
from fedmic.simulation.clients import tensors
from fedmic.simulation.loop import DivergenceError
from fedmic.simulation.record import timing_path
from fedmic.models import build_model
from conftest import DATA, real_partition

FLAG = "breastmnist"
K = 4
SMALL = {"teacher_width": 0.25, "student_width": 0.25}  # FedMIC with 1/4-width CNNs: fast
pytestmark = pytest.mark.usefixtures("restore_torch_threads")


@pytest.fixture(scope="module")
def part(tmp_path_factory) -> Path:
    return real_partition(tmp_path_factory.mktemp("part"), FLAG, K, min_size=10)


def cfg(**kw) -> RunConfig:
    base = dict(dataset=FLAG, method="fedavg", clients=K, rounds=2, lam=0.5, progress=False, threads=1,
                checkpoint_every=0)
    base.update(kw)
    if base["method"] == "fedmic":
        base["hp"] = {**SMALL, **base.get("hp", {})}
    return RunConfig(**base)


def run(c: RunConfig, part: Path, out: Path) -> bytes:
    Simulation(c, part, DATA).run(out)
    return out.read_bytes()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def state_copy(server: dict) -> dict:
    return {k: v.clone() for k, v in server["global"].items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- resume after SIGKILL

def test_resume_after_sigkill_is_byte_identical(part, tmp_path):
    """A real `fedmic train` killed with SIGKILL after its first checkpoint, then started again
    with the same command, writes exactly the JSON of an uninterrupted run."""
    config = json.dumps({"dataset": FLAG, "method": "fedmic", "clients": K, "rounds": 6, "lam": 0.5,
                         "checkpoint_every": 1, "hp": SMALL})
    exe = Path(sys.executable).with_name("fedmic")

    def cmd(out):
        return [str(exe), "train", "--config", config, "--partition", str(part), "--out", str(out),
                "--root", str(DATA), "--threads", "1", "--no-progress"]

    ref_dir, kill_dir = tmp_path / "ref", tmp_path / "killed"
    ref_dir.mkdir(), kill_dir.mkdir()
    ref, out = ref_dir / "run.json", kill_dir / "run.json"
    ckpt = kill_dir / "run.json.ckpt"
    # Both start together: the reference costs no extra wall time on 2 cores.
    # logs go to files: a full pipe nobody reads would stall a run
    ref_log, kill_log = (tmp_path / "ref.log").open("w"), (tmp_path / "killed.log").open("w")
    ref_proc = subprocess.Popen(cmd(ref), stdout=ref_log, stderr=subprocess.STDOUT)
    victim = subprocess.Popen(cmd(out), stdout=kill_log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not ckpt.exists():
            assert victim.poll() is None, f"run ended before its first checkpoint: {(tmp_path / 'killed.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint after 180 s"
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    assert not out.exists(), "a killed run must leave no run JSON"
    done = torch.load(ckpt, weights_only=False)["round"]
    assert 1 <= done < 6

    again = subprocess.run(cmd(out), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {ckpt} at round {done + 1}" in again.stderr  # it continued, not restarted
    ref_proc.wait(300)
    assert ref_proc.returncode == 0, (tmp_path / "ref.log").read_text()[-3000:]

    assert out.read_bytes() == ref.read_bytes()
    assert not ckpt.exists(), "the checkpoint is removed once the run JSON is written"
    assert leftovers(kill_dir) == []
    timing = json.loads((kill_dir / "run.timing.json").read_text())
    assert [r["round"] for r in timing["rounds"]] == list(range(1, 7))


def test_keep_checkpoint_and_rerun_is_idempotent(part, tmp_path):
    out = tmp_path / "run.json"
    c = cfg(rounds=2, checkpoint_every=1, keep_checkpoint=True)
    first = run(c, part, out)
    ck = torch.load(tmp_path / "run.json.ckpt", weights_only=False)
    assert ck["round"] == 1 and ck["fingerprint"] == c.fingerprint()  # last round is never checkpointed
    assert [h["round"] for h in ck["history"]] == [1]
    sim = Simulation(c, part, DATA)
    sim.run(out)
    assert sim.start_round == 2  # resumed: only the last round was recomputed
    assert out.read_bytes() == first


class NoisyFedAvg(FedAvg):
    """FedAvg plus noise from torch's *global* generator: a resumed run is only exact if the
    engine reseeds that generator per (round, client)."""

    def local_update(self, cid, state, received, data, rnd, gen):
        state, up, info = super().local_update(cid, state, received, data, rnd, gen)
        noisy = {k: v + 1e-3 * torch.randn_like(v) if v.is_floating_point() else v for k, v in up.tensors.items()}
        return state, dense_payload(noisy), info


def test_resume_after_crash_is_exact_even_with_global_rng(part, tmp_path, monkeypatch):
    monkeypatch.setattr(setup, "get_algorithm", lambda name: NoisyFedAvg)
    c = cfg(rounds=2, checkpoint_every=1)
    ref = run(c, part, tmp_path / "ref.json")

    out = tmp_path / "run.json"
    real_eval = loop.evaluate
    crashed = {}

    def crash_in_round_2(run, rnd):
        if rnd == 2:  # round 1 done and checkpointed
            crashed["yes"] = True
            raise KeyboardInterrupt
        return real_eval(run, rnd)

    monkeypatch.setattr(loop, "evaluate", crash_in_round_2)
    with pytest.raises(KeyboardInterrupt):
        Simulation(c, part, DATA).run(out)
    assert crashed and not out.exists()
    assert (tmp_path / "run.json.ckpt").exists()
    monkeypatch.setattr(loop, "evaluate", real_eval)
    sim = Simulation(c, part, DATA)
    sim.run(out)
    assert sim.start_round == 2
    assert out.read_bytes() == ref


def test_checkpoint_of_another_config_is_refused(part, tmp_path):
    out = tmp_path / "run.json"
    a = Simulation(cfg(lr=0.05), part, DATA)
    save_checkpoint(a, out, 1)
    ck = tmp_path / "run.json.ckpt"
    before = ck.read_bytes()
    with pytest.raises(CheckpointError, match=r"written by another configuration.*delete it to start this configuration from round 1"):
        Simulation(cfg(lr=0.01), part, DATA).run(out)
    assert ck.read_bytes() == before and not out.exists()  # refused without touching anything
    # execution settings are not part of the fingerprint: same science, other checkpoint_every
    assert cfg(lr=0.05, checkpoint_every=3).fingerprint() == a.cfg.fingerprint()

    ck.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable.*delete it"):
        Simulation(cfg(lr=0.05), part, DATA).run(out)


def test_checkpoint_of_an_older_format_is_refused_or_replaced(part, tmp_path):
    """A checkpoint written before the algorithms' state was renamed (no format key) would load
    into code that cannot read it: refused with the fix, or replaced when the workflow asks."""
    out = tmp_path / "run.json"
    c = cfg(rounds=2, checkpoint_every=1)
    save_checkpoint(Simulation(c, part, DATA), out, 1)
    ck = tmp_path / "run.json.ckpt"
    old = torch.load(ck, weights_only=False)
    assert old.pop("format") == checkpoint.FORMAT
    torch.save(old, ck)
    before = ck.read_bytes()
    with pytest.raises(CheckpointError, match=r"written by an older fedmic \(format 1, this one reads "
                                              r"fedmic-checkpoint/2\); delete it to start the run from round 1"):
        Simulation(c, part, DATA).run(out)
    assert ck.read_bytes() == before and not out.exists()
    sim = Simulation(c, part, DATA)
    sim.run(out, replace_stale_checkpoint=True)
    assert sim.start_round == 1 and out.exists() and not ck.exists()


def test_stale_temp_files_of_a_killed_write_are_removed(part, tmp_path):
    out = tmp_path / "run.json"
    stale = [tmp_path / ".run.json.ckpt.abc123.tmp", tmp_path / ".run.json.xyz.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    keep = tmp_path / ".other.json.k.tmp"  # another run's write in progress
    keep.write_bytes(b"x")
    run(cfg(rounds=1), part, out)
    assert leftovers(tmp_path) == [keep.name]


# --------------------------------------------------------------------------- determinism

@pytest.mark.parametrize("method", ["fedavg", "fedmic"])
def test_same_seed_same_bytes_other_seed_differs(part, tmp_path, method):
    a = run(cfg(method=method), part, tmp_path / "a.json")
    b = run(cfg(method=method), part, tmp_path / "b.json")
    assert a == b
    c = run(cfg(method=method, seed=1), part, tmp_path / "c.json")
    assert json.loads(c)["history"] != json.loads(a)["history"]


@pytest.mark.parametrize("method", ["fedavg", "fedmic"])
def test_memory_format_is_a_storage_choice_not_a_method_change(part, tmp_path, method):
    """channels_last (auto's choice on CPU) stores every model's weights NHWC; contiguous does
    not. Both train the same method: the same losses and accuracies up to float rounding, the
    same science config, and each run records the format it used."""
    runs = {}
    for fmt in ("channels_last", "contiguous"):
        sim = Simulation(cfg(method=method, memory_format=fmt), part, DATA)
        conv = sim.algo.worker.encoder.conv2.weight  # conv1 has 1 input channel: both formats at once
        assert conv.is_contiguous(memory_format=torch.channels_last) == (fmt == "channels_last")
        out = tmp_path / f"{fmt}.json"
        sim.run(out)
        assert json.loads(timing_path(out).read_text())["env"]["memory_format"] == fmt
        runs[fmt] = json.loads(out.read_text())
        assert runs[fmt]["env"]["memory_format"] == fmt
    assert runs["channels_last"]["config"] == runs["contiguous"]["config"]
    for a, b in zip(runs["channels_last"]["history"], runs["contiguous"]["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["eval"]["personal"]["test"]["acc"] == pytest.approx(b["eval"]["personal"]["test"]["acc"], abs=0.02)
    assert Simulation(cfg(method=method), part, DATA).ctx.memory_format == torch.channels_last  # auto on CPU


def test_partition_step_is_deterministic_and_method_free(tmp_path, capsys):
    args = ["partition", "--dataset", FLAG, "--root", str(DATA), "--lam", "0.3", "--clients", "5"]
    assert cli_main(args + ["--out", str(tmp_path / "p1.json")]) == 0
    assert cli_main(args + ["--out", str(tmp_path / "p2.json")]) == 0
    assert (tmp_path / "p1.json").read_bytes() == (tmp_path / "p2.json").read_bytes()
    # the partition command has no notion of a method at all
    with pytest.raises(SystemExit) as e:
        cli_main(args + ["--out", str(tmp_path / "p3.json"), "--method", "fedmic"])
    assert e.value.code == 2 and "unrecognized arguments: --method" in capsys.readouterr().err


# --------------------------------------------------------------------------- atomic outputs

def test_dump_json_failure_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    utils.dump_json({"v": 1}, path)
    old = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(utils.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        utils.dump_json({"v": 2}, path)
    assert path.read_bytes() == old and leftovers(tmp_path) == []
    monkeypatch.undo()

    def broken_fsync(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(utils.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="I/O error"):
        utils.atomic_write_bytes(path, b"x" * 10_000)
    assert path.read_bytes() == old and leftovers(tmp_path) == []
    monkeypatch.undo()

    with pytest.raises(TypeError):  # unserialisable: fails before any file is touched
        utils.dump_json({"v": {1, 2}}, path)
    assert path.read_bytes() == old and leftovers(tmp_path) == []
    utils.dump_json({"v": 2, "nan": math.nan}, path)
    assert json.loads(path.read_text()) == {"v": 2, "nan": None}


def test_atomic_open_is_all_or_nothing_with_umask_permissions(tmp_path):
    """Every writer (run JSONs, partitions, tables, checkpoints, downloads) shares atomic_open."""
    path = tmp_path / "sub" / "table.csv"
    with utils.atomic_open(path, "w") as f:
        f.write("a,b\n")
        assert not path.exists()  # nothing visible before the block ends
    assert path.read_text() == "a,b\n"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(RuntimeError, match="killed mid-write"):
        with utils.atomic_open(path, "w") as f:
            f.write("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "a,b\n" and leftovers(path.parent) == []
    with pytest.raises(ValueError, match="mode must contain 'w'"):
        with utils.atomic_open(path, "a"):
            pass


def test_failed_checkpoint_write_keeps_the_previous_one(part, tmp_path, monkeypatch):
    sim = Simulation(cfg(), part, DATA)
    out = tmp_path / "run.json"
    save_checkpoint(sim, out, 1)
    ck = tmp_path / "run.json.ckpt"
    old = ck.read_bytes()

    def half_then_fail(obj, f, *a, **kw):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", half_then_fail)
    with pytest.raises(CheckpointError, match=rf"round 2: cannot write the checkpoint, {ck}: disk full; the run stopped"):
        save_checkpoint(sim, out, 2)
    assert ck.read_bytes() == old and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- divergence

class NaNForClient2(FedAvg):
    def local_update(self, cid, state, received, data, rnd, gen):
        state, up, info = super().local_update(cid, state, received, data, rnd, gen)
        if cid == 2:
            up.tensors["head.bias"] = torch.full_like(up.tensors["head.bias"], math.nan)
        return state, up, info


def test_nonfinite_update_stops_run_naming_round_client_tensor(part, tmp_path, monkeypatch):
    monkeypatch.setattr(setup, "get_algorithm", lambda name: NaNForClient2)
    out = tmp_path / "run.json"
    with pytest.raises(DivergenceError, match=r"round 1, client 2: tensor 'head.bias' has non-finite values.*on_nonfinite: skip"):
        Simulation(cfg(), part, DATA).run(out)
    assert not out.exists()


def test_nonfinite_update_skipped_and_counted(part, tmp_path, monkeypatch):
    monkeypatch.setattr(setup, "get_algorithm", lambda name: NaNForClient2)
    seen = []
    real = NaNForClient2.aggregate

    def spy(self, server, uploads, rnd):
        seen.append([u.weight for u in uploads])
        return real(self, server, uploads, rnd)

    monkeypatch.setattr(NaNForClient2, "aggregate", spy)
    sim = Simulation(cfg(rounds=2, on_nonfinite="skip"), part, DATA)
    res = sim.run(tmp_path / "run.json")
    for h in res["history"]:
        assert h["skipped"] == [2] and h["aggregated"] == K - 1
        assert h["uplink_bytes"][h["sampled"].index(2)] == 0  # a discarded update is not counted as sent
    assert res["summary"]["skipped_total"] == 2
    assert seen == [[sim.data.n_train[c] for c in (0, 1, 3)]] * 2  # the other three were averaged
    assert all(torch.isfinite(v).all() for v in sim.server["global"].values())
    for who in ("personal", "global"):
        assert all(isinstance(res["summary"][who][k], float) and math.isfinite(res["summary"][who][k])
                   for k in ("acc", "auc", "f1"))


@pytest.mark.parametrize("method", ["fedavg", "fedmic"])
def test_absurd_lr_diverges_with_clear_error(part, tmp_path, method):
    with pytest.raises(DivergenceError, match=r"round 1, client \d+: tensor '[^']+' has non-finite values.*Lower lr"):
        Simulation(cfg(method=method, lr=1e6), part, DATA).run(tmp_path / "run.json")


def test_absurd_lr_fedmic_skip_completes(part, tmp_path):
    """FedMIC's SVD refuses NaN weights itself; on_nonfinite=skip must still apply."""
    res = Simulation(cfg(method="fedmic", lr=1e6, on_nonfinite="skip"), part, DATA).run(tmp_path / "run.json")
    skipped = [len(h["skipped"]) for h in res["history"]]
    assert sum(skipped) > 0 and res["summary"]["skipped_total"] == sum(skipped)
    for h in res["history"]:
        assert h["aggregated"] == len(set(h["sampled"]) - set(h["skipped"]) - set(h["dropped"]))
    text = (tmp_path / "run.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert math.isfinite(res["summary"]["personal"]["acc"])


# --------------------------------------------------------------------------- client faults

def test_dropped_uploads_counted_and_rest_aggregated(part, tmp_path, monkeypatch):
    seen = []
    real = FedAvg.aggregate

    def spy(self, server, uploads, rnd):
        seen.append(sorted(u.weight for u in uploads))
        return real(self, server, uploads, rnd)

    monkeypatch.setattr(FedAvg, "aggregate", spy)
    sim = Simulation(cfg(rounds=3, drop_rate=0.5), part, DATA)
    res = sim.run(tmp_path / "run.json")
    for h, w in zip(res["history"], seen):
        assert len(h["dropped"]) == 2 and set(h["dropped"]) <= set(h["sampled"])
        assert h["aggregated"] == len(h["sampled"]) - len(h["dropped"]) - len(h["skipped"]) == 2
        assert w == sorted(sim.data.n_train[c] for c in h["sampled"] if c not in h["dropped"])
    assert res["summary"]["dropped_total"] == 6
    assert len({tuple(h["dropped"]) for h in res["history"]}) > 1  # a fresh draw each round


@pytest.mark.parametrize("method", ["fedavg", "fedmic"])
def test_round_dropping_everyone_keeps_global_model(part, tmp_path, method):
    # one sampled client (join 0.25 of 4), round(0.9 * 1) = 1 dropped: nothing reaches the server
    sim = Simulation(cfg(method=method, rounds=2, join_ratio=0.25, drop_rate=0.9), part, DATA)
    start = state_copy(sim.server)
    res = sim.run(tmp_path / "run.json")
    for h in res["history"]:
        assert len(h["sampled"]) == 1 and h["dropped"] == h["sampled"] and h["aggregated"] == 0
    assert same_state(sim.server["global"], start)
    assert res["summary"]["dropped_total"] == 2


# --------------------------------------------------------------------------- memory bound

def tensor_bytes(obj) -> int:
    return sum(t.numel() * t.element_size() for _, t in tensors(obj))


def test_fedmic_client_state_is_teacher_aux_matrices_and_global_copy(part, tmp_path):
    """docs/robustness.md: a FedMIC client keeps its teacher and the two auxiliary matrices and,
    once it has trained, its copy of the global student (to add the next factorised update to);
    nothing else (no optimiser state, no upload)."""
    hp = {"teacher_width": 0.5, "student_width": 0.25}
    sim = Simulation(cfg(method="fedmic", rounds=1, hp=hp), part, DATA)
    size = lambda m: sum(v.numel() * v.element_size() for v in m.state_dict().values())
    teacher, student = build_model("cnn", 1, 2, 0.5), build_model("cnn", 1, 2, 0.25)
    bound = size(teacher) + 2 * teacher.rep_dim * student.rep_dim * 4
    assert [tensor_bytes(s) for s in sim.clients.states] == [bound] * K
    res = sim.run(tmp_path / "run.json")
    trained = set(res["history"][0]["sampled"])
    assert [tensor_bytes(s) for s in sim.clients.states] == [bound + size(student) * (c in trained) for c in range(K)]


def test_site_state_of_an_older_format_is_refused(tmp_path):
    """A Flower site's state files carry the same format: one written before the algorithms'
    state was renamed is refused with the fix, not loaded into code that cannot read it."""
    from fedmic.flower.site import SiteError, StateStore

    store = StateStore(tmp_path / "state", cid=0, fingerprint="abc")
    store.commit(1, {"teacher": torch.zeros(2)}, floor=None)
    assert torch.equal(store.load(1, torch.device("cpu"))["teacher"], torch.zeros(2))
    old = torch.load(store.path(1), weights_only=True)
    del old["format"]
    torch.save(old, store.path(1))
    with pytest.raises(SiteError, match=r"written by an older fedmic \(format 1, this one reads fedmic-checkpoint/2\); "
                                        r"delete the state folder and restart the run from round 1"):
        store.load(1, torch.device("cpu"))
