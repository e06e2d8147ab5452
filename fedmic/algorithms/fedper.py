"""FedPer (Arivazhagan et al., 2019): base layers shared, personalisation layers local. Here the
base is the model's encoder and the personalisation layer its head (the classifier)."""
from __future__ import annotations

from ..comm import Payload, dense_payload, unpack_dense
from ..methods import Method
from .base import Algorithm, clone_state

METHOD = Method("fedper", "FedPer", "FedPer", personalised=True)


class FedPer(Algorithm):
    method = METHOD

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        start = clone_state(self.worker)
        head = {f"head.{k}" for k in self.worker.head.state_dict()}
        self.head_keys = [k for k in start if k in head]
        self.shared_keys = [k for k in start if k not in head]
        self.start = start

    def init_server(self):
        # The server only ever holds the encoder.
        return {"global": {k: self.start[k].clone() for k in self.shared_keys}}

    def init_client(self, cid, data=None):
        # Every head starts from the same initial weights as the global model's would.
        return {"head": {k: self.start[k].clone() for k in self.head_keys}}

    def train_local(self, data, gen) -> dict:
        """FedPer trains encoder and head together on the local data."""
        return {"loss": self.train_supervised(self.worker, data, gen)}

    def local_update(self, cid, state, received, data, rnd, gen):
        # Strict load: every tensor comes from the broadcast encoder or this client's head.
        self.worker.load_state_dict({**unpack_dense(received), **state["head"]})
        info = self.train_local(data, gen)
        full = clone_state(self.worker)
        upload = dense_payload({k: full[k] for k in self.shared_keys}, self.ctx.transport_dtype)
        return {"head": {k: full[k] for k in self.head_keys}}, upload, info

    def global_model(self, server):
        return None  # a global encoder has no global head to be scored with

    def eval_broadcast(self, server) -> Payload:
        return self.broadcast(server, 0)

    def personal_model(self, cid, state, shared):
        self.worker.load_state_dict({**unpack_dense(shared), **state["head"]})
        return self.worker
