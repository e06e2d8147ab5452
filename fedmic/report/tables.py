"""Tables T2-T9 (SPEC §3) from run JSONs.

Every table is written by ``fedmic.report.io.write_table`` (CSV + Markdown + LaTeX). Cells
print mean ± std over seeds (std with ddof=1; one seed prints the mean alone); the best
value of each column is bold, judged within each setting (dataset, λ, ...) on the mean.
Display conventions:
- ``n/a``: the runs give no value (an undefined AUC, no global model, no FedAvg to compare
  with, a missing timing file);
- ``–``: no run of that arm in that setting.

Personalised numbers are, by default, the run's reported value (mean over the last k
evaluated rounds, SPEC 2.2); ``select="valsel"`` uses the test value at the round chosen
on the clients' validation sets instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from fedmic.report.io import MISSING, mean_std, write_table
from fedmic.report.runs import (
    arm_order,
    bytes_to_target,
    dim_header,
    dim_value,
    load_runs,
    setting_text,
)

NA = "n/a"
TARGET_FRACTION = 0.95  # default target: this fraction of FedAvg's reported accuracy
FLOAT32_BYTES = 4
LOCAL_FLOOR = "local-majority floor"
GLOBAL_FLOOR = "global-majority floor"
# T6: parameters of the sensitivity study; the energy schedule is one parameter
SENSITIVITY = {
    "energy (E_start→E_end)": ("energy_start", "energy_end"),
    "τ": ("tau",),
    "α": ("alpha",),
    "β": ("beta",),
}


@dataclass
class Table:
    df: pd.DataFrame
    caption: str
    bold: dict = field(default_factory=dict)
    bold_by: dict = field(default_factory=dict)
    group_by: list = field(default_factory=list)
    formats: dict = field(default_factory=dict)

    def write(self, stem: str | Path) -> list[Path]:
        return write_table(self.df, stem, self.caption, bold=self.bold, bold_by=self.bold_by,
                           group_by=self.group_by or None, formats=self.formats)


# --------------------------------------------------------------------------- cells


def _values(sub: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(sub[col], errors="coerce").to_numpy(dtype=np.float64)


def _mean(v: np.ndarray) -> float:
    """Mean for ranking: NaN when any seed is NaN (mean_std prints n/a then)."""
    return float(v.mean()) if v.size and np.all(np.isfinite(v)) else math.nan


def _cell(v: np.ndarray, digits: int = 3, signed: bool = False) -> str:
    if v.size == 0:
        return MISSING
    s = mean_std(v, digits=digits)
    if signed and s != NA and not s.startswith("-"):
        s = "+" + s
    return s


def _mb_digits(mb: float) -> int:
    """Decimals showing about three significant digits of a size in MB."""
    if not math.isfinite(mb) or mb == 0:
        return 2
    return int(min(6, max(1, 2 - math.floor(math.log10(abs(mb))))))


def _mb_cell(bytes_: np.ndarray) -> str:
    if bytes_.size == 0:
        return MISSING
    mb = bytes_ / 1e6
    return mean_std(mb, digits=_mb_digits(float(np.nanmean(mb)) if np.isfinite(mb).any() else 0.0))


class _Cols:
    """Builds display columns with a numeric helper ranking each (kept in the CSV only)."""

    def __init__(self):
        self.bold: dict[str, str] = {}
        self.bold_by: dict[str, str] = {}

    def add(self, row: dict, name: str, text: str, value: float, how: str | None) -> None:
        row[name] = text
        helper = f"{name} [value]"
        row[helper] = value
        self.bold_by[name] = helper
        if how:
            self.bold[name] = how


def _setting_tuples(runs: pd.DataFrame, dims: Sequence[str]) -> list[tuple]:
    def key(t):
        return tuple((0, float(x), "") if isinstance(x, (int, float)) and not isinstance(x, bool)
                     else (1, 0.0, str(x)) for x in t)
    tuples = {tuple(r) for r in runs[list(dims)].itertuples(index=False, name=None)}
    return sorted(tuples, key=key)


def _in_setting(runs: pd.DataFrame, dims: Sequence[str], values: Sequence) -> pd.DataFrame:
    mask = np.ones(len(runs), dtype=bool)
    for d, v in zip(dims, values):
        mask &= (runs[d] == v).to_numpy()
    return runs[mask]


def _dim_cols(dims: Sequence[str], values: Sequence) -> dict:
    return {dim_header(d): dim_value(d, v) for d, v in zip(dims, values)}


def _metric(select: str, key: str, glob: bool = False) -> str:
    if select not in ("last", "valsel"):
        raise ValueError(f"select must be 'last' or 'valsel', got {select!r}")
    return ("g_" if glob else "") + ("valsel_" if select == "valsel" else "") + key


def _select_text(select: str, runs: pd.DataFrame | None = None) -> str:
    if select == "valsel":
        return "test value at the round chosen on the clients' validation sets"
    ks = sorted(set(int(k) for k in runs["last_k"])) if runs is not None and "last_k" in runs else []
    k = "/".join(str(x) for x in ks) if ks else "k"
    return f"mean over the last {k} evaluated rounds"


def _floor_values(sub: pd.DataFrame, col: str) -> np.ndarray:
    """One floor per partition (arms share their partition's floors)."""
    rep = [c for c in ("partition_seed",) if c in sub.columns]
    if rep:
        sub = sub.drop_duplicates(rep)
    else:
        sub = sub.iloc[:1]
    return _values(sub, col)


def _seed_span(runs: pd.DataFrame, dims: Sequence[str]) -> str:
    n = runs.groupby(["label", *dims], dropna=False).size()
    if n.empty:
        return "0"
    return f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"


def _runs(runs_or_paths) -> pd.DataFrame:
    if isinstance(runs_or_paths, pd.DataFrame):
        return runs_or_paths
    return load_runs(runs_or_paths)


# --------------------------------------------------------------------------- T2


def t2_table(runs, select: str = "last") -> Table:
    """Main comparison: rows = arms (then the two floors), columns = setting × ACC/AUC/ΔACC."""
    runs = _runs(runs)
    dims = runs.attrs["dims"]
    settings = _setting_tuples(runs, dims)
    acc, auc = _metric(select, "acc"), _metric(select, "auc")
    cols = _Cols()
    rows = []
    for arm in arm_order(runs):
        row = {"method": arm}
        for s in settings:
            sub = _in_setting(runs, dims, s)
            sub = sub[sub["label"] == arm]
            name = setting_text(dims, s)
            a = _values(sub, acc)
            cols.add(row, f"{name} ACC", _cell(a), _mean(a), "max")
            u = _values(sub, auc)
            cols.add(row, f"{name} AUC", _cell(u), _mean(u), "max")
            d = a - _values(sub, "floor_local")
            cols.add(row, f"{name} ΔACC", _cell(d, signed=True), _mean(d), "max")
        rows.append(row)
    for label, col in ((LOCAL_FLOOR, "floor_local"), (GLOBAL_FLOOR, "floor_global")):
        row = {"method": label}
        for s in settings:
            name = setting_text(dims, s)
            f = _floor_values(_in_setting(runs, dims, s), col)
            # floors are references, never "best": their helper stays NaN
            cols.add(row, f"{name} ACC", _cell(f), math.nan, None)
            cols.add(row, f"{name} AUC", MISSING, math.nan, None)
            cols.add(row, f"{name} ΔACC", MISSING, math.nan, None)
        rows.append(row)
    caption = (
        f"Main comparison: personalised test accuracy (ACC) and AUC, each client's evaluated "
        f"model on its own test set ({_select_text(select, runs)}), mean ± std over seeds "
        f"({_seed_span(runs, dims)} per cell). ΔACC: margin over the local-majority floor (each "
        f"client predicts its own training majority class). Floors: accuracy of the trivial "
        f"predictors on the same test images. Best per column in bold; n/a: undefined; "
        f"–: not run."
    )
    return Table(pd.DataFrame(rows), caption, bold=cols.bold, bold_by=cols.bold_by)


# --------------------------------------------------------------------------- T3 / T7


def _pivot(runs: pd.DataFrame, pivot: str, header: Callable[[object], str], select: str) -> Table:
    """Rows = setting × arm (plus the local-majority floor), columns = values of ``pivot``."""
    dims = [d for d in runs.attrs["dims"] if d != pivot]
    values = sorted(runs[pivot].unique())
    acc = _metric(select, "acc")
    cols = _Cols()
    rows = []
    for s in _setting_tuples(runs, dims):
        here = _in_setting(runs, dims, s)
        for arm in arm_order(here):
            row = {**_dim_cols(dims, s), "method": arm}
            for v in values:
                sub = here[(here["label"] == arm) & (here[pivot] == v)]
                a = _values(sub, acc)
                cols.add(row, header(v), _cell(a), _mean(a), "max")
            rows.append(row)
        row = {**_dim_cols(dims, s), "method": LOCAL_FLOOR}
        for v in values:
            sub = here[here[pivot] == v]
            f = _floor_values(sub, "floor_local") if len(sub) else np.array([])
            cols.add(row, header(v), _cell(f), math.nan, None)
        rows.append(row)
    group = [dim_header(d) for d in dims]
    return Table(pd.DataFrame(rows), "", bold=cols.bold, bold_by=cols.bold_by, group_by=group)


def t3_table(runs, select: str = "last") -> Table:
    """Low participation: personalised ACC per arm × join ratio."""
    runs = _runs(runs)
    t = _pivot(runs, "join_ratio", lambda v: f"join ratio {v:g}", select)
    t.caption = (
        f"Low participation: personalised test ACC ({_select_text(select, runs)}) for each fraction of "
        f"clients sampled per round (join ratio), mean ± std over seeds "
        f"({_seed_span(runs, runs.attrs['dims'])} per cell). All clients are evaluated every "
        f"time. Best per column within each setting in bold; n/a: undefined; –: not run."
    )
    return t


def t7_table(runs, select: str = "last") -> Table:
    """Number of clients: personalised ACC per arm × K."""
    runs = _runs(runs)
    t = _pivot(runs, "clients", lambda v: f"K={int(v)}", select)
    t.caption = (
        f"Number of clients K: personalised test ACC ({_select_text(select, runs)}), mean ± std over "
        f"seeds ({_seed_span(runs, runs.attrs['dims'])} per cell). Each K has its own partition, "
        f"hence its own local-majority floor. Best per column within each setting in bold; "
        f"n/a: undefined; –: not run."
    )
    return t


# --------------------------------------------------------------------------- T4


def _reference(here: pd.DataFrame, method: str = "fedavg") -> pd.DataFrame:
    """The runs of the method's default arm in this setting (first label if several)."""
    ref = here[here["method"] == method]
    if ref.empty:
        return ref
    # prefer the arm that is plainly the method (not renamed, default hyperparameters)
    for col, want in (("arm", method), ("changes", "default")):
        if (ref[col] == want).any():
            ref = ref[ref[col] == want]
    return ref[ref["label"] == arm_order(ref)[0]]


def default_target(here: pd.DataFrame) -> tuple[float, str]:
    """The default target accuracy of one setting, and the rule that gave it.

    TARGET_FRACTION × FedAvg's reported personalised accuracy (mean over its seeds of the
    mean over the last k evaluated rounds); without a FedAvg run in the setting,
    TARGET_FRACTION × the lowest such accuracy among the arms."""
    ref = _reference(here)
    if not ref.empty:
        return TARGET_FRACTION * _mean(_values(ref, "acc")), "fedavg"
    per_arm = here.groupby("label")["acc"].mean()
    return TARGET_FRACTION * float(per_arm.min()), "lowest"


def t4_table(runs, target: float | None = None) -> Table:
    """Communication: bytes per round and in total, ratio to FedAvg, bytes to the target."""
    runs = _runs(runs)
    dims = runs.attrs["dims"]
    cols = _Cols()
    rows = []
    rules = set()
    for s in _setting_tuples(runs, dims):
        here = _in_setting(runs, dims, s)
        if target is None:
            tgt, rule = default_target(here)
            rules.add(rule)
        else:
            tgt = float(target)
        ref = _reference(here)
        ref_up = _mean(_values(ref, "uplink_per_round")) if not ref.empty else math.nan
        for arm in arm_order(here):
            sub = here[here["label"] == arm]
            row = {**_dim_cols(dims, s), "method": arm}
            for col, name in (("uplink_per_round", "uplink/round (MB)"),
                              ("downlink_per_round", "downlink/round (MB)"),
                              ("uplink_total", "uplink total (MB)"),
                              ("downlink_total", "downlink total (MB)")):
                v = _values(sub, col)
                cols.add(row, name, _mb_cell(v), _mean(v), "min")
            up = _mean(_values(sub, "uplink_per_round"))
            ratio = up / ref_up if math.isfinite(ref_up) and ref_up > 0 else math.nan
            cols.add(row, "uplink ÷ FedAvg", NA if not math.isfinite(ratio) else f"{ratio:.3g}",
                     ratio, "min")
            row["target ACC"] = NA if not math.isfinite(tgt) else f"{tgt:.3f}"
            reached = [bytes_to_target(r["history"], tgt) if math.isfinite(tgt) else (None, None)
                       for r in sub["run"]]
            got = np.array([b for _, b in reached if b is not None], dtype=np.float64)
            rnds = np.array([r for r, _ in reached if r is not None], dtype=np.float64)
            if not math.isfinite(tgt):
                text, value, rtext = NA, math.nan, NA
            elif got.size == 0:
                text, value, rtext = "not reached", math.nan, "not reached"
            else:
                text = _mb_cell(got)
                rtext = mean_std(rnds, digits=1)
                if got.size < len(sub):
                    text += f" ({got.size}/{len(sub)} seeds)"
                    rtext += f" ({rnds.size}/{len(sub)} seeds)"
                    value = math.nan  # not comparable with arms that always reach it
                else:
                    value = float(got.mean())
            cols.add(row, "to target (MB)", text, value, "min")
            row["round reached"] = rtext
            rows.append(row)
    if target is not None:
        rule_text = f"target accuracy {float(target):.3f} (given)"
    else:
        rule_text = (f"target accuracy: {TARGET_FRACTION:g} × FedAvg's reported personalised ACC "
                     f"in the same setting")
        if "lowest" in rules:
            rule_text += (f" (settings without FedAvg: {TARGET_FRACTION:g} × the lowest reported "
                          f"ACC among the arms)")
    caption = (
        "Communication: bytes moved per round (all sampled clients together) and over the whole "
        "run, uplink and downlink, as counted exactly from the tensors sent (1 MB = 10^6 bytes; "
        "raw bytes in the CSV), mean ± std over seeds. uplink ÷ FedAvg: uplink per round "
        "relative to FedAvg in the same setting. to target (MB): cumulative uplink + downlink "
        "bytes through the first evaluated round whose personalised test ACC reaches the "
        f"{rule_text}; 'not reached' when no seed reaches it (k/n seeds: only k of n seeds "
        "did). Fewest bytes in bold; n/a: undefined."
    )
    return Table(pd.DataFrame(rows), caption, bold=cols.bold, bold_by=cols.bold_by,
                 group_by=[dim_header(d) for d in dims])


# --------------------------------------------------------------------------- T5


def _variant_name(arm: str, method: str, label: str, changes: str) -> str:
    if arm != method:  # the config named the arm: trust it
        return label
    base = label.split(" (")[0]
    return f"{base} (default)" if changes == "default" else f"{base} ({changes})"


def _fedmic_runs(runs: pd.DataFrame, what: str) -> pd.DataFrame:
    sub = runs[runs["method"] == "fedmic"]
    if sub.empty:
        raise ValueError(f"{what}: no FedMIC runs (config method 'fedmic') among the inputs")
    sub = sub.copy()
    sub.attrs = dict(runs.attrs)
    return sub


def t5_table(runs, select: str = "last") -> Table:
    """Ablation of FedMIC's parts: one row per FedMIC variant."""
    runs = _fedmic_runs(_runs(runs), "T5")
    dims = runs.attrs["dims"]
    acc, auc = _metric(select, "acc"), _metric(select, "auc")
    cols = _Cols()
    rows = []
    for s in _setting_tuples(runs, dims):
        here = _in_setting(runs, dims, s)
        for arm in arm_order(here):
            sub = here[here["label"] == arm]
            first = sub.iloc[0]
            row = {**_dim_cols(dims, s),
                   "variant": _variant_name(first["arm"], first["method"], arm, first["changes"]),
                   "changed from default": first["changes"]}
            a, u = _values(sub, acc), _values(sub, auc)
            cols.add(row, "ACC", _cell(a), _mean(a), "max")
            cols.add(row, "AUC", _cell(u), _mean(u), "max")
            d = a - _values(sub, "floor_local")
            cols.add(row, "ΔACC", _cell(d, signed=True), _mean(d), "max")
            rows.append(row)
    caption = (
        f"Ablation of FedMIC's parts: every FedMIC run, labelled by the hyperparameters that "
        f"differ from FedMIC's defaults (representation/decision distillation, auxiliary "
        f"matrices, adaptive weighting, global parameter decomposition (GPD off: dense "
        f"uploads), fixed rank). Personalised test ACC and AUC ({_select_text(select, runs)}), "
        f"mean ± std over seeds; ΔACC: margin over the local-majority floor. Best per column "
        f"within each setting in bold; n/a: undefined."
    )
    return Table(pd.DataFrame(rows), caption, bold=cols.bold, bold_by=cols.bold_by,
                 group_by=[dim_header(d) for d in dims])


# --------------------------------------------------------------------------- T6


def _sensitivity_param(changes: Mapping) -> str | None:
    """The one parameter a run varies ('' for the default), None if another or several."""
    if not changes:
        return ""
    for name, keys in SENSITIVITY.items():
        if set(changes) <= set(keys):
            return name
    return None


def _param_value(name: str, hp: Mapping) -> str:
    keys = SENSITIVITY[name]
    return "→".join(f"{hp.get(k):g}" if isinstance(hp.get(k), (int, float)) else str(hp.get(k))
                    for k in keys)


def _param_sort(name: str, hp: Mapping) -> tuple:
    return tuple(float(hp[k]) if isinstance(hp.get(k), (int, float)) else math.inf
                 for k in SENSITIVITY[name])


def t6_table(runs, select: str = "last") -> Table:
    """Sensitivity: FedMIC runs that change exactly one of the energy schedule, τ, α, β."""
    runs = _fedmic_runs(_runs(runs), "T6")
    attrs = dict(runs.attrs)
    runs = runs.assign(param=[_sensitivity_param(c) for c in runs["hp_changes"]])
    runs = runs[runs["param"].notna()]
    runs.attrs = attrs
    if (runs["param"] == "").all():
        raise ValueError("T6: no FedMIC run changes the energy schedule, tau, alpha or beta alone")
    dims = runs.attrs["dims"]
    acc, auc = _metric(select, "acc"), _metric(select, "auc")
    cols = _Cols()
    rows = []
    for s in _setting_tuples(runs, dims):
        here = _in_setting(runs, dims, s)
        for name in SENSITIVITY:
            varied = here[here["param"] == name]
            if varied.empty:
                continue
            default = here[here["param"] == ""]
            variants = [(lab, g) for lab, g in pd.concat([default, varied]).groupby("label", sort=False)]
            variants.sort(key=lambda lg: _param_sort(name, lg[1].iloc[0]["hp"]))
            for lab, sub in variants:
                hp = sub.iloc[0]["hp"]
                value = _param_value(name, hp)
                if sub.iloc[0]["param"] == "":
                    value += " (default)"
                row = {**_dim_cols(dims, s), "parameter": name, "value": value}
                a, u = _values(sub, acc), _values(sub, auc)
                cols.add(row, "ACC", _cell(a), _mean(a), "max")
                cols.add(row, "AUC", _cell(u), _mean(u), "max")
                up = _values(sub, "uplink_per_round")
                cols.add(row, "uplink/round (MB)", _mb_cell(up), _mean(up), "min")
                rows.append(row)
    caption = (
        f"Sensitivity of FedMIC to the energy schedule (E_start→E_end of the kept singular-value "
        f"energy), the distillation temperature τ and the weights α (decision-level) and β "
        f"(representation-level): runs that change exactly one of them from the defaults, beside "
        f"the default. Personalised test ACC and AUC ({_select_text(select, runs)}) and uplink bytes per "
        f"round (all sampled clients), mean ± std over seeds. Best per parameter within each "
        f"setting in bold; n/a: undefined."
    )
    group = [dim_header(d) for d in dims] + ["parameter"]
    return Table(pd.DataFrame(rows), caption, bold=cols.bold, bold_by=cols.bold_by, group_by=group)


# --------------------------------------------------------------------------- T8


def client_memory_bytes(row: Mapping) -> float:
    """Per-client persistent memory: a method that keeps its own model on every client
    (the run JSON has params.personal) stores personal params × 4 bytes (float32); a method
    whose clients keep nothing between rounds stores 0. Optimiser state, auxiliary
    matrices and buffers are not counted."""
    p = row.get("params_personal")
    if p is None or not math.isfinite(p):
        return 0.0
    return float(p) * FLOAT32_BYTES


def t8_table(runs) -> Table:
    """Cost per arm: parameters, local training time, client memory, peak RSS."""
    runs = _runs(runs)
    dims = [d for d in runs.attrs["dims"] if d != "lam"]  # cost barely depends on λ
    cols = _Cols()
    rows = []
    for s in _setting_tuples(runs, dims):
        here = _in_setting(runs, dims, s)
        for arm in arm_order(here):
            sub = here[here["label"] == arm]
            row = {**_dim_cols(dims, s), "method": arm}
            shared = _values(sub, "params_shared")
            personal = _values(sub, "params_personal")
            evaluated = np.where(np.isfinite(personal), personal, shared)
            for name, v in (("shared params", shared), ("evaluated params", evaluated)):
                cols.add(row, name, f"{int(np.nanmax(v))}" if np.isfinite(v).any() else NA,
                         float(np.nanmax(v)) if np.isfinite(v).any() else math.nan, None)
            t = _values(sub, "train_s_per_client")
            cols.add(row, "train s/client/round", _cell(t, digits=3), _mean(t), "min")
            mem = np.array([client_memory_bytes(r) for _, r in sub.iterrows()])
            cols.add(row, "client memory (MB)", _mb_cell(mem), _mean(mem), "min")
            rss = _values(sub, "peak_rss_mb")
            cols.add(row, "peak RSS (MB)", _cell(rss, digits=0), _mean(rss), "min")
            rows.append(row)
    caption = (
        "Cost: parameters of the shared model and of the evaluated model (personalised "
        "methods: the client's own model; others: the shared model); local training time per "
        "sampled client per round (the round's training wall time, broadcast and aggregation "
        "included, divided by the sampled clients; from the run's timing file); per-client "
        "persistent memory, estimated as evaluated params × 4 bytes (float32) for methods that "
        "keep a model on every client and 0 for the others (optimiser state and auxiliary "
        "matrices not counted); peak resident memory of the simulation process. Mean ± std "
        "over seeds" + (" and λ" if "lam" in runs.attrs["dims"] else "") +
        "; hardware in each run's env. Lowest cost in bold; n/a: no timing file."
    )
    return Table(pd.DataFrame(rows), caption, bold=cols.bold, bold_by=cols.bold_by,
                 group_by=[dim_header(d) for d in dims] or None)


# --------------------------------------------------------------------------- T9


def t9_table(runs, select: str = "last") -> Table:
    """Global-model accuracy and per-client fairness."""
    runs = _runs(runs)
    dims = runs.attrs["dims"]
    cols = _Cols()
    rows = []
    for s in _setting_tuples(runs, dims):
        here = _in_setting(runs, dims, s)
        for arm in arm_order(here):
            sub = here[here["label"] == arm]
            row = {**_dim_cols(dims, s), "method": arm}
            for name, col, how in (("global ACC", _metric(select, "acc", glob=True), "max"),
                                   ("global AUC", _metric(select, "auc", glob=True), "max"),
                                   ("personal ACC", _metric(select, "acc"), "max"),
                                   ("client std", _metric(select, "acc_std"), "min"),
                                   ("worst-decile ACC", _metric(select, "acc_worst_decile"), "max")):
                v = _values(sub, col)
                cols.add(row, name, _cell(v), _mean(v), how)
            rows.append(row)
    caption = (
        f"Global model and fairness: the global (shared) model on the full official test split "
        f"(n/a for methods without one), and the personalised accuracy across clients: "
        f"sample-weighted mean, std across clients and the 10th percentile of per-client "
        f"accuracy (worst decile) ({_select_text(select, runs)}), mean ± std over seeds. Best per "
        f"column within each setting in bold (lowest std)."
    )
    return Table(pd.DataFrame(rows), caption, bold=cols.bold, bold_by=cols.bold_by,
                 group_by=[dim_header(d) for d in dims])


# --------------------------------------------------------------------------- entry points

BUILDERS: dict[str, Callable[..., Table]] = {
    "t2": t2_table, "t3": t3_table, "t4": t4_table, "t5": t5_table, "t6": t6_table,
    "t7": t7_table, "t8": t8_table, "t9": t9_table,
}


def run_table(name: str, run_paths: Sequence[str | Path], stem: str | Path,
              target: float | None = None) -> list[Path]:
    """Write table ``name`` (t2..t9; append ``_valsel`` for validation-selected values)
    from run JSON paths."""
    key = name.lower()
    select = "last"
    if key.endswith("_valsel"):
        key, select = key[: -len("_valsel")], "valsel"
    if key not in BUILDERS:
        raise ValueError(f"unknown table {name!r}; choose one of t1, {', '.join(BUILDERS)}")
    runs = load_runs(run_paths)
    if key == "t4":
        if select != "last":
            raise ValueError("t4 has no _valsel variant (its numbers are bytes)")
        return t4_table(runs, target=target).write(stem)
    if key == "t8":
        if select != "last":
            raise ValueError("t8 has no _valsel variant (its numbers are costs)")
        return t8_table(runs).write(stem)
    return BUILDERS[key](runs, select=select).write(stem)


__all__ = ["Table", "TARGET_FRACTION", "default_target", "client_memory_bytes", "run_table",
           *[f"{k}_table" for k in BUILDERS]]
