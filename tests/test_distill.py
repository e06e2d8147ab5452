"""Dual knowledge distillation: each term vanishes with its switch and has gradients only where SPEC 1.1 says."""
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
    algo = get_algorithm(method)(ctx)
    server = algo.init_server()
    g = torch.Generator().manual_seed(0)
    data = ClientData(torch.rand(32, 1, 28, 28, generator=g), torch.zeros(32, dtype=torch.long))
    state, up, info = algo.local_update(0, algo.init_client(0), algo.downlink(server, 1, 0), data, 1,
                                        torch.Generator().manual_seed(1))
    assert max(seen) == pytest.approx(algo.hp["max_adaptive_weight"]) and min(seen) < 1.0
    assert up.first_nonfinite() is None and all(torch.isfinite(v).all() for v in state[algo.private_name].values())
