"""What the tables of the paper (fedmic/paper/) share: `Table` and `Rows`, the personalised
values of each run beside its floors, and the wording of selections and seeds. Each table is
written by ``fedmic.report.io.write_table`` (CSV + Markdown + LaTeX).

Cells print mean ± std over seeds (ddof=1; one seed prints the mean alone); the best value
of each column is bold within its setting, judged on the mean; ``n/a``: no value (an
undefined AUC, no global model, no FedAvg to compare with); ``–``: not run. Every
personalised result sits beside the client-prior floor of its setting (each client outputs
its own training label distribution for every image: ACC = each client's training-majority
class, AUC 0.5 per client) and Δ columns give each arm's margin over it, run by run on the run's own
partition. Personalised values are the run's reported ones (mean over its last ``last_k``
evaluated rounds); ``select="valsel"`` uses the test value at the round chosen on the
clients' validation sets instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from fedmic.report import views as v
from fedmic.report.io import MISSING, mean_std, write_table

NA = "n/a"
FLOAT32_BYTES = 4
PRIOR_FLOOR, GLOBAL_FLOOR = v.PRIOR_FLOOR, v.GLOBAL_FLOOR
PERSONAL = ("acc", "auc", "f1", "auc_pooled", "acc_std", "acc_worst_decile")
PRIOR = {"acc": "client_prior_acc", "auc": "client_prior_auc", "f1": "client_prior_f1"}
FLOORS = ("client_prior_acc", "client_prior_auc", "client_prior_f1", "client_prior_auc_pooled",
          "global_majority_acc", "auc_clients")


@dataclass
class Table:
    df: pd.DataFrame
    caption: str
    bold: dict = field(default_factory=dict)
    bold_by: dict = field(default_factory=dict)
    group_by: list = field(default_factory=list)
    notes: str = ""  # footnotes of the marks in the cells, after the caption
    formats: dict = field(default_factory=dict)  # column -> format of its Markdown/LaTeX cells

    def write(self, stem: str | Path) -> list[Path]:
        return write_table(self.df, stem, self.caption + self.notes, bold=self.bold, bold_by=self.bold_by,
                           group_by=self.group_by or None, formats=self.formats or None)


class Rows:
    """Display cells with a numeric helper ranking each (the helper stays in the CSV only).
    Given the table's runs, a cell computed from runs in poor health gets their marks
    (views.HEALTH) and the table a footnote saying what they mean."""

    def __init__(self, runs: pd.DataFrame | None = None):
        self.rows: list[dict] = []
        self.bold: dict[str, str] = {}
        self.bold_by: dict[str, str] = {}
        self.runs = runs
        self.marks = v.health_marks(runs) if runs is not None else pd.Series(dtype=object)
        self.used: set[str] = set()

    def marked(self, text: str, runs_index) -> str:
        """``text`` with the marks of the runs ``runs_index`` (index labels of the runs frame)."""
        have = "".join(self.marks.reindex(runs_index).fillna(""))
        got = "".join(m for m in v.HEALTH.values() if m in have)
        if not got or text == MISSING:
            return text
        self.used.update(got)
        return f"{text} {got}"

    def notes(self) -> str:
        if not self.used:
            return ""
        runs, out = self.runs, []

        def count(col: str, what: str) -> str:
            bad = runs[col].fillna(0) > 0
            n = int(runs.loc[bad, col].sum())
            return f"{int(bad.sum())} of the table's {len(runs)} runs, {n} {what}{'' if n == 1 else 's'} in all"

        if "†" in self.used:
            out.append(f"†: from runs that dropped client updates with non-finite values (on_nonfinite: skip; "
                       f"{count('skipped_total', 'update')})")
        if "‡" in self.used:
            out.append(f"‡: from runs with rounds in which no update was aggregated, so the global model stood "
                       f"still ({count('unaggregated_rounds', 'round')})")
        return " " + "; ".join(out) + "."

    def cell(self, row: dict, name: str, text: str, value: float = math.nan, how: str | None = None,
             runs_index=None) -> None:
        if runs_index is not None:
            text = self.marked(text, runs_index)
        row[name] = text
        row[f"{name} [value]"] = value
        self.bold_by[name] = f"{name} [value]"
        if how:
            self.bold[name] = how

    def stat(self, row: dict, name: str, values, how: str | None = "max", signed: bool = False,
             digits: int = 3) -> None:
        """mean ± std of ``values`` (one per seed); the floors pass how=None (never bold)."""
        x = np.asarray(values, dtype=float)
        text = MISSING if x.size == 0 else mean_std(x, digits=digits)
        if signed and text not in (NA, MISSING) and not text.startswith("-"):
            text = "+" + text
        # a Series of the runs' values carries their index; floors (how=None) are no run's result
        runs_index = values.index if how and isinstance(values, pd.Series) else None
        self.cell(row, name, text, v.finite_mean(x) if how else math.nan, how, runs_index)

    def table(self, caption: str, group: Sequence[str] = ()) -> Table:
        return Table(pd.DataFrame(self.rows), caption, self.bold, self.bold_by, list(group), self.notes())


def check_select(select: str) -> str:
    if select not in ("last", "valsel"):
        raise ValueError(f"select must be 'last' or 'valsel', got {select!r}")
    return select


def select_text(select: str, tidy: pd.DataFrame) -> str:
    if select == "valsel":
        return "test value at the round chosen on the clients' validation sets"
    last_k = sorted({int(x) for x in tidy.loc[(tidy["scope"] == "config") & (tidy["metric"] == "last_k"), "value"]})
    k = sorted(set(v.averaged_k(tidy)))
    if not k or k == last_k:
        return f"mean over the last {'/'.join(map(str, last_k)) or 'k'} evaluated rounds"
    # runs shorter than last_k average every round they evaluated: say the k actually averaged
    span = f"{k[0]}" if len(k) == 1 else f"{k[0]}–{k[-1]}"
    return (f"mean over the last {span} evaluated rounds: all a run evaluated where that is fewer than its "
            f"last_k ({'/'.join(map(str, last_k))})")


def seed_span(runs: pd.DataFrame, dim_cols: Sequence[str]) -> str:
    n = runs.groupby([*dim_cols, "arm"], dropna=False).size()
    return f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"


def personal_runs(tidy: pd.DataFrame, select: str = "last") -> pd.DataFrame:
    """One row per run: personalised results, floors of its partition and the margins over them."""
    df = v.values(tidy, check_select(select), "personal", PERSONAL)
    floors = v.values(tidy, "run", "floor", FLOORS)[list(FLOORS)]
    df = pd.concat([df, floors], axis=1)
    for metric, floor in PRIOR.items():
        df[f"d_{metric}"] = df[metric] - df[floor]
    return df


def floor_rows(rows: Rows, dcells: dict, here: pd.DataFrame, columns: Sequence[str], floors: dict,
                label_col: str = "method") -> None:
    """One row per floor of a setting: ``floors`` = {row label: {display column: floor column}};
    the other display columns print –."""
    for label, mapping in floors.items():
        row = {**dcells, label_col: label}
        for name in columns:
            if mapping.get(name):
                rows.stat(row, name, v.partition_floor(here, mapping[name]), how=None)
            else:
                rows.cell(row, name, MISSING)
        rows.rows.append(row)


def auc_clients(here: pd.DataFrame) -> str:
    a, k = v.partition_floor(here, "auc_clients"), v.partition_floor(here, "clients")  # K of the run
    if not (np.isfinite(a).all() and np.isfinite(k).all()) or not a.size:
        return NA
    lo, hi = int(a.min()), int(a.max())
    return f"{lo}/{int(k.max())}" if lo == hi else f"{lo}–{hi}/{int(k.max())}"



# --------------------------------------------------------------------------- shared by tables


def pivot(tidy: pd.DataFrame, pivot: str, header: Callable[[object], str], select: str) -> tuple[Table, str]:
    """Rows = setting × arm (+ the client-prior floor), columns = ACC and ΔACC per ``pivot`` value;
    with the number of seeds in a cell (one setting, arm and ``pivot`` value) for the caption."""
    runs = personal_runs(tidy, select)
    dim_cols = v.dims(runs, exclude=[pivot])
    values = sorted(runs[pivot].unique())
    rows = Rows(runs)
    for s in v.settings(runs, dim_cols):
        here = v.in_setting(runs, dim_cols, s)
        for arm in [*v.arm_order(here), None]:
            row = {**v.dim_cells(dim_cols, s), "method": PRIOR_FLOOR if arm is None else
                   here.loc[here["arm"] == arm, "label"].iloc[0]}
            for x in values:
                sub = here[here[pivot] == x]
                if arm is None:
                    rows.stat(row, header(x), v.partition_floor(sub, "client_prior_acc"), how=None)
                    rows.cell(row, f"Δ {header(x)}", MISSING)
                else:
                    sub = sub[sub["arm"] == arm]
                    rows.stat(row, header(x), sub["acc"])
                    rows.stat(row, f"Δ {header(x)}", sub["d_acc"], signed=True)
            rows.rows.append(row)
    return rows.table("", [v.DIM_HEADER[d] for d in dim_cols]), seed_span(runs, [*dim_cols, pivot])



def mb_text(mb: np.ndarray) -> str:
    if mb.size == 0:
        return MISSING
    m = float(np.nanmean(mb)) if np.isfinite(mb).any() else 0.0
    digits = 2 if not math.isfinite(m) or m == 0 else int(min(6, max(1, 2 - math.floor(math.log10(abs(m))))))
    return mean_std(mb, digits=digits)



def fmt_num(x) -> str:
    return f"{x:g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)
