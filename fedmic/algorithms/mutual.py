"""What FedMIC and FedKD share: each client keeps a private model (FedMIC's teacher, FedKD's
mentor) and trains it together with a shared model (student, mentee) by mutual distillation
(fedmic/distill.py); only the shared model travels, through the factorising channel of
fedmic/gpd.py. The subclasses say where their papers differ: the projections between the two
representation spaces, the temperature, the widths and how each direction is encoded."""
from __future__ import annotations

import torch
from torch import nn

from ..comm import Payload, energy_schedule, kept_ranks
from ..distill import DistillSwitches, dual_kd_losses
from ..gpd import SharedModelChannel
from .base import Algorithm, clone_state


class MutualDistillation(Algorithm):
    personalised = True
    private_name = "teacher"   # the state key of the private model (FedKD: "mentor")
    shared_projection = False  # one projection for both directions (FedKD) instead of two

    def __init__(self, ctx, private_width: float, shared_width: float, switches: DistillSwitches,
                 uplink: str, downlink: str, factorise: bool, rank: int | None = None):
        super().__init__(ctx)
        # The shared model of width 1 is the one every method's global model starts from.
        self.shared = self.worker if shared_width == 1.0 else ctx.make_model(shared_width)
        self.worker = self.shared
        self.private = ctx.make_model(private_width)
        self.private_width = private_width
        self.switches = switches
        d_p, d_s = self.private.rep_dim, self.shared.rep_dim
        # shared space -> private space; FedMIC adds the reverse map, FedKD uses this one both ways
        self.proj_sp = nn.Linear(d_s, d_p, bias=False).to(ctx.device)
        self.proj_ps = None if self.shared_projection else nn.Linear(d_p, d_s, bias=False).to(ctx.device)
        self.channel = SharedModelChannel(uplink, downlink, factorise, self.energy, ctx.rounds,
                                          ctx.transport_dtype, rank)

    def energy(self, rnd: int) -> float:
        return energy_schedule(rnd, self.ctx.rounds, self.hp["energy_start"], self.hp["energy_end"])

    def projections(self) -> tuple[nn.Module, nn.Module | None, list[torch.Tensor]]:
        """(map into the private space, reverse map or None, their trainable weights)."""
        return self.proj_sp, self.proj_ps, [self.proj_sp.weight] + ([self.proj_ps.weight] if self.proj_ps else [])

    # --- server ------------------------------------------------------------------------
    def init_server(self):
        return self.channel.init_server(clone_state(self.shared))

    def broadcast(self, server, rnd):
        return self.channel.broadcast(server)

    def downlink(self, server, rnd, cid):
        return self.channel.downlink(server, cid)

    def aggregate(self, server, uploads, rnd):
        return self.channel.aggregate(server, uploads, rnd)

    # --- client ------------------------------------------------------------------------
    def init_client(self, cid):
        # The engine seeds each client: private models start from their own random weights.
        # Identity start for the projections: representation distillation begins as a plain
        # MSE between the two representations (on their common coordinates if widths differ).
        d_p, d_s = self.private.rep_dim, self.shared.rep_dim
        state = {self.private_name: clone_state(self.ctx.make_model(self.private_width)),
                 "proj_sp": torch.eye(d_p, d_s, device=self.ctx.device)}
        if self.proj_ps is not None:
            state["proj_ps"] = torch.eye(d_s, d_p, device=self.ctx.device)
        return state

    def local_update(self, cid, state, received, data, rnd, gen):
        hp, sw = self.hp, self.switches
        start, held = self.channel.rebuild(state.get("held"), received)
        self.shared.load_state_dict(start)
        self.private.load_state_dict(state[self.private_name])
        proj, back, proj_weights = self.projections()
        with torch.no_grad():
            self.proj_sp.weight.copy_(state["proj_sp"])
            if self.proj_ps is not None:
                self.proj_ps.weight.copy_(state["proj_ps"])
        params = [*self.private.parameters(), *self.shared.parameters()]
        if sw.rep and proj_weights:
            params += proj_weights
        self.private.train(), self.shared.train()

        def step(x, y):
            r_p, z_p = self.private.forward_rep(x)
            r_s, z_s = self.shared.forward_rep(x)
            terms = dual_kd_losses(r_p, z_p, r_s, z_s, y, proj, back, hp["alpha"], hp["beta"], hp["tau"], sw,
                                   hp["max_adaptive_weight"])
            # one backward gives each side its own gradient (see fedmic/distill.py)
            return terms["teacher"] + terms["student"], torch.stack([terms["student"], terms["teacher"]])

        loss_shared, loss_private = self.train_joint(params, data, gen, step).tolist()
        upload = self.channel.upload(clone_state(self.shared), start, rnd)
        new_state = {self.private_name: clone_state(self.private), "proj_sp": self.proj_sp.weight.detach().clone()}
        if self.proj_ps is not None:
            new_state["proj_ps"] = self.proj_ps.weight.detach().clone()
        if held:
            new_state["held"] = held
        return new_state, upload, {"loss": loss_shared, f"loss_{self.private_name}": loss_private,
                                   "ranks": kept_ranks(upload)}

    # --- evaluation --------------------------------------------------------------------
    def global_model(self, server):
        self.shared.load_state_dict(server["global"])
        return self.shared

    def personal_model(self, cid, state, shared: Payload):
        self.private.load_state_dict(state[self.private_name])
        return self.private
