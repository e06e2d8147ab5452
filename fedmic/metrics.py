"""ACC, AUC (one-vs-rest, macro, on softmax probabilities, as MedMNIST's evaluator) and macro-F1.

Computed with numpy and checked against scikit-learn in tests/test_metrics.py: importing
sklearn.metrics costs 1.9 s of CPU in every training process (measured here), more than
the whole evaluation of a demo run.
"""
from __future__ import annotations

import math

import numpy as np


def roc_auc_binary(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve = the Mann-Whitney U statistic over (positives x negatives),
    with ties counted one half through average ranks."""
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    order = np.argsort(score, kind="mergesort")
    sorted_scores = np.asarray(score)[order]
    ranks = np.empty(len(score), dtype=np.float64)
    # average rank of each run of tied scores
    edges = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [len(score)]))
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def accuracy(y: np.ndarray, prob: np.ndarray) -> float:
    return float((prob.argmax(1) == y).mean()) if len(y) else math.nan


def auc_ovr(y: np.ndarray, prob: np.ndarray) -> float:
    """Macro one-vs-rest AUC over the classes that occur with both outcomes in `y`.

    A client whose test set holds one class has no defined AUC: NaN, not a made-up 0.5.
    """
    n_classes = prob.shape[1]
    if n_classes == 2:
        return roc_auc_binary(y == 1, prob[:, 1]) if len(np.unique(y)) == 2 else math.nan
    scores = []
    for c in range(n_classes):
        pos = y == c
        if 0 < pos.sum() < len(y):
            scores.append(roc_auc_binary(pos, prob[:, c]))
    return float(np.mean(scores)) if scores else math.nan


def macro_f1(y: np.ndarray, prob: np.ndarray) -> float:
    """Macro-F1 over the classes present in `y` (a class absent from the test set but predicted
    would otherwise add a zero and punish a client for its label skew)."""
    if not len(y):
        return math.nan
    pred = prob.argmax(1)
    f1s = []
    for c in np.unique(y):
        tp = int(((pred == c) & (y == c)).sum())
        denom = int((pred == c).sum()) + int((y == c).sum())
        f1s.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1s))


def scores(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    return {"acc": accuracy(y, prob), "auc": auc_ovr(y, prob), "f1": macro_f1(y, prob), "n": int(len(y))}


def _finite_mean(values, weights=None) -> float:
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    if not ok.any():
        return math.nan
    if weights is None:
        return float(v[ok].mean())
    w = np.asarray(weights, dtype=float)[ok]
    return float((v[ok] * w).sum() / w.sum()) if w.sum() > 0 else math.nan


def personalised_summary(per_client: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """per_client: (labels, probabilities) of each client's evaluated model on its own test set.

    acc/f1: sample-weighted mean over all clients; *_mean, *_std: unweighted over clients;
    auc: on the pooled predictions of all clients (each made by the client's own model),
    auc_client_mean: mean over the clients where AUC is defined."""
    rows = [scores(y, p) for y, p in per_client]
    n = [r["n"] for r in rows]
    acc = [r["acc"] for r in rows]
    ys = [y for y, _ in per_client if len(y)]
    pooled = scores(np.concatenate(ys), np.concatenate([p for y, p in per_client if len(y)])) if ys else None
    finite_acc = np.asarray(acc, dtype=float)[np.isfinite(acc)]
    return {
        "acc": _finite_mean(acc, n),
        "acc_mean": _finite_mean(acc),
        "acc_std": float(finite_acc.std()) if finite_acc.size else math.nan,
        "acc_worst_decile": float(np.quantile(finite_acc, 0.1)) if finite_acc.size else math.nan,
        "f1": _finite_mean([r["f1"] for r in rows], n),
        "auc": pooled["auc"] if pooled else math.nan,
        "auc_client_mean": _finite_mean([r["auc"] for r in rows]),
        "per_client_acc": [None if not math.isfinite(a) else round(a, 6) for a in acc],
        "n": int(sum(n)),
    }


def majority_floors(train_labels: list[np.ndarray], test_labels: list[np.ndarray], n_classes: int) -> dict[str, float]:
    """Trivial predictors (SPEC 2.2): each client predicts its own training majority class
    (local), or every client predicts the majority class of all training images (global)."""
    all_train = np.concatenate(train_labels)
    global_major = int(np.bincount(all_train, minlength=n_classes).argmax())
    hits_local = hits_global = total = 0
    for tr, te in zip(train_labels, test_labels):
        if len(te) == 0:
            continue
        local_major = int(np.bincount(tr, minlength=n_classes).argmax()) if len(tr) else global_major
        hits_local += int((te == local_major).sum())
        hits_global += int((te == global_major).sum())
        total += len(te)
    return {"local_majority_acc": hits_local / total if total else math.nan,
            "global_majority_acc": hits_global / total if total else math.nan}
