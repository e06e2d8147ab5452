"""Table T5: ablation of FedMIC's parts, one row per variant of the base arm."""
from __future__ import annotations

import pandas as pd

from fedmic import grid, paper
from fedmic.paper import t2
from fedmic.report import stats
from fedmic.report import views as v
from fedmic.report.tables import NA, PRIOR, PRIOR_FLOOR, Rows, Table, floor_rows, personal_runs, select_text

KIND = "table"
ORDER = 5
VALSEL = True
BASE_METHODS = ("fedmic",)  # the config check and the rows the table keeps
CAPTION = """\
**Table T5 — ablation of FedMIC.** Every FedMIC variant (representation or decision
distillation off, identity projections, no adaptive weighting, dense uploads, fixed rank) and
the paper's open readings (where the auxiliary matrices act, the teacher's start), labelled by
what differs from FedMIC's defaults, with personalised ACC, AUC, F1, their margins over the
client-prior floor and the uplink, mean ± std over seeds, and each variant minus the base arm
over seeds (paired t, Holm-adjusted). Runs of the ablation study of the workflow config."""
OPTIONS = (
    *paper.axes("the ablation study"),
    paper.base_arm("the arm the ablations are compared with", BASE_METHODS),
    paper.Option("arms", {"$ref": "#/definitions/arms"}, "the ablation arms: name: {method, hp, train} (method "
                 "default: fedmic)", default={}),
)


def arms(config: dict) -> dict[str, dict]:
    section = paper.options(config, __name__)
    return {name: {"method": spec.get("method", "fedmic"), "hp": dict(spec.get("hp", {})),
                   "train": dict(spec.get("train", {}))}
            for name, spec in section["arms"].items()}


def arm_origin(config: dict, arm: str) -> str:
    return f"{paper.section(__name__)}.arms.{arm}"


def runs(config: dict) -> list[grid.RunKey]:
    o = paper.options(config, __name__)
    base = paper.base_of(config, __name__)
    paper.check_base_method(config, __name__, base, grid.base_arms(config)[base]["method"], BASE_METHODS)
    return grid.main_runs(config, o["datasets"], o["lams"], [base, *arms(config)], o["seeds"])


def render(inputs: paper.Inputs, options: dict, select: str) -> Table:
    return table(inputs.tidy(), select, options.get("base"))


COMPARISON = "ACC − base (95 % CI), p Holm"


def _base_arm(here: pd.DataFrame, base: str | None) -> str | None:
    """The arm the variants are compared with: the configured base where it ran, else the run
    at FedMIC's defaults."""
    arms = v.arm_order(here)
    if base in arms:
        return base
    default = [a for a in arms if here.loc[here["arm"] == a, "hp_changes"].iloc[0] == "{}"]
    return default[0] if default else None


def table(tidy: pd.DataFrame, select: str = "last", base: str | None = None) -> Table:
    """Ablation of FedMIC's parts: one row per FedMIC variant (+ the client-prior floor)."""
    tidy = paper.runs_of_methods(tidy, BASE_METHODS, "T5")
    runs = personal_runs(tidy, select)
    runs = runs.join(v.values(tidy, "run", "comm", ["uplink_total"], split=None)[["uplink_total"]])
    dim_cols = v.dims(runs)
    rows, cells = Rows(runs), []
    cols = {"ACC": "acc", "ΔACC": "d_acc", "AUC": "auc", "ΔAUC": "d_auc", "F1": "f1", "ΔF1": "d_f1"}
    for s in v.settings(runs, dim_cols):
        here = v.in_setting(runs, dim_cols, s)
        dcells = v.dim_cells(dim_cols, s)
        ref = _base_arm(here, base)
        for arm in v.arm_order(here):
            sub = here[here["arm"] == arm]
            changes = v.describe_changes(sub["changes"].iloc[0])
            row = {**dcells, "variant": sub["label"].iloc[0], "changed from default": changes}
            for name, col in cols.items():
                rows.stat(row, name, sub[col], signed=name.startswith("Δ"))
            rows.stat(row, "uplink total (MB)", sub["uplink_total"] / 1e6, how="min", digits=3)
            row[COMPARISON] = "reference" if arm == ref else ""
            if ref is not None and arm != ref:
                cells.append((row, stats.paired_difference(*t2.seed_pairs(here, arm, ref).T)))
            rows.rows.append(row)
        floor_rows(rows, dcells, here, [*cols, "uplink total (MB)"],
                    {PRIOR_FLOOR: {name: PRIOR[col] for name, col in cols.items() if col in PRIOR}}, "variant")
        rows.rows[-1]["changed from default"] = ""
        rows.rows[-1][COMPARISON] = ""
    for (row, c), p in zip(cells, stats.holm([c["p"] for _, c in cells])):
        row[COMPARISON] = (f"{NA} ({c['n']} seed{'' if c['n'] == 1 else 's'})" if c["n"] < 2 else
                           f"{c['mean']:+.3f} ({c['low']:+.3f}, {c['high']:+.3f}), p={'1' if p == 1.0 else f'{p:.2g}'}")
    caption = (
        f"Ablation of FedMIC's parts: every FedMIC run, labelled by the hyperparameters that differ "
        f"from FedMIC's defaults (representation/decision distillation, auxiliary matrices, adaptive "
        f"weighting, global parameter decomposition (GPD off: dense uploads), fixed rank) and the "
        f"paper's open readings (where the auxiliary matrices act, the teacher's start). "
        f"Personalised test ACC, AUC and F1 ({select_text(select, tidy)}), mean ± std over seeds; Δ: "
        f"margin over the {PRIOR_FLOOR}; uplink over the whole run. {COMPARISON}: each variant's "
        f"personalised test ACC minus the base arm's (tables.t5.base, by default FedMIC at its defaults), the mean over seeds of the "
        f"paired difference with its 95 % t interval; p: two-sided paired t-test over seeds (the run is the "
        f"unit), Holm-adjusted over the {sum(1 for _, c in cells if c['n'] >= 2)} comparisons of this table. "
        f"Best per column within each setting in bold; n/a: undefined."
    )
    return rows.table(caption, [v.DIM_HEADER[d] for d in dim_cols])
