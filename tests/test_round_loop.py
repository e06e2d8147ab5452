"""The round loop (fedmic/simulation/loop.py) depends on the clients only through their seam
(fedmic/simulation/clients.py, `Clients`): a third implementation, which hands every call to
the in-process clients and records it, gives the in-process run's JSON byte for byte, and a
client that never replies is recorded as timed out and left out of the aggregate."""
from __future__ import annotations

from pathlib import Path

import pytest

from fedmic.config import RunConfig
from fedmic.engine import Simulation
from fedmic.simulation.clients import InProcessClients
from fedmic.simulation.loop import Run, dropped_clients, run_rounds, sample_clients
from conftest import DATA, real_partition

FLAG, K = "breastmnist", 3
pytestmark = pytest.mark.usefixtures("restore_torch_threads")


@pytest.fixture(scope="module")
def part(tmp_path_factory) -> Path:
    return real_partition(tmp_path_factory.mktemp("part"), FLAG, K, min_size=5)


def cfg(**kw) -> RunConfig:
    # FedMIC (personalised: the clients predict) at 1/4 width; 2 of 3 clients sampled, one of
    # them dropped; evaluated in rounds 2 and 3; a checkpoint after rounds 1 and 2
    base = dict(dataset=FLAG, method="fedmic", clients=K, rounds=3, lam=0.5, min_size=5, join_ratio=0.67,
                drop_rate=0.5, eval_every=2, checkpoint_every=1, progress=False, threads=1,
                hp={"teacher_width": 0.25, "student_width": 0.25})
    return RunConfig(**{**base, **kw})


class RecordingClients:
    """The in-process clients behind a wrapper that logs each call of the seam; `silent` clients
    train but their replies never arrive (a deployment's timed-out site)."""

    def __init__(self, cfg, algo, data, silent=()):
        self.inner = InProcessClients(cfg, algo, data)
        self.silent = set(silent)
        self.calls: list[tuple] = []

    def init(self) -> None:
        self.calls.append(("init",))
        self.inner.init()

    def saved(self):
        self.calls.append(("saved",))
        return self.inner.saved()

    def restore(self, saved) -> None:
        self.calls.append(("restore",))
        self.inner.restore(saved)

    def train(self, rnd, sampled, downlink):
        self.calls.append(("train", rnd, tuple(sampled)))
        replies = self.inner.train(rnd, sampled, downlink)
        return {c: r for c, r in replies.items() if c not in self.silent}

    def predict(self, rnd, shared):
        self.calls.append(("predict", rnd))
        return self.inner.predict(rnd, shared)

    def report(self) -> dict:
        self.calls.append(("report",))
        return self.inner.report()


def test_the_loop_needs_only_the_seam(part, tmp_path):
    Simulation(cfg(), part, DATA).run(tmp_path / "in_process.json")
    run = Run(cfg(), part, DATA, RecordingClients)
    run_rounds(run, tmp_path / "recorded.json")
    assert (tmp_path / "recorded.json").read_bytes() == (tmp_path / "in_process.json").read_bytes()
    c = cfg()
    assert run.clients.calls == [
        ("init",),
        ("train", 1, tuple(sample_clients(c, 1))), ("saved",),
        ("train", 2, tuple(sample_clients(c, 2))), ("predict", 2), ("saved",),
        ("train", 3, tuple(sample_clients(c, 3))), ("predict", 3),
        ("report",)]


def test_a_resumed_run_restores_the_clients_through_the_seam(part, tmp_path):
    out = tmp_path / "run.json"
    run_rounds(Run(cfg(keep_checkpoint=True), part, DATA, RecordingClients), out)
    first = out.read_bytes()
    again = Run(cfg(keep_checkpoint=True), part, DATA, RecordingClients)
    run_rounds(again, out)  # from the round-2 checkpoint: only round 3 is trained again
    assert again.clients.calls == [("init",), ("restore",), ("train", 3, tuple(sample_clients(cfg(), 3))),
                                   ("predict", 3), ("report",)]
    assert out.read_bytes() == first


def test_a_client_that_never_replies_is_timed_out_and_not_aggregated(part, tmp_path):
    c = cfg(drop_rate=0.0, checkpoint_every=0)
    sampled = sample_clients(c, 1)
    silent = sampled[0]
    run = Run(c, part, DATA, lambda cfg, algo, data: RecordingClients(cfg, algo, data, silent={silent}))
    res = run_rounds(run, tmp_path / "run.json")
    ref = Simulation(c, part, DATA).run(tmp_path / "ref.json")
    h, r = res["history"][0], ref["history"][0]
    assert dropped_clients(c, 1, sampled) == set() and h["sampled"] == r["sampled"] == sampled
    assert h["timed_out"] == [silent] and "timed_out" not in r
    assert h["aggregated"] == r["aggregated"] - 1
    assert h["uplink_bytes"][0] == 0 and r["uplink_bytes"][0] > 0  # a lost upload is not counted as received
    assert h["downlink_bytes"] == r["downlink_bytes"]  # it was sent its downlink all the same
