"""Table T9: the global model's accuracy and per-client fairness."""
from __future__ import annotations

import pandas as pd

from fedmic import grid, paper
from fedmic.paper import t2
from fedmic.report import views as v
from fedmic.report.tables import (
    GLOBAL_FLOOR, PRIOR_FLOOR, Rows, Table, check_select, floor_rows, personal_runs, select_text
)

KIND = "table"
ORDER = 9
VALSEL = True
CAPTION = """\
**Table T9 — global model and fairness.** Accuracy and AUC of the global (shared) model on
the full official test split (n/a for methods without one), and the spread of personalised
accuracy across clients: std and worst-decile (10th percentile) accuracy, mean ± std over
seeds. Runs of the main grid of the workflow config."""
OPTIONS = ()


def runs(config: dict) -> list[grid.RunKey]:
    """T2's runs."""
    return t2.runs(config)


def render(inputs: paper.Inputs, options: dict, select: str) -> Table:
    return table(inputs.tidy(), select)


def table(tidy: pd.DataFrame, select: str = "last") -> Table:
    """Global-model accuracy and per-client fairness, beside both floors."""
    runs = personal_runs(tidy, select)
    runs = runs.join(v.values(tidy, check_select(select), "global", ["acc", "auc", "f1"], prefix="g_")[
        ["g_acc", "g_auc", "g_f1"]])
    dim_cols = v.dims(runs)
    rows = Rows(runs)
    cols = {"global ACC": ("g_acc", "max"), "global AUC": ("g_auc", "max"), "global F1": ("g_f1", "max"),
            "personal ACC": ("acc", "max"), "Δ personal ACC": ("d_acc", "max"),
            "client std": ("acc_std", "min"), "worst-decile ACC": ("acc_worst_decile", "max")}
    for s in v.settings(runs, dim_cols):
        here = v.in_setting(runs, dim_cols, s)
        dcells = v.dim_cells(dim_cols, s)
        for arm in v.arm_order(here):
            sub = here[here["arm"] == arm]
            row = {**dcells, "method": sub["label"].iloc[0]}
            for name, (col, how) in cols.items():
                rows.stat(row, name, sub[col], how=how, signed=name.startswith("Δ"))
            rows.rows.append(row)
        floor_rows(rows, dcells, here, list(cols), {PRIOR_FLOOR: {"personal ACC": "client_prior_acc"},
                                                     GLOBAL_FLOOR: {"global ACC": "global_majority_acc"}})
    caption = (
        f"Global model and fairness: the global (shared) model on the full official test split (n/a for "
        f"methods without one), beside the {GLOBAL_FLOOR}; the personalised accuracy across clients: "
        f"sample-weighted mean, its margin over the {PRIOR_FLOOR}, the std across clients and the 10th "
        f"percentile of per-client accuracy (worst decile) ({select_text(select, tidy)}), mean ± std "
        f"over seeds. Best per column within each setting in bold (lowest std)."
    )
    return rows.table(caption, [v.DIM_HEADER[d] for d in dim_cols])
