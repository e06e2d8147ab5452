"""Our numpy metrics agree with scikit-learn's, and the personalised summary and floors are right."""
import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from fedmic.metrics import auc_ovr, client_prior, floors, macro_f1, personalised_summary, roc_auc_binary


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _problem(n_classes, seed, n=300, decimals=None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    prob = softmax(rng.normal(size=(n, n_classes)) + 1.5 * np.eye(n_classes)[y])
    if decimals is not None:  # long runs of tied scores
        prob = np.round(prob, decimals)
        prob /= prob.sum(1, keepdims=True)
    return y, prob


def _sklearn_auc(y, prob):
    if prob.shape[1] == 2:
        return roc_auc_score(y, prob[:, 1])
    return roc_auc_score(y, prob, multi_class="ovr", average="macro")


@pytest.mark.parametrize("n_classes", [2, 3, 5, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("decimals", [None, 2, 1])
def test_auc_and_f1_match_sklearn(n_classes, seed, decimals):
    y, prob = _problem(n_classes, seed, decimals=decimals)
    assert abs(auc_ovr(y, prob) - _sklearn_auc(y, prob)) <= 1e-12
    assert math.isclose(macro_f1(y, prob), f1_score(y, prob.argmax(1), average="macro", labels=np.unique(y),
                                                     zero_division=0), rel_tol=1e-12)


def test_auc_all_scores_tied_is_one_half():
    y = np.array([0, 1, 1, 0, 1])
    assert roc_auc_binary(y == 1, np.full(5, 0.3)) == 0.5 == roc_auc_score(y, np.full(5, 0.3))


def test_auc_undefined_for_one_class():
    assert math.isnan(auc_ovr(np.zeros(5, dtype=int), softmax(np.random.default_rng(0).normal(size=(5, 2)))))
    # multi-class: a class present in every sample is skipped, the others count
    y, prob = np.array([0, 0, 0]), softmax(np.random.default_rng(1).normal(size=(3, 4)))
    assert math.isnan(auc_ovr(y, prob))


def test_auc_multiclass_with_missing_classes_is_macro_over_present_ones():
    rng = np.random.default_rng(3)
    y = rng.choice([0, 2, 3], 200)  # class 1 never occurs
    prob = softmax(rng.normal(size=(200, 4)))
    expected = np.mean([roc_auc_score(y == c, prob[:, c]) for c in (0, 2, 3)])
    assert abs(auc_ovr(y, prob) - expected) <= 1e-12


def test_personalised_summary_is_per_client_and_sample_weighted():
    y1, y2 = np.array([0, 0, 1, 1]), np.array([1, 1])
    p1 = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])  # 3/4 right
    p2 = np.array([[0.6, 0.4], [0.1, 0.9]])                          # 1/2 right
    s = personalised_summary([(y1, p1), (y2, p2)])
    assert s["acc"] == pytest.approx(4 / 6)          # sample-weighted
    assert s["acc_mean"] == pytest.approx((0.75 + 0.5) / 2)
    assert s["acc_std"] == pytest.approx(0.125)
    assert s["auc"] == pytest.approx(roc_auc_score(y1, p1[:, 1]))  # client 2 has one class: no AUC
    assert s["auc_clients"] == 1
    assert s["per_client_auc"][1] is None
    pooled_y = np.concatenate([y1, y2])
    assert s["auc_pooled"] == pytest.approx(roc_auc_score(pooled_y, np.concatenate([p1, p2])[:, 1]))
    f1_1 = f1_score(y1, p1.argmax(1), average="macro")
    f1_2 = f1_score(y2, p2.argmax(1), average="macro", labels=[1])
    assert s["f1"] == pytest.approx((4 * f1_1 + 2 * f1_2) / 6)


def test_pooled_and_per_client_auc_differ_under_label_skew():
    """Two clients, each predicting its own label mix and nothing else: per-client AUC is 0.5
    (no image information), the pooled AUC is high because the clients' base rates differ."""
    rng = np.random.default_rng(0)
    y_a = (rng.random(400) < 0.9).astype(int)   # mostly class 1
    y_b = (rng.random(400) < 0.1).astype(int)   # mostly class 0
    prior_a, prior_b = np.array([0.1, 0.9]), np.array([0.9, 0.1])
    s = personalised_summary([(y_a, np.tile(prior_a, (400, 1))), (y_b, np.tile(prior_b, (400, 1)))])
    assert s["auc"] == 0.5
    assert s["auc_pooled"] > 0.85


def test_floors_on_a_hand_made_partition():
    train = [np.array([0, 0, 1]), np.array([1, 1, 1, 0]), np.array([2, 2])]
    test = [np.array([0, 1]), np.array([1, 1, 0]), np.array([2, 2, 2])]
    f = floors(train, test, 3)
    assert f["local_majority_acc"] == pytest.approx((1 + 2 + 3) / 8)
    assert f["global_majority_acc"] == pytest.approx(3 / 8)  # class 1 is the global majority (4 of 9)
    # client prior: argmax is the local majority; constant scores give AUC 0.5 on the two
    # clients with two test classes; the third holds one class and has no AUC
    assert f["client_prior_acc"] == pytest.approx(f["local_majority_acc"])
    assert f["client_prior_auc"] == 0.5
    assert f["auc_clients"] == 2 and f["clients"] == 3
    f1 = [f1_score(te, np.full(len(te), np.bincount(tr).argmax()), average="macro", labels=np.unique(te),
                   zero_division=0) for tr, te in zip(train, test)]
    assert f["client_prior_f1"] == pytest.approx((2 * f1[0] + 3 * f1[1] + 3 * f1[2]) / 8)
    pooled_p = np.concatenate([np.tile(client_prior(tr, 3), (len(te), 1)) for tr, te in zip(train, test)])
    assert f["client_prior_auc_pooled"] == pytest.approx(
        roc_auc_score(np.concatenate(test), pooled_p, multi_class="ovr", average="macro"))


def test_client_prior_is_the_training_label_distribution():
    assert client_prior(np.array([0, 2, 2, 2]), 3).tolist() == [0.25, 0.0, 0.75]
    assert client_prior(np.array([], dtype=int), 2).tolist() == [0.5, 0.5]
