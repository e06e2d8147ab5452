"""Tuning on validation (fedmic/tuning.py, workflow/rules/tune.smk): equal budgets, deterministic
trials, selection on validation only, and a changed selection retrains exactly its runs."""
from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import DATA

from fedmic import grid, tuning
from fedmic.methods import METHODS, LR_SPACE, tuned_space

REPO = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())


def config(budget=4, **extra):
    cfg = copy.deepcopy(TINY)
    cfg["methods"] = {"local": {"method": "local"}, "fedavg": {"method": "fedavg"},
                      "fedmic": {"method": "fedmic"}, "fedmic-no-rep": {"method": "fedmic", "hp": {"rep_distill": False}}}
    cfg["tuning"] = {"budget": budget, "rounds": 1, "seed": 100, **extra}
    return cfg


# --------------------------------------------------------------------------- the trials
def test_every_tuned_arm_gets_the_same_budget_of_trials_of_the_same_rounds():
    cfg = config(budget=5)
    trials = grid.trial_arms(cfg)
    per_arm = {}
    for name, spec in trials.items():
        per_arm.setdefault(tuning.trial_base(name), []).append(spec)
    assert set(per_arm) == set(cfg["methods"]) and {len(v) for v in per_arm.values()} == {5}
    assert {spec["train"]["rounds"] for spec in trials.values()} == {1}
    runs = grid.tuning_runs(cfg)
    assert len(runs) == 4 * 5 and {k.seed for k in runs} == {100}  # one dataset, one lambda
    # trial 0 is the arm's own settings; the others draw lr and every declared space
    assert trials["fedmic-no-rep-trial00"] == {**grid.base_arms(cfg)["fedmic-no-rep"],
                                               "train": {"rounds": 1, "on_nonfinite": "skip"}}
    drawn = trials["fedmic-no-rep-trial03"]
    assert drawn["hp"]["rep_distill"] is False and set(drawn["hp"]) == {"rep_distill", "alpha", "beta", "tau"}
    assert "lr" in drawn["train"] and set(trials["local-trial02"]["hp"]) == set()


def test_trials_are_deterministic_and_a_larger_budget_keeps_the_earlier_ones():
    a = tuning.trial_settings("fedmic", "fedmic", {}, 6, seed=7)
    assert a == tuning.trial_settings("fedmic", "fedmic", {}, 6, seed=7)
    assert tuning.trial_settings("fedmic", "fedmic", {}, 9, seed=7)[:6] == a
    assert a != tuning.trial_settings("fedmic", "fedmic", {}, 6, seed=8)
    assert a != tuning.trial_settings("fedmic", "fedmic-b", {}, 6, seed=7)  # each arm its own draws


@pytest.mark.parametrize("method", list(METHODS))
def test_every_space_draws_valid_values(method):
    from fedmic.methods import resolve_hp
    for t in tuning.trial_settings(method, method, {}, 40, seed=1)[1:]:
        assert LR_SPACE.low <= t["lr"] <= LR_SPACE.high
        resolve_hp(method, t["hp"])  # raises on a value outside the declared range
        assert set(t["hp"]) == set(tuned_space(method)) - {"lr"}


def test_the_tuning_seed_may_not_be_a_reported_seed():
    assert grid.tuning_problem(config()) is None
    cfg = config()
    cfg["tuning"]["seed"] = 0
    assert "tuning.seed 0 is also a reported seed" in grid.tuning_problem(cfg)


# --------------------------------------------------------------------------- the selection
def trial_frame(val: list[list[float]], test: list[list[float]], last_k=2) -> pd.DataFrame:
    """Tidy rows of trials 0..n-1 of arm `fedavg` with per-round personalised val and test ACC."""
    rows = []
    for t, (v, te) in enumerate(zip(val, test)):
        key = dict(dataset="d", scheme="dirichlet_label", lam=0.1, clients=3, join_ratio=1.0,
                   arm=tuning.trial_arm("fedavg", t), seed=100, method="fedavg", hp_changes=json.dumps({"x": t}))
        for split, series in (("val", v), ("test", te)):
            for rnd, value in enumerate(series, 1):
                rows.append({**key, "select": "round", "round": rnd, "scope": "personal", "split": split,
                             "client": math.nan, "metric": "acc", "value": value})
        for metric, value in (("last_k", last_k), ("lr", 0.01 * (t + 1))):
            rows.append({**key, "select": "run", "round": math.nan, "scope": "config", "split": math.nan,
                         "client": math.nan, "metric": metric, "value": value})
    return pd.DataFrame(rows)


def test_the_selection_follows_validation_where_test_would_choose_otherwise():
    val = [[0.5, 0.6, 0.6], [0.5, 0.8, 0.9], [0.9, 0.7, 0.7]]
    test = [[0.9, 0.9, 0.9], [0.1, 0.1, 0.1], [0.5, 0.5, 0.5]]  # test's best: trial 0, then 2
    sel = tuning.select(trial_frame(val, test))
    assert sel["chosen"]["trial"] == 1 and sel["chosen"]["lr"] == pytest.approx(0.02)
    assert sel["chosen"]["hp"] == {"x": 1} and sel["chosen"]["score"] == pytest.approx(0.85)
    assert [t["score"] for t in sel["trials"]] == pytest.approx([0.6, 0.85, 0.7])
    # a tie goes to the lower trial
    assert tuning.select(trial_frame([[0.7, 0.7], [0.7, 0.7]], [[0, 0], [1, 1]]))["chosen"]["trial"] == 0


def test_a_trial_that_diverged_is_not_eligible():
    """Trials skip non-finite updates (so one that diverges does not stop the workflow), and one
    that skipped any is never chosen, however well it scored."""
    df = trial_frame([[0.5, 0.6], [0.9, 0.95]], [[0.5, 0.5], [0.5, 0.5]])
    key = df[df["arm"] == tuning.trial_arm("fedavg", 1)].iloc[0]
    diverged = {**key.to_dict(), "select": "run", "round": math.nan, "scope": "comm", "split": math.nan,
                "metric": "skipped_total", "value": 3}
    sel = tuning.select(pd.concat([df, pd.DataFrame([diverged])], ignore_index=True))
    assert sel["chosen"]["trial"] == 0 and sel["trials"][1]["skipped_updates"] == 3
    assert tuning.select(df)["chosen"]["trial"] == 1  # the same trial without the dropped updates wins
    cfg = config()
    assert {spec["train"]["on_nonfinite"] for spec in grid.trial_arms(cfg).values()} == {"skip"}


def test_selecting_from_runs_of_two_arms_is_refused():
    df = trial_frame([[0.5]], [[0.5]])
    other = df.assign(arm=tuning.trial_arm("ditto", 0))
    with pytest.raises(ValueError, match="one arm at one dataset and lambda"):
        tuning.select(pd.concat([df, other]))


# --------------------------------------------------------------------------- the workflow
def run_workflow(workdir: Path, cfg_path: Path):
    env = dict(os.environ, FEDMIC_MEDMNIST_ROOT=str(DATA), CUDA_VISIBLE_DEVICES="")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow/Snakefile"), "--directory",
                          str(workdir), "--cores", "2", "all", "--configfile", str(cfg_path)],
                         cwd=REPO, env=env, capture_output=True, text=True)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    blocks = out.split("rule train:")[1:]  # each job's block: its wildcards name the arm
    return sorted(re.search(r"wildcards: .*\barm=([^,\s]+)", b).group(1) for b in blocks), out


def test_a_changed_selection_retrains_exactly_its_runs(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg.update(results=str(tmp_path / "results"), logs=str(tmp_path / "logs"),
               methods={"local": {"method": "local"}, "fedavg": {"method": "fedavg"}},
               tuning={"budget": 2, "rounds": 1, "seed": 100})
    cfg["tables"].update(t2={"arms": ["local", "fedavg", "local-tuned", "fedavg-tuned"]})
    cfg["figures"] = {name: {"enabled": False} for name in ("f3", "learning_curves", "acc_vs_bytes", "svd_ranks")}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    trained, _ = run_workflow(tmp_path, path)
    assert trained == sorted(["local", "fedavg", "local-trial00", "local-trial01", "fedavg-trial00",
                              "fedavg-trial01", "local-tuned", "fedavg-tuned"])
    runs = tmp_path / "results" / "runs" / "breastmnist" / "lam0.5_K3_jr1"

    def lr(arm):
        return json.loads((runs / arm / "seed0.json").read_text())["config"]["lr"]

    def set_validation(trial: int, acc: float) -> None:
        path = runs / tuning.trial_arm("fedavg", trial) / "seed100.json"
        run = json.loads(path.read_text())
        for h in run["history"]:
            if "eval" in h:
                h["eval"]["personal"]["val"]["acc"] = acc
        path.write_text(json.dumps(run))

    drawn_lr = json.loads((runs / "fedavg-trial01" / "seed100.json").read_text())["config"]["lr"]
    set_validation(0, 0.9)
    set_validation(1, 0.1)
    trained, out = run_workflow(tmp_path, path)  # trial 0 wins: fedavg-tuned retrains only if it had not
    assert set(trained) <= {"fedavg-tuned"} and lr("fedavg-tuned") == lr("fedavg")
    # trial 1's score changes but trial 0 still wins: the selection is made again, nothing retrains
    set_validation(1, 0.2)
    trained, out = run_workflow(tmp_path, path)
    assert trained == [] and "select_hp" in out
    # trial 1 now wins on validation: fedavg-tuned retrains with its lr, local-tuned does not
    set_validation(1, 1.0)
    trained, _ = run_workflow(tmp_path, path)
    assert trained == ["fedavg-tuned"]
    assert lr("fedavg-tuned") == drawn_lr != lr("fedavg") and lr("local-tuned") == lr("local")
    table = (tmp_path / "results" / "tables" / "tuning.csv").read_text()
    assert "FedAvg" in table and "Local" in table
