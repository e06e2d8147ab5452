"""FedMIC (Ren et al., 2024): dual knowledge distillation between a private teacher and a shared
student (SPEC 1.1) and global parameter decomposition of the student (SPEC 1.2)."""
from __future__ import annotations

import torch
from torch import nn

from ..comm import (Payload, SpectralReference, apply_delta, dense_payload, energy_schedule, kept_ranks,
                     state_delta, svd_decode, svd_encode, unpack_dense)
from ..distill import DistillSwitches, dual_kd_losses
from .base import Algorithm, clone_state, weighted_average


class FedMIC(Algorithm):
    name = "fedmic"
    personalised = True
    defaults = {
        "alpha": 1.0,            # weight of decision-level distillation
        "beta": 1.0,             # weight of representation-level distillation
        "tau": 2.0,              # distillation temperature
        "rep_distill": True,     # ablation switches (SPEC 1.1)
        "dec_distill": True,
        "aux_matrices": True,    # False: identity projections (needs equal widths)
        "adaptive": True,        # FedKD's adaptive weighting of the distillation terms
        "gpd": True,             # global parameter decomposition; False = dense uploads
        "energy_start": 0.95,    # FedKD's energy schedule
        "energy_end": 0.98,
        "fixed_rank": None,      # int: keep this rank instead of the energy rule (ablation)
        "decompose": "params",   # "params" or "delta" (the student's change since the broadcast)
        "teacher_width": 1.0,
        "student_width": 1.0,
    }

    def __init__(self, ctx):
        super().__init__(ctx)
        hp = self.hp
        if hp["decompose"] not in ("params", "delta"):
            raise ValueError(f"fedmic: decompose must be 'params' or 'delta', got {hp['decompose']!r}")
        if not (0 < hp["energy_start"] <= 1 and 0 < hp["energy_end"] <= 1):
            raise ValueError("fedmic: energy_start and energy_end must be in (0, 1]")
        if hp["energy_start"] > hp["energy_end"]:
            raise ValueError(f"fedmic: energy_start ({hp['energy_start']}) > energy_end ({hp['energy_end']}); "
                             "the schedule grows, so set energy_start <= energy_end")
        self.student = self.worker = ctx.make_model(hp["student_width"])
        self.teacher = ctx.make_model(hp["teacher_width"])
        d_t, d_s = self.teacher.rep_dim, self.student.rep_dim
        if not hp["aux_matrices"] and d_t != d_s:
            raise ValueError(f"fedmic: aux_matrices=false needs equal teacher/student representation widths "
                             f"(got {d_t} and {d_s}); set equal widths or enable aux_matrices")
        self.a_ts = nn.Linear(d_s, d_t, bias=False).to(ctx.device)  # student space -> teacher space
        self.a_st = nn.Linear(d_t, d_s, bias=False).to(ctx.device)  # teacher space -> student space
        self.switches = DistillSwitches(rep=hp["rep_distill"], dec=hp["dec_distill"], adaptive=hp["adaptive"])

    def energy(self, rnd: int) -> float:
        return energy_schedule(rnd, self.ctx.rounds, self.hp["energy_start"], self.hp["energy_end"])

    def encode(self, state: dict, rnd: int, near: Payload | None = None) -> Payload:
        """`near`: the broadcast `state` was trained from. Parameters stay close to it, which
        lets the codec prove most matrices dense without their own eigendecomposition."""
        if not self.hp["gpd"]:
            return dense_payload(state, self.ctx.transport_dtype)
        reference = self._rebuild(near)[1] if near is not None and self.hp["decompose"] == "params" else None
        return svd_encode(state, self.energy(rnd), self.ctx.transport_dtype, rank=self.hp["fixed_rank"],
                          reference=reference)

    def decode(self, p: Payload) -> dict:
        return svd_decode(p) if self.hp["gpd"] else unpack_dense(p)

    def _rebuild(self, down: Payload) -> tuple[dict, SpectralReference]:
        """The global student rebuilt from a broadcast (and its codec reference), once per
        broadcast rather than once per client: every sampled client receives the same payload
        (and nothing mutates it)."""
        cached = getattr(self, "_rebuilt", None)
        if cached is None or cached[0] is not down:
            state = self.decode(down)
            self._rebuilt = (down, state, SpectralReference(state))
        return self._rebuilt[1:]

    def _broadcast_state(self, down: Payload) -> dict:
        return self._rebuild(down)[0]

    # --- server ------------------------------------------------------------------------
    def init_server(self):
        init = clone_state(self.student)
        down = self.encode(init, 1)
        return {"global": self._broadcast_state(down), "down": down}

    def broadcast(self, server, rnd):
        return server["down"]

    def aggregate(self, server, uploads, rnd):
        states = [self.decode(p) for p, _ in uploads]
        avg = weighted_average(states, [w for _, w in uploads])
        if self.hp["decompose"] == "delta":
            avg = apply_delta(server["global"], avg)
        # The next round's broadcast uses the next round's energy; what clients rebuild from it
        # is the global student, also the one scored as the global model.
        down = self.encode(avg, min(rnd + 1, self.ctx.rounds), near=server["down"])
        return {"global": self._broadcast_state(down), "down": down}

    # --- client ------------------------------------------------------------------------
    def init_client(self, cid, server):
        eye = torch.eye(self.a_ts.out_features, self.a_ts.in_features, device=self.ctx.device)
        # Identity start: representation distillation begins as a plain MSE between the two.
        return {"teacher": clone_state(self.ctx.make_model(self.hp["teacher_width"])),
                "a_ts": eye.clone(), "a_st": eye.t().contiguous()}

    def local_update(self, cid, state, received, data, rnd, gen):
        hp, sw = self.hp, self.switches
        self.student.load_state_dict(self._broadcast_state(received))
        start = clone_state(self.student) if hp["decompose"] == "delta" else None
        self.teacher.load_state_dict(state["teacher"])
        with torch.no_grad():
            self.a_ts.weight.copy_(state["a_ts"])
            self.a_st.weight.copy_(state["a_st"])
        params = [*self.teacher.parameters(), *self.student.parameters()]
        if hp["aux_matrices"] and sw.rep:
            params += [self.a_ts.weight, self.a_st.weight]
            a_ts, a_st = self.a_ts, self.a_st
        else:
            a_ts = a_st = nn.Identity()
        self.teacher.train(), self.student.train()

        def step(x, y):
            r_t, z_t = self.teacher.forward_rep(x)
            r_s, z_s = self.student.forward_rep(x)
            terms = dual_kd_losses(r_t, z_t, r_s, z_s, y, a_ts, a_st, hp["alpha"], hp["beta"], hp["tau"], sw)
            # one backward gives each side its own gradient (see fedmic/distill.py)
            return terms["teacher"] + terms["student"], torch.stack([terms["teacher"], terms["student"]])

        means = self.train_joint(params, data, gen, step)
        new_state = {"teacher": clone_state(self.teacher),
                     "a_ts": self.a_ts.weight.detach().clone(), "a_st": self.a_st.weight.detach().clone()}
        sent = clone_state(self.student)
        if start is not None:
            sent = state_delta(sent, start)
        upload = self.encode(sent, rnd, near=received)
        loss_teacher, loss_student = means.tolist()
        return new_state, upload, {"loss": loss_student, "loss_teacher": loss_teacher, "ranks": kept_ranks(upload)}

    # --- evaluation --------------------------------------------------------------------
    def global_model(self, server):
        self.student.load_state_dict(server["global"])
        return self.student

    def personal_model(self, cid, state, server):
        self.teacher.load_state_dict(state["teacher"])
        return self.teacher
