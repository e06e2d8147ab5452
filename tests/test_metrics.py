"""Our numpy metrics agree with scikit-learn's, and the personalised summary and floors are right."""
import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from fedmic.metrics import auc_ovr, macro_f1, majority_floors, personalised_summary


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_f1_match_sklearn(n_classes, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, 300)
    prob = softmax(rng.normal(size=(300, n_classes)) + 1.5 * np.eye(n_classes)[y])
    prob = np.round(prob, 2)  # ties in the scores
    prob /= prob.sum(1, keepdims=True)
    if n_classes == 2:
        assert math.isclose(auc_ovr(y, prob), roc_auc_score(y, prob[:, 1]), rel_tol=1e-12)
    else:
        assert math.isclose(auc_ovr(y, prob), roc_auc_score(y, prob, multi_class="ovr", average="macro"), rel_tol=1e-12)
    assert math.isclose(macro_f1(y, prob), f1_score(y, prob.argmax(1), average="macro", labels=np.unique(y), zero_division=0))


def test_auc_undefined_for_one_class():
    assert math.isnan(auc_ovr(np.zeros(5, dtype=int), softmax(np.random.default_rng(0).normal(size=(5, 2)))))


def test_personalised_summary_weights_and_pools():
    y1, y2 = np.array([0, 0, 1, 1]), np.array([1, 1])
    p1 = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])  # 3/4 right
    p2 = np.array([[0.6, 0.4], [0.1, 0.9]])                          # 1/2 right
    s = personalised_summary([(y1, p1), (y2, p2)])
    assert s["acc"] == pytest.approx(4 / 6)          # sample-weighted
    assert s["acc_mean"] == pytest.approx((0.75 + 0.5) / 2)
    assert s["acc_std"] == pytest.approx(0.125)
    pooled_y = np.concatenate([y1, y2])
    assert s["auc"] == pytest.approx(roc_auc_score(pooled_y, np.concatenate([p1, p2])[:, 1]))
    assert s["auc_client_mean"] == pytest.approx(roc_auc_score(y1, p1[:, 1]))  # client 2 has one class


def test_majority_floors():
    train = [np.array([0, 0, 1]), np.array([1, 1, 1, 0])]
    test = [np.array([0, 1]), np.array([1, 1, 0])]
    f = majority_floors(train, test, 2)
    assert f["local_majority_acc"] == pytest.approx((1 + 2) / 5)
    assert f["global_majority_acc"] == pytest.approx(3 / 5)  # class 1 is the global majority (4 of 7)
