"""What every table and figure does with the tidy results frame (fedmic.report.tidy): pick
values, one row per run; group runs by setting and arm; name arms and settings.

Arms keep the order in which the frame first lists them (a workflow collects them in the
order of the config's ``methods:``); a setting is (dataset, scheme, λ, clients, join ratio),
of which a view shows dataset and λ always and the others where they vary.
"""
from __future__ import annotations

import json
import math
import re
from typing import Sequence

import numpy as np
import pandas as pd

from fedmic.methods import METHODS
from fedmic.report.tidy import RUN_KEY, SETTING

PRETTY_METHOD = {name: m.pretty for name, m in METHODS.items()}
DIM_HEADER = {"dataset": "dataset", "scheme": "scheme", "lam": "λ", "clients": "K", "join_ratio": "join ratio"}
# readable text for FedMIC's switches; other changes print as key=value
_HP_OFF = {
    "rep_distill": "w/o representation KD", "dec_distill": "w/o decision KD",
    "aux_matrices": "w/o auxiliary matrices", "adaptive": "w/o adaptive weighting",
    "gpd": "w/o GPD (dense uploads)",
}
RUN_INFO = ["method", "model", "hp_changes", "partition_seed"]
# the two floors, named alike in every table, figure, caption and doc: each client outputs its
# own training label distribution (ACC = its training-majority class), for personalised results;
# every client predicts the majority class of all training images, for the global model
PRIOR_FLOOR = "client-prior floor"
GLOBAL_FLOOR = "global-majority floor"


def pretty_arm(arm: str, method: str | None = None) -> str:
    """fedavg -> FedAvg; an arm named after its method keeps the suffix: fedavg-bn -> FedAvg-bn."""
    if arm in PRETTY_METHOD:
        return PRETTY_METHOD[arm]
    if method in PRETTY_METHOD and arm.startswith(method + "-"):
        return PRETTY_METHOD[method] + arm[len(method):]
    return arm


def pretty_dataset(flag: str) -> str:
    from fedmic.data.registry import DATASETS

    return DATASETS.get(flag, {}).get("python_class", flag)


def class_names(flag: str) -> list[str]:
    """The registry's class names of a MedMNIST dataset, by class id."""
    from fedmic.data.registry import DATASETS

    if flag not in DATASETS:
        raise ValueError(f"unknown MedMNIST dataset {flag!r}: no class names for it; choose one of "
                         f"{', '.join(DATASETS)}")
    names = DATASETS[flag]["label"]
    return [names[k] for k in sorted(names, key=int)]


def pretty_layer(name: str) -> str:
    """A layer's parameter name as a reader says it: encoder.conv2.weight -> conv 2,
    encoder.fc.weight -> fully connected, head.weight -> classifier head,
    encoder.layers.3.conv1.weight -> block 4 conv 1, encoder.stem.0.weight -> stem conv."""
    parts = name.removesuffix(".weight").split(".")
    if parts and parts[0] == "encoder":
        parts = parts[1:]
    words, i = [], 0
    while i < len(parts):
        p = parts[i]
        nxt = parts[i + 1] if i + 1 < len(parts) else None
        if p in ("layers", "blocks") and nxt is not None and nxt.isdigit():
            words.append(f"block {int(nxt) + 1}")
            i += 2
            continue
        if p in ("stem", "shortcut") and nxt is not None and nxt.isdigit():
            words.append(f"{p} conv")
            i += 2
            continue
        m = re.fullmatch(r"(conv|fc|bn)(\d+)", p)
        words.append({"head": "classifier head", "fc": "fully connected"}.get(p)
                     or (f"{m.group(1)} {m.group(2)}" if m else p))
        i += 1
    return " ".join(words) or name


def layer_depth(name: str) -> tuple:
    """Sort key from input to output: the stem first, the head last, block 10 after block 9."""
    parts = name.split(".")
    rank = 0 if "stem" in parts else 2 if "head" in parts else 1
    return rank, [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def fmt_value(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if v is None:
        return "none"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def describe_changes(changes: dict) -> str:
    """'w/o representation KD, tau=4', 'E 0.9→0.95', or 'default'."""
    if not changes:
        return "default"
    parts = []
    if {"energy_start", "energy_end"} & set(changes):
        parts.append(f"E {fmt_value(changes.get('energy_start', '·'))}→{fmt_value(changes.get('energy_end', '·'))}")
    for k, v in changes.items():
        if k in ("energy_start", "energy_end"):
            continue
        if k in _HP_OFF and v is False:
            parts.append(_HP_OFF[k])
        elif k == "fixed_rank" and v is not None:
            parts.append(f"fixed rank {v}")
        else:
            parts.append(f"{k}={fmt_value(v)}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- runs


# A run's health, marked beside every number of a table that uses it: updates dropped as not
# finite (on_nonfinite: skip), and rounds that aggregated no update (the global model stood still).
HEALTH = {"skipped_total": "†", "unaggregated_rounds": "‡"}


def runs(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per run, in the frame's order: its coordinates, what names its arm, and its
    health counts (HEALTH; NaN in a results file collected before they were recorded)."""
    out = tidy.drop_duplicates(RUN_KEY)[RUN_KEY + RUN_INFO].reset_index(drop=True)
    out["label"] = [pretty_arm(a, m) for a, m in zip(out["arm"], out["method"])]
    out["changes"] = [json.loads(h) for h in out["hp_changes"]]
    m = (tidy["select"] == "run") & (tidy["scope"] == "comm") & tidy["metric"].isin(list(HEALTH))
    health = tidy[m].set_index(RUN_KEY + ["metric"])["value"].unstack("metric").reindex(columns=list(HEALTH))
    return out.join(health, on=RUN_KEY)


def health_marks(runs_: pd.DataFrame) -> pd.Series:
    """Per run (same index): the HEALTH marks it earns, '' for a healthy run."""
    out = pd.Series("", index=runs_.index, dtype=object)
    for col, mark in HEALTH.items():
        if col in runs_:
            out[runs_[col].fillna(0).to_numpy() > 0] += mark
    return out


def averaged_k(tidy: pd.DataFrame) -> pd.Series:
    """Per run: how many evaluated rounds its reported values average, min(last_k, the rounds
    it evaluated); a run with fewer evaluated rounds than last_k averages all of them."""
    ev = tidy[(tidy["select"] == "round") & (tidy["scope"] == "personal") & (tidy["split"] == "test")
              & (tidy["metric"] == "acc") & tidy["client"].isna()]
    evaluated = ev.groupby(RUN_KEY)["round"].nunique()
    last_k = tidy[(tidy["scope"] == "config") & (tidy["metric"] == "last_k")].set_index(RUN_KEY)["value"]
    return pd.concat([last_k, evaluated.reindex(last_k.index)], axis=1).min(axis=1).dropna().astype(int)


def values(tidy: pd.DataFrame, select: str, scope: str, metrics: Sequence[str], split: str | None = "test",
           prefix: str = "") -> pd.DataFrame:
    """runs(tidy) with one column per metric (NaN where a run has none), ``prefix`` + name."""
    m = ((tidy["select"] == select) & (tidy["scope"] == scope) & tidy["metric"].isin(metrics)
         & tidy["client"].isna() & tidy["layer"].isna())
    if split is not None:
        m &= tidy["split"] == split
    wide = tidy[m].set_index(RUN_KEY + ["metric"])["value"].unstack("metric")
    wide = wide.reindex(columns=list(metrics)).add_prefix(prefix)
    return runs(tidy).join(wide, on=RUN_KEY)


def per_client(tidy: pd.DataFrame, metric: str = "acc") -> pd.DataFrame:
    """Reported per-client personalised test values: columns RUN_KEY, client, value."""
    m = ((tidy["select"] == "last") & (tidy["scope"] == "personal") & (tidy["metric"] == metric)
         & tidy["client"].notna())
    return tidy.loc[m, RUN_KEY + ["client", "value"]]


def per_round(tidy: pd.DataFrame, scope: str, metric: str, split: str | None = "test") -> pd.DataFrame:
    """Per-round values with their bytes: RUN_KEY, round, value, cum bytes (evaluated rounds)."""
    m = (tidy["select"] == "round") & (tidy["scope"] == scope) & (tidy["metric"] == metric)
    if split is not None:
        m &= tidy["split"] == split
    cols = RUN_KEY + ["round", "layer", "value", "uplink_bytes", "downlink_bytes", "cum_uplink_bytes",
                      "cum_downlink_bytes"]
    out = tidy.loc[m, cols].copy()
    out["cum_bytes"] = out["cum_uplink_bytes"] + out["cum_downlink_bytes"]
    return out


# --------------------------------------------------------------------------- settings


def dims(df: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Setting columns a view shows: dataset and λ always; K and join ratio where they vary;
    the partition scheme where it varies within one dataset."""
    out = []
    for c in SETTING:
        if c in exclude:
            continue
        if c in ("dataset", "lam"):
            out.append(c)
        elif c == "scheme":
            if (df.groupby("dataset")["scheme"].nunique() > 1).any():
                out.append(c)
        elif df[c].nunique() > 1:
            out.append(c)
    return out


def settings(df: pd.DataFrame, dim_cols: Sequence[str]) -> list[tuple]:
    """The settings present, dataset in order of appearance, numbers ascending."""
    if not dim_cols:
        return [()]
    first = {d: i for i, d in enumerate(dict.fromkeys(df["dataset"]))}
    keys = df[list(dim_cols)].drop_duplicates().itertuples(index=False, name=None)
    return sorted(keys, key=lambda t: tuple(first.get(v, 0) if d == "dataset" else v for d, v in zip(dim_cols, t)))


def in_setting(df: pd.DataFrame, dim_cols: Sequence[str], values_: Sequence) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for d, v in zip(dim_cols, values_):
        mask &= (df[d] == v).to_numpy()
    return df[mask]


def dim_value(dim: str, v) -> str:
    return pretty_dataset(str(v)) if dim == "dataset" else fmt_value(v.item() if hasattr(v, "item") else v)


def setting_text(dim_cols: Sequence[str], values_: Sequence) -> str:
    """'PneumoniaMNIST, λ=0.1, K=20'."""
    return ", ".join(dim_value(d, v) if d == "dataset" else f"{DIM_HEADER[d]}={dim_value(d, v)}"
                     for d, v in zip(dim_cols, values_))


def dim_cells(dim_cols: Sequence[str], values_: Sequence) -> dict:
    return {DIM_HEADER[d]: dim_value(d, v) for d, v in zip(dim_cols, values_)}


def arm_order(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["arm"]))


def partition_floor(df: pd.DataFrame, col: str) -> np.ndarray:
    """One value per partition: arms of a setting share their partition's floors."""
    return df.drop_duplicates(["dataset", "scheme", "lam", "clients", "partition_seed"])[col].to_numpy(float)


def finite_mean(v) -> float:
    v = np.asarray(v, dtype=float)
    return float(v.mean()) if v.size and np.all(np.isfinite(v)) else math.nan
