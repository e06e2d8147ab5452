"""MOON (Li, He, Song, CVPR 2021): FedAvg whose local loss adds a model-contrastive term that
pulls the local representation towards the global model's and away from the client's previous
local model's: loss = CE + mu * l_con. The global model is the evaluated one."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..comm import dense_payload
from .base import clone_state, is_number
from .fedavg import FedAvg


def model_contrastive_loss(z: torch.Tensor, z_glob: torch.Tensor, z_prev: torch.Tensor, tau: float) -> torch.Tensor:
    """Batch mean of -log(exp(sim(z, z_glob)/tau) / (exp(sim(z, z_glob)/tau) + exp(sim(z, z_prev)/tau))),
    sim = cosine similarity. Written as a 2-way cross-entropy with the positive pair first."""
    logits = torch.stack([F.cosine_similarity(z, z_glob, dim=1), F.cosine_similarity(z, z_prev, dim=1)], dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(len(z), dtype=torch.long, device=z.device))


class MOON(FedAvg):
    name = "moon"
    defaults = {
        "mu": 1.0,   # paper: 5 on CIFAR-10, 1 on CIFAR-100 and Tiny-ImageNet
        "tau": 0.5,  # paper: temperature 0.5 throughout
    }

    def __init__(self, ctx):
        super().__init__(ctx)
        hp = self.hp
        self.check_hp("mu", is_number(hp["mu"]) and hp["mu"] >= 0, "a finite number >= 0")
        self.check_hp("tau", is_number(hp["tau"]) and hp["tau"] > 0, "a finite number > 0")
        # Frozen copies: the broadcast global model and this client's previous local model.
        self.glob, self.prev = ctx.make_model(), ctx.make_model()
        for m in (self.glob, self.prev):
            m.requires_grad_(False)

    def local_update(self, cid, state, received, data, rnd, gen):
        self.load_received(self.worker, received)
        mu, tau = float(self.hp["mu"]), float(self.hp["tau"])
        contrast = None
        if mu > 0:
            self.glob.load_state_dict(self.worker.state_dict())
            # No previous model yet (first participation): the global one stands in, so
            # sim(z, z_glob) == sim(z, z_prev), l_con == log 2 and its gradient is zero.
            self.prev.load_state_dict(state.get("prev", self.worker.state_dict()))
            self.glob.eval(), self.prev.eval()

            def contrast(model, x, y, r):
                with torch.no_grad():
                    z_glob, z_prev = self.glob.encoder(x), self.prev.encoder(x)
                return mu * model_contrastive_loss(r, z_glob, z_prev, tau)

        loss = self.train_supervised(self.worker, data, gen, extra_loss=contrast)
        trained = clone_state(self.worker)
        return {"prev": trained}, dense_payload(trained, self.ctx.transport_dtype), {"loss": loss}
