"""Hyperparameter tuning on the clients' validation splits (docs/tuning.md).

Every tuned arm gets the same budget: `budget` trials, each a run of `rounds` rounds on the
tuning seed (a seed not among the reported ones), at each (dataset, lambda) it is reported at.
Trial 0 is the arm's own settings (so tuning never selects something that scored worse on
validation than the defaults); trials 1.. draw the learning rate and every hyperparameter with a
declared space (its method's declaration, fedmic/algorithms/<name>.py) independently, from a generator seeded by (tuning seed, arm,
trial). Why a seeded random sample rather than a grid: with the same number of trials it covers
each important hyperparameter with as many distinct values as the budget, whatever the number
of unimportant ones (a grid spends its budget on their combinations), and it gives a method with
one hyperparameter and a method with six exactly the same budget. Drawing each trial from its
own seed keeps trials 0..n-1 unchanged when the budget grows to n+k, so their runs are reused.

A trial runs with on_nonfinite: skip, so one that diverges does not stop the workflow; a trial
with any dropped (non-finite) update is not eligible. A trial is scored by the mean
sample-weighted personalised validation ACC of its last k evaluated rounds (the run's last_k; global methods are scored with their global model, which is
what they evaluate on each client); the best score wins, the lower trial number on a tie. Test
data is never read.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .methods import resolve_hp, tuned_space
from .utils import derive_seed

TRIAL_SEP = "-trial"
TUNED_SUFFIX = "-tuned"


def trial_arm(arm: str, trial: int) -> str:
    return f"{arm}{TRIAL_SEP}{trial:02d}"


def tuned_arm(arm: str) -> str:
    return f"{arm}{TUNED_SUFFIX}"


def trial_settings(method: str, arm: str, base_hp: dict, budget: int, seed: int) -> list[dict]:
    """The `budget` trials of `arm`: [{"lr": float | None, "hp": {...}}], trial 0 the arm's own
    settings (lr None: the run's lr). Each drawn hp set passes the method's rules (a draw that
    breaks one, e.g. energy_start > energy_end, is drawn again from the next stream)."""
    # the workflow asks for every run's arms: draw once per arm, hand out copies
    return json.loads(_trial_settings(method, arm, json.dumps(base_hp, sort_keys=True), budget, seed))


@functools.lru_cache(maxsize=None)
def _trial_settings(method: str, arm: str, base_hp_json: str, budget: int, seed: int) -> str:
    base_hp = json.loads(base_hp_json)
    space = tuned_space(method)
    trials = [{"lr": None, "hp": {}}]
    for t in range(1, budget):
        for attempt in range(100):
            rng = np.random.default_rng(derive_seed("tuning", seed, arm, t, attempt))
            drawn = {name: s.draw(rng, kind) for name, (kind, s) in space.items()}
            hp = {k: v for k, v in drawn.items() if k != "lr"}
            try:
                resolve_hp(method, {**base_hp, **hp})
            except ValueError:
                continue
            trials.append({"lr": drawn["lr"], "hp": hp})
            break
        else:  # pragma: no cover - a space whose draws always break a rule is a declaration bug
            raise ValueError(f"{arm}: 100 draws of trial {t} all break {method}'s rules; fix its spaces")
    return json.dumps(trials)


def trial_number(arm: str) -> int:
    head, sep, tail = arm.rpartition(TRIAL_SEP)
    if not sep or not tail.isdigit():
        raise ValueError(f"arm {arm!r} is not a tuning trial (<arm>{TRIAL_SEP}NN)")
    return int(tail)


def trial_base(arm: str) -> str | None:
    """The tuned arm a trial arm belongs to (None: not a trial)."""
    head, sep, tail = arm.rpartition(TRIAL_SEP)
    return head if sep and tail.isdigit() else None


def select(tidy, metric: str = "acc") -> dict:
    """The selection among one arm's trial runs at one (dataset, lambda), given as a tidy frame
    (fedmic.report.tidy): the best trial's learning rate and hyperparameters (those that differ
    from the method's defaults) and every trial's validation score."""
    from .report.stats import validation_scores
    from .report.tidy import RUN_KEY

    runs = tidy.drop_duplicates(RUN_KEY)
    bases = {trial_base(a) for a in runs["arm"]}
    settings = runs[["dataset", "lam"]].drop_duplicates()
    if None in bases or len(bases) != 1 or len(settings) != 1:
        raise ValueError(f"select needs the trial runs of one arm at one dataset and lambda; got arms "
                         f"{', '.join(sorted(map(str, runs['arm'])))}")
    scores = validation_scores(tidy, metric)
    lrs = tidy[(tidy["scope"] == "config") & (tidy["metric"] == "lr")].set_index(RUN_KEY)["value"]
    skipped = tidy[(tidy["scope"] == "comm") & (tidy["metric"] == "skipped_total")].set_index(RUN_KEY)["value"]
    rows = []
    for _, run in runs.iterrows():
        key = tuple(run[k] for k in RUN_KEY)
        rows.append({"trial": trial_number(run["arm"]), "lr": float(lrs[key]), "hp": json.loads(run["hp_changes"]),
                     "score": float(scores.get(key, math.nan)), "skipped_updates": int(skipped.get(key, 0) or 0)})
    rows.sort(key=lambda r: r["trial"])
    # a trial whose training diverged (an update dropped as non-finite) is not eligible: its
    # settings would stop the reported runs, which do not skip
    finite = [r for r in rows if math.isfinite(r["score"]) and r["skipped_updates"] == 0]
    if not finite:
        raise ValueError("no trial has a validation score without a diverged update; widen the budget or "
                         "narrow the spaces (docs/tuning.md)")
    best = max(finite, key=lambda r: (r["score"], -r["trial"]))
    return {"arm": bases.pop(), "dataset": str(settings["dataset"].iloc[0]), "lam": float(settings["lam"].iloc[0]),
            "metric": f"personalised validation {metric}, mean of the last k evaluated rounds",
            "chosen": best, "trials": rows}


def read_selection(path: str | Path) -> dict:
    try:
        sel = json.loads(Path(path).read_text())
        return {"lr": sel["chosen"]["lr"], "hp": dict(sel["chosen"]["hp"])}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a tuning selection ({e}); delete it and rerun the workflow, which "
                         "selects again from the trials") from None

