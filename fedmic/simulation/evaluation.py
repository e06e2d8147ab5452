"""Scoring after a round (docs/method.md, Engine and protocol): the global model on the official
val and test splits, and every client's scored model on its own local sets."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..metrics import personalised_summary, scores

if TYPE_CHECKING:
    from .loop import Run


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch: int = 64) -> np.ndarray:
    # 64: 1.05-1.15x faster than 256 for the CNN and 1.5x for ResNet-18 on one thread of this
    # project's CPU, with the same predictions (docs/performance.md); the activations stay in cache
    model.eval()
    out = [torch.softmax(model(x[i:i + batch]).float(), 1) for i in range(0, len(x), batch)]
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 0), dtype=np.float32)


def evaluate(run: Run, rnd: int) -> dict:
    """The scores after round `rnd`: a personalised method's clients predict with their own
    models; every other client is scored with the global model's predictions on its images."""
    algo, data, res = run.algo, run.data, {}
    g = algo.global_model(run.server)
    glob = {s: predict(g, data.x[s]) for s in ("val", "test")} if g is not None else None
    if glob is not None:
        res["global"] = {s: scores(data.y[s].cpu().numpy(), glob[s]) for s in ("val", "test")}
    personal = {"val": [], "test": []}
    preds = run.clients.predict(rnd, algo.eval_broadcast(run.server)) if algo.personalised else None
    for cid in range(run.cfg.clients):
        for s in ("val", "test"):
            idx = data.idx[s][cid]
            y = data.y[s][idx].cpu().numpy()
            if preds is not None:
                p = preds[cid][s]
            else:  # every client uses the global model: reuse its predictions
                p = glob[s][idx.cpu().numpy()]
            personal[s].append((y, p.reshape(len(y), data.n_classes)))
    res["personal"] = {s: personalised_summary(personal[s]) for s in ("val", "test")}
    return res
