"""ACC, AUC (one-vs-rest, macro, on softmax probabilities, as MedMNIST's evaluator) and macro-F1;
personalised summaries over clients and the trivial predictors every result must beat.

Computed with numpy and checked against scikit-learn in tests/test_metrics.py: importing
sklearn.metrics costs 1.9 s of CPU in every training process (measured here), more than
the whole evaluation of a demo run.
"""
from __future__ import annotations

import math

import numpy as np


def roc_auc_binary(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve = the Mann-Whitney U statistic over (positives x negatives),
    with ties counted one half through average ranks. One sort, no Python loop over tie groups
    (a TissueMNIST-sized test split has ~47k scores with long runs of ties)."""
    positive = np.asarray(positive, dtype=bool)
    n = len(positive)
    n_pos = int(positive.sum())
    n_neg = n - n_pos
    order = np.argsort(score, kind="mergesort")
    sorted_scores = np.asarray(score)[order]
    starts_group = np.empty(n, dtype=bool)
    starts_group[:1] = True
    np.not_equal(sorted_scores[1:], sorted_scores[:-1], out=starts_group[1:])
    starts = np.flatnonzero(starts_group)
    sizes = np.diff(np.append(starts, n))
    # ranks a+1 .. a+size of a tied group share their mean, a + (size + 1) / 2
    group_rank = starts + (sizes + 1) / 2.0
    rank_sum = float(np.repeat(group_rank, sizes)[positive[order]].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def accuracy(y: np.ndarray, prob: np.ndarray) -> float:
    return float((prob.argmax(1) == y).mean()) if len(y) else math.nan


def auc_ovr(y: np.ndarray, prob: np.ndarray) -> float:
    """Macro one-vs-rest AUC over the classes that occur with both outcomes in `y`.

    A client whose test set holds one class has no defined AUC: NaN, not a made-up 0.5.
    """
    n_classes = prob.shape[1]
    if n_classes == 2:
        return roc_auc_binary(y == 1, prob[:, 1]) if len(np.unique(y)) == 2 else math.nan
    counts = np.bincount(y, minlength=n_classes)
    scores = [roc_auc_binary(y == c, prob[:, c]) for c in range(n_classes) if 0 < counts[c] < len(y)]
    return float(np.mean(scores)) if scores else math.nan


def macro_f1(y: np.ndarray, prob: np.ndarray) -> float:
    """Macro-F1 over the classes present in `y` (a class absent from the test set but predicted
    would otherwise add a zero and punish a client for its label skew)."""
    if not len(y):
        return math.nan
    n_classes = prob.shape[1]
    pred = prob.argmax(1)
    true_count = np.bincount(y, minlength=n_classes)
    pred_count = np.bincount(pred, minlength=n_classes)
    hits = np.bincount(y[pred == y], minlength=n_classes)
    present = true_count > 0
    return float(np.mean(2 * hits[present] / (pred_count[present] + true_count[present])))


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


def _listed(values) -> list[float | None]:
    return [None if not math.isfinite(v) else round(v, 6) for v in values]


def personalised_summary(per_client: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """per_client: (labels, probabilities) of each client's evaluated model on its own test set.

    Every headline value is computed per client, then averaged over clients weighted by their
    test-set sizes: acc, f1 and auc (the last over the `auc_clients` clients whose test set
    holds at least two classes; a one-class client has no AUC). *_mean, acc_std: unweighted over
    clients. auc_pooled: one AUC over all clients' pooled predictions, secondary only: under label
    skew it rewards knowing each client's label mix (a predictor that outputs each client's
    training label distribution scores far above 0.5 on it, and exactly 0.5 per client)."""
    rows = [scores(y, p) for y, p in per_client]
    n = [r["n"] for r in rows]
    acc, auc, f1 = ([r[k] for r in rows] for k in ("acc", "auc", "f1"))
    ys = [y for y, _ in per_client if len(y)]
    pooled = auc_ovr(np.concatenate(ys), np.concatenate([p for y, p in per_client if len(y)])) if ys else math.nan
    finite_acc = np.asarray(acc, dtype=float)[np.isfinite(acc)]
    return {
        "acc": _finite_mean(acc, n),
        "acc_mean": _finite_mean(acc),
        "acc_std": float(finite_acc.std()) if finite_acc.size else math.nan,
        "acc_worst_decile": float(np.quantile(finite_acc, 0.1)) if finite_acc.size else math.nan,
        "auc": _finite_mean(auc, n),
        "auc_mean": _finite_mean(auc),
        "auc_pooled": pooled,
        "auc_clients": int(np.isfinite(auc).sum()),
        "f1": _finite_mean(f1, n),
        "per_client_acc": _listed(acc),
        "per_client_auc": _listed(auc),
        "per_client_f1": _listed(f1),
        "n": int(sum(n)),
    }


def client_prior(train_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """A client's training label distribution: the prediction of a model that never looks at an
    image (uniform for a client without training images)."""
    counts = np.bincount(train_labels, minlength=n_classes).astype(np.float64)
    return counts / counts.sum() if counts.sum() else np.full(n_classes, 1.0 / n_classes)


def floors(train_labels: list[np.ndarray], test_labels: list[np.ndarray], n_classes: int) -> dict[str, float]:
    """Trivial predictors on the clients' own test sets (docs/method.md, "Floors"):
    - local majority: each client predicts its own training majority class;
    - global majority: every client predicts the majority class of all training images;
    - client prior: each client outputs its own training label distribution for every image.
      Its ACC is the local-majority ACC; its per-client AUC is 0.5 (constant scores) and its
      pooled AUC shows how much pooling rewards knowing the label mix."""
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
    prior = personalised_summary([(te, np.tile(client_prior(tr, n_classes), (len(te), 1)))
                                  for tr, te in zip(train_labels, test_labels)])
    return {"local_majority_acc": hits_local / total if total else math.nan,
            "global_majority_acc": hits_global / total if total else math.nan,
            "client_prior_acc": prior["acc"], "client_prior_auc": prior["auc"], "client_prior_f1": prior["f1"],
            "client_prior_auc_pooled": prior["auc_pooled"], "auc_clients": prior["auc_clients"],
            "clients": len(test_labels)}
