"""FedProx (Li et al., MLSys 2020): FedAvg whose local objective adds a proximal term
mu/2 * ||w - w_global||^2 that keeps each client's weights near the broadcast model."""
from __future__ import annotations

import torch

from ..comm import dense_payload
from ..methods import Method, log_range, number
from .base import clone_state
from .fedavg import FedAvg

METHOD = Method("fedprox", "FedProx", "FedProx", extends="fedavg", hps=(
    number("mu", 0.01, "proximal weight: loss + mu/2 ||w - w_global||^2 (the paper tunes it over "
                       "0.001-1; 0 is FedAvg)", space=log_range(0.001, 1.0), ge=0),
))


class FedProx(FedAvg):
    method = METHOD

    def local_update(self, cid, state, received, data, rnd, gen):
        self.load_received(self.worker, received)
        mu = self.hp.mu
        # Anchor = the global model as received (after transport), over the parameters only.
        anchor = [(p, p.detach().clone()) for p in self.worker.parameters()]

        def proximal(model, x, y, r):
            return 0.5 * mu * torch.stack([(p - g).pow(2).sum() for p, g in anchor]).sum()

        loss = self.train_supervised(self.worker, data, gen, extra_loss=proximal)
        return dict(state), dense_payload(clone_state(self.worker), self.ctx.transport_dtype), {"loss": loss}
