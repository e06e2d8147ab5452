"""MOON (Li, He, Song, CVPR 2021): FedAvg whose local loss adds a model-contrastive term that
pulls the local model's projected representation towards the global model's and away from the
client's previous local model's: loss = CE + mu * l_con. The projection head is the paper's
2-layer MLP (output dimension 256); it is trained, uploaded and averaged with the model but used
for the contrastive term only: the classifier reads the encoder's representation, as in every
other arm, so the scored model is the same CNN (docs/method.md, "MOON"). The global model is the
evaluated one."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..comm import dense_payload
from ..methods import Method, integer, log_range, number, one_of
from ..models import SplitModel
from .base import clone_state
from .fedavg import FedAvg

METHOD = Method("moon", "MOON", "MOON", extends="fedavg", hps=(
    number("mu", 1.0, "weight of the model-contrastive loss (the paper: 5 on CIFAR-10, 1 on CIFAR-100)",
           space=log_range(0.1, 10.0), ge=0),
    number("tau", 0.5, "temperature of the contrastive loss", space=one_of(0.1, 0.5, 1.0), gt=0),
    integer("proj_dim", 256, "output size of the projection head the contrastive loss compares", ge=1),
))


class ProjectedModel(SplitModel):
    """A SplitModel with MOON's projection head beside the classifier: z = proj(encoder(x))."""

    def __init__(self, model: SplitModel, proj_dim: int):
        super().__init__(model.encoder, model.head)
        d = model.rep_dim
        self.proj = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, proj_dim))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.encoder(x))


def model_contrastive_loss(z: torch.Tensor, z_glob: torch.Tensor, z_prev: torch.Tensor, tau: float) -> torch.Tensor:
    """Batch mean of -log(exp(sim(z, z_glob)/tau) / (exp(sim(z, z_glob)/tau) + exp(sim(z, z_prev)/tau))),
    sim = cosine similarity. Written as a 2-way cross-entropy with the positive pair first."""
    logits = torch.stack([F.cosine_similarity(z, z_glob, dim=1), F.cosine_similarity(z, z_prev, dim=1)], dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(len(z), dtype=torch.long, device=z.device))


class MOON(FedAvg):
    method = METHOD

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        # The encoder and classifier are the ones every method starts from (made first, under the
        # engine's seed); the projection head's weights are drawn after them.
        self.worker = self._projected(self.worker)
        # Frozen copies: the broadcast global model and this client's previous local model.
        self.glob, self.prev = self._projected(ctx.make_model()), self._projected(ctx.make_model())
        for m in (self.glob, self.prev):
            m.requires_grad_(False)

    def _projected(self, model: SplitModel) -> ProjectedModel:
        return ProjectedModel(model, self.hp.proj_dim).to(self.ctx.device)

    def local_update(self, cid, state, received, data, rnd, gen):
        self.load_received(self.worker, received)
        mu, tau = self.hp.mu, self.hp.tau
        contrast = None
        if mu > 0:
            self.glob.load_state_dict(self.worker.state_dict())
            # No previous model yet (first participation): the global one stands in, so
            # sim(z, z_glob) == sim(z, z_prev), l_con == log 2 and its gradient is zero.
            self.prev.load_state_dict(state.get("prev", self.worker.state_dict()))
            self.glob.eval(), self.prev.eval()

            def contrast(model, x, y, r):
                with torch.no_grad():
                    z_glob, z_prev = self.glob.project(x), self.prev.project(x)
                return mu * model_contrastive_loss(model.proj(r), z_glob, z_prev, tau)

        loss = self.train_supervised(self.worker, data, gen, extra_loss=contrast)
        trained = clone_state(self.worker)
        return {"prev": trained}, dense_payload(trained, self.ctx.transport_dtype), {"loss": loss}
