"""FML, Federated Mutual Learning (Shen et al., arXiv 2006.16765, 2020): each client trains its
private local model and the shared "meme" model together by deep mutual learning,
    L_local = alpha * CE(local) + (1 - alpha) * KL(p_meme || p_local)
    L_meme  = beta  * CE(meme)  + (1 - beta)  * KL(p_local || p_meme),
each model learning from the other's detached prediction. The meme model is uploaded dense and
averaged as in FedAvg; the local model is the client's personalised (evaluated) model."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..comm import dense_payload
from ..distill import decision_kd
from .base import Algorithm, clone_state


class FML(Algorithm):
    name = "fml"
    personalised = True

    def __init__(self, ctx):
        super().__init__(ctx)
        self.meme = self.worker
        self.local = ctx.make_model()

    def init_client(self, cid, data=None):
        # The engine seeds each client: local models start from their own random weights, so
        # the two networks of a pair differ from the first step (mutual learning needs it).
        return {"local": clone_state(self.ctx.make_model())}

    @staticmethod
    def _mix(weight_ce: float, ce: torch.Tensor, z_learner: torch.Tensor, z_source: torch.Tensor,
             tau: float) -> torch.Tensor:
        if weight_ce == 1.0:  # no distillation: keep the loss (and its gradient) exactly CE
            return ce
        return weight_ce * ce + (1.0 - weight_ce) * decision_kd(z_learner, z_source, tau)

    def local_update(self, cid, state, received, data, rnd, gen):
        alpha, beta, tau = float(self.hp["alpha"]), float(self.hp["beta"]), float(self.hp["tau"])
        self.load_received(self.meme, received)
        self.local.load_state_dict(state["local"])
        self.meme.train(), self.local.train()

        def step(x, y):
            z_m, z_l = self.meme(x), self.local(x)
            loss_m = self._mix(beta, F.cross_entropy(z_m, y), z_m, z_l, tau)
            loss_l = self._mix(alpha, F.cross_entropy(z_l, y), z_l, z_m, tau)
            # decision_kd detaches the source, so each loss reaches only its own model.
            return loss_m + loss_l, torch.stack([loss_m.detach(), loss_l.detach()])

        means = self.train_joint([*self.meme.parameters(), *self.local.parameters()], data, gen, step).tolist()
        upload = dense_payload(clone_state(self.meme), self.ctx.transport_dtype)
        return {"local": clone_state(self.local)}, upload, {"loss": means[0], "loss_local": means[1]}

    def personal_model(self, cid, state, shared):
        self.local.load_state_dict(state["local"])
        return self.local
