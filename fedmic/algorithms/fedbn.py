"""FedBN (Li et al., ICLR 2021): FedAvg in which batch-norm layers stay local. Their affine
parameters and running statistics are never uploaded; everything else is averaged."""
from __future__ import annotations

from ..comm import Payload, dense_payload, unpack_dense
from ..methods import Method, Rule
from .base import Algorithm, clone_state, is_bn_key

METHOD = Method("fedbn", "FedBN", "FedBN", personalised=True, rules=(
    Rule("needs a model with batch norm", lambda hp, run: run.get("model") in ("cnn_bn", "resnet18"),
         "batch-norm layers stay local, but model {run[model]!r} has none; "
         "use model cnn_bn or resnet18 (the arm's train: {{model: cnn_bn}})", uses_run=True),
))


class FedBN(Algorithm):
    method = METHOD

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        start = clone_state(self.worker)
        self.bn_keys = [k for k in start if is_bn_key(self.worker, k)]
        if not self.bn_keys:
            raise ValueError(f"fedbn keeps batch-norm layers local, but model {ctx.model!r} has none; "
                             "use model 'cnn_bn' or 'resnet18'")
        self.shared_keys = [k for k in start if k not in set(self.bn_keys)]
        self.start = start

    def init_server(self):
        # The server only ever holds the shared (non-BN) tensors.
        return {"global": {k: self.start[k].clone() for k in self.shared_keys}}

    def init_client(self, cid, data=None):
        return {"bn": {k: self.start[k].clone() for k in self.bn_keys}}

    def local_update(self, cid, state, received, data, rnd, gen):
        # Strict load: every tensor comes from the broadcast or from this client's own BN.
        self.worker.load_state_dict({**unpack_dense(received), **state["bn"]})
        loss = self.train_supervised(self.worker, data, gen)
        full = clone_state(self.worker)
        upload = dense_payload({k: full[k] for k in self.shared_keys}, self.ctx.transport_dtype)
        return {"bn": {k: full[k] for k in self.bn_keys}}, upload, {"loss": loss}

    def global_model(self, server):
        return None  # no global BN exists, so there is no shared model to score

    def eval_broadcast(self, server) -> Payload:
        return self.broadcast(server, 0)

    def personal_model(self, cid, state, shared):
        self.worker.load_state_dict({**unpack_dense(shared), **state["bn"]})
        return self.worker
