"""FedMIC (Ren et al., 2024): dual knowledge distillation between a private teacher and a shared
student through two auxiliary matrices (docs/method.md 1.1), and global parameter decomposition
of the student's update on the uplink and of the averaged update on the downlink (1.2)."""
from __future__ import annotations

from torch import nn

from ..distill import DistillSwitches
from .mutual import MutualDistillation


class FedMIC(MutualDistillation):
    name = "fedmic"
    private_name = "teacher"
    defaults = {
        "alpha": 1.0,            # weight of decision-level distillation
        "beta": 1.0,             # weight of representation-level distillation
        "tau": 2.0,              # distillation temperature
        "rep_distill": True,     # ablation switches (docs/method.md 1.1)
        "dec_distill": True,
        "aux_matrices": True,    # False: identity projections (needs equal widths)
        "adaptive": True,        # FedKD's adaptive weighting of the distillation terms
        "max_adaptive_weight": 10.0,  # cap of that weight 1/(CE_T + CE_S) (ours: it is unbounded)
        "gpd": True,             # global parameter decomposition; False = dense weights both ways
        "energy_start": 0.95,    # FedKD's energy schedule
        "energy_end": 0.98,
        "fixed_rank": None,      # int: keep this rank instead of the energy rule (ablation)
        "decompose": "delta",    # "delta": the student's update both ways; "params": its weights
        "teacher_width": 1.0,
        "student_width": 1.0,
    }

    def __init__(self, ctx):
        hp = {**self.defaults, **ctx.hp}
        if hp["decompose"] not in ("delta", "params"):
            raise ValueError(f"fedmic: decompose must be 'delta' or 'params', got {hp['decompose']!r}")
        if not (0 < hp["energy_start"] <= 1 and 0 < hp["energy_end"] <= 1):
            raise ValueError("fedmic: energy_start and energy_end must be in (0, 1]")
        if hp["energy_start"] > hp["energy_end"]:
            raise ValueError(f"fedmic: energy_start ({hp['energy_start']}) > energy_end ({hp['energy_end']}); "
                             "the schedule grows, so set energy_start <= energy_end")
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
