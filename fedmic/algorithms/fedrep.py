"""FedRep (Collins et al., ICML 2021): a shared representation (the encoder) and a local head.
Each local update first fits the head with the encoder frozen, then updates the encoder with
the head frozen; only the encoder is sent and averaged."""
from __future__ import annotations

import torch
from torch import nn

from ..methods import Method, Space, integer
from ..models import SplitModel
from .base import ClientData
from .fedper import FedPer

# The paper runs 10 head epochs per representation epoch (its code's defaults, local_ep=10 and
# local_rep_ep=1, split the 10 as 9 + 1); the encoder phase uses the run's local_epochs.
METHOD = Method("fedrep", "FedRep", "FedRep", extends="fedper", hps=(
    integer("head_epochs", 10, "epochs on the head (encoder frozen) before the encoder's "
                               "local_epochs (the paper: 10 per representation epoch)",
            space=Space(1, 10), ge=1),
))


class FedRep(FedPer):
    method = METHOD

    def train_local(self, data, gen) -> dict:
        m = self.worker
        # A frozen encoder is also in eval mode (its batch-norm statistics stay put), so its
        # representations do not change during the head phase: compute them once and fit the
        # head on them, in the same batches, instead of head_epochs encoder passes.
        m.encoder.eval()
        with torch.no_grad():
            reps = torch.cat([m.encoder(data.x[i:i + 1024]) for i in range(0, data.n, 1024)])
        head_only = SplitModel(nn.Identity(), m.head)
        head_loss = self.train_supervised(head_only, ClientData(reps, data.y), gen, epochs=self.hp.head_epochs)
        body_loss = self.train_supervised(m, data, gen, frozen=m.head)
        return {"loss": body_loss, "loss_head": head_loss}
