"""Table T4: communication, bytes per round and per run and bytes to a target global ACC."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fedmic import grid, paper
from fedmic.paper import t2
from fedmic.report import views as v
from fedmic.report.io import mean_std
from fedmic.report.tables import GLOBAL_FLOOR, NA, Rows, Table, mb_text

KIND = "table"
ORDER = 4
NO_VALSEL = "its numbers are bytes"
CAPTION = """\
**Table T4 — communication.** Uplink and downlink bytes per round and over the run (exact
byte counts, in MB), their ratios to FedAvg, and the cumulative uplink + downlink bytes until
the global model first reaches a target ACC on the official test split: the global-majority
floor + 0.9 × (FedAvg's global ACC − floor) per dataset and λ, or `tables.t4.target`.
Methods without a global model (Local among them) print n/a; a model at the floor never
reaches the target."""
OPTIONS = (
    paper.Option("target", {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
                 "global ACC to reach for bytes-to-target; null: the global-majority floor + 0.9 × (FedAvg's global "
                 "ACC − floor) per setting", default=None),
)
TARGET_SHARE = 0.9  # the default target closes this share of the gap from the floor to FedAvg


def runs(config: dict) -> list[grid.RunKey]:
    """T2's runs."""
    return t2.runs(config)


def render(inputs: paper.Inputs, options: dict, select: str) -> Table:
    return table(inputs.tidy(), options["target"])


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


def table(tidy: pd.DataFrame, target: float | None = None) -> Table:
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
                rows.cell(row, name, mb_text(sub[col].to_numpy(float) / 1e6), v.finite_mean(sub[col]), "min",
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
                    text, rtext = mb_text(got / 1e6), mean_std(rnds, digits=1)
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
