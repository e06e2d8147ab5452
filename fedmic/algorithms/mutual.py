"""What FedMIC and FedKD share: each client keeps a teacher (its personalised model, never sent;
FedKD's paper calls it the mentor) and trains it together with the student (the model that
travels; FedKD's mentee) by mutual distillation (fedmic/distill.py); only the student travels,
through the factorising channel of fedmic/gpd.py. The subclasses say where their papers differ:
the maps between the two representation spaces, the temperature, the widths and how each
direction is encoded. Not a method itself (no METHOD here)."""
from __future__ import annotations

import torch
from torch import nn

from ..comm import Payload, energy_schedule, kept_ranks
from ..distill import DistillSwitches, dual_kd_losses
from ..gpd import SharedModelChannel
from .base import Algorithm, clone_state


class MutualDistillation(Algorithm):
    one_representation_map = False  # A_TS serves both directions (FedKD) instead of A_TS and A_ST

    def __init__(self, ctx, hp, teacher_width: float, student_width: float, switches: DistillSwitches,
                 uplink: str, downlink: str, factorise: bool, rank: int | None = None,
                 decision_maps: bool = False, teacher_from_student: bool = False):
        super().__init__(ctx, hp)
        # The student of width 1 is the one every method's global model starts from.
        self.student = self.worker if student_width == 1.0 else ctx.make_model(student_width)
        self.worker = self.student
        self.teacher = ctx.make_model(teacher_width)
        self.teacher_width = teacher_width
        self.switches = switches
        d_t, d_s = self.teacher.rep_dim, self.student.rep_dim
        # A_TS: student representations -> teacher space; A_ST the reverse (docs/method.md 1.1)
        self.a_ts = nn.Linear(d_s, d_t, bias=False).to(ctx.device)
        self.a_st = None if self.one_representation_map else nn.Linear(d_t, d_s, bias=False).to(ctx.device)
        # B_TS, B_ST: the same pair between the two models' logits, where the decision terms compare them
        c = ctx.n_classes
        self.b_ts = nn.Linear(c, c, bias=False).to(ctx.device) if decision_maps else None
        self.b_st = nn.Linear(c, c, bias=False).to(ctx.device) if decision_maps else None
        # Every party builds the algorithm under the same seed, so the first global student (the
        # round-1 broadcast) is known to each client without a message.
        self.first_student = clone_state(self.student) if teacher_from_student else None
        self.channel = SharedModelChannel(uplink, downlink, factorise, self.energy, ctx.rounds,
                                          ctx.transport_dtype, rank)

    def energy(self, rnd: int) -> float:
        return energy_schedule(rnd, self.ctx.rounds, self.hp.energy_start, self.hp.energy_end)

    def representation_maps(self) -> tuple[nn.Module, nn.Module | None, list[torch.Tensor]]:
        """(A_TS, A_ST or None, their trainable weights)."""
        return self.a_ts, self.a_st, [self.a_ts.weight] + ([self.a_st.weight] if self.a_st else [])

    def decision_maps(self) -> tuple[nn.Module | None, nn.Module | None, list[torch.Tensor]]:
        """(B_TS, B_ST, their weights); (None, None, []) where the logits are compared as they are."""
        if self.b_ts is None:
            return None, None, []
        return self.b_ts, self.b_st, [self.b_ts.weight, self.b_st.weight]

    # --- server ------------------------------------------------------------------------
    def init_server(self):
        return self.channel.init_server(clone_state(self.student))

    def broadcast(self, server, rnd):
        return self.channel.broadcast(server)

    def downlink(self, server, rnd, cid):
        return self.channel.downlink(server, cid)

    def aggregate(self, server, uploads, rnd):
        return self.channel.aggregate(server, uploads, rnd)

    # --- client ------------------------------------------------------------------------
    def init_client(self, cid, data=None):
        # The engine seeds each client: teachers start from their own random weights.
        # Identity start for the maps: representation distillation begins as a plain MSE between
        # the two representations (on their common coordinates if widths differ).
        # A teacher that starts from the student holds the first global student until the
        # client first trains (so an untrained client is scored with it), then takes the student
        # it receives in that round (`teacher_unset` marks the wait).
        d_t, d_s = self.teacher.rep_dim, self.student.rep_dim
        if self.first_student is not None:
            teacher = {k: v.clone() for k, v in self.first_student.items()}
        else:
            teacher = clone_state(self.ctx.make_model(self.teacher_width))
        state = {"teacher": teacher, "a_ts": torch.eye(d_t, d_s, device=self.ctx.device)}
        if self.a_st is not None:
            state["a_st"] = torch.eye(d_s, d_t, device=self.ctx.device)
        if self.b_ts is not None:
            c = self.ctx.n_classes
            state["b_ts"] = torch.eye(c, device=self.ctx.device)
            state["b_st"] = torch.eye(c, device=self.ctx.device)
        if self.first_student is not None:
            state["teacher_unset"] = torch.ones((), device=self.ctx.device)
        return state

    def local_update(self, cid, state, received, data, rnd, gen):
        hp, sw = self.hp, self.switches
        start, held = self.channel.rebuild(state.get("held"), received)
        self.student.load_state_dict(start)
        self.teacher.load_state_dict(start if "teacher_unset" in state else state["teacher"])
        a_ts, a_st, a_weights = self.representation_maps()
        b_ts, b_st, b_weights = self.decision_maps()
        with torch.no_grad():
            self.a_ts.weight.copy_(state["a_ts"])
            if self.a_st is not None:
                self.a_st.weight.copy_(state["a_st"])
            if self.b_ts is not None:
                self.b_ts.weight.copy_(state["b_ts"])
                self.b_st.weight.copy_(state["b_st"])
        params = [*self.teacher.parameters(), *self.student.parameters()]
        if sw.rep and a_weights:
            params += a_weights
        if sw.dec and b_weights:
            params += b_weights
        self.teacher.train(), self.student.train()

        def step(x, y):
            r_t, z_t = self.teacher.forward_rep(x)
            r_s, z_s = self.student.forward_rep(x)
            terms = dual_kd_losses(r_t, z_t, r_s, z_s, y, a_ts, a_st, hp.alpha, hp.beta, hp.tau, sw,
                                   hp.max_adaptive_weight, b_ts, b_st)
            # one backward gives each side its own gradient (see fedmic/distill.py)
            return terms["teacher"] + terms["student"], torch.stack([terms["student"], terms["teacher"]])

        loss_student, loss_teacher = self.train_joint(params, data, gen, step).tolist()
        upload = self.channel.upload(clone_state(self.student), start, rnd)
        new_state = {"teacher": clone_state(self.teacher), "a_ts": self.a_ts.weight.detach().clone()}
        if self.a_st is not None:
            new_state["a_st"] = self.a_st.weight.detach().clone()
        if self.b_ts is not None:
            new_state["b_ts"] = self.b_ts.weight.detach().clone()
            new_state["b_st"] = self.b_st.weight.detach().clone()
        if held:
            new_state["held"] = held
        return new_state, upload, {"loss": loss_student, "loss_teacher": loss_teacher, "ranks": kept_ranks(upload)}

    # --- evaluation --------------------------------------------------------------------
    def global_model(self, server):
        self.student.load_state_dict(server["global"])
        return self.student

    def personal_model(self, cid, state, shared: Payload):
        self.teacher.load_state_dict(state["teacher"])
        return self.teacher
