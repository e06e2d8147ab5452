"""Baselines Local, FedProx, FedBN, FedPer and FedRep: each test pins the behaviour that
defines the method (what is sent, what stays local, what the local objective is)."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmic.algorithms import ClientData, Context, get_algorithm
from fedmic.methods import hp_defaults, resolve_hp
from fedmic.algorithms.base import is_bn_key
from fedmic.comm import Upload
from fedmic.comm import Payload
from fedmic.models import build_model
from conftest import DATA

N_CLASSES = 3


# --------------------------------------------------------------------------- helpers

def make_algo(name, model="cnn", hp=None, local_epochs=1, lr=0.05, batch_size=8):
    ctx = Context(model=model, in_channels=1, n_classes=N_CLASSES, image_size=28, device=torch.device("cpu"),
                  rounds=2, local_epochs=local_epochs, batch_size=batch_size, lr=lr)
    torch.manual_seed(0)
    return get_algorithm(name)(ctx, resolve_hp(name, dict(hp or {}), {"model": model}))


def toy_data(seed, n=24, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return ClientData(torch.randn(n, 1, 28, 28, generator=g) + shift, torch.randint(0, N_CLASSES, (n,), generator=g))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def state_of(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def reference_split(model_name):
    """Key sets computed from a fresh model, independently of the algorithms."""
    m = build_model(model_name, 1, N_CLASSES)
    sd = m.state_dict()
    head = {f"head.{k}" for k in m.head.state_dict()}
    bn = {k for k in sd if is_bn_key(m, k)}
    return m, sd, head, bn


# --------------------------------------------------------------------------- Local

def test_local_sends_nothing_and_clients_stay_independent():
    algo = make_algo("local")
    server = algo.init_server()
    c0, c1 = algo.init_client(0), algo.init_client(1)
    c1_start = copy.deepcopy(c1)
    down = algo.broadcast(server, 1)
    assert down.nbytes == 0 and not down.tensors
    new0, up0, info = algo.local_update(0, c0, down, toy_data(1), 1, gen())
    assert up0.nbytes == 0 and not up0.tensors and not up0.meta
    assert math.isfinite(info["loss"])
    assert not same(new0["model"], c0["model"]), "client 0 did not train"
    server = algo.aggregate(server, [Upload(0, up0, 24.0)], 1)
    assert algo.global_model(server) is None
    # Client 1 never trained: client 0's training must not reach its model.
    assert same(state_of(algo.personal_model(1, c1, algo.eval_broadcast(server))), c1_start["model"])
    assert same(state_of(algo.personal_model(0, new0, algo.eval_broadcast(server))), new0["model"])
    # The next update continues client 0's own model, not a fresh one.
    new0b, _, _ = algo.local_update(0, new0, algo.broadcast(server, 2), toy_data(1), 2, gen(1))
    fresh, _, _ = algo.local_update(0, c0, algo.broadcast(server, 2), toy_data(1), 2, gen(1))
    assert not same(new0b["model"], fresh["model"])


@pytest.mark.parametrize("name,model,hp", [("local", "cnn", {}), ("fedprox", "cnn", {}), ("fedbn", "cnn_bn", {}),
                                           ("fedper", "cnn", {}), ("fedrep", "cnn_bn", {"head_epochs": 1})])
def test_local_update_returns_new_state_and_leaves_old_untouched(name, model, hp):
    algo = make_algo(name, model=model, hp=hp)
    server = algo.init_server()
    old = algo.init_client(0)
    frozen_copy = copy.deepcopy(old)
    new, _, _ = algo.local_update(0, old, algo.broadcast(server, 1), toy_data(3), 1, gen())
    assert new is not old
    assert old.keys() == frozen_copy.keys()
    for k in old:
        assert same(old[k], frozen_copy[k]), f"{name}: local_update mutated the old state's {k!r}"
    for k in new:  # checkpointable: dicts of tensors only
        assert all(isinstance(t, torch.Tensor) for t in new[k].values())


# --------------------------------------------------------------------------- FedProx

def test_fedprox_mu_zero_equals_fedavg_update():
    avg, prox = make_algo("fedavg"), make_algo("fedprox", hp={"mu": 0.0})
    down = avg.broadcast(avg.init_server(), 1)
    assert same(down.tensors, prox.broadcast(prox.init_server(), 1).tensors)
    _, up_a, info_a = avg.local_update(0, {}, down, toy_data(5), 1, gen())
    _, up_p, info_p = prox.local_update(0, {}, down, toy_data(5), 1, gen())
    assert same(up_a.tensors, up_p.tensors) and info_a["loss"] == info_p["loss"]


def test_fedprox_pulls_weights_towards_global():
    avg, prox = make_algo("fedavg", local_epochs=3), make_algo("fedprox", hp={"mu": 1.0}, local_epochs=3)
    down = avg.broadcast(avg.init_server(), 1)
    g = {k: v for k, v in down.tensors.items()}

    def dist(up):
        return math.sqrt(sum(float((up.tensors[k] - g[k]).pow(2).sum()) for k in g))

    d_avg = dist(avg.local_update(0, {}, down, toy_data(5), 1, gen())[1])
    d_prox = dist(prox.local_update(0, {}, down, toy_data(5), 1, gen())[1])
    assert 0 < d_prox < 0.9 * d_avg, (d_prox, d_avg)


# --------------------------------------------------------------------------- FedBN

def test_fedbn_needs_batch_norm():
    with pytest.raises(ValueError, match="cnn_bn.*resnet18"):
        make_algo("fedbn", model="cnn")


def test_fedbn_uploads_no_bn_and_keeps_local_statistics():
    algo = make_algo("fedbn", model="cnn_bn")
    m, sd, _, bn = reference_split("cnn_bn")
    assert any(k.endswith("running_mean") for k in bn) and any(k.endswith("running_var") for k in bn)
    shared = set(sd) - bn
    server = algo.init_server()
    c0, c1 = algo.init_client(0), algo.init_client(1)
    down = algo.broadcast(server, 1)
    assert set(down.tensors) == shared
    # Different input statistics, so the two clients' BN statistics differ.
    new0, up0, _ = algo.local_update(0, c0, down, toy_data(1, shift=0.0), 1, gen())
    new1, up1, _ = algo.local_update(1, c1, down, toy_data(2, shift=2.0), 1, gen())
    for up in (up0, up1):
        assert set(up.tensors) == shared
        assert not any(is_bn_key(m, k) for k in up.tensors)
        assert up.nbytes == nbytes(sd[k] for k in shared)
    assert set(new0["bn"]) == bn
    rm = next(k for k in bn if k.endswith("running_mean"))
    assert not torch.equal(new0["bn"][rm], c0["bn"][rm]) and not torch.equal(new0["bn"][rm], new1["bn"][rm])
    own0 = copy.deepcopy(new0["bn"])
    server = algo.aggregate(server, [Upload(0, up0, 24.0), Upload(1, up1, 24.0)], 1)
    assert algo.global_model(server) is None
    assert set(algo.broadcast(server, 2).tensors) == shared
    p0 = state_of(algo.personal_model(0, new0, algo.eval_broadcast(server)))
    assert same({k: p0[k] for k in bn}, own0), "client 0's BN must be its own, not averaged"
    for k in shared:
        assert torch.allclose(p0[k], (up0.tensors[k] + up1.tensors[k]) / 2), k


def test_fedbn_next_update_starts_from_own_bn(monkeypatch):
    algo = make_algo("fedbn", model="cnn_bn")
    server = algo.init_server()
    down = algo.broadcast(server, 1)
    new0, _, _ = algo.local_update(0, algo.init_client(0), down, toy_data(1), 1, gen())
    algo.local_update(1, algo.init_client(1), down, toy_data(2, shift=2.0), 1, gen())  # leaves its BN in the worker
    monkeypatch.setattr(algo, "train_supervised", lambda *a, **k: 0.0)  # no training: what is loaded comes back
    again, up, _ = algo.local_update(0, new0, down, toy_data(1), 2, gen())
    assert same(again["bn"], new0["bn"])
    assert same(up.tensors, down.tensors)


# --------------------------------------------------------------------------- FedPer

def test_fedper_head_stays_local_and_bit_identical(monkeypatch):
    algo = make_algo("fedper")
    _, sd, head, _ = reference_split("cnn")
    enc = set(sd) - head
    server = algo.init_server()
    c0, c1 = algo.init_client(0), algo.init_client(1)
    down = algo.broadcast(server, 1)
    assert set(down.tensors) == enc
    new0, up0, _ = algo.local_update(0, c0, down, toy_data(1), 1, gen())
    new1, up1, _ = algo.local_update(1, c1, down, toy_data(2), 1, gen())
    for up in (up0, up1):
        assert set(up.tensors) == enc and up.nbytes == nbytes(sd[k] for k in enc)
    assert set(new0["head"]) == head and not same(new0["head"], c0["head"])
    head0 = copy.deepcopy(new0["head"])
    server = algo.aggregate(server, [Upload(0, up0, 30.0), Upload(1, up1, 10.0)], 1)
    down2 = algo.broadcast(server, 2)
    assert set(down2.tensors) == enc
    assert same(new0["head"], head0)
    p0 = state_of(algo.personal_model(0, new0, algo.eval_broadcast(server)))
    assert same({k: p0[k] for k in head}, head0)
    assert same({k: p0[k] for k in enc}, server["global"])
    for k in enc:
        assert torch.allclose(server["global"][k], 0.75 * up0.tensors[k] + 0.25 * up1.tensors[k], atol=1e-6), k
    # The next update starts from this client's own head and the new global encoder.
    monkeypatch.setattr(algo, "train_supervised", lambda *a, **k: 0.0)
    again, up, _ = algo.local_update(0, new0, down2, toy_data(1), 2, gen())
    assert same(again["head"], head0) and same(up.tensors, down2.tensors)


# --------------------------------------------------------------------------- FedRep

def test_fedrep_trains_head_then_encoder():
    algo = make_algo("fedrep", model="cnn_bn", hp={"head_epochs": 2}, local_epochs=1, batch_size=8)
    _, sd, head, _ = reference_split("cnn_bn")
    enc = set(sd) - head
    server = algo.init_server()
    down = algo.broadcast(server, 1)
    snaps = []  # (encoder state, head state) before every forward pass of the head
    enc_calls = []
    hooks = [algo.worker.head.register_forward_pre_hook(
                 lambda mod, inp: snaps.append((state_of(algo.worker.encoder), state_of(algo.worker.head)))),
             algo.worker.encoder.register_forward_pre_hook(lambda mod, inp: enc_calls.append(1))]
    try:
        new, up, info = algo.local_update(0, algo.init_client(0), down, toy_data(4, n=24), 1, gen())
    finally:
        for h in hooks:
            h.remove()
    batches = 3  # 24 images, batch 8
    n_head, n_body = 2 * batches, 1 * batches
    assert len(snaps) == n_head + n_body
    # the frozen encoder's representations are computed once for all head epochs
    assert len(enc_calls) == 1 + n_body
    final_enc = {k[len("encoder."):]: v for k, v in up.tensors.items()}
    final_head = {k[len("head."):]: v for k, v in new["head"].items()}
    snaps.append((final_enc, final_head))
    # Head phase: encoder (weights and BN statistics) fixed, head moving. (The hook fires
    # after the encoder's forward pass, so snapshot n_head already holds the first body
    # batch's BN statistics.)
    for e, _ in snaps[:n_head]:
        assert same(e, snaps[0][0])
    assert not same(snaps[n_head][1], snaps[0][1])
    # Encoder phase: head fixed, encoder moving.
    for _, h in snaps[n_head:]:
        assert same(h, snaps[n_head][1])
    assert not same(snaps[-1][0], snaps[n_head][0])
    assert set(up.tensors) == enc and up.nbytes == nbytes(sd[k] for k in enc)
    assert math.isfinite(info["loss"]) and math.isfinite(info["loss_head"])
    assert all(p.requires_grad for p in algo.worker.parameters()), "frozen parameters must be released"


# --------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def breast(tmp_path_factory):
    from fedmic.data.medmnist import load_dataset
    from fedmic.data.partition import make_partition, save_partition
    data = load_dataset("breastmnist", DATA)
    labels = {s: data.split(s)[1].numpy() for s in ("train", "val", "test")}
    part = make_partition("dirichlet_label", labels, 3, 0.5, 0, 10, n_classes=data.n_classes,
                          dataset="breastmnist", dataset_md5=data.info.md5(28))
    path = tmp_path_factory.mktemp("part") / "breast.json"
    save_partition(part, path)
    return path, data.n_classes


def simulate(breast, out_dir, method, model="cnn", hp=None):
    from fedmic.config import RunConfig
    from fedmic.engine import Simulation
    path, _ = breast
    # One thread: steadier on a loaded 2-core machine; the global setting is restored after.
    cfg = RunConfig(dataset="breastmnist", method=method, model=model, hp=dict(hp or {}), lam=0.5, clients=3,
                    rounds=2, progress=False, device="cpu", checkpoint_every=0, min_size=10, threads=1)
    threads = torch.get_num_threads()
    try:
        sim = Simulation(cfg, path, DATA)
        out = Path(out_dir) / f"{method}.json"
        sim.run(out)
    finally:
        torch.set_num_threads(threads)
    assert out.exists()
    return sim, json.loads(out.read_text())


def _shared_bytes(method, n_classes):
    model = "cnn_bn" if method == "fedbn" else "cnn"
    m = build_model(model, 1, n_classes)
    sd = m.state_dict()
    head = {f"head.{k}" for k in m.head.state_dict()}
    return model, {
        "local": 0,
        "fedprox": nbytes(sd.values()),
        "fedbn": nbytes(v for k, v in sd.items() if not is_bn_key(m, k)),
        "fedper": nbytes(v for k, v in sd.items() if k not in head),
        "fedrep": nbytes(v for k, v in sd.items() if k not in head),
    }[method]


# FedProx runs with mu=0 here so that the same run also shows it is FedAvg bit for bit;
# FedRep with 2 head epochs to keep the file fast (the phase test covers the split).
E2E_HP = {"fedprox": {"mu": 0.0}, "fedrep": {"head_epochs": 2}}


@pytest.fixture(scope="module")
def fedavg_run(breast, tmp_path_factory):
    return simulate(breast, tmp_path_factory.mktemp("fedavg"), "fedavg")


@pytest.mark.parametrize("method", ["local", "fedprox", "fedbn", "fedper", "fedrep"])
def test_end_to_end(breast, tmp_path, method, fedavg_run):
    model, per_client = _shared_bytes(method, breast[1])
    hp = E2E_HP.get(method, {})
    sim, run = simulate(breast, tmp_path, method, model, hp)
    assert run["config"]["method"] == method
    assert run["config"]["hp"] == {**hp_defaults(method), **hp}
    assert len(run["history"]) == 2
    for h in run["history"]:
        assert h["uplink_bytes"] == [per_client] * len(h["sampled"])
        assert h["downlink_bytes"] == [per_client] * len(h["sampled"])
    assert math.isfinite(run["summary"]["personal"]["acc"])
    # Only FedProx has a global model; the personalised methods have none to score.
    assert ("global" in run["summary"]) == (method == "fedprox")
    if method == "fedprox":  # mu = 0: the same weights and the same history as FedAvg
        sim_a, run_a = fedavg_run
        assert same(sim_a.server["global"], sim.server["global"])
        assert run_a["history"] == run["history"]
