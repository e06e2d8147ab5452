"""Inference over runs (fedmic/report/stats.py): hand-made cases with known answers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fedmic.report import stats
from fedmic.report.tidy import RUN_KEY


def test_paired_difference_is_the_t_interval_over_seeds():
    # d = 1..5: mean 3, sd sqrt(2.5), se sqrt(0.5); t(0.975, 4) = 2.7764451; t = 3/sqrt(0.5) = 4.2426
    got = stats.paired_difference([11, 12, 13, 14, 15], [10, 10, 10, 10, 10])
    half = 2.7764451051977987 * math.sqrt(0.5)
    assert got["n"] == 5 and got["mean"] == pytest.approx(3.0)
    assert (got["low"], got["high"]) == (pytest.approx(3 - half), pytest.approx(3 + half))
    assert got["p"] == pytest.approx(0.013236, abs=1e-6)  # two-sided paired t-test, 4 df
    from scipy.stats import ttest_rel
    assert got["p"] == pytest.approx(ttest_rel([11, 12, 13, 14, 15], [10, 10, 10, 10, 10]).pvalue)
    # the direction is a - b
    assert stats.paired_difference([10] * 5, [11, 12, 13, 14, 15])["mean"] == pytest.approx(-3.0)


def test_paired_difference_edge_cases():
    one = stats.paired_difference([1.0], [0.0])
    assert one["n"] == 1 and math.isnan(one["p"]) and math.isnan(one["low"])
    same = stats.paired_difference([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert (same["mean"], same["low"], same["high"], same["p"]) == (0.0, 0.0, 0.0, 1.0)
    shift = stats.paired_difference([0.6, 0.7], [0.5, 0.6])
    assert shift["low"] == shift["high"] == pytest.approx(0.1) and shift["p"] == 0.0
    # a missing seed on either side drops that pair
    assert stats.paired_difference([1, 2, np.nan], [0, 0, 0])["n"] == 2


def test_welch_difference_is_welchs_interval_and_test():
    # a: mean 3, var 2.5 (n 5); b: mean 1, var 1 (n 3); se^2 = 0.5 + 1/3; Welch-Satterthwaite df
    a, b = [1, 2, 3, 4, 5], [0, 1, 2]
    got = stats.welch_difference(a, b)
    se2 = 2.5 / 5 + 1 / 3
    df = se2 ** 2 / ((2.5 / 5) ** 2 / 4 + (1 / 3) ** 2 / 2)
    from scipy.stats import t, ttest_ind
    half = t.ppf(0.975, df) * math.sqrt(se2)
    assert got["n"] == "5/3" and got["mean"] == pytest.approx(2.0)
    assert (got["low"], got["high"]) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert got["p"] == pytest.approx(ttest_ind(a, b, equal_var=False).pvalue)
    assert math.isnan(stats.welch_difference([1.0], [0.0, 1.0])["p"])  # one run: no interval
    assert stats.welch_difference([1, 1], [0, 0])["p"] == 0.0  # no spread on either side


def test_noninferiority_is_the_one_sided_shifted_paired_t():
    a, b = [0.80, 0.82, 0.79, 0.81, 0.80], [0.81, 0.81, 0.80, 0.80, 0.81]  # a - b: mean -0.002
    from scipy.stats import ttest_1samp
    d = np.subtract(a, b)
    want = ttest_1samp(d + 0.02, 0.0, alternative="greater").pvalue
    assert stats.noninferiority(a, b, 0.02) == pytest.approx(want) and want < 0.05
    # the same differences are not within a margin of 0.001
    assert stats.noninferiority(a, b, 0.001) > 0.5
    assert math.isnan(stats.noninferiority([0.8], [0.7], 0.01))


def test_holm_adjusts_in_the_given_order():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.01]) == pytest.approx([0.5, 0.02])
    assert stats.holm([0.4, 0.9, 0.6]) == pytest.approx([1.0, 1.0, 1.0])  # capped at 1, monotone
    out = stats.holm([0.02, math.nan])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1])  # NaN is not a member of the family


def tidy_frame(val: dict, test: dict, last_k: int = 2) -> pd.DataFrame:
    """A tidy frame with per-round personalised val and test ACC: {(arm, method, seed): [v1, v2, v3]}."""
    rows = []
    for split, values in (("val", val), ("test", test)):
        for (arm, method, seed), series in values.items():
            key = dict(dataset="d", scheme="dirichlet_label", lam=0.1, clients=3, join_ratio=1.0, arm=arm, seed=seed)
            for rnd, value in enumerate(series, 1):
                rows.append({**key, "method": method, "select": "round", "round": rnd, "scope": "personal",
                             "split": split, "client": math.nan, "metric": "acc", "value": value})
            if split == "val":
                rows.append({**key, "method": method, "select": "run", "round": math.nan, "scope": "config",
                             "split": math.nan, "client": math.nan, "metric": "last_k", "value": last_k})
    return pd.DataFrame(rows)


def test_the_best_baseline_is_chosen_on_validation_even_where_test_says_otherwise():
    val = {("fedrep", "fedrep", 0): [0.1, 0.80, 0.82], ("fedrep", "fedrep", 1): [0.1, 0.78, 0.80],
           ("ditto", "ditto", 0): [0.9, 0.70, 0.70], ("ditto", "ditto", 1): [0.9, 0.72, 0.70],
           ("fedmic", "fedmic", 0): [0.99, 0.99, 0.99], ("fedmic", "fedmic", 1): [0.99, 0.99, 0.99]}
    # on test, ditto is far ahead: a selection that read test would pick it
    test = {k: ([0.9, 0.95, 0.95] if k[0] == "ditto" else [0.5, 0.5, 0.5]) for k in val}
    tidy = tidy_frame(val, test)
    scores = stats.validation_scores(tidy)
    assert scores[("d", "dirichlet_label", 0.1, 3, 1.0, "fedrep", 0)] == pytest.approx(0.81)  # last 2 rounds
    assert scores[("d", "dirichlet_label", 0.1, 3, 1.0, "ditto", 1)] == pytest.approx(0.71)
    runs = tidy.drop_duplicates(RUN_KEY)[RUN_KEY + ["method"]]
    assert stats.best_on_validation(runs, scores) == "fedrep"  # not ditto (test), not fedmic (excluded)
    # last_k matters: over all three rounds ditto's early 0.9 would win
    assert stats.best_on_validation(runs, stats.validation_scores(tidy_frame(val, test, last_k=3))) == "ditto"
