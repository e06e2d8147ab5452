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
                 uplink: str, downlink: str, factorise: bool, rank: int | None = None,
                 decision_maps: bool = False, private_from_shared: bool = False):
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
        # the same pair between the two models' logits, where the decision terms compare them
        c = ctx.n_classes
        self.dec_sp = nn.Linear(c, c, bias=False).to(ctx.device) if decision_maps else None
        self.dec_ps = nn.Linear(c, c, bias=False).to(ctx.device) if decision_maps else None
        # Every party builds the algorithm under the same seed, so the first global student (the
        # round-1 broadcast) is known to each client without a message.
        self.first_shared = clone_state(self.shared) if private_from_shared else None
        self.channel = SharedModelChannel(uplink, downlink, factorise, self.energy, ctx.rounds,
                                          ctx.transport_dtype, rank)

    def energy(self, rnd: int) -> float:
        return energy_schedule(rnd, self.ctx.rounds, self.hp["energy_start"], self.hp["energy_end"])

    def projections(self) -> tuple[nn.Module, nn.Module | None, list[torch.Tensor]]:
        """(map into the private space, reverse map or None, their trainable weights)."""
        return self.proj_sp, self.proj_ps, [self.proj_sp.weight] + ([self.proj_ps.weight] if self.proj_ps else [])

    def decision_maps(self) -> tuple[nn.Module | None, nn.Module | None, list[torch.Tensor]]:
        """(map of the shared model's logits into the private's, the reverse, their weights);
        (None, None, []) where the logits are compared as they are."""
        if self.dec_sp is None:
            return None, None, []
        return self.dec_sp, self.dec_ps, [self.dec_sp.weight, self.dec_ps.weight]

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
    def init_client(self, cid, data=None):
        # The engine seeds each client: private models start from their own random weights.
        # Identity start for the projections: representation distillation begins as a plain
        # MSE between the two representations (on their common coordinates if widths differ).
        # A private model that starts from the student holds the first global student until the
        # client first trains (so an untrained client is scored with it), then takes the student
        # it receives in that round (`private_unset` marks the wait).
        d_p, d_s = self.private.rep_dim, self.shared.rep_dim
        if self.first_shared is not None:
            private = {k: v.clone() for k, v in self.first_shared.items()}
        else:
            private = clone_state(self.ctx.make_model(self.private_width))
        state = {self.private_name: private, "proj_sp": torch.eye(d_p, d_s, device=self.ctx.device)}
        if self.proj_ps is not None:
            state["proj_ps"] = torch.eye(d_s, d_p, device=self.ctx.device)
        if self.dec_sp is not None:
            c = self.ctx.n_classes
            state["dec_sp"] = torch.eye(c, device=self.ctx.device)
            state["dec_ps"] = torch.eye(c, device=self.ctx.device)
        if self.first_shared is not None:
            state["private_unset"] = torch.ones((), device=self.ctx.device)
        return state

    def local_update(self, cid, state, received, data, rnd, gen):
        hp, sw = self.hp, self.switches
        start, held = self.channel.rebuild(state.get("held"), received)
        self.shared.load_state_dict(start)
        self.private.load_state_dict(start if "private_unset" in state else state[self.private_name])
        proj, back, proj_weights = self.projections()
        dec_to_private, dec_to_shared, dec_weights = self.decision_maps()
        with torch.no_grad():
            self.proj_sp.weight.copy_(state["proj_sp"])
            if self.proj_ps is not None:
                self.proj_ps.weight.copy_(state["proj_ps"])
            if self.dec_sp is not None:
                self.dec_sp.weight.copy_(state["dec_sp"])
                self.dec_ps.weight.copy_(state["dec_ps"])
        params = [*self.private.parameters(), *self.shared.parameters()]
        if sw.rep and proj_weights:
            params += proj_weights
        if sw.dec and dec_weights:
            params += dec_weights
        self.private.train(), self.shared.train()

        def step(x, y):
            r_p, z_p = self.private.forward_rep(x)
            r_s, z_s = self.shared.forward_rep(x)
            terms = dual_kd_losses(r_p, z_p, r_s, z_s, y, proj, back, hp["alpha"], hp["beta"], hp["tau"], sw,
                                   hp["max_adaptive_weight"], dec_to_private, dec_to_shared)
            # one backward gives each side its own gradient (see fedmic/distill.py)
            return terms["teacher"] + terms["student"], torch.stack([terms["student"], terms["teacher"]])

        loss_shared, loss_private = self.train_joint(params, data, gen, step).tolist()
        upload = self.channel.upload(clone_state(self.shared), start, rnd)
        new_state = {self.private_name: clone_state(self.private), "proj_sp": self.proj_sp.weight.detach().clone()}
        if self.proj_ps is not None:
            new_state["proj_ps"] = self.proj_ps.weight.detach().clone()
        if self.dec_sp is not None:
            new_state["dec_sp"] = self.dec_sp.weight.detach().clone()
            new_state["dec_ps"] = self.dec_ps.weight.detach().clone()
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
