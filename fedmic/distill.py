"""Dual knowledge distillation losses (docs/method.md 1.1).

Each model learns from the other's detached outputs, so the teacher loss has gradients only
in the teacher (and A_TS) and the student loss only in the student (and A_ST). Summing both
losses and calling backward once therefore gives each side exactly its own gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class DistillSwitches:
    rep: bool = True        # representation-level distillation
    dec: bool = True        # decision-level distillation
    adaptive: bool = True   # divide distillation terms by (CE_T + CE_S), detached and capped (FedKD)


def decision_kd(z_learner: torch.Tensor, z_source: torch.Tensor, tau: float, proj=None) -> torch.Tensor:
    """tau^2 KL(softmax(proj(z_source)/tau) || softmax(z_learner/tau)); the source is detached
    before `proj` (a learnable map of the logits, or None), so the map learns from the learner's
    loss and the source model gets no gradient."""
    source = z_source.detach()
    target = F.softmax((source if proj is None else proj(source)) / tau, dim=1)
    return tau * tau * F.kl_div(F.log_softmax(z_learner / tau, dim=1), target, reduction="batchmean")


def representation_kd(r_learner: torch.Tensor, r_source: torch.Tensor, proj) -> torch.Tensor:
    """MSE(r_learner, proj(r_source)), r_source detached; proj is A (learnable) or identity."""
    return F.mse_loss(r_learner, proj(r_source.detach()))


def _identity(r: torch.Tensor) -> torch.Tensor:
    return r


def adaptive_weight(ce_t: torch.Tensor, ce_s: torch.Tensor, max_weight: float) -> torch.Tensor:
    """FedKD's adaptive weight 1 / (CE_T + CE_S), detached, capped at `max_weight`. Without the
    cap it grows without bound as both models fit the batch (a one-class client reaches CE ~ 1e-6
    within a few steps, and the distillation terms then scale by ~1e6)."""
    return 1.0 / (ce_t + ce_s).detach().clamp_min(1.0 / max_weight)


def dual_kd_losses(r_t, z_t, r_s, z_s, y, a_ts, a_st, alpha: float, beta: float, tau: float,
                   sw: DistillSwitches, max_weight: float = 10.0, b_ts=None, b_st=None) -> dict[str, torch.Tensor]:
    """All terms of the teacher and student losses. `a_ts` maps student representations into
    the teacher's space, `a_st` the reverse (callables; identity when auxiliary matrices are off).
    `a_st=None`: one shared projection (FedKD): both directions compare in the teacher's space,
    the student's term being MSE(a_ts(r_s), r_t) with r_t detached. `b_ts`, `b_st`: the same for
    the decision level (B_TS, B_ST: maps of the logits, student's into the teacher's and the reverse; None:
    the logits are compared as they are, docs/method.md 1.1). `weight` is returned too (the
    adaptive weight, or 1), so callers and tests can see it."""
    ce_t = F.cross_entropy(z_t, y)
    ce_s = F.cross_entropy(z_s, y)
    zero = z_t.new_zeros(())
    dec_t = decision_kd(z_t, z_s, tau, b_ts) if sw.dec else zero
    dec_s = decision_kd(z_s, z_t, tau, b_st) if sw.dec else zero
    rep_t = representation_kd(r_t, r_s, a_ts) if sw.rep else zero
    if a_st is None:
        rep_s = representation_kd(a_ts(r_s), r_t, _identity) if sw.rep else zero
    else:
        rep_s = representation_kd(r_s, r_t, a_st) if sw.rep else zero
    weight = adaptive_weight(ce_t, ce_s, max_weight) if sw.adaptive else 1.0
    teacher = ce_t + weight * (alpha * dec_t + beta * rep_t)
    student = ce_s + weight * (alpha * dec_s + beta * rep_s)
    return {"teacher": teacher, "student": student, "ce_t": ce_t, "ce_s": ce_s, "weight": weight,
            "dec_t": dec_t, "dec_s": dec_s, "rep_t": rep_t, "rep_s": rep_s}
