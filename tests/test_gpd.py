"""Global parameter decomposition both ways (fedmic/gpd.py): factorised updates on the uplink and
downlink, exact catch-up for clients that missed rounds, every byte counted, and the global model
the server scores equal bit for bit to what every client rebuilds."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedmic.comm import Upload
from fedmic.comm import Payload, apply_delta, svd_decode
from fedmic.config import RunConfig
from fedmic.engine import Simulation
from fedmic.gpd import CatchUpError, SharedModelChannel
from conftest import DATA

FLAG = "breastmnist"


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def dense_bytes(state: dict) -> int:
    return sum(v.numel() * 4 for v in state.values()) + 4  # float32 tensors + the version number


def channel(energy: float = 0.95) -> SharedModelChannel:
    return SharedModelChannel("update", "update", True, lambda rnd: energy, rounds=10)


def low_rank_update(shapes: dict, gen: torch.Generator, scale: float = 1e-2) -> dict:
    """An update like local training gives: rank 2 in every matrix, small against the weights."""
    out = {}
    for k, s in shapes.items():
        if len(s) >= 2:
            rows, cols = s[0], int(torch.tensor(s[1:]).prod())
            out[k] = (scale * torch.randn(rows, 2, generator=gen) @ torch.randn(2, cols, generator=gen)).reshape(s)
        else:
            out[k] = scale * torch.randn(s, generator=gen)
    return out


@pytest.fixture()
def initial() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"fc.weight": torch.randn(64, 128, generator=g), "fc.bias": torch.randn(64, generator=g),
            "conv.weight": torch.randn(16, 8, 3, 3, generator=g)}


def test_catch_up_rebuilds_the_servers_global_exactly(initial):
    ch, g = channel(), torch.Generator().manual_seed(1)
    server = ch.init_server(initial)
    shapes = {k: v.shape for k, v in initial.items()}
    # client 0 takes part in every round, client 1 only in the first, client 2 never until the end
    held = {0: None, 1: None}
    for rnd in range(1, 6):
        ups = []
        for cid in ([0, 1] if rnd == 1 else [0]):
            start, held[cid] = ch.rebuild(held[cid], ch.downlink(server, cid))
            assert same(start, server["global"])  # every client trains from the server's global
            ups.append(Upload(cid, ch.upload(apply_delta(start, low_rank_update(shapes, g)), start, rnd), 1.0))
        server = ch.aggregate(server, ups, rnd)
    # client 0 is one version behind: it gets one factorised update, far smaller than dense
    down0 = ch.downlink(server, 0)
    assert down0.meta["catch_up"] == (4, 5) and down0.nbytes < dense_bytes(initial) / 10
    # client 1 trained from version 0 and missed four rounds: it gets the five updates since
    # version 0, counted in full
    down1 = ch.downlink(server, 1)
    assert down1.meta["catch_up"] == (0, 5)
    assert down1.nbytes == sum(server["updates"][j].nbytes for j in range(5)) + 2 * 4
    # client 2 never took part: the dense global model
    down2 = ch.downlink(server, 2)
    assert down2.meta["global"] == (5,) and down2.nbytes == dense_bytes(initial)
    for cid, down in ((0, down0), (1, down1), (2, down2)):
        start, _ = ch.rebuild(held.get(cid), down)
        assert same(start, server["global"]), cid


def test_lost_upload_leaves_the_client_ahead_of_what_the_server_knows(initial):
    """An upload lost on the way: the server still thinks the client holds an older version and
    sends updates it already applied; the client skips those and lands on the same model."""
    ch, g = channel(), torch.Generator().manual_seed(2)
    server = ch.init_server(initial)
    shapes = {k: v.shape for k, v in initial.items()}
    held = {}
    for rnd, (senders, lost) in enumerate([([0, 1], []), ([0, 1], [1]), ([0], [])], start=1):
        ups = []
        for cid in senders:
            start, held[cid] = ch.rebuild(held.get(cid), ch.downlink(server, cid))
            if cid not in lost:
                ups.append(Upload(cid, ch.upload(apply_delta(start, low_rank_update(shapes, g)), start, rnd), 1.0))
        server = ch.aggregate(server, ups, rnd)
    assert held[1]["version"] == 1 and server["confirmed"][1] == 0
    down = ch.downlink(server, 1)
    assert down.meta["catch_up"] == (0, 3)
    start, kept = ch.rebuild(held[1], down)
    assert same(start, server["global"]) and kept["version"] == 3


def test_dense_catch_up_when_the_missed_updates_are_larger(initial):
    ch, g = channel(energy=1.0), torch.Generator().manual_seed(3)  # energy 1: updates near dense
    server = ch.init_server(initial)
    shapes = {k: v.shape for k, v in initial.items()}
    held = None
    start, held = ch.rebuild(held, ch.downlink(server, 0))
    for rnd in range(1, 4):
        full = {k: torch.randn(s, generator=g) for k, s in shapes.items()}  # full-rank updates
        server = ch.aggregate(server, [Upload(9, ch.upload(apply_delta(server["global"], full), server["global"], rnd),
                                              1.0)], rnd)
    down = ch.downlink(server, 0)
    assert "global" in down.meta
    assert ch.rebuild(held, down)[0].keys() == server["global"].keys()
    # updates no catch-up can use any more are dropped from the server state
    assert sum(u.nbytes for u in server["updates"].values()) < dense_bytes(initial)


def test_a_client_that_cannot_rebuild_is_refused(initial):
    ch = channel()
    server = ch.init_server(initial)
    update = ch.upload(apply_delta(initial, {k: 0.01 * torch.ones_like(v) for k, v in initial.items()}), initial, 1)
    server = ch.aggregate(server, [Upload(0, update, 1.0)], 1)
    with pytest.raises(CatchUpError, match="version None"):
        ch.rebuild(None, ch.downlink(server, 0))  # updates from version 0, but it holds nothing
    with pytest.raises(CatchUpError, match="neither"):
        ch.rebuild(None, Payload())


@pytest.fixture(scope="module")
def partition(tmp_path_factory) -> Path:
    from fedmic.data.medmnist import load_dataset
    from fedmic.data.partition import make_partition, save_partition
    data = load_dataset(FLAG, DATA)
    labels = {s: data.split(s)[1].numpy() for s in ("train", "val", "test")}
    part = make_partition("dirichlet_label", labels, 4, 0.5, 0, 10, n_classes=data.n_classes,
                          dataset=FLAG, dataset_md5=data.info.md5(28))
    return save_partition(part, tmp_path_factory.mktemp("part") / "part.json")


@pytest.mark.parametrize("method", ["fedmic", "fedkd"])
def test_engine_run_global_model_equals_every_clients_rebuild(method, partition, tmp_path):
    """Partial participation and lost uploads: after the run every client rebuilds, from what it
    holds plus what the server would send it, exactly the global model the server scored; each
    round's downlink bytes are those payloads' bytes."""
    cfg = RunConfig(dataset=FLAG, method=method, lam=0.5, clients=4, rounds=4, join_ratio=0.5, drop_rate=0.5,
                    progress=False, checkpoint_every=0, threads=1)
    sim = Simulation(cfg, partition, str(DATA))
    sent = {}
    real = sim.algo.downlink

    def spy(server, rnd, cid):
        sent[(rnd, cid)] = real(server, rnd, cid)
        return sent[(rnd, cid)]

    sim.algo.downlink = spy
    res = sim.run(tmp_path / "run.json")
    algo, server = sim.algo, sim.server
    for h in res["history"]:
        assert h["downlink_bytes"] == [sent[(h["round"], c)].nbytes for c in h["sampled"]]
    dense = dense_bytes(server["global"])
    first_contact = {}
    for h in res["history"]:
        for c, b in zip(h["sampled"], h["downlink_bytes"]):
            first_contact.setdefault(c, b)
    assert set(first_contact.values()) == {dense}  # first participation: the dense model
    later = [b for h in res["history"][1:] for c, b in zip(h["sampled"], h["downlink_bytes"])
             if "catch_up" in sent[(h["round"], c)].meta]
    assert later and all(b < dense / 10 for b in later)
    assert all(0 < b < dense / 10 for h in res["history"] for b in h["uplink_bytes"])
    for cid, state in enumerate(sim.clients.states):
        start, _ = algo.channel.rebuild(state.get("held"), algo.downlink(server, cfg.rounds + 1, cid))
        assert same(start, server["global"]), cid
    scored = algo.global_model(server).state_dict()
    assert same({k: scored[k] for k in server["global"]}, server["global"])


def test_params_mode_still_factorises_the_weights(partition, tmp_path):
    """`decompose: params`: the old reading, kept for comparison: weights factorised both ways,
    nearly dense (fc needs most of its rank for 95 % energy)."""
    cfg = RunConfig(dataset=FLAG, method="fedmic", hp={"decompose": "params"}, lam=0.5, clients=4, rounds=2,
                    progress=False, checkpoint_every=0, threads=1)
    sim = Simulation(cfg, partition, str(DATA))
    res = sim.run(tmp_path / "run.json")
    dense = dense_bytes(sim.server["global"]) - 4
    assert all(b > 0.5 * dense for h in res["history"] for b in h["uplink_bytes"] + h["downlink_bytes"])
    assert "encoder.fc.weight" not in res["history"][-1]["broadcast_ranks"]  # sent dense
    assert same(svd_decode(sim.algo.broadcast(sim.server, 3)), sim.server["global"])
