"""Tables T2-T9: each a view over the tidy results frame (fedmic.report.tidy), written by
``fedmic.report.io.write_table`` (CSV + Markdown + LaTeX).

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
TARGET_SHARE = 0.9  # T4: the target closes this share of the gap from the floor to FedAvg
FLOAT32_BYTES = 4
PRIOR_FLOOR, GLOBAL_FLOOR = v.PRIOR_FLOOR, v.GLOBAL_FLOOR
PERSONAL = ("acc", "auc", "f1", "auc_pooled", "acc_std", "acc_worst_decile")
PRIOR = {"acc": "client_prior_acc", "auc": "client_prior_auc", "f1": "client_prior_f1"}
FLOORS = ("client_prior_acc", "client_prior_auc", "client_prior_f1", "client_prior_auc_pooled",
          "global_majority_acc", "auc_clients")
# T6: parameters of the sensitivity study; the energy schedule is one parameter
SENSITIVITY = {"energy (E_start→E_end)": ("energy_start", "energy_end"), "τ": ("tau",), "α": ("alpha",),
               "β": ("beta",)}


@dataclass
class Table:
    df: pd.DataFrame
    caption: str
    bold: dict = field(default_factory=dict)
    bold_by: dict = field(default_factory=dict)
    group_by: list = field(default_factory=list)
    notes: str = ""  # footnotes of the marks in the cells, after the caption

    def write(self, stem: str | Path) -> list[Path]:
        return write_table(self.df, stem, self.caption + self.notes, bold=self.bold, bold_by=self.bold_by,
                           group_by=self.group_by or None)


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


def _select(select: str) -> str:
    if select not in ("last", "valsel"):
        raise ValueError(f"select must be 'last' or 'valsel', got {select!r}")
    return select


def _select_text(select: str, tidy: pd.DataFrame) -> str:
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


def _seed_span(runs: pd.DataFrame, dim_cols: Sequence[str]) -> str:
    n = runs.groupby([*dim_cols, "arm"], dropna=False).size()
    return f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"


def personal_runs(tidy: pd.DataFrame, select: str = "last") -> pd.DataFrame:
    """One row per run: personalised results, floors of its partition and the margins over them."""
    df = v.values(tidy, _select(select), "personal", PERSONAL)
    floors = v.values(tidy, "run", "floor", FLOORS)[list(FLOORS)]
    df = pd.concat([df, floors], axis=1)
    for metric, floor in PRIOR.items():
        df[f"d_{metric}"] = df[metric] - df[floor]
    return df


def _floor_rows(rows: Rows, dcells: dict, here: pd.DataFrame, columns: Sequence[str], floors: dict,
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


def _auc_clients(here: pd.DataFrame) -> str:
    a, k = v.partition_floor(here, "auc_clients"), v.partition_floor(here, "clients")  # K of the run
    if not (np.isfinite(a).all() and np.isfinite(k).all()) or not a.size:
        return NA
    lo, hi = int(a.min()), int(a.max())
    return f"{lo}/{int(k.max())}" if lo == hi else f"{lo}–{hi}/{int(k.max())}"


# --------------------------------------------------------------------------- T2


# Fixed before any test number is read (docs/results.md): FedMIC against Local, against FedKD,
# its nearest relative, and against the baseline that scores best on VALIDATION.
COMPARED = (("Local", "local"), ("FedKD", "fedkd"))
COMPARISON = "FedMIC − arm (95 % CI), p Holm"


def _arm_pool(here: pd.DataFrame) -> pd.DataFrame:
    """The arms a setting's comparisons are drawn from: the tuned ones where the table holds
    tuned arms (tuned against tuned), else every arm at its method's defaults."""
    from fedmic.tuning import TUNED_SUFFIX

    tuned = here[here["arm"].str.endswith(TUNED_SUFFIX)]
    return tuned if not tuned.empty else here[here["hp_changes"] == "{}"]


def _pool_arm(pool: pd.DataFrame, method: str) -> str | None:
    cand = pool[pool["method"] == method]
    if cand.empty:
        return None
    named = [a for a in v.arm_order(cand) if a.startswith(method)]
    return (named or v.arm_order(cand))[0]


def setting_comparisons(here: pd.DataFrame, scores: pd.Series) -> tuple[str | None, list[dict]]:
    """FedMIC's arm in a setting and its fixed comparisons: [{role, arm, n, mean, low, high, p}],
    each the paired difference FedMIC − arm over the seeds both ran (fedmic/report/stats.py)."""
    from fedmic.report import stats

    pool = _arm_pool(here)
    mic = _pool_arm(pool, "fedmic")
    if mic is None:
        return None, []
    roles: dict[str, list[str]] = {}
    for label, method in COMPARED:
        if (arm := _pool_arm(pool, method)) is not None:
            roles.setdefault(arm, []).append(label)
    if (best := stats.best_on_validation(pool, scores)) is not None:
        roles.setdefault(best, []).append("best on validation")
    by_seed = here.set_index(["arm", "seed"])["acc"]
    out = []
    for arm, labels in roles.items():
        pair = pd.concat([by_seed[mic], by_seed[arm]], axis=1, join="inner").to_numpy()
        out.append({"role": ", ".join(labels), "arm": arm, **stats.paired_difference(pair[:, 0], pair[:, 1])})
    return mic, out


def _comparison_text(c: dict) -> str:
    if c["n"] < 2:
        return f"{c['role']}: {NA} ({c['n']} seed)"
    p = "1" if c["p_holm"] == 1.0 else f"{c['p_holm']:.2g}"
    return f"{c['role']}: {c['mean']:+.3f} ({c['low']:+.3f}, {c['high']:+.3f}), p={p}"


def t2_table(tidy: pd.DataFrame, select: str = "last") -> Table:
    """Main comparison: per setting, every arm's personalised ACC, AUC, F1 with its margin over
    the client-prior floor, the pooled AUC, and FedMIC's comparisons fixed in advance."""
    from fedmic.report import stats

    runs = personal_runs(tidy, select)
    dim_cols = v.dims(runs)
    scores = stats.validation_scores(tidy)
    rows, cells = Rows(runs), []
    cols = {"ACC": "acc", "ΔACC": "d_acc", "AUC": "auc", "ΔAUC": "d_auc", "F1": "f1", "ΔF1": "d_f1",
            "AUC pooled": "auc_pooled"}
    for s in v.settings(runs, dim_cols):
        here = v.in_setting(runs, dim_cols, s)
        dcells = v.dim_cells(dim_cols, s)
        mic, comparisons = setting_comparisons(here, scores)
        by_arm = {c["arm"]: c for c in comparisons}
        for arm in v.arm_order(here):
            sub = here[here["arm"] == arm]
            row = {**dcells, "method": sub["label"].iloc[0]}
            for name, col in cols.items():
                rows.stat(row, name, sub[col], signed=name.startswith("Δ"))
            row["AUC clients"] = ""
            row[COMPARISON] = "reference" if arm == mic else ""
            if arm in by_arm:
                cells.append((row, by_arm[arm]))
            rows.rows.append(row)
        _floor_rows(rows, dcells, here, list(cols), {
            PRIOR_FLOOR: {"ACC": "client_prior_acc", "AUC": "client_prior_auc", "F1": "client_prior_f1",
                          "AUC pooled": "client_prior_auc_pooled"},
            GLOBAL_FLOOR: {"ACC": "global_majority_acc"}})
        rows.rows[-2]["AUC clients"] = _auc_clients(here)
        rows.rows[-1]["AUC clients"] = ""
        for r in rows.rows[-2:]:
            r[COMPARISON] = ""
    # one family: every comparison of the table
    for (row, c), p in zip(cells, stats.holm([c["p"] for _, c in cells])):
        c["p_holm"] = p
        row[COMPARISON] = _comparison_text(c)
    test_text = ""
    if cells:
        family = sum(1 for _, c in cells if math.isfinite(c["p"]))
        seeds = sorted({c["n"] for _, c in cells})
        test_text = (f" {COMPARISON}: fixed before any test number was read, FedMIC against Local, against "
                     f"FedKD (its nearest relative) and against the baseline with the highest mean personalised "
                     f"VALIDATION ACC over seeds (mean of each run's last k evaluated rounds), tuned arms "
                     f"against tuned arms where the table has them. Value: FedMIC minus the arm, the mean over "
                     f"seeds of the paired difference in personalised test ACC, with its 95 % t confidence "
                     f"interval; p: two-sided paired t-test over seeds (the run is the unit: the clients of a "
                     f"run share one federation), Holm-adjusted over the {family} comparisons of this table; "
                     f"{'/'.join(map(str, seeds))} seed{'' if seeds == [1] else 's'} per comparison.")
    caption = (
        f"Main comparison: personalised test ACC, AUC and macro-F1 ({_select_text(select, tidy)}), "
        f"each client's evaluated model on its own test set, computed per client and averaged over "
        f"clients weighted by their test images; AUC over the clients whose test set holds two or "
        f"more classes ('AUC clients', the others have no AUC). Mean ± std over seeds "
        f"({_seed_span(runs, dim_cols)} per cell). Δ: margin over the {PRIOR_FLOOR} (each client "
        f"outputs its own training label distribution: ACC = its majority class, AUC 0.5), run by "
        f"run. AUC pooled: one AUC over all clients' pooled predictions (secondary: it rewards "
        f"knowing each client's label mix, as the floor's pooled AUC shows). {GLOBAL_FLOOR}: every "
        f"client predicts the majority class of all training images.{test_text} Best per column "
        f"within each setting in bold; n/a: undefined; –: not applicable."
    )
    return rows.table(caption, [v.DIM_HEADER[d] for d in dim_cols])


# --------------------------------------------------------------------------- T3 / T7


def _pivot(tidy: pd.DataFrame, pivot: str, header: Callable[[object], str], select: str) -> Table:
    """Rows = setting × arm (+ the client-prior floor), columns = ACC and ΔACC per ``pivot`` value."""
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
    return rows.table("", [v.DIM_HEADER[d] for d in dim_cols]), runs, dim_cols


def t3_table(tidy: pd.DataFrame, select: str = "last") -> Table:
    """Low participation: personalised ACC per arm × join ratio."""
    t, runs, dim_cols = _pivot(tidy, "join_ratio", lambda x: f"join ratio {x:g}", select)
    config = tidy[(tidy["scope"] == "config") & tidy["metric"].isin(["rounds", "eval_every"])]
    schedule = config.pivot_table(index="join_ratio", columns="metric", values="value", aggfunc=lambda x: sorted(set(x)))
    rounds = "; ".join(f"{j:g}: {'/'.join(f'{r:g}' for r in row['rounds'])} rounds, evaluated every "
                       f"{'/'.join(f'{e:g}' for e in row['eval_every'])}" for j, row in schedule.iterrows())
    t.caption = (
        f"Low participation: personalised test ACC ({_select_text(select, tidy)}) for each fraction of "
        f"clients sampled per round (join ratio), mean ± std over seeds ({_seed_span(runs, dim_cols)} per "
        f"cell), and Δ, the margin over the {PRIOR_FLOOR} (each client outputs its own training label "
        f"distribution). Rounds per join ratio ({rounds}): unless the config says otherwise "
        f"(tables.t3.scale_rounds), they are scaled so that a client trains about as often, and is scored "
        f"as many times, as in the main runs. Every client is evaluated every time. Best per column "
        f"within each setting in bold; n/a: undefined; –: not run."
    )
    return t


def t7_table(tidy: pd.DataFrame, select: str = "last") -> Table:
    """Number of clients: personalised ACC per arm × K."""
    t, runs, dim_cols = _pivot(tidy, "clients", lambda x: f"K={int(x)}", select)
    t.caption = (
        f"Number of clients K: personalised test ACC ({_select_text(select, tidy)}), mean ± std over "
        f"seeds ({_seed_span(runs, dim_cols)} per cell), and Δ, the margin over the {PRIOR_FLOOR}. "
        f"Each K has its own partition, hence its own floor. Best per column within each setting "
        f"in bold; n/a: undefined; –: not run."
    )
    return t


# --------------------------------------------------------------------------- T4


def reference_arm(here: pd.DataFrame, method: str = "fedavg") -> str | None:
    """The plain FedAvg arm of a setting (named fedavg, else FedAvg at its defaults)."""
    cand = here[(here["method"] == method) & (here["hp_changes"] == "{}")]
    if cand.empty:
        return None
    return method if (cand["arm"] == method).any() else v.arm_order(cand)[0]


def default_target(here: pd.DataFrame) -> float:
    """global-majority floor + TARGET_SHARE × (FedAvg's reported global ACC − floor), in one
    setting; NaN without FedAvg or when FedAvg does not beat the floor (nothing to learn)."""
    ref = reference_arm(here)
    if ref is None:
        return math.nan
    floor = v.finite_mean(v.partition_floor(here, "global_majority_acc"))
    fedavg = v.finite_mean(here.loc[here["arm"] == ref, "g_acc"])
    return floor + TARGET_SHARE * (fedavg - floor) if fedavg > floor else math.nan


def bytes_to_target(rounds: pd.DataFrame, target: float) -> tuple[float, float]:
    """(round, cumulative uplink + downlink bytes through it) of a run's first evaluated round
    whose global test ACC is >= target; NaN, NaN when it never gets there."""
    hit = rounds[rounds["value"] >= target].sort_values("round")
    if hit.empty:
        return math.nan, math.nan
    return float(hit["round"].iloc[0]), float(hit["cum_bytes"].iloc[0])


def _mb_text(mb: np.ndarray) -> str:
    if mb.size == 0:
        return MISSING
    m = float(np.nanmean(mb)) if np.isfinite(mb).any() else 0.0
    digits = 2 if not math.isfinite(m) or m == 0 else int(min(6, max(1, 2 - math.floor(math.log10(abs(m))))))
    return mean_std(mb, digits=digits)


def t4_table(tidy: pd.DataFrame, target: float | None = None) -> Table:
    """Communication: bytes per round and per run, ratios to FedAvg, bytes to a target global ACC."""
    comm = ("uplink_per_round", "downlink_per_round", "uplink_total", "downlink_total")
    runs = pd.concat([v.values(tidy, "run", "comm", comm, split=None),
                      v.values(tidy, "last", "global", ["acc"], prefix="g_")[["g_acc"]],
                      v.values(tidy, "run", "floor", ["global_majority_acc"])[["global_majority_acc"]]], axis=1)
    curves = v.per_round(tidy, "global", "acc")
    dim_cols = v.dims(runs)
    rows = Rows(runs)
    for s in v.settings(runs, dim_cols):
        here = v.in_setting(runs, dim_cols, s)
        tgt = float(target) if target is not None else default_target(here)
        ref = reference_arm(here)
        ref_totals = {c: v.finite_mean(here.loc[here["arm"] == ref, c]) if ref else math.nan
                      for c in ("uplink_total", "downlink_total")}
        for arm in v.arm_order(here):
            sub = here[here["arm"] == arm]
            row = {**v.dim_cells(dim_cols, s), "method": sub["label"].iloc[0]}
            for name, col in (("uplink/round (MB)", "uplink_per_round"), ("downlink/round (MB)", "downlink_per_round"),
                              ("uplink total (MB)", "uplink_total"), ("downlink total (MB)", "downlink_total")):
                rows.cell(row, name, _mb_text(sub[col].to_numpy(float) / 1e6), v.finite_mean(sub[col]), "min",
                          sub.index)
            for name, col in (("uplink ÷ FedAvg", "uplink_total"), ("downlink ÷ FedAvg", "downlink_total")):
                ratio = v.finite_mean(sub[col]) / ref_totals[col] if ref_totals[col] > 0 else math.nan
                rows.cell(row, name, f"{ratio:.3g}" if math.isfinite(ratio) else NA, ratio, "min", sub.index)
            rows.cell(row, "target global ACC", f"{tgt:.3f}" if math.isfinite(tgt) else NA, tgt)
            mine = curves.merge(sub[v.RUN_KEY], on=v.RUN_KEY)
            if mine.empty:
                text, value, rtext = NA, math.nan, "no global model"
            elif not math.isfinite(tgt):
                text, value, rtext = NA, math.nan, NA
            else:
                hits = [bytes_to_target(g, tgt) for _, g in mine.groupby("seed")]
                got = np.array([b for _, b in hits if math.isfinite(b)])
                rnds = np.array([r for r, _ in hits if math.isfinite(r)])
                if got.size == 0:
                    text, value, rtext = "not reached", math.nan, "not reached"
                else:
                    text, rtext = _mb_text(got / 1e6), mean_std(rnds, digits=1)
                    value = float(got.mean()) if got.size == len(hits) else math.nan
                    if got.size < len(hits):  # not comparable with arms that always get there
                        text += f" ({got.size}/{len(hits)} seeds)"
                        rtext += f" ({got.size}/{len(hits)} seeds)"
            rows.cell(row, "to target (MB)", text, value, "min", sub.index)
            row["round reached"] = rows.marked(rtext, sub.index)
            rows.rows.append(row)
    rule = (f"the given target global ACC {float(target):.3f}" if target is not None else
            f"a target global ACC of the {GLOBAL_FLOOR} + {TARGET_SHARE:g} × (FedAvg's reported global ACC "
            f"− that floor) in the setting (n/a where FedAvg does not beat the floor)")
    caption = (
        "Communication: bytes moved per round (all sampled clients together) and over the whole run, "
        "uplink and downlink, counted exactly from the tensors sent (1 MB = 10^6 bytes), mean ± std "
        "over seeds; ÷ FedAvg: the run's total relative to FedAvg in the same setting. to target "
        "(MB): cumulative uplink + downlink bytes through the first evaluated round at which the "
        f"global model, on the official test split, reaches {rule}; a floor-level model never does, and "
        "methods without a global model (Local, and the personalised-only methods) print n/a. 'not "
        "reached': no seed got there (k/n seeds: only k of n did). Fewest bytes in bold."
    )
    return rows.table(caption, [v.DIM_HEADER[d] for d in dim_cols])


# --------------------------------------------------------------------------- T5 / T6


def _fedmic_only(tidy: pd.DataFrame, what: str) -> pd.DataFrame:
    sub = tidy[tidy["method"] == "fedmic"]
    if sub.empty:
        raise ValueError(f"{what}: no FedMIC runs (config method 'fedmic') among the inputs")
    # the floors rows belong to the same runs, so they come along
    return sub


def t5_table(tidy: pd.DataFrame, select: str = "last") -> Table:
    """Ablation of FedMIC's parts: one row per FedMIC variant (+ the client-prior floor)."""
    tidy = _fedmic_only(tidy, "T5")
    runs = personal_runs(tidy, select)
    runs = runs.join(v.values(tidy, "run", "comm", ["uplink_total"], split=None)[["uplink_total"]])
    dim_cols = v.dims(runs)
    rows = Rows(runs)
    cols = {"ACC": "acc", "ΔACC": "d_acc", "AUC": "auc", "ΔAUC": "d_auc", "F1": "f1", "ΔF1": "d_f1"}
    for s in v.settings(runs, dim_cols):
        here = v.in_setting(runs, dim_cols, s)
        dcells = v.dim_cells(dim_cols, s)
        for arm in v.arm_order(here):
            sub = here[here["arm"] == arm]
            changes = v.describe_changes(sub["changes"].iloc[0])
            row = {**dcells, "variant": sub["label"].iloc[0], "changed from default": changes}
            for name, col in cols.items():
                rows.stat(row, name, sub[col], signed=name.startswith("Δ"))
            rows.stat(row, "uplink total (MB)", sub["uplink_total"] / 1e6, how="min", digits=3)
            rows.rows.append(row)
        _floor_rows(rows, dcells, here, [*cols, "uplink total (MB)"],
                    {PRIOR_FLOOR: {name: PRIOR[col] for name, col in cols.items() if col in PRIOR}}, "variant")
        rows.rows[-1]["changed from default"] = ""
    caption = (
        f"Ablation of FedMIC's parts: every FedMIC run, labelled by the hyperparameters that differ "
        f"from FedMIC's defaults (representation/decision distillation, auxiliary matrices, adaptive "
        f"weighting, global parameter decomposition (GPD off: dense uploads), fixed rank). "
        f"Personalised test ACC, AUC and F1 ({_select_text(select, tidy)}), mean ± std over seeds; Δ: "
        f"margin over the {PRIOR_FLOOR}; uplink over the whole run. Best per column within each "
        f"setting in bold; n/a: undefined."
    )
    return rows.table(caption, [v.DIM_HEADER[d] for d in dim_cols])


def _sensitivity_param(changes: dict) -> str | None:
    """The one parameter a run varies ('' for the default), None if another or several."""
    if not changes:
        return ""
    for name, keys in SENSITIVITY.items():
        if set(changes) <= set(keys):
            return name
    return None


def t6_table(tidy: pd.DataFrame, select: str = "last") -> Table:
    """Sensitivity: FedMIC runs that change exactly one of the energy schedule, τ, α, β."""
    tidy = _fedmic_only(tidy, "T6")
    runs = personal_runs(tidy, select)
    runs = runs.join(v.values(tidy, "run", "comm", ["uplink_per_round"], split=None)[["uplink_per_round"]])
    runs["param"] = [_sensitivity_param(c) for c in runs["changes"]]
    runs = runs[runs["param"].notna()]
    if (runs["param"] == "").all():
        raise ValueError("T6: no FedMIC run changes the energy schedule, tau, alpha or beta alone")
    dim_cols = v.dims(runs)
    rows = Rows(runs)
    for s in v.settings(runs, dim_cols):
        here = v.in_setting(runs, dim_cols, s)
        dcells = v.dim_cells(dim_cols, s)
        for name, keys in SENSITIVITY.items():
            varied = here[here["param"] == name]
            if varied.empty:
                continue
            group = pd.concat([here[here["param"] == ""], varied])
            arms = sorted(v.arm_order(group), key=lambda a: tuple(
                float(group.loc[group["arm"] == a, "changes"].iloc[0].get(k, _default(k))) for k in keys))
            for arm in arms:
                sub = group[group["arm"] == arm]
                ch = sub["changes"].iloc[0]
                value = "→".join(fmt_num(ch.get(k, _default(k))) for k in keys)
                row = {**dcells, "parameter": name, "value": value + (" (default)" if not ch else "")}
                rows.stat(row, "ACC", sub["acc"])
                rows.stat(row, "ΔACC", sub["d_acc"], signed=True)
                rows.stat(row, "AUC", sub["auc"])
                rows.stat(row, "uplink/round (MB)", sub["uplink_per_round"] / 1e6, how="min", digits=4)
                rows.rows.append(row)
        _floor_rows(rows, dcells, here, ["ACC", "ΔACC", "AUC", "uplink/round (MB)"],
                    {PRIOR_FLOOR: {"ACC": "client_prior_acc", "AUC": "client_prior_auc"}}, "parameter")
        rows.rows[-1]["value"] = ""
    caption = (
        f"Sensitivity of FedMIC to the energy schedule (E_start→E_end of the kept singular-value "
        f"energy), the distillation temperature τ and the weights α (decision-level) and β "
        f"(representation-level): runs that change exactly one of them, beside the default. "
        f"Personalised test ACC and AUC ({_select_text(select, tidy)}), Δ: margin over the "
        f"{PRIOR_FLOOR}, and uplink bytes per round (all sampled clients), mean ± std over seeds. "
        f"Best per parameter within each setting in bold; n/a: undefined."
    )
    return rows.table(caption, [v.DIM_HEADER[d] for d in dim_cols] + ["parameter"])


def _default(key: str):
    from fedmic.methods import hp_defaults

    return hp_defaults("fedmic")[key]


def fmt_num(x) -> str:
    return f"{x:g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


# --------------------------------------------------------------------------- T8


def t8_table(tidy: pd.DataFrame) -> Table:
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
            rows.cell(row, "client memory (MB)", _mb_text(memory), v.finite_mean(memory), "min", sub.index)
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


# --------------------------------------------------------------------------- T9


def t9_table(tidy: pd.DataFrame, select: str = "last") -> Table:
    """Global-model accuracy and per-client fairness, beside both floors."""
    runs = personal_runs(tidy, select)
    runs = runs.join(v.values(tidy, _select(select), "global", ["acc", "auc", "f1"], prefix="g_")[
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
        _floor_rows(rows, dcells, here, list(cols), {PRIOR_FLOOR: {"personal ACC": "client_prior_acc"},
                                                     GLOBAL_FLOOR: {"global ACC": "global_majority_acc"}})
    caption = (
        f"Global model and fairness: the global (shared) model on the full official test split (n/a for "
        f"methods without one), beside the {GLOBAL_FLOOR}; the personalised accuracy across clients: "
        f"sample-weighted mean, its margin over the {PRIOR_FLOOR}, the std across clients and the 10th "
        f"percentile of per-client accuracy (worst decile) ({_select_text(select, tidy)}), mean ± std "
        f"over seeds. Best per column within each setting in bold (lowest std)."
    )
    return rows.table(caption, [v.DIM_HEADER[d] for d in dim_cols])


# --------------------------------------------------------------------------- tuning


def tuning_table(tidy: pd.DataFrame, select: str = "last") -> Table:
    """Per setting and tuned arm: what tuning chose, its validation score, and the arm's own
    settings' (trial 0) beside it; the same rule as `fedmic select` (fedmic/tuning.py)."""
    from fedmic import tuning

    if select != "last":
        raise ValueError("the tuning table has no _valsel variant (it reports validation scores)")
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


# --------------------------------------------------------------------------- entry point

BUILDERS: dict[str, Callable[..., Table]] = {
    "t2": t2_table, "t3": t3_table, "t4": t4_table, "t5": t5_table, "t6": t6_table,
    "t7": t7_table, "t8": t8_table, "t9": t9_table, "tuning": tuning_table,
}


def build(name: str, tidy: pd.DataFrame, target: float | None = None) -> Table:
    """Table ``name`` (t2..t9; ``_valsel`` appended: validation-selected values)."""
    key, select = name.lower(), "last"
    if key.endswith("_valsel"):
        key, select = key[: -len("_valsel")], "valsel"
    if key not in BUILDERS:
        raise ValueError(f"unknown table {name!r}; choose one of t1, {', '.join(BUILDERS)}")
    if key in ("t4", "t8"):
        if select != "last":
            raise ValueError(f"{key} has no _valsel variant (its numbers are {'bytes' if key == 't4' else 'costs'})")
        return t4_table(tidy, target) if key == "t4" else t8_table(tidy)
    return BUILDERS[key](tidy, select=select)


__all__ = ["Table", "build", "default_target", "bytes_to_target", "setting_comparisons", *[f"{k}_table" for k in BUILDERS]]
