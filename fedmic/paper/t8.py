"""Table T8: cost per arm (parameters, training time, client memory, peak RSS)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fedmic import grid, paper
from fedmic.paper import t2
from fedmic.report import views as v
from fedmic.report.tables import FLOAT32_BYTES, NA, Rows, Table, mb_text

KIND = "table"
ORDER = 8
NO_VALSEL = "its numbers are costs"
CAPTION = """\
**Table T8 — cost.** Parameters of the shared and of the evaluated model, local training
time per sampled client per round (from each run's timing file), per-client persistent
memory (evaluated parameters × 4 bytes for methods that keep a model on every client, 0
otherwise) and the peak resident memory of the simulation. Timings depend on the machine
recorded in each run's ``env``. Runs of the main grid of the workflow config."""
OPTIONS = ()


def runs(config: dict) -> list[grid.RunKey]:
    """T2's runs."""
    return t2.runs(config)


def render(inputs: paper.Inputs, options: dict, select: str) -> Table:
    return table(inputs.tidy())


def table(tidy: pd.DataFrame) -> Table:
    """Cost per arm: parameters, local training time, client memory, peak RSS."""
    runs = v.values(tidy, "run", "cost", ["params_shared", "params_personal", "train_s_per_client",
                                          "peak_rss_mb"], split=None)
    dim_cols = v.dims(runs, exclude=["lam"])  # cost barely depends on λ
    rows = Rows(runs)
    for s in v.settings(runs, dim_cols):
        here = v.in_setting(runs, dim_cols, s)
        for arm in v.arm_order(here):
            sub = here[here["arm"] == arm]
            row = {**v.dim_cells(dim_cols, s), "method": sub["label"].iloc[0]}
            shared, personal = sub["params_shared"].to_numpy(float), sub["params_personal"].to_numpy(float)
            evaluated = np.where(np.isfinite(personal), personal, shared)
            for name, x in (("shared params", shared), ("evaluated params", evaluated)):
                top = float(np.nanmax(x)) if np.isfinite(x).any() else math.nan
                rows.cell(row, name, f"{int(top)}" if math.isfinite(top) else NA, top, runs_index=sub.index)
            rows.stat(row, "train s/client/round", sub["train_s_per_client"], how="min")
            memory = np.where(np.isfinite(personal), personal * FLOAT32_BYTES, 0.0) / 1e6
            rows.cell(row, "client memory (MB)", mb_text(memory), v.finite_mean(memory), "min", sub.index)
            rows.stat(row, "peak RSS (MB)", sub["peak_rss_mb"], how="min", digits=0)
            rows.rows.append(row)
    caption = (
        "Cost: parameters of the shared model and of the evaluated model (personalised methods: the "
        "client's own model; others: the shared model); local training time per sampled client per "
        "round (the round's training wall time, broadcast and aggregation included, divided by the "
        "sampled clients; from the run's timing file); per-client persistent memory, estimated as "
        "evaluated params × 4 bytes (float32) for methods that keep a model on every client and 0 "
        "for the others (optimiser state and auxiliary matrices not counted); peak resident memory "
        "of the simulation process. Mean ± std over seeds" +
        (" and λ" if runs["lam"].nunique() > 1 else "") +
        "; hardware in each run's env. Lowest cost in bold; n/a: no timing file."
    )
    return rows.table(caption, [v.DIM_HEADER[d] for d in dim_cols])
