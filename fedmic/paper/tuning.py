"""The tuning table: what tuning chose for each arm, on validation only."""
from __future__ import annotations

import pandas as pd

from fedmic import grid, paper
from fedmic.report import views as v
from fedmic.report.tables import Rows, Table

KIND = "table"
ORDER = 10
NO_VALSEL = "it reports validation scores"
APPLIES = "when the config tunes (a `tuning:` section)"
CAPTION = """\
**Tuning — what each arm runs with.** Per dataset, λ and tuned arm: the learning rate and
hyperparameters chosen on the clients' validation splits among the same number of trials for
every arm (trial 0: the arm's own settings), the chosen trial's validation ACC and the own
settings' beside it. The `<arm>-tuned` runs of the other tables use these values."""
OPTIONS = ()


def applies(config: dict) -> bool:
    return bool(grid.tuning_section(config))


def runs(config: dict) -> list[grid.RunKey]:
    """The tuning trials (grid.tuning_runs)."""
    return grid.tuning_runs(config)


def render(inputs: paper.Inputs, options: dict, select: str) -> Table:
    return table(inputs.tidy())


def table(tidy: pd.DataFrame) -> Table:
    """Per setting and tuned arm: what tuning chose, its validation score, and the arm's own
    settings' (trial 0) beside it; the same rule as `fedmic select` (fedmic/tuning.py)."""
    from fedmic import tuning

    trials = tidy[tidy["arm"].map(lambda a: tuning.trial_base(a) is not None)]
    if trials.empty:
        raise ValueError("no tuning trials among the runs (arms <arm>-trialNN); set `tuning:` in the config")
    trials = trials.assign(base=trials["arm"].map(tuning.trial_base))
    runs = v.runs(trials)
    dim_cols = v.dims(runs)
    rows, budgets, rounds = Rows(), set(), set()
    for s in v.settings(runs, dim_cols):
        here = v.in_setting(runs, dim_cols, s)
        dcells = v.dim_cells(dim_cols, s)
        for base in dict.fromkeys(tuning.trial_base(a) for a in here["arm"]):
            keys = here[here["arm"].map(tuning.trial_base) == base][v.RUN_KEY]
            sel = tuning.select(trials.merge(keys, on=v.RUN_KEY))
            chosen, default = sel["chosen"], sel["trials"][0]
            budgets.add(len(sel["trials"]))
            rounds.update(int(x) for x in trials.merge(keys, on=v.RUN_KEY).query(
                "scope == 'config' and metric == 'rounds'")["value"])
            method = str(trials.loc[trials["base"] == base, "method"].iloc[0])
            changes = {k: val for k, val in chosen["hp"].items() if k not in default["hp"] or default["hp"][k] != val}
            row = {**dcells, "arm": v.pretty_arm(base, method), "trials": str(len(sel["trials"])),
                   "chosen trial": str(chosen["trial"]), "lr": f"{chosen['lr']:g}",
                   "hyperparameters": v.describe_changes(changes) if changes else "as the arm's own"}
            rows.stat(row, "val ACC chosen", [chosen["score"]], how=None)
            rows.stat(row, "val ACC own settings", [default["score"]], how=None)
            rows.rows.append(row)
    span = lambda xs: "/".join(str(x) for x in sorted(xs))  # noqa: E731
    caption = (f"Tuning: per setting and arm, the learning rate and hyperparameters chosen among {span(budgets)} "
               f"trials of {span(rounds)} rounds each on the tuning seed (not a reported seed), by the clients' "
               f"personalised VALIDATION ACC (sample-weighted, mean of the last k evaluated rounds; global methods "
               f"scored with their global model on each client). Trial 0 is the arm's own settings ('val ACC own "
               f"settings'); trials 1.. draw lr and every tuned hyperparameter at random from their declared spaces "
               f"(docs/hyperparameters.md, docs/tuning.md). Hyperparameters: what the chosen trial changes from the "
               f"arm's own settings. No test split is read.")
    return rows.table(caption, [v.DIM_HEADER[d] for d in dim_cols])
