"""FedProto (Tan, Long, Liu, Zhou, Lu, Jiang, Zhang, AAAI 2022): no weights travel. Each client
uploads its class prototypes (the mean encoder representation of its training images of each
class it holds, with the counts); the server averages them per class, weighted by the counts,
and broadcasts the global prototypes. Local loss: CE + lambda * MSE(r, global_proto[y]).
A client is scored with its own full model, predicting by default the class of the nearest
global prototype among the classes it holds (the authors' code; the paper's text: among every
class, an option), or with its own head (option)."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..comm import Payload
from ..methods import Method, choice, log_range, number
from ..models import SplitModel
from .base import Algorithm, clone_state

METHOD = Method("fedproto", "FedProto", "FedProto", personalised=True, hps=(
    number("lam", 1.0, "weight of the prototype loss lam * MSE(r, global prototype of y); 0 is Local",
           space=log_range(0.01, 10.0), ge=0),
    choice("inference", "own_prototypes", ("own_prototypes", "all_prototypes", "head"),
           "a client's prediction: the nearest global prototype among the classes the client holds "
           "(the authors' code), among every class with a prototype (the paper's text), or its model's head"),
    choice("proto_weighting", "counts", ("counts", "uniform"),
           "server average per class: weighted by image counts (the paper's) or uniform (the authors' code)"),
))


class NearestPrototype(nn.Module):
    """Logits = -MSE between the representation and each global prototype (the distance the
    authors' code takes the argmin of; the paper's L2 argmin is the same class). A class without
    a prototype gets -inf (probability 0). Its parameters are the model's."""

    def __init__(self, model: SplitModel):
        super().__init__()
        self.model = model
        self.protos: torch.Tensor | None = None
        self.has: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.model.encoder(x).float()
        logits = -(r.unsqueeze(1) - self.protos.unsqueeze(0)).pow(2).mean(dim=2)
        return logits.masked_fill(~self.has, float("-inf"))


def local_prototypes(model: SplitModel, x: torch.Tensor, y: torch.Tensor, n_classes: int,
                     batch: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean representation per class [n_classes, d], count per class [n_classes])."""
    model.eval()
    sums = torch.zeros(n_classes, model.rep_dim, device=x.device)
    with torch.no_grad():
        for i in range(0, len(x), batch):
            sums.index_add_(0, y[i:i + batch], model.encoder(x[i:i + batch]).float())
    counts = torch.bincount(y, minlength=n_classes)
    return sums / counts.clamp_min(1).unsqueeze(1), counts


class FedProto(Algorithm):
    method = METHOD

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        # Every client starts from the weights the other methods' global model starts from
        # (as the Local baseline), so lam = 0 is exactly Local.
        self.start = clone_state(self.worker)
        self.nearest = NearestPrototype(self.worker)

    # --- server ------------------------------------------------------------------------
    def init_server(self):
        d, c = self.worker.rep_dim, self.ctx.n_classes
        return {"protos": torch.zeros(c, d, device=self.ctx.device),
                "counts": torch.zeros(c, dtype=torch.long, device=self.ctx.device)}

    def broadcast(self, server, rnd):
        present = torch.nonzero(server["counts"] > 0).flatten()
        if len(present) == 0:
            return Payload()  # round 1: no global prototypes yet
        return Payload({"protos": server["protos"][present].to(self.ctx.transport_dtype),
                        "classes": present.to(torch.int32)})

    def aggregate(self, server, uploads, rnd):
        c, d = server["protos"].shape
        sums = torch.zeros(c, d, dtype=torch.float64, device=self.ctx.device)
        weights = torch.zeros(c, dtype=torch.float64, device=self.ctx.device)
        counts = torch.zeros(c, dtype=torch.long, device=self.ctx.device)
        for u in uploads:  # the engine's client weight is not used: prototypes carry their counts
            p = u.payload
            cls, n = p.tensors["classes"].long(), p.tensors["counts"].long()
            w = n.double() if self.hp.proto_weighting == "counts" else torch.ones_like(n, dtype=torch.float64)
            sums.index_add_(0, cls, p.tensors["protos"].double() * w.unsqueeze(1))
            weights.index_add_(0, cls, w)
            counts.index_add_(0, cls, n)
        seen = weights > 0
        protos = server["protos"].clone()
        protos[seen] = (sums[seen] / weights[seen].unsqueeze(1)).float()
        # A class no uploading client holds this round keeps its previous global prototype.
        return {"protos": protos, "counts": torch.where(seen, counts, server["counts"])}

    # --- client ------------------------------------------------------------------------
    def init_client(self, cid, data=None):
        state = {"model": {k: v.clone() for k, v in self.start.items()}}
        if self.hp.inference == "own_prototypes":
            # The classes in the client's training data. Without data (a server counting the
            # parameters of a state; engine and sites always pass it) every class counts.
            c = self.ctx.n_classes
            state["classes"] = (torch.ones(c, dtype=torch.bool, device=self.ctx.device) if data is None
                                else torch.bincount(data.y, minlength=c) > 0)
        return state

    def local_update(self, cid, state, received, data, rnd, gen):
        model = self.worker
        model.load_state_dict(state["model"])
        lam = self.hp.lam
        reg = None
        if lam > 0 and "protos" in received.tensors:
            c = self.ctx.n_classes
            glob = torch.zeros(c, model.rep_dim, device=self.ctx.device)
            has = torch.zeros(c, dtype=torch.bool, device=self.ctx.device)
            cls = received.tensors["classes"].long()
            glob[cls], has[cls] = received.tensors["protos"].float(), True

            def reg(model, x, y, r):
                # A sample whose class has no global prototype is its own target (zero loss),
                # as in the authors' code; the mean runs over the whole batch.
                target = torch.where(has[y].unsqueeze(1), glob[y].to(r.dtype), r.detach())
                return lam * F.mse_loss(r, target)

        loss = self.train_supervised(model, data, gen, extra_loss=reg)
        protos, counts = local_prototypes(model, data.x, data.y, self.ctx.n_classes)
        held = torch.nonzero(counts > 0).flatten()
        # Class ids and counts travel as int32 tensors (4 bytes each), not as factor metadata.
        upload = Payload({"protos": protos[held].to(self.ctx.transport_dtype),
                          "classes": held.to(torch.int32), "counts": counts[held].to(torch.int32)})
        new_state = {"model": clone_state(model)}
        if "classes" in state:
            new_state["classes"] = state["classes"]
        return new_state, upload, {"loss": loss}

    # --- evaluation --------------------------------------------------------------------
    def global_model(self, server):
        return None

    def eval_broadcast(self, server) -> Payload:
        return self.broadcast(server, 0)

    def personal_model(self, cid, state, shared):
        self.worker.load_state_dict(state["model"])
        if self.hp.inference == "head" or "protos" not in shared.tensors:
            return self.worker
        c = self.ctx.n_classes
        protos = torch.zeros(c, self.worker.rep_dim, device=self.ctx.device)
        has = torch.zeros(c, dtype=torch.bool, device=self.ctx.device)
        cls = shared.tensors["classes"].long()
        protos[cls], has[cls] = shared.tensors["protos"].float(), True
        if self.hp.inference == "own_prototypes":
            # a class the client holds always has a global prototype once it has uploaded once;
            # before that its own classes may have none, and it predicts among those that do
            own = has & state["classes"]
            has = own if bool(own.any()) else has
        self.nearest.protos, self.nearest.has = protos, has
        return self.nearest
