"""FedProx (Li et al., MLSys 2020): FedAvg whose local objective adds a proximal term
mu/2 * ||w - w_global||^2 that keeps each client's weights near the broadcast model."""
from __future__ import annotations

import math

import torch

from ..comm import dense_payload
from .base import clone_state
from .fedavg import FedAvg


class FedProx(FedAvg):
    name = "fedprox"
    defaults = {
        # The paper tunes mu per dataset over {0.001, 0.01, 0.1, 1} and fixes no single value;
        # we fix 0.01, a mild pull towards the global model (override with hp.mu).
        "mu": 0.01,
    }

    def __init__(self, ctx):
        super().__init__(ctx)
        mu = self.hp["mu"]
        if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu) or mu < 0:
            raise ValueError(f"fedprox: hp 'mu' (proximal weight) must be a finite number >= 0, got {mu!r}")

    def local_update(self, cid, state, received, data, rnd, gen):
        self.load_received(self.worker, received)
        mu = float(self.hp["mu"])
        # Anchor = the global model as received (after transport), over the parameters only.
        anchor = [(p, p.detach().clone()) for p in self.worker.parameters()]

        def proximal(model, x, y, r):
            return 0.5 * mu * torch.stack([(p - g).pow(2).sum() for p, g in anchor]).sum()

        loss = self.train_supervised(self.worker, data, gen, extra_loss=proximal)
        return dict(state), dense_payload(clone_state(self.worker), self.ctx.transport_dtype), {"loss": loss}
