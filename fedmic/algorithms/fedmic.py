"""FedMIC (Ren et al., 2024): dual knowledge distillation between a private teacher and a shared
student through two auxiliary matrices (docs/method.md 1.1; `aux_on` says whether they map the
representations, the logits or both, `teacher_start` where a teacher starts), and global
parameter decomposition of the student's update on the uplink and of the averaged update on the
downlink (1.2)."""
from __future__ import annotations

from torch import nn

from ..distill import DistillSwitches
from ..methods import (ENERGY_RULE, Method, Rule, adaptive_weight, choice, energy_schedule, flag, integer,
                       log_range, number, one_of)
from .mutual import MutualDistillation

METHOD = Method("fedmic", "FedMIC", "FedMIC", personalised=True, factorised=True, hps=(
    number("alpha", 1.0, "weight of decision-level distillation", space=log_range(0.1, 10.0), ge=0),
    number("beta", 1.0, "weight of representation-level distillation", space=log_range(0.1, 10.0), ge=0),
    number("tau", 2.0, "distillation temperature", space=one_of(1.0, 2.0, 4.0), gt=0),
    flag("rep_distill", True, "representation-level distillation (ablation switch)"),
    flag("dec_distill", True, "decision-level distillation (ablation switch)"),
    flag("aux_matrices", True, "learnable maps between the two representation spaces; "
                               "false: identity maps (needs equal widths)"),
    choice("aux_on", "representation", ("representation", "decision", "both"),
           "where the two auxiliary matrices act: between the representations (MSE terms), between "
           "the logits (KL terms: the Figure 2 caption's reading), or a pair at each level"),
    choice("teacher_start", "own", ("own", "broadcast"),
           "a teacher's first weights: its own random initialisation, or the global student the "
           "client receives in its first round (needs equal widths)"),
    *adaptive_weight(),
    flag("gpd", True, "global parameter decomposition (SVD both ways); false: dense weights both ways"),
    *energy_schedule("SVD energy threshold of round 1 (FedKD's T_start)"),
    integer("fixed_rank", None, "keep this rank in every factorised tensor instead of the energy rule "
                                "(ablation); null: the energy rule", ge=1, nullable=True),
    choice("decompose", "delta", ("delta", "params"),
           "what is factorised, both ways: the student's update (delta) or its weights (params: lossy)"),
    number("teacher_width", 1.0, "width multiplier of the private teacher", gt=0),
    number("student_width", 1.0, "width multiplier of the shared student", gt=0),
), rules=(
    ENERGY_RULE,
    Rule("aux_on needs aux_matrices", lambda hp, run: hp["aux_matrices"] or hp["aux_on"] == "representation",
         "aux_on {hp[aux_on]!r} places auxiliary matrices but aux_matrices is false; "
         "set aux_matrices: true, or leave aux_on at 'representation'"),
    Rule("identity representation maps need equal widths",
         lambda hp, run: hp["teacher_width"] == hp["student_width"] or (
             hp["aux_matrices"] and hp["aux_on"] != "decision"),
         "teacher_width {hp[teacher_width]} and student_width {hp[student_width]} differ, so the "
         "representations need auxiliary matrices between them; set equal widths, or aux_matrices: true "
         "with aux_on 'representation' or 'both'"),
    Rule("teacher_start broadcast needs equal widths",
         lambda hp, run: hp["teacher_start"] == "own" or hp["teacher_width"] == hp["student_width"],
         "teacher_start 'broadcast' copies the student into the teacher, but teacher_width "
         "{hp[teacher_width]} != student_width {hp[student_width]}; set equal widths or teacher_start: own"),
))


class FedMIC(MutualDistillation):
    method = METHOD

    def __init__(self, ctx, hp):
        mode = "update" if hp.decompose == "delta" and hp.gpd else "params"
        super().__init__(ctx, hp, hp.teacher_width, hp.student_width,
                         DistillSwitches(rep=hp.rep_distill, dec=hp.dec_distill, adaptive=hp.adaptive),
                         uplink=mode, downlink=mode, factorise=hp.gpd, rank=hp.fixed_rank,
                         decision_maps=hp.aux_matrices and hp.aux_on in ("decision", "both"),
                         teacher_from_student=hp.teacher_start == "broadcast")
        # the declaration's rules have refused identity maps between representations of different widths

    def representation_maps(self):
        if not self.hp.aux_matrices or self.hp.aux_on == "decision":
            return nn.Identity(), nn.Identity(), []
        return super().representation_maps()
