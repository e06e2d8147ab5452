"""The claims table (fedmic/paper/claims.py): the abstract's conditional claims tested over seeds,
on hand-made runs with known answers (tests/runfixtures.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from runfixtures import write_run

from fedmic import paper
from fedmic.paper import claims
from fedmic.report import stats, tidy

REPO = Path(__file__).resolve().parents[1]
SEEDS = range(5)


def arm_runs(tmp_path, arm: str, method: str, accs, val: float = 0.5, **kw) -> list[Path]:
    return [write_run(tmp_path, f"{arm}-{kw}-{s}".replace(" ", ""), method=method, arm=arm, seed=s, acc=accs[s],
                      val_accs=(val,) * 4, **kw) for s in SEEDS]


def row(t, **match):
    df = t.df
    for k, v in match.items():
        df = df[df[k] == v]
    assert len(df) == 1, (match, t.df)
    return df.iloc[0]


MIC = np.array([0.80, 0.82, 0.79, 0.85, 0.81])


def skew_runs(tmp_path):
    """λ 0.1: FedMIC 0.05 above Local per seed (± noise); λ 0.5: 0.01 above. FedAvg is the best
    on VALIDATION at λ 0.1, FedProx at λ 0.5 (FedProx wins on test at 0.1: never chosen there)."""
    gaps = {0.1: np.array([0.05, 0.06, 0.04, 0.05, 0.05]), 0.5: np.array([0.01, 0.00, 0.02, 0.01, 0.01])}
    paths = []
    for lam, g in gaps.items():
        paths += arm_runs(tmp_path, "fedmic", "fedmic", MIC, lam=lam, val=0.6)
        paths += arm_runs(tmp_path, "local", "local", MIC - g, lam=lam, val=0.5)
        paths += arm_runs(tmp_path, "fedkd", "fedkd", MIC - 0.02, lam=lam, val=0.5)
        paths += arm_runs(tmp_path, "fedavg", "fedavg", MIC - 0.03, lam=lam, val=0.9 if lam == 0.1 else 0.4)
        paths += arm_runs(tmp_path, "fedprox", "fedprox", MIC + (0.1 if lam == 0.1 else -0.03), lam=lam,
                          val=0.4 if lam == 0.1 else 0.9)
    return paths, gaps


def test_skew_is_the_gap_at_the_lowest_lambda_minus_the_gap_at_the_highest(tmp_path):
    paths, gaps = skew_runs(tmp_path)
    t = claims.table(tidy.collect(paths))
    local = row(t, claim=claims.SKEW, comparison="FedMIC − Local")
    want = stats.welch_difference(gaps[0.1], gaps[0.5])
    assert want["mean"] == pytest.approx(0.04)
    assert local["difference (95 % CI)"] == f"{want['mean']:+.3f} ({want['low']:+.3f}, {want['high']:+.3f})"
    assert local["seeds"] == "5/5" and local["condition"].startswith("λ=0.1: +0.050 (")
    assert local["reference"].startswith("λ=0.5: +0.010 (")
    # FedKD trails FedMIC by the same 0.02 at both λ: no interaction
    kd = row(t, claim=claims.SKEW, comparison="FedMIC − FedKD")
    assert kd["difference (95 % CI)"] == "+0.000 (+0.000, +0.000)" and kd["verdict"] == "cannot tell"
    # the validation-best baseline differs by λ and is named at each; test ACC never picks it
    best = t.df[t.df["comparison"].str.contains("best on validation")]
    assert best["comparison"].tolist() == ["FedMIC − best on validation (λ=0.1: FedAvg; λ=0.5: FedProx)"]
    assert best["condition"].iloc[0].startswith("λ=0.1: +0.030")


def test_every_test_of_the_table_is_one_holm_family(tmp_path):
    paths, gaps = skew_runs(tmp_path)
    t = claims.table(tidy.collect(paths + participation_runs(tmp_path)))
    assert t.df["claim"].tolist() == [claims.SKEW] * 3 + [claims.PARTICIPATION]
    assert "Holm-adjusted over the 4 tests of this table" in t.caption
    def gap(minus):  # FedMIC - (FedMIC - x) per seed, in the same floating point as the table
        return MIC - (MIC - minus)

    low, full = participation_gaps()
    raw = [stats.welch_difference(gap(gaps[0.1]), gap(gaps[0.5]))["p"],
           stats.welch_difference(gap(0.02), gap(0.02))["p"],
           stats.welch_difference(gap(0.03), gap(0.03))["p"],
           stats.paired_difference(gap(low), gap(full))["p"]]
    assert t.df["p Holm [value]"].tolist() == pytest.approx(stats.holm(raw))


def participation_gaps():
    return np.array([0.06, 0.07, 0.05, 0.06, 0.06]), np.array([0.01, 0.02, 0.00, 0.01, 0.01])


def participation_runs(tmp_path):
    """20 clients; FedMIC 0.06 above FedAvg at join ratio 0.1 and 0.01 above at 1.0, per seed;
    a run at join ratio 0.5 that the claim does not read."""
    low_gap, full_gap = participation_gaps()
    paths = []
    for jr, g in ((0.1, low_gap), (0.5, np.full(5, -0.5)), (1.0, full_gap)):
        paths += arm_runs(tmp_path, "fedmic", "fedmic", MIC, clients=20, join_ratio=jr)
        paths += arm_runs(tmp_path, "fedavg", "fedavg", MIC - g, clients=20, join_ratio=jr)
    return paths


def test_participation_is_paired_over_seeds_between_the_lowest_and_highest_join_ratio(tmp_path):
    t = claims.table(tidy.collect(participation_runs(tmp_path)))
    r = row(t, claim=claims.PARTICIPATION)
    want = stats.paired_difference(*participation_gaps())
    assert want["mean"] == pytest.approx(0.05) and want["high"] - want["low"] < 1e-9  # every seed: +0.05
    assert r["comparison"] == "FedMIC − FedAvg" and r["seeds"] == "5"
    assert r["condition"].startswith("join ratio 0.1: +0.060") and r["reference"].startswith("join ratio 1: +0.010")
    assert r["difference (95 % CI)"] == "+0.050 (+0.050, +0.050)" and r["verdict"] == "supported"
    assert "K=20" in r["setting"] and "paired t" in r["test"]


def test_communication_is_non_inferiority_against_dense_uploads(tmp_path):
    dense = np.array([0.81, 0.81, 0.80, 0.86, 0.80])
    paths = (arm_runs(tmp_path, "fedmic", "fedmic", MIC, up=(1000, 1000))
             + arm_runs(tmp_path, "fedmic-no-gpd", "fedmic", dense, hp={"gpd": False}, up=(50000, 50000))
             + arm_runs(tmp_path, "fedmic-no-rep", "fedmic", MIC - 0.2, hp={"rep_distill": False}))
    t = claims.table(tidy.collect(paths), margin=0.02)
    r = row(t, claim=claims.COMMUNICATION)
    assert r["comparison"] == "FedMIC − FedMIC-no-gpd (dense uploads)"
    assert r["condition"] == "low-rank uploads: 0.008 MB up per run"  # 2 x 1000 bytes x 4 rounds
    assert r["reference"] == "dense uploads: 0.4 MB (0.020×)"
    want = stats.noninferiority(MIC, dense, 0.02)
    assert r["p Holm [value]"] == pytest.approx(want) and r["verdict"] == "no worse than the margin"
    assert "margin 0.02" in r["test"]
    # a margin tighter than the differences' spread cannot be claimed
    assert row(claims.table(tidy.collect(paths), margin=0.001), claim=claims.COMMUNICATION)["verdict"] == "cannot tell"


def test_claims_read_the_runs_of_t2_t3_and_t5_once():
    cfg = yaml.safe_load((REPO / "config" / "compare.yaml").read_text())
    got = claims.runs(cfg)
    want = list(dict.fromkeys([*paper.runs(cfg, "t2"), *paper.runs(cfg, "t3"), *paper.runs(cfg, "t5")]))
    assert got == want and len(got) == len(set(got))
    assert {k.clients for k in got} == {10, 20}
    off = {**cfg, "tables": {**cfg["tables"], "t3": {**cfg["tables"]["t3"], "enabled": False}}}
    assert {k.clients for k in claims.runs(off)} == {10}


def test_claims_apply_where_a_claim_can_be_tested_and_say_so_where_none_can(tmp_path):
    tiny = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())  # one λ, T3 and T5 off
    assert not claims.applies(tiny)
    assert claims.applies({**tiny, "lams": [0.1, 0.5]})
    only_fedmic = {**tiny, "lams": [0.1, 0.5], "methods": {"fedmic": {"method": "fedmic"}}}
    assert not claims.applies(only_fedmic)  # no comparator: nothing to test
    compare = yaml.safe_load((REPO / "config" / "compare.yaml").read_text())
    assert claims.applies(compare)
    only_t5 = {**compare, "lams": [0.5], "tables": {**compare["tables"], "t3": {"enabled": False}}}
    assert claims.applies(only_t5)
    no_dense = {**only_t5, "tables": {**only_t5["tables"], "t5": {"datasets": ["breastmnist"], "arms": {
        "fedmic-no-rep": {"method": "fedmic", "hp": {"rep_distill": False}}}}}}
    assert not claims.applies(no_dense)
    with pytest.raises(ValueError, match="no claim can be tested"):
        claims.table(tidy.collect(arm_runs(tmp_path, "fedmic", "fedmic", MIC)))
