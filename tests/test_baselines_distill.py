"""Ditto, MOON, FML, FedKD and FedProto: each test checks the behaviour that defines the method
(what is trained, what travels, how the server combines it), then one tiny end-to-end run each."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pathlib import Path

from fedmic.algorithms import ClientData, Context, get_algorithm
from fedmic.algorithms.base import clone_state
from fedmic.comm import Upload
from fedmic.algorithms.moon import model_contrastive_loss
from fedmic.comm import Payload, apply_delta, state_delta, svd_decode
from fedmic.distill import DistillSwitches, dual_kd_losses
from fedmic.methods import hp_defaults, resolve_hp
from conftest import DATA

FLAG = "breastmnist"
METHODS = ("ditto", "moon", "fml", "fedkd", "fedproto")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # One thread is several times faster on a busy 2-core box (runs below set threads=1 too);
    # the rest of the session gets its thread count back.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    from fedmic.data.medmnist import load_dataset
    return load_dataset(FLAG, DATA)


@pytest.fixture(scope="module")
def small(data) -> ClientData:
    """64 real training images of both classes: enough for a few real SGD steps."""
    x, y = data.split("train")
    return ClientData(x[:64], y[:64])


@pytest.fixture(scope="module")
def partition(data, tmp_path_factory) -> Path:
    from fedmic.data.partition import make_partition, save_partition
    labels = {s: data.split(s)[1].numpy() for s in ("train", "val", "test")}
    part = make_partition("dirichlet_label", labels, 3, 0.5, 0, 10, n_classes=data.n_classes,
                          dataset=FLAG, dataset_md5=data.info.md5(28))
    return save_partition(part, tmp_path_factory.mktemp("part") / "part.json")


def make(method: str, rounds: int = 2, **hp):
    """An algorithm on the run's model (cnn, 1 channel, 2 classes), the same weights for every call."""
    ctx = Context(model="cnn", in_channels=1, n_classes=2, image_size=28, device=torch.device("cpu"),
                  rounds=rounds, local_epochs=1, batch_size=32, lr=0.05)
    torch.manual_seed(0)
    return get_algorithm(method)(ctx, resolve_hp(method, hp))


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dense_bytes(model: torch.nn.Module) -> int:
    return sum(v.numel() * v.element_size() for v in model.state_dict().values())


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def dist(a: dict, b: dict) -> float:
    return math.sqrt(sum(float((a[k] - b[k]).pow(2).sum()) for k in a if a[k].is_floating_point()))


def fedavg_upload(small, seed: int = 1) -> dict:
    avg = make("fedavg")
    _, up, _ = avg.local_update(0, {}, avg.broadcast(avg.init_server(), 1), small, 1, gen(seed))
    return up.tensors


# --- Ditto -----------------------------------------------------------------------------------
def test_ditto_personal_model_is_pulled_towards_the_global(small):
    one_batch = ClientData(small.x[:32], small.y[:32])
    distances = {}
    for lam in (0.0, 5.0):
        algo = make("ditto", lam=lam, personal_epochs=4)
        server = algo.init_server()
        torch.manual_seed(7)  # a personal model far from the global one
        state = {"personal": clone_state(algo.ctx.make_model())}
        new, _, _ = algo.local_update(0, state, algo.broadcast(server, 1), one_batch, 1, gen())
        w = server["global"]
        distances[lam] = dist({k: new["personal"][k] for k in w}, w)
        assert algo.personal_model(0, new, algo.eval_broadcast(server)).state_dict()["head.weight"].equal(new["personal"]["head.weight"])
    # lr * lam = 0.25 per step over 4 steps: the prox term alone shrinks the gap to 0.75^4 ~ 0.32 of it.
    assert distances[5.0] < 0.5 * distances[0.0]


def test_ditto_uploads_the_global_model_only(small):
    algo = make("ditto")
    server = algo.init_server()
    state = algo.init_client(0)
    new, up, _ = algo.local_update(0, state, algo.broadcast(server, 1), small, 1, gen())
    assert up.meta == {} and set(up.tensors) == set(algo.worker.state_dict())
    assert up.nbytes == dense_bytes(algo.worker)
    # The global half is FedAvg's update on the same batches; the personal model is not sent.
    assert same(up.tensors, fedavg_upload(small))
    assert not torch.equal(new["personal"]["head.weight"], up.tensors["head.weight"])
    # old state untouched (it is w^0, the global model's start)
    assert new is not state and same(state["personal"], {k: server["global"][k] for k in state["personal"]})


# --- MOON ------------------------------------------------------------------------------------
def test_moon_contrastive_loss_matches_hand_computation():
    z = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z_glob = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    z_prev = torch.tensor([[0.0, 3.0], [1.0, 1.0]])
    tau = 0.5
    # Row 1: sim(z, z_glob) = 1, sim(z, z_prev) = 0. Row 2: 1/sqrt(2) and 1.
    rows = [(1.0, 0.0), (1 / math.sqrt(2), 1.0)]
    hand = sum(-math.log(math.exp(a / tau) / (math.exp(a / tau) + math.exp(b / tau))) for a, b in rows) / 2
    assert model_contrastive_loss(z, z_glob, z_prev, tau).item() == pytest.approx(hand, rel=1e-6)
    # The negative pair equal to the positive one: the term is log 2 whatever z is.
    assert model_contrastive_loss(z, z_glob, z_glob, tau).item() == pytest.approx(math.log(2), rel=1e-6)


def test_moon_contrast_needs_a_previous_model_that_differs(small):
    ref = fedavg_upload(small)
    algo = make("moon", mu=1.0)
    server = algo.init_server()
    down = algo.broadcast(server, 1)
    # First participation: the global model stands in for the previous one, zero gradient.
    first, up1, _ = algo.local_update(0, {}, down, small, 1, gen())
    assert all(torch.allclose(up1.tensors[k], ref[k], atol=1e-6) for k in ref)
    assert up1.nbytes == dense_bytes(algo.worker) and same(first["prev"], up1.tensors)
    # With the client's previous local model as negative, the update moves away from FedAvg's.
    torch.manual_seed(3)
    _, up2, _ = algo.local_update(0, {"prev": clone_state(algo._projected(algo.ctx.make_model()))}, down, small, 1,
                                  gen())
    assert max(float((up2.tensors[k] - ref[k]).abs().max()) for k in ref) > 1e-4


def test_moon_with_mu_zero_is_fedavg_bit_for_bit(partition, tmp_path):
    """mu = 0: the same encoder and classifier, trained the same way; MOON only also sends its
    (untrained) projection head."""
    from fedmic.config import RunConfig
    from fedmic.engine import Simulation
    runs = {}
    for method, hp in (("fedavg", {}), ("moon", {"mu": 0.0})):
        cfg = RunConfig(dataset=FLAG, method=method, hp=hp, lam=0.5, clients=3, rounds=2, progress=False,
                        checkpoint_every=0, threads=1)
        sim = Simulation(cfg, partition, str(DATA))
        res = sim.run(tmp_path / f"{method}.json")
        runs[method] = (res["history"], sim.server["global"])
    head_bytes = sum(v.numel() * 4 for k, v in runs["moon"][1].items() if k.startswith("proj."))
    for h_moon, h_avg in zip(runs["moon"][0], runs["fedavg"][0]):
        for key in ("uplink_bytes", "downlink_bytes"):
            assert h_moon.pop(key) == [b + head_bytes for b in h_avg.pop(key)]
        assert h_moon == h_avg  # losses and every metric of every round
    assert same({k: runs["moon"][1][k] for k in runs["fedavg"][1]}, runs["fedavg"][1])


def test_moon_projection_head_is_in_the_loss_only(small):
    algo = make("moon", mu=1.0)
    server = algo.init_server()
    assert {k for k in server["global"] if k.startswith("proj.")} == {"proj.0.weight", "proj.0.bias",
                                                                      "proj.2.weight", "proj.2.bias"}
    assert algo.worker.proj[2].out_features == 256
    torch.manual_seed(3)
    prev = clone_state(algo._projected(algo.ctx.make_model()))
    new, up, _ = algo.local_update(0, {"prev": prev}, algo.broadcast(server, 1), small, 1, gen())
    # the contrastive term trains the head...
    assert not torch.equal(up.tensors["proj.2.weight"], server["global"]["proj.2.weight"])
    # ...and compares projections, which (unlike post-ReLU representations, whose cosine is never
    # below 0) can point away from the negative model's
    algo.prev.load_state_dict(prev)
    with torch.no_grad():
        cos_z = F.cosine_similarity(algo.worker.project(small.x), algo.prev.project(small.x), dim=1)
        cos_r = F.cosine_similarity(algo.worker.encoder(small.x), algo.prev.encoder(small.x), dim=1)
    assert float(cos_z.min()) < 0 <= float(cos_r.min())
    # ...but the scored model's logits do not depend on it
    m = algo.global_model({"global": {**up.tensors, "proj.2.weight": torch.zeros_like(up.tensors["proj.2.weight"])}})
    with torch.no_grad():
        assert torch.equal(m(small.x), algo.worker.head(algo.worker.encoder(small.x)))


# --- FML -------------------------------------------------------------------------------------
def test_fml_shared_model_is_fedavg_without_kl_and_uploads_dense(small):
    ref = fedavg_upload(small)
    algo = make("fml", alpha=1.0, beta=1.0)
    server = algo.init_server()
    state = algo.init_client(0)
    _, up, _ = algo.local_update(0, state, algo.broadcast(server, 1), small, 1, gen())
    assert same(up.tensors, ref)  # the same batches, the same steps: FedAvg's update exactly
    assert up.meta == {} and up.nbytes == dense_bytes(algo.worker)
    # With the paper's weights the student (meme model) learns from the teacher (local model) too.
    mutual = make("fml")
    _, up, _ = mutual.local_update(0, state, mutual.broadcast(mutual.init_server(), 1), small, 1, gen())
    assert max(float((up.tensors[k] - ref[k]).abs().max()) for k in ref) > 1e-4


def test_fml_each_kl_term_reaches_only_its_learner(small):
    # alpha = 1: the teacher's (local model's) loss is CE only, so the student's KL (the meme
    # model learns from the local one) must leave the teacher exactly as training it alone would.
    algo = make("fml", alpha=1.0, beta=0.5)
    server = algo.init_server()
    state = algo.init_client(0)
    new, _, info = algo.local_update(0, state, algo.broadcast(server, 1), small, 1, gen())
    alone = make("fedavg")
    alone.worker.load_state_dict(state["teacher"])
    alone.train_supervised(alone.worker, small, gen())
    assert same(new["teacher"], clone_state(alone.worker))
    assert math.isfinite(info["loss"]) and math.isfinite(info["loss_teacher"])
    assert same(algo.personal_model(0, new, algo.eval_broadcast(server)).state_dict(), new["teacher"])


# --- FedKD -----------------------------------------------------------------------------------
def test_fedkd_single_projection_serves_both_directions():
    torch.manual_seed(0)
    r_t, r_s = torch.randn(4, 3, requires_grad=True), torch.randn(4, 2, requires_grad=True)
    z_t, z_s = torch.randn(4, 2), torch.randn(4, 2)
    proj = torch.nn.Linear(2, 3, bias=False)
    sw = DistillSwitches(rep=True, dec=False, adaptive=False)
    terms = dual_kd_losses(r_t, z_t, r_s, z_s, torch.tensor([0, 1, 0, 1]), proj, None, 1.0, 1.0, 1.0, sw)
    assert terms["rep_s"].item() == pytest.approx(F.mse_loss(proj(r_s), r_t).item())
    assert terms["rep_t"].item() == pytest.approx(terms["rep_s"].item())
    terms["rep_s"].backward()  # the student's term trains the student and A_TS, never the teacher
    assert r_t.grad is None and r_s.grad is not None and proj.weight.grad is not None


def test_fedkd_teacher_is_larger_than_the_student():
    algo = make("fedkd")  # the paper's mentor (teacher) and mentee (student)
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(algo.teacher) > 3 * n(algo.student)
    assert algo.a_ts.weight.shape == (algo.teacher.rep_dim, algo.student.rep_dim) and algo.a_st is None
    # the teacher is the CNN every other arm evaluates
    assert n(algo.teacher) == n(make("fedavg").worker)


def test_fedkd_uploads_a_factorised_update(small):
    algo = make("fedkd")
    server = algo.init_server()
    state = algo.init_client(0)
    new, up, info = algo.local_update(0, state, algo.downlink(server, 1, 0), small, 1, gen())
    delta = state_delta(clone_state(algo.student), server["global"])
    assert up.meta and info["ranks"]
    assert up.nbytes < dense_bytes(algo.student) // 10
    rebuilt = svd_decode(up)
    for name in up.meta:  # each factorised layer keeps >= E_1 = 0.95 of its update's energy
        err = float((rebuilt[name] - delta[name]).pow(2).sum())
        assert err <= (1 - 0.95) * float(delta[name].pow(2).sum()) + 1e-12
    for name in set(delta) - set(up.meta):  # biases travel dense
        assert torch.allclose(rebuilt[name], delta[name], atol=1e-7)
    assert same(algo.personal_model(0, new, algo.eval_broadcast(server)).state_dict(), new["teacher"])


def test_fedkd_server_rebuilds_rank_k_updates_exactly():
    for energy in (1.0, 1 - 1e-9):
        algo = make("fedkd", energy_start=energy, energy_end=energy)
        server = algo.init_server()
        shapes = {k: v.shape for k, v in server["global"].items()}
        rows, cols = shapes["encoder.fc.weight"]
        torch.manual_seed(5)
        deltas, uploads = [], []
        for c, w in enumerate((1.0, 2.0, 3.0)):
            d = {k: torch.zeros(s) for k, s in shapes.items()}
            d["encoder.fc.weight"] = torch.randn(rows, 2) @ torch.randn(2, cols)  # rank 2
            d["head.bias"] = torch.randn(2)
            deltas.append(d)
            uploads.append(Upload(c, algo.channel.upload(apply_delta(server["global"], d), server["global"], 1), w))
        new = algo.aggregate(server, uploads, 1)
        avg = {k: sum(u.weight * d[k] for d, u in zip(deltas, uploads)) / 6.0 for k in shapes}
        want = apply_delta(server["global"], avg)
        # Exact up to float32 round-off of the SVD (relative 1e-4 of the update's scale).
        scale = float(avg["encoder.fc.weight"].abs().max())
        assert max(float((new["global"][k] - want[k]).abs().max()) for k in want) <= 1e-4 * scale
        if energy < 1:  # kept rank <= 6 (three rank-2 updates): sent as factors, still exact
            assert 0 < uploads[0].payload.meta["encoder.fc.weight"][-1] <= 2
            assert 0 < new["updates"][0].meta["encoder.fc.weight"][-1] <= 6
            assert new["updates"][0].nbytes < dense_bytes(algo.student) // 10


def test_fedkd_downlink_is_the_factorised_global_update_by_default(small, data):
    x, y = data.split("train")
    clients = [small, ClientData(x[64:128], y[64:128])]
    sizes = {}
    for downlink in ("delta", "params"):
        algo = make("fedkd", rounds=3, downlink=downlink)
        server = algo.init_server()
        out = [algo.local_update(c, algo.init_client(c), algo.downlink(server, 1, c), clients[c], 1, gen(c))
               for c in range(2)]
        server = algo.aggregate(server, [Upload(c, up, 64.0) for c, (_, up, _) in enumerate(out)], 1)
        down2 = algo.downlink(server, 2, 0)
        sizes[downlink] = down2.nbytes
        s2, _, _ = algo.local_update(0, out[0][0], down2, small, 2, gen())
        if downlink == "delta":  # the client rebuilds exactly the server's global student
            assert same(s2["held"]["global"], server["global"])
    assert sizes["delta"] < dense_bytes(make("fedkd").student) // 10 < sizes["params"]


# --- FedProto --------------------------------------------------------------------------------
def test_fedproto_uploads_class_prototypes_only(small):
    algo = make("fedproto")
    server = algo.init_server()
    state = algo.init_client(0)
    assert algo.broadcast(server, 1).nbytes == 0  # no global prototypes before round 1
    new, up, _ = algo.local_update(0, state, algo.broadcast(server, 1), small, 1, gen())
    # No weight travels: prototypes, their class ids and counts, nothing else.
    assert set(up.tensors) == {"protos", "classes", "counts"} and up.meta == {}
    present = torch.unique(small.y)
    d = algo.worker.rep_dim
    assert up.nbytes == len(present) * d * 4 + 2 * len(present) * 4
    # Each prototype is the class mean of the trained encoder's representations.
    model = algo.ctx.make_model()
    model.load_state_dict(new["model"])
    model.eval()
    with torch.no_grad():
        r = model.encoder(small.x)
    for i, c in enumerate(up.tensors["classes"].tolist()):
        assert torch.allclose(up.tensors["protos"][i], r[small.y == c].mean(0), atol=1e-5)
        assert up.tensors["counts"][i].item() == int((small.y == c).sum())


def test_fedproto_server_prototype_is_the_count_weighted_mean():
    algo = make("fedproto")
    server = algo.init_server()
    d = algo.worker.rep_dim
    torch.manual_seed(0)
    a, b = torch.randn(2, d), torch.randn(1, d)
    ups = [Payload({"protos": a, "classes": torch.tensor([0, 1], dtype=torch.int32),
                    "counts": torch.tensor([3, 10], dtype=torch.int32)}),
           Payload({"protos": b, "classes": torch.tensor([0], dtype=torch.int32),
                    "counts": torch.tensor([1], dtype=torch.int32)})]
    new = algo.aggregate(server, [Upload(c, p, 99.0) for c, p in enumerate(ups)], 1)
    assert torch.allclose(new["protos"][0], (3 * a[0] + 1 * b[0]) / 4, atol=1e-6)
    assert torch.allclose(new["protos"][1], a[1], atol=1e-6)
    assert new["counts"].tolist() == [4, 10]
    down = algo.broadcast(new, 2)
    assert down.nbytes == 2 * d * 4 + 2 * 4
    # Class 1 absent from the next round's uploads: its global prototype stays.
    again = algo.aggregate(new, [Upload(1, ups[1], 1.0)], 2)
    assert torch.allclose(again["protos"][0], b[0], atol=1e-6) and torch.equal(again["protos"][1], new["protos"][1])


def test_fedproto_regulariser_uses_the_received_prototypes(small):
    algo = make("fedproto", lam=1.0)
    server = algo.init_server()
    state = algo.init_client(0)
    d = algo.worker.rep_dim
    protos = Payload({"protos": torch.full((2, d), 3.0), "classes": torch.tensor([0, 1], dtype=torch.int32)})
    plain, _, _ = make("fedproto", lam=0.0).local_update(0, state, protos, small, 2, gen())
    pulled, _, _ = algo.local_update(0, state, protos, small, 2, gen())
    none, _, _ = algo.local_update(0, state, Payload(), small, 2, gen())
    assert same(none["model"], plain["model"])  # nothing received: CE only
    assert not same(pulled["model"], plain["model"])
    # lam = 0 trains exactly as the Local baseline, from the same start.
    local = make("local")
    alone, _, _ = local.local_update(0, local.init_client(0), Payload(), small, 2, gen())
    assert same(alone["model"], plain["model"])


def test_fedproto_predicts_the_nearest_global_prototype(small):
    algo = make("fedproto")
    state = algo.init_client(0)
    model = algo.ctx.make_model()
    model.load_state_dict(state["model"])
    with torch.no_grad():
        r = model.encoder(small.x)
    protos = torch.stack([r[:8].mean(0), r[8:16].mean(0)])
    shared = algo.eval_broadcast({"protos": protos, "counts": torch.tensor([5, 5])})
    m = algo.personal_model(0, state, shared)
    with torch.no_grad():
        pred = m(small.x).argmax(1)
    assert torch.equal(pred, torch.cdist(r, protos).argmin(1))
    head = make("fedproto", inference="head").personal_model(0, state, shared)
    with torch.no_grad():
        assert torch.equal(head(small.x), model(small.x))


# --- end to end ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_end_to_end_run(method, partition, data, tmp_path):
    from fedmic.config import RunConfig
    from fedmic.data.partition import load_partition
    from fedmic.engine import Simulation
    cfg = RunConfig(dataset=FLAG, method=method, lam=0.5, clients=3, rounds=2, progress=False,
                    checkpoint_every=0, threads=1)
    sim = Simulation(cfg, partition, str(DATA))
    out = tmp_path / "run.json"
    sim.run(out)
    res = json.loads(out.read_text())
    assert res["config"]["hp"] == hp_defaults(method)
    for h in res["history"]:
        ev = h["eval"]["personal"]["test"]
        assert math.isfinite(ev["acc"]) and 0 <= ev["acc"] <= 1
    dense = dense_bytes(sim.ctx.make_model())
    up = [h["uplink_bytes"] for h in res["history"]]
    down = [h["downlink_bytes"][0] for h in res["history"]]
    head = sum(v.numel() * 4 for k, v in sim.server.get("global", {}).items() if k.startswith("proj."))
    if method in ("ditto", "fml"):
        assert up == [[dense] * 3] * 2 and down == [dense] * 2
    elif method == "moon":
        assert up == [[dense + head] * 3] * 2 and down == [dense + head] * 2
    elif method == "fedkd":
        assert all(0 < b < dense // 10 for r in up for b in r)
        # default downlink "delta": the dense student on first contact, then the factorised update
        student = sum(v.numel() * 4 for v in sim.server["global"].values()) + 4
        assert down[0] == student and 0 < down[1] < student // 10 and res["history"][0]["upload_ranks"]
    else:
        y = data.split("train")[1].numpy()
        train = load_partition(partition).indices["train"]
        present = [len(np.unique(y[np.asarray(i, dtype=np.int64)])) for i in train]
        assert up == [[n * 512 * 4 + 2 * n * 4 for n in present]] * 2
        assert down[0] == 0 and res["params"]["shared"] == 0 and "global" not in res["history"][-1]["eval"]


def test_fedproto_predicts_among_its_own_classes_by_default(small):
    """The authors' inference: a client compares a sample only with the global prototypes of the
    classes in its own training data; `all_prototypes` compares with every class."""
    one_class = ClientData(small.x[:16], torch.ones(16, dtype=torch.long))  # this client holds class 1 only
    algo = make("fedproto")
    state = algo.init_client(0, one_class)
    assert state["classes"].tolist() == [False, True]
    model = algo.ctx.make_model()
    model.load_state_dict(state["model"])
    with torch.no_grad():
        r = model.encoder(small.x)
    # class 0's prototype sits on every sample, so the all-class rule predicts 0 everywhere
    protos = torch.stack([r.mean(0), r.mean(0) + 100.0])
    shared = algo.eval_broadcast({"protos": protos, "counts": torch.tensor([5, 5])})
    with torch.no_grad():
        own = algo.personal_model(0, state, shared)(small.x).argmax(1)
    assert own.tolist() == [1] * len(small.x)
    every = make("fedproto", inference="all_prototypes")
    with torch.no_grad():
        pred = every.personal_model(0, every.init_client(0, one_class), shared)(small.x).argmax(1)
    assert torch.equal(pred, torch.cdist(r, protos).argmin(1)) and pred.tolist() == [0] * len(small.x)
    # the classes it holds are kept through training (they are its data's, not the round's)
    new, _, _ = algo.local_update(0, state, Payload(), one_class, 1, gen())
    assert torch.equal(new["classes"], state["classes"])
