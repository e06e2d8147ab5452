"""FedKD (Wu, Wu, Lyu, Huang, Xie, Nature Communications 2022): each client keeps a private
mentor and trains it together with the shared mentee by adaptive mutual distillation (output KD
both ways plus a hidden-state loss through one learnable projection, every distillation term
divided by CE_mentor + CE_mentee). The mentee's UPDATE is factorised by SVD with FedKD's
dynamic energy threshold; the server averages the rebuilt updates, adds them to the global
mentee and broadcasts the global update, factorised the same way. The mentor is the client's
personalised (evaluated) model."""
from __future__ import annotations

import torch
from torch import nn

from ..comm import (Payload, apply_delta, dense_payload, energy_schedule, kept_ranks, state_delta, svd_decode,
                    svd_encode)
from ..distill import DistillSwitches, dual_kd_losses
from .base import Algorithm, clone_state, is_number, weighted_average


class FedKD(Algorithm):
    name = "fedkd"
    personalised = True
    defaults = {
        # The paper's losses are unweighted sums: L = L_task + L_distill + L_hidden.
        "alpha": 1.0,            # weight of the output (KL) distillation
        "beta": 1.0,             # weight of the hidden-state (MSE) distillation
        "tau": 1.0,              # the paper distils plain softmax outputs
        "adaptive": True,        # divide distillation terms by (CE_mentor + CE_mentee), as the paper
        "energy_start": 0.95,    # paper: T_start = 0.95, T_end = 0.98, linear over the rounds
        "energy_end": 0.98,
        # The paper's mentor is larger than its mentee; equal widths by default here, as FedMIC's
        # default teacher/student, so the two methods differ in their rules, not their models.
        "mentor_width": 1.0,
        "mentee_width": 1.0,
        # "delta": the paper's downlink, the factorised global update (needs every client in
        # every round, join_ratio 1). "params" (default): the factorised global mentee itself,
        # so that FedKD runs at every join ratio of T3 with one setting; the uplink is the
        # paper's factorised update either way.
        "downlink": "params",
    }

    def __init__(self, ctx):
        super().__init__(ctx)
        hp = self.hp
        for key in ("alpha", "beta"):
            self.check_hp(key, is_number(hp[key]) and hp[key] >= 0, "a finite number >= 0")
        for key in ("tau", "mentor_width", "mentee_width"):
            self.check_hp(key, is_number(hp[key]) and hp[key] > 0, "a finite number > 0")
        for key in ("energy_start", "energy_end"):
            self.check_hp(key, is_number(hp[key]) and 0 < hp[key] <= 1, "a number in (0, 1]")
        self.check_hp("energy_end", hp["energy_start"] <= hp["energy_end"],
                      f">= energy_start ({hp['energy_start']}): the threshold grows over the rounds")
        self.check_hp("adaptive", isinstance(hp["adaptive"], bool), "true or false")
        self.check_hp("downlink", hp["downlink"] in ("delta", "params"), "'delta' or 'params'")
        self.mentee = self.worker = ctx.make_model(hp["mentee_width"])
        self.mentor = ctx.make_model(hp["mentor_width"])
        # One projection, mentee space -> mentor space, shared by both hidden-loss directions.
        self.proj = nn.Linear(self.mentee.rep_dim, self.mentor.rep_dim, bias=False).to(ctx.device)
        self.switches = DistillSwitches(rep=hp["beta"] > 0, dec=hp["alpha"] > 0, adaptive=hp["adaptive"])

    def energy(self, rnd: int) -> float:
        return energy_schedule(rnd, self.ctx.rounds, self.hp["energy_start"], self.hp["energy_end"])

    def encode(self, state: dict, rnd: int) -> Payload:
        return svd_encode(state, self.energy(rnd), self.ctx.transport_dtype)

    # --- server ------------------------------------------------------------------------
    def init_server(self):
        # Round 1 sends the initial mentee itself (factorised): clients have nothing to add a delta to.
        down = self.encode(clone_state(self.mentee), 1)
        return {"global": svd_decode(down), "down": down, "down_for": 1}

    def broadcast(self, server, rnd):
        if self.hp["downlink"] == "delta" and server["down_for"] < rnd:
            return Payload()  # no aggregation last round (all uploads lost): the update is zero
        return server["down"]

    def aggregate(self, server, uploads, rnd):
        avg = weighted_average([svd_decode(p) for p, _ in uploads], [w for _, w in uploads])
        nxt = min(rnd + 1, self.ctx.rounds)
        if self.hp["downlink"] == "params":
            down = self.encode(apply_delta(server["global"], avg), nxt)
            return {"global": svd_decode(down), "down": down, "down_for": rnd + 1}
        # The global update is factorised once more; the new global is what every client rebuilds
        # from it (old global + decoded update), so server and clients never drift apart.
        down = self.encode(avg, nxt)
        return {"global": apply_delta(server["global"], svd_decode(down)), "down": down, "down_for": rnd + 1}

    # --- client ------------------------------------------------------------------------
    def init_client(self, cid, server):
        eye = torch.eye(self.proj.out_features, self.proj.in_features, device=self.ctx.device)
        # The engine seeds each client: mentors start from their own random weights. Identity
        # start for the projection: the hidden loss begins as a plain MSE.
        return {"mentor": clone_state(self.ctx.make_model(self.hp["mentor_width"])), "proj": eye}

    def _rebuild_mentee(self, cid, state, received, rnd) -> dict:
        got = svd_decode(received)
        if self.hp["downlink"] == "params" or rnd == 1:
            return got
        synced = int(state["synced"]) if "synced" in state else None
        if synced != rnd - 1:
            raise ValueError(
                f"fedkd: client {cid} holds the global mentee of round {synced} but round {rnd}'s broadcast is "
                f"the update since round {rnd - 1} (hp downlink: delta, the paper's). Run with join_ratio 1 "
                "(and on_nonfinite: error), or set hp downlink: params")
        return apply_delta(state["global"], got)

    def local_update(self, cid, state, received, data, rnd, gen):
        start = self._rebuild_mentee(cid, state, received, rnd)
        self.mentee.load_state_dict(start)
        self.mentor.load_state_dict(state["mentor"])
        with torch.no_grad():
            self.proj.weight.copy_(state["proj"])
        hp, sw = self.hp, self.switches
        params = [*self.mentor.parameters(), *self.mentee.parameters()] + ([self.proj.weight] if sw.rep else [])
        self.mentor.train(), self.mentee.train()

        def step(x, y):
            r_t, z_t = self.mentor.forward_rep(x)
            r_s, z_s = self.mentee.forward_rep(x)
            terms = dual_kd_losses(r_t, z_t, r_s, z_s, y, self.proj, None, hp["alpha"], hp["beta"], hp["tau"], sw)
            logged = torch.stack([terms["student"].detach(), terms["teacher"].detach()])
            return terms["teacher"] + terms["student"], logged

        means = self.train_joint(params, data, gen, step).tolist()
        delta = state_delta(clone_state(self.mentee), start)
        # A diverged update is handed to the engine as is, so its on_nonfinite rule applies
        # (factorising it would raise first).
        finite = all(torch.isfinite(v).all() for v in delta.values() if v.is_floating_point())
        upload = self.encode(delta, rnd) if finite else dense_payload(delta, self.ctx.transport_dtype)
        new_state = {"mentor": clone_state(self.mentor), "proj": self.proj.weight.detach().clone()}
        if hp["downlink"] == "delta":  # the client's copy of the global mentee, for the next update
            new_state.update({"global": start, "synced": torch.tensor(rnd)})
        return new_state, upload, {"loss": means[0], "loss_mentor": means[1], "ranks": kept_ranks(upload)}

    # --- evaluation --------------------------------------------------------------------
    def global_model(self, server):
        self.mentee.load_state_dict(server["global"])
        return self.mentee

    def personal_model(self, cid, state, server):
        self.mentor.load_state_dict(state["mentor"])
        return self.mentor
