"""Ditto (Li, Hu, Beirami, Smith, ICML 2021): FedAvg on a global model w, plus a personal model
v_i per client trained on CE + lambda/2 ||v_i - w||^2, with w the global model as received this
round. Only w travels; v_i is the client's personalised (evaluated) model."""
from __future__ import annotations

import torch

from ..comm import dense_payload
from ..methods import Method, integer, log_range, number
from .base import clone_state
from .fedavg import FedAvg

# The paper selects lambda per device from {0.05, 0.1, 0.2} or {0.1, 1, 2} on local validation
# data and falls back to 0.1 or 1; we fix 0.1. personal_epochs is its s.
METHOD = Method("ditto", "Ditto", "Ditto", extends="fedavg", personalised=True, hps=(
    number("lam", 0.1, "pull of the personal model towards the global one: lam/2 ||v - w||^2",
           space=log_range(0.01, 2.0), ge=0),
    integer("personal_epochs", None, "local epochs of the personal model; null: the run's local_epochs",
            ge=1, nullable=True),
))


class Ditto(FedAvg):
    method = METHOD

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.start = clone_state(self.worker)  # w^0, the global model every party starts from
        self.personal = ctx.make_model()

    def init_client(self, cid, data=None):
        # v_i starts where w starts (the paper initialises both from w^0).
        return {"personal": {k: v.clone() for k, v in self.start.items()}}

    def local_update(self, cid, state, received, data, rnd, gen):
        # Global model first, exactly as FedAvg trains it: Ditto's upload is FedAvg's upload.
        self.load_received(self.worker, received)
        anchor = [p.detach().clone() for p in self.worker.parameters()]
        loss = self.train_supervised(self.worker, data, gen)
        upload = dense_payload(clone_state(self.worker), self.ctx.transport_dtype)

        lam = self.hp.lam
        self.personal.load_state_dict(state["personal"])

        def pull_to_global(model, x, y, r):
            return 0.5 * lam * torch.stack([(p - w).pow(2).sum() for p, w in zip(model.parameters(), anchor)]).sum()

        loss_p = self.train_supervised(self.personal, data, gen, extra_loss=pull_to_global if lam > 0 else None,
                                       epochs=self.hp.personal_epochs)
        return {"personal": clone_state(self.personal)}, upload, {"loss": loss, "loss_personal": loss_p}

    def personal_model(self, cid, state, shared):
        self.personal.load_state_dict(state["personal"])
        return self.personal
