"""Local training (the no-federation baseline): every client trains its own model on its own
data and nothing is ever sent, so uplink and downlink are both zero bytes."""
from __future__ import annotations

from ..comm import Payload
from ..methods import Method
from .base import Algorithm, clone_state

METHOD = Method("local", "Local", "Local", personalised=True)


class Local(Algorithm):
    method = METHOD

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        # Every client starts from the weights every other method's global model starts from
        # (the engine seeds this), so the comparison isolates the effect of communicating.
        self.start = clone_state(self.worker)

    def init_server(self):
        return {}

    def broadcast(self, server, rnd):
        return Payload()

    def aggregate(self, server, uploads, rnd):
        return server

    def init_client(self, cid, data=None):
        return {"model": {k: v.clone() for k, v in self.start.items()}}

    def local_update(self, cid, state, received, data, rnd, gen):
        self.worker.load_state_dict(state["model"])
        loss = self.train_supervised(self.worker, data, gen)
        return {"model": clone_state(self.worker)}, Payload(), {"loss": loss}

    def global_model(self, server):
        return None

    def personal_model(self, cid, state, shared):
        self.worker.load_state_dict(state["model"])
        return self.worker
