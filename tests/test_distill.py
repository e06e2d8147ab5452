"""Dual knowledge distillation: each term vanishes with its switch and has gradients only where docs/method.md (Dual knowledge distillation) says."""
import pytest
import torch
from torch import nn

from fedmic.distill import DistillSwitches, dual_kd_losses


def setup(seed=0, d_t=8, d_s=6, c=3, n=16):
    g = torch.Generator().manual_seed(seed)
    enc_t, head_t = nn.Linear(5, d_t), nn.Linear(d_t, c)
    enc_s, head_s = nn.Linear(5, d_s), nn.Linear(d_s, c)
    a_ts, a_st = nn.Linear(d_s, d_t, bias=False), nn.Linear(d_t, d_s, bias=False)
    x = torch.randn(n, 5, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    return (enc_t, head_t, enc_s, head_s, a_ts, a_st), x, y


def forward(mods, x, y, sw, alpha=1.0, beta=1.0, tau=2.0):
    enc_t, head_t, enc_s, head_s, a_ts, a_st = mods
    r_t, r_s = enc_t(x), enc_s(x)
    return dual_kd_losses(r_t, head_t(r_t), r_s, head_s(r_s), y, a_ts, a_st, alpha, beta, tau, sw)


def grads(loss, modules):
    for m in modules:
        m.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return [any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters()) for m in modules]


def test_terms_zero_when_switched_off():
    mods, x, y = setup()
    off = forward(mods, x, y, DistillSwitches(rep=False, dec=False, adaptive=False))
    for k in ("rep_t", "rep_s", "dec_t", "dec_s"):
        assert off[k].item() == 0.0
    assert torch.allclose(off["teacher"], off["ce_t"]) and torch.allclose(off["student"], off["ce_s"])
    on = forward(mods, x, y, DistillSwitches())
    for k in ("rep_t", "rep_s", "dec_t", "dec_s"):
        assert on[k].item() > 0


def test_alpha_beta_zero_reduce_to_cross_entropy():
    mods, x, y = setup()
    t = forward(mods, x, y, DistillSwitches(), alpha=0.0, beta=0.0)
    assert torch.allclose(t["teacher"], t["ce_t"]) and torch.allclose(t["student"], t["ce_s"])


def test_teacher_loss_reaches_only_teacher_and_a_ts():
    mods, x, y = setup()
    enc_t, head_t, enc_s, head_s, a_ts, a_st = mods
    t = forward(mods, x, y, DistillSwitches())
    assert grads(t["teacher"], [enc_t, head_t, a_ts, enc_s, head_s, a_st]) == [True, True, True, False, False, False]
    assert grads(t["student"], [enc_t, head_t, a_ts, enc_s, head_s, a_st]) == [False, False, False, True, True, True]


def test_decision_term_only_moves_heads_and_encoders_of_its_side():
    mods, x, y = setup()
    enc_t, head_t, enc_s, head_s, a_ts, a_st = mods
    t = forward(mods, x, y, DistillSwitches(rep=False, adaptive=False))
    assert grads(t["dec_t"], [enc_t, head_t, enc_s, head_s, a_ts]) == [True, True, False, False, False]
    assert grads(t["dec_s"], [enc_t, head_t, enc_s, head_s, a_st]) == [False, False, True, True, False]


def test_adaptive_weight_divides_distillation_by_detached_ce_sum():
    mods, x, y = setup()
    plain = forward(mods, x, y, DistillSwitches(adaptive=False))
    ada = forward(mods, x, y, DistillSwitches(adaptive=True))
    w = 1.0 / (plain["ce_t"] + plain["ce_s"]).item()
    expected = plain["ce_t"] + w * (plain["dec_t"] + plain["rep_t"])
    assert torch.allclose(ada["teacher"], expected, rtol=1e-5)


def test_kl_is_zero_for_identical_logits():
    from fedmic.distill import decision_kd
    z = torch.randn(4, 3)
    assert decision_kd(z, z.clone(), tau=3.0).abs().item() < 1e-6
    assert decision_kd(z, torch.randn(4, 3), tau=3.0).item() > 0


def test_adaptive_weight_is_capped_when_both_models_fit_the_batch():
    from fedmic.distill import adaptive_weight
    tiny = torch.tensor(1e-7)
    assert float(adaptive_weight(tiny, tiny, 10.0)) == 10.0  # uncapped it would be 5e6
    assert float(adaptive_weight(torch.tensor(0.3), torch.tensor(0.2), 10.0)) == pytest.approx(2.0)


@pytest.mark.parametrize("method", ["fedmic", "fedkd"])
def test_distillation_weight_stays_bounded_on_a_one_class_client(method, monkeypatch):
    """A client holding one class: both models drive CE towards 0 within a few steps. The weight
    reaches its cap and stops there, and training stays finite."""
    from fedmic import distill
    from fedmic.algorithms import ClientData, Context, get_algorithm
    from fedmic.algorithms import mutual
    from fedmic.methods import resolve_hp

    seen = []
    real = distill.dual_kd_losses

    def spy(*a, **k):
        out = real(*a, **k)
        seen.append(float(out["weight"]))
        return out

    monkeypatch.setattr(mutual, "dual_kd_losses", spy)
    ctx = Context(model="cnn", in_channels=1, n_classes=2, image_size=28, device=torch.device("cpu"), rounds=1,
                  local_epochs=100, batch_size=16, lr=0.1)
    torch.manual_seed(0)
    algo = get_algorithm(method)(ctx, resolve_hp(method, {}))
    server = algo.init_server()
    g = torch.Generator().manual_seed(0)
    data = ClientData(torch.rand(32, 1, 28, 28, generator=g), torch.zeros(32, dtype=torch.long))
    state, up, info = algo.local_update(0, algo.init_client(0), algo.downlink(server, 1, 0), data, 1,
                                        torch.Generator().manual_seed(1))
    assert max(seen) == pytest.approx(algo.hp.max_adaptive_weight) and min(seen) < 1.0
    assert up.first_nonfinite() is None and all(torch.isfinite(v).all() for v in state["teacher"].values())


# --- where the auxiliary matrices act (hp aux_on; docs/method.md 1.1) ---------------------------
def decision_maps(c=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    b_ts, b_st = nn.Linear(c, c, bias=False), nn.Linear(c, c, bias=False)
    with torch.no_grad():
        b_ts.weight.copy_(torch.eye(c) + 0.5 * torch.randn(c, c, generator=g))
        b_st.weight.copy_(torch.eye(c) + 0.5 * torch.randn(c, c, generator=g))
    return b_ts, b_st


def test_decision_maps_change_only_the_decision_terms_as_documented():
    from fedmic.distill import decision_kd
    mods, x, y = setup()
    enc_t, head_t, enc_s, head_s, a_ts, a_st = mods
    b_ts, b_st = decision_maps()
    r_t, r_s = enc_t(x), enc_s(x)
    z_t, z_s = head_t(r_t), head_s(r_s)
    plain = dual_kd_losses(r_t, z_t, r_s, z_s, y, a_ts, a_st, 1.0, 1.0, 2.0, DistillSwitches(adaptive=False))
    mapped = dual_kd_losses(r_t, z_t, r_s, z_s, y, a_ts, a_st, 1.0, 1.0, 2.0, DistillSwitches(adaptive=False),
                            b_ts=b_ts, b_st=b_st)
    # the teacher learns from the student's logits mapped into its decision space, and the reverse
    assert torch.allclose(mapped["dec_t"], decision_kd(z_t, b_ts(z_s.detach()), 2.0))
    assert torch.allclose(mapped["dec_s"], decision_kd(z_s, b_st(z_t.detach()), 2.0))
    assert not torch.allclose(mapped["dec_t"], plain["dec_t"]) and not torch.allclose(mapped["dec_s"], plain["dec_s"])
    for k in ("rep_t", "rep_s", "ce_t", "ce_s"):
        assert torch.equal(mapped[k], plain[k])
    # identity maps are the plain decision terms
    eye_ts, eye_st = nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        eye_ts.weight.copy_(torch.eye(3)), eye_st.weight.copy_(torch.eye(3))
    ident = dual_kd_losses(r_t, z_t, r_s, z_s, y, a_ts, a_st, 1.0, 1.0, 2.0, DistillSwitches(adaptive=False),
                           b_ts=eye_ts, b_st=eye_st)
    assert torch.allclose(ident["dec_t"], plain["dec_t"]) and torch.allclose(ident["dec_s"], plain["dec_s"])


def test_each_decision_map_learns_from_its_own_side_only():
    mods, x, y = setup()
    enc_t, head_t, enc_s, head_s, a_ts, a_st = mods
    b_ts, b_st = decision_maps()
    r_t, r_s = enc_t(x), enc_s(x)
    t = dual_kd_losses(r_t, head_t(r_t), r_s, head_s(r_s), y, a_ts, a_st, 1.0, 1.0, 2.0,
                       DistillSwitches(rep=False, adaptive=False), b_ts=b_ts, b_st=b_st)
    everything = [enc_t, head_t, b_ts, enc_s, head_s, b_st]
    assert grads(t["teacher"], everything) == [True, True, True, False, False, False]
    assert grads(t["student"], everything) == [False, False, False, True, True, True]


def fedmic(**hp):
    from fedmic.algorithms import Context, get_algorithm
    from fedmic.methods import resolve_hp
    ctx = Context(model="cnn", in_channels=1, n_classes=3, image_size=28, device=torch.device("cpu"), rounds=2,
                  local_epochs=1, batch_size=8, lr=0.05)
    torch.manual_seed(0)
    return get_algorithm("fedmic")(ctx, resolve_hp("fedmic", hp))


def client_data(n=16):
    from fedmic.algorithms import ClientData
    g = torch.Generator().manual_seed(3)
    return ClientData(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 3)


@pytest.mark.parametrize("aux_on, rep_maps, dec_maps", [("representation", True, False), ("decision", False, True),
                                                        ("both", True, True)])
def test_aux_on_places_the_matrices_in_the_loss(aux_on, rep_maps, dec_maps, monkeypatch):
    """What the training loop hands the loss: learnable representation maps, decision maps, or both."""
    from fedmic.algorithms import mutual
    seen = {}
    real = mutual.dual_kd_losses

    def spy(r_t, z_t, r_s, z_s, y, a_ts, a_st, *rest, **kw):
        seen.update(a_ts=a_ts, b_ts=rest[-2], b_st=rest[-1])
        return real(r_t, z_t, r_s, z_s, y, a_ts, a_st, *rest, **kw)

    monkeypatch.setattr(mutual, "dual_kd_losses", spy)
    algo = fedmic(aux_on=aux_on)
    data = client_data()
    state = algo.init_client(0, data)
    assert ("b_ts" in state) == dec_maps and ("b_st" in state) == dec_maps
    new, _, _ = algo.local_update(0, state, algo.downlink(algo.init_server(), 1, 0), data, 1,
                                  torch.Generator().manual_seed(1))
    assert isinstance(seen["a_ts"], nn.Linear) == rep_maps
    assert (seen["b_ts"] is not None) == dec_maps and (seen["b_st"] is not None) == dec_maps
    if dec_maps:  # the maps trained and travel in the client's state, never in the upload
        assert not torch.equal(new["b_ts"], torch.eye(3)) and not torch.equal(new["b_st"], torch.eye(3))
    if not rep_maps:
        assert torch.equal(new["a_ts"], state["a_ts"])  # unused: not trained


def test_aux_on_without_aux_matrices_or_with_unequal_widths_is_refused():
    from fedmic.methods import resolve_hp
    with pytest.raises(ValueError, match="set aux_matrices: true"):
        resolve_hp("fedmic", {"aux_on": "decision", "aux_matrices": False})
    with pytest.raises(ValueError, match="need auxiliary matrices between them"):
        resolve_hp("fedmic", {"aux_on": "decision", "teacher_width": 2.0})
    with pytest.raises(ValueError, match="teacher_start 'broadcast' copies the student"):
        resolve_hp("fedmic", {"teacher_start": "broadcast", "student_width": 0.5})
    assert resolve_hp("fedmic", {"aux_on": "both", "teacher_width": 2.0}).aux_on == "both"


def test_teacher_start_broadcast_takes_the_student_the_client_first_receives(monkeypatch):
    """teacher_start: broadcast. Until the client trains, its teacher is the first global student
    (what every party knows from the seed); in its first round the teacher starts from the student
    it receives (here a later global, as for a client first sampled in round 2), and only then."""
    algo = fedmic(teacher_start="broadcast")
    data = client_data()
    server = algo.init_server()
    state = algo.init_client(0, data)
    first = {k: v.clone() for k, v in server["global"].items()}
    assert all(torch.equal(state["teacher"][k], first[k]) for k in first) and "teacher_unset" in state
    own = fedmic().init_client(0, data)
    assert not all(torch.equal(own["teacher"][k], first[k]) for k in first)  # default: its own weights

    # a client first sampled later receives another student: its teacher starts from that one
    later = {k: v + 0.01 for k, v in first.items()}
    started = {}
    real = algo.teacher.load_state_dict

    def record(sd, *a, **k):
        started.update({k2: v.clone() for k2, v in sd.items()})
        return real(sd, *a, **k)

    monkeypatch.setattr(algo.teacher, "load_state_dict", record)
    sent = algo.downlink({**server, "global": later}, 2, 0)  # the dense global: it holds none yet
    new, _, _ = algo.local_update(0, state, sent, data, 2, torch.Generator().manual_seed(1))
    assert all(torch.equal(started[k], later[k]) for k in later)
    assert "teacher_unset" not in new
    started.clear()
    algo.local_update(0, new, sent, data, 3, torch.Generator().manual_seed(2))
    assert all(torch.equal(started[k], new["teacher"][k]) for k in later)  # later rounds: its own teacher
