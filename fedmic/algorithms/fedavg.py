"""FedAvg (McMahan et al., 2017): local SGD on the broadcast model, sample-weighted averaging."""
from __future__ import annotations

from ..comm import dense_payload
from ..methods import Method
from .base import Algorithm, clone_state

METHOD = Method("fedavg", "FedAvg", "FedAvg")


class FedAvg(Algorithm):
    method = METHOD

    def local_update(self, cid, state, received, data, rnd, gen):
        self.load_received(self.worker, received)
        loss = self.train_supervised(self.worker, data, gen)
        return state, dense_payload(clone_state(self.worker), self.ctx.transport_dtype), {"loss": loss}
