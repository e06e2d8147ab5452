"""Inference over runs: the comparisons a table fixes in advance, scored with the run (seed) as the
unit, and the strongest baseline chosen on the clients' validation splits, never on test.

- `paired_difference`: mean paired difference over seeds, its 95 % t interval and the two-sided
  paired t-test's p-value. The seeds of two arms pair up because a seed fixes the partition and
  the initial weights; the clients of one run share one federation, so they are not the unit.
- `welch_difference`: difference of two means from unpaired samples (runs on different
  partitions, e.g. one per λ), Welch's 95 % t interval and two-sided p.
- `noninferiority`: the one-sided paired t-test that a - b is above -margin.
- `holm`: Holm's step-down adjustment of a family of p-values (controls the family-wise error
  without assuming independence).
- `validation_scores`: each run's mean personalised validation ACC over its last k evaluated
  rounds (k: the run's own last_k), the score baselines are ranked by.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from fedmic.report.tidy import RUN_KEY

CONFIDENCE = 0.95


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """a - b over paired runs: {n, mean, low, high, p}. Fewer than two pairs: no interval, no p."""
    from scipy.stats import t as student_t

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[np.isfinite(d)]
    n = int(d.size)
    out = {"n": n, "mean": float(d.mean()) if n else math.nan, "low": math.nan, "high": math.nan, "p": math.nan}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    if sd == 0.0:  # every seed differs by the same amount: the interval is that amount
        out.update(low=out["mean"], high=out["mean"], p=1.0 if out["mean"] == 0.0 else 0.0)
        return out
    se = sd / math.sqrt(n)
    half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * se
    out.update(low=out["mean"] - half, high=out["mean"] + half,
               p=float(2 * student_t.sf(abs(out["mean"]) / se, n - 1)))
    return out


def welch_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """mean(a) - mean(b) over unpaired runs: {n, mean, low, high, p} (n: 'len(a)/len(b)'), Welch's
    t interval and two-sided Welch t-test. Fewer than two runs on either side: no interval, no p."""
    from scipy.stats import t as student_t

    x, y = (np.asarray(v, dtype=float) for v in (a, b))
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    out = {"n": f"{x.size}/{y.size}", "mean": float(x.mean() - y.mean()) if x.size and y.size else math.nan,
           "low": math.nan, "high": math.nan, "p": math.nan}
    if x.size < 2 or y.size < 2:
        return out
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(vx + vy)
    if se == 0.0:
        out.update(low=out["mean"], high=out["mean"], p=1.0 if out["mean"] == 0.0 else 0.0)
        return out
    df = (vx + vy) ** 2 / (vx ** 2 / (x.size - 1) + vy ** 2 / (y.size - 1))  # Welch-Satterthwaite
    half = float(student_t.ppf(0.5 + confidence / 2, df)) * se
    out.update(low=out["mean"] - half, high=out["mean"] + half, p=float(2 * student_t.sf(abs(out["mean"]) / se, df)))
    return out


def noninferiority(a: Sequence[float], b: Sequence[float], margin: float) -> float:
    """p of the one-sided paired t-test of H0: mean(a - b) <= -margin against a - b > -margin
    (a is no worse than b by more than `margin`); NaN with fewer than two pairs."""
    from scipy.stats import t as student_t

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return math.nan
    shifted = float(d.mean()) + margin
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return 0.0 if shifted > 0 else 1.0
    return float(student_t.sf(shifted / (sd / math.sqrt(d.size)), d.size - 1))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values in the given order; NaN stays NaN and does not count in the family."""
    p = np.asarray(pvalues, dtype=float)
    finite = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, math.nan)
    m, running = len(finite), 0.0
    for rank, i in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def validation_scores(tidy: pd.DataFrame, metric: str = "acc") -> pd.Series:
    """Per run (indexed by RUN_KEY): the mean personalised VALIDATION `metric` over the run's last
    k evaluated rounds (k = its last_k; fewer where it evaluated fewer)."""
    rounds = tidy[(tidy["select"] == "round") & (tidy["scope"] == "personal") & (tidy["split"] == "val")
                  & (tidy["metric"] == metric) & tidy["client"].isna()]
    last_k = tidy[(tidy["scope"] == "config") & (tidy["metric"] == "last_k")].set_index(RUN_KEY)["value"]
    scores = {}
    for key, run in rounds.groupby(RUN_KEY, sort=False, dropna=False):
        k = int(last_k.get(key, 1))
        scores[key] = float(run.sort_values("round")["value"].tail(k).mean())
    index = pd.MultiIndex.from_tuples(list(scores), names=RUN_KEY) if scores else None
    return pd.Series(scores, index=index, dtype=float, name=f"val_{metric}")


def best_on_validation(runs: pd.DataFrame, scores: pd.Series, exclude_methods: Sequence[str] = ("fedmic",)) -> str | None:
    """The arm among `runs` (one row per run of a setting) with the highest mean validation score
    over its seeds, methods in `exclude_methods` left out; None when no arm has a score."""
    cand = runs[~runs["method"].isin(exclude_methods)]
    if cand.empty:
        return None
    per_run = cand.join(scores, on=RUN_KEY)[["arm", scores.name]]
    means = per_run.groupby("arm", sort=False)[scores.name].mean().dropna()
    return None if means.empty else str(means.idxmax())
