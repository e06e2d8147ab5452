"""FedMIC (Ren et al., 2024): dual knowledge distillation between a private teacher and a shared
student through two auxiliary matrices (docs/method.md 1.1), and global parameter decomposition
of the student's update on the uplink and of the averaged update on the downlink (1.2)."""
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
                         uplink=mode, downlink=mode, factorise=hp["gpd"], rank=hp["fixed_rank"])
        d_t, d_s = self.private.rep_dim, self.shared.rep_dim
        if not hp["aux_matrices"] and d_t != d_s:
            raise ValueError(f"fedmic: aux_matrices=false needs equal teacher/student representation widths "
                             f"(got {d_t} and {d_s}); set equal widths or enable aux_matrices")
        self.teacher, self.student = self.private, self.shared

    def projections(self):
        if not self.hp["aux_matrices"]:
            return nn.Identity(), nn.Identity(), []
        return super().projections()
