"""FedMIC (Ren et al., 2024): dual knowledge distillation between a private teacher and a shared
student through two auxiliary matrices (docs/method.md 1.1; `aux_on` says whether they map the
representations, the logits or both, `teacher_start` where a teacher starts), and global
parameter decomposition of the student's update on the uplink and of the averaged update on the
downlink (1.2)."""
from __future__ import annotations

from torch import nn

from ..distill import DistillSwitches
from ..methods import resolve_hp
from .mutual import MutualDistillation


class FedMIC(MutualDistillation):
    name = "fedmic"
    private_name = "teacher"

    def __init__(self, ctx):
        hp = resolve_hp(self.name, ctx.hp)  # declared in fedmic/methods.py
        mode = "update" if hp["decompose"] == "delta" and hp["gpd"] else "params"
        super().__init__(ctx, hp["teacher_width"], hp["student_width"],
                         DistillSwitches(rep=hp["rep_distill"], dec=hp["dec_distill"], adaptive=hp["adaptive"]),
                         uplink=mode, downlink=mode, factorise=hp["gpd"], rank=hp["fixed_rank"],
                         decision_maps=hp["aux_matrices"] and hp["aux_on"] in ("decision", "both"),
                         private_from_shared=hp["teacher_start"] == "broadcast")
        # resolve_hp has refused identity maps between representations of different widths
        self.teacher, self.student = self.private, self.shared

    def projections(self):
        if not self.hp["aux_matrices"] or self.hp["aux_on"] == "decision":
            return nn.Identity(), nn.Identity(), []
        return super().projections()
