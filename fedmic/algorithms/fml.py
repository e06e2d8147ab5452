"""FML, Federated Mutual Learning (Shen et al., arXiv 2006.16765, 2020): each client trains its
private local model and the shared "meme" model together by deep mutual learning,
    L_local = alpha * CE(local) + (1 - alpha) * KL(p_meme || p_local)
    L_meme  = beta  * CE(meme)  + (1 - beta)  * KL(p_local || p_meme),
each model learning from the other's detached prediction. The meme model is uploaded dense and
averaged as in FedAvg; the local model is the client's personalised (evaluated) model. In this
code's vocabulary (as FedMIC's and FedKD's) the local model is the teacher and the meme model
the student; the hyperparameters keep the paper's alpha (local) and beta (meme)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..comm import dense_payload
from ..distill import decision_kd
from ..methods import Method, number, one_of, uniform
from .base import Algorithm, clone_state

METHOD = Method("fml", "FML", "FML", personalised=True, hps=(
    number("alpha", 0.5, "weight of CE in the local model's loss (1 - alpha weights the KL; 1: no distillation)",
           space=uniform(0.1, 0.9), ge=0, le=1),
    number("beta", 0.5, "weight of CE in the meme model's loss (1 - beta weights the KL)",
           space=uniform(0.1, 0.9), ge=0, le=1),
    number("tau", 1.0, "temperature of the mutual KL (1: plain softmax, as in deep mutual learning)",
           space=one_of(1.0, 2.0, 4.0), gt=0),
))


class FML(Algorithm):
    method = METHOD

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.student = self.worker  # the paper's meme model
        self.teacher = ctx.make_model()  # the paper's local model

    def init_client(self, cid, data=None):
        # The engine seeds each client: teachers start from their own random weights, so the
        # two networks of a pair differ from the first step (mutual learning needs it).
        return {"teacher": clone_state(self.ctx.make_model())}

    @staticmethod
    def _mix(weight_ce: float, ce: torch.Tensor, z_learner: torch.Tensor, z_source: torch.Tensor,
             tau: float) -> torch.Tensor:
        if weight_ce == 1.0:  # no distillation: keep the loss (and its gradient) exactly CE
            return ce
        return weight_ce * ce + (1.0 - weight_ce) * decision_kd(z_learner, z_source, tau)

    def local_update(self, cid, state, received, data, rnd, gen):
        alpha, beta, tau = self.hp.alpha, self.hp.beta, self.hp.tau
        self.load_received(self.student, received)
        self.teacher.load_state_dict(state["teacher"])
        self.student.train(), self.teacher.train()

        def step(x, y):
            z_s, z_t = self.student(x), self.teacher(x)
            loss_s = self._mix(beta, F.cross_entropy(z_s, y), z_s, z_t, tau)
            loss_t = self._mix(alpha, F.cross_entropy(z_t, y), z_t, z_s, tau)
            # decision_kd detaches the source, so each loss reaches only its own model.
            return loss_s + loss_t, torch.stack([loss_s.detach(), loss_t.detach()])

        means = self.train_joint([*self.student.parameters(), *self.teacher.parameters()], data, gen, step).tolist()
        upload = dense_payload(clone_state(self.student), self.ctx.transport_dtype)
        return {"teacher": clone_state(self.teacher)}, upload, {"loss": means[0], "loss_teacher": means[1]}

    def personal_model(self, cid, state, shared):
        self.teacher.load_state_dict(state["teacher"])
        return self.teacher
