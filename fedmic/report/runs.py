"""Run JSONs (``fedmic-run/2``, written by ``Simulation.result()``) as tidy pandas frames.

``load_runs`` gives one row per run: its identity (dataset, method, arm, seed...), the
display label of its arm, and the summary numbers the tables print. ``history_frame`` gives
one row per run and round (accuracy, bytes, cumulative bytes) for the curves and the
bytes-to-target computation. Nothing here assumes a list of methods or datasets: every
grouping is over whatever runs are given.

How runs are grouped
--------------------
- ``label``: the arm's display name. ``arm`` as written in the run (a method name is
  printed in its paper spelling, fedavg -> FedAvg). When runs share an arm name but differ
  in their hyperparameters, the differences from the method's defaults are appended, so
  two variants are never averaged together.
- setting dimensions (``setting_dims``): config fields that vary *within* some label
  (besides the seeds), such as dataset, lambda, clients or join_ratio. A field that differs
  only between labels (a per-method lr, say) belongs to the arm, not to the setting.
- replicates: ``seed`` and ``partition_seed``; tables print mean ± std over them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

RUN_FORMAT = "fedmic-run/2"

PRETTY_METHOD = {
    "local": "Local", "fedavg": "FedAvg", "fedprox": "FedProx", "fedbn": "FedBN",
    "fedper": "FedPer", "fedrep": "FedRep", "ditto": "Ditto", "moon": "MOON", "fml": "FML",
    "fedkd": "FedKD", "fedproto": "FedProto", "fedmic": "FedMIC",
}

# config fields that are never a setting dimension: replicates, and what names the arm
REPLICATE_FIELDS = ("seed", "partition_seed")
ARM_FIELDS = ("method", "arm", "hp")
# order in which setting dimensions are shown (others follow alphabetically)
DIM_ORDER = ("dataset", "scheme", "lam", "clients", "join_ratio", "rounds", "image_size", "model")
DIM_HEADER = {"dataset": "dataset", "scheme": "scheme", "lam": "λ", "clients": "K",
              "join_ratio": "join ratio", "rounds": "rounds", "image_size": "size"}

PERSONAL_KEYS = ("acc", "auc", "f1", "acc_mean", "acc_std", "acc_worst_decile", "auc_mean")
GLOBAL_KEYS = ("acc", "auc", "f1")

# readable text for hyperparameter changes (FedMIC's switches); others print as key=value
_HP_OFF = {
    "rep_distill": "w/o representation KD", "dec_distill": "w/o decision KD",
    "aux_matrices": "w/o auxiliary matrices", "adaptive": "w/o adaptive weighting",
    "gpd": "w/o GPD (dense uploads)",
}


def _num(x) -> float:
    """JSON number or null -> float (null -> NaN)."""
    if x is None:
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def method_defaults(method: str) -> dict | None:
    """The method's default hyperparameters, or None for a method this code does not know."""
    try:
        from fedmic.algorithms import algorithm_defaults
        return algorithm_defaults(method)
    except Exception:  # unknown or unimportable method: labels fall back to raw hp
        return None


def _fmt_value(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if v is None:
        return "none"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def hp_changes(hp: dict, defaults: dict | None) -> dict:
    """Hyperparameters whose value differs from the defaults (all of them if no defaults)."""
    if defaults is None:
        return {}
    out = {}
    # a key the run lacks predates that hyperparameter: it ran with the default behaviour
    for k in sorted(hp):
        a, b = hp.get(k), defaults.get(k)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
                and not isinstance(b, bool):
            if not math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-15):
                out[k] = a
        elif a != b:
            out[k] = a
    return out


def describe_changes(changes: dict) -> str:
    """Readable text of hyperparameter changes, e.g. 'w/o representation KD, tau=4'."""
    if not changes:
        return "default"
    parts = []
    keys = list(changes)
    if "energy_start" in changes or "energy_end" in changes:
        # shown as one schedule, the way the method defines it
        parts.append("energy schedule changed")
    for k in keys:
        v = changes[k]
        if k in ("energy_start", "energy_end"):
            continue
        if k in _HP_OFF and v is False:
            parts.append(_HP_OFF[k])
        elif k == "fixed_rank" and v is not None:
            parts.append(f"fixed rank {v}")
        else:
            parts.append(f"{k}={_fmt_value(v)}")
    return ", ".join(parts)


def _energy_text(hp: dict) -> str:
    return f"E {_fmt_value(hp.get('energy_start'))}→{_fmt_value(hp.get('energy_end'))}"


def change_text(hp: dict, defaults: dict | None) -> str:
    ch = hp_changes(hp, defaults)
    text = describe_changes(ch)
    if "energy schedule changed" in text:
        text = text.replace("energy schedule changed", _energy_text(hp))
    return text


def pretty_arm(arm: str) -> str:
    return PRETTY_METHOD.get(arm, arm)


def method_rank(method: str) -> int:
    """Order of methods in tables: the registry's order (baselines first, FedMIC last)."""
    try:
        from fedmic.algorithms import ALGORITHMS
        names = list(ALGORITHMS)
    except Exception:
        names = list(PRETTY_METHOD)
    return names.index(method) if method in names else len(names)


# --------------------------------------------------------------------------- loading


def read_run(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read run JSON ({e})") from e
    if not isinstance(run, dict) or run.get("format") != RUN_FORMAT:
        got = run.get("format") if isinstance(run, dict) else type(run).__name__
        raise ValueError(f"{path}: not a run JSON (format {got!r}, expected {RUN_FORMAT!r})")
    for key in ("config", "history", "summary"):
        if key not in run:
            raise ValueError(f"{path}: run JSON has no {key!r}")
    return run


def read_timing(path: str | Path) -> dict | None:
    """The run's ``.timing.json`` sidecar, or None when it is missing."""
    from fedmic.engine import timing_path

    tp = timing_path(Path(path))
    if not tp.exists():
        return None
    with open(tp, encoding="utf-8") as f:
        return json.load(f)


def is_run_path(path: str | Path) -> bool:
    """Snakemake may list the timing sidecars among the inputs: they are read via their run."""
    return not str(path).endswith(".timing.json")


def _row(path: Path, run: dict, timing: dict | None) -> dict:
    cfg = run["config"]
    s = run["summary"]
    hist = run["history"]
    row = {"path": str(path), "run": run}
    for k, v in cfg.items():
        if k != "hp":
            row[k] = v
    row["arm"] = cfg.get("arm") or cfg["method"]
    row["hp"] = dict(cfg.get("hp") or {})
    for who, prefix, keys in (("personal", "", PERSONAL_KEYS), ("global", "g_", GLOBAL_KEYS)):
        last, vsel = s.get(who), s.get(who + "_valsel")
        for k in keys:
            row[prefix + k] = _num(last.get(k)) if last else math.nan
            row[prefix + "valsel_" + k] = _num(vsel.get(k)) if vsel else math.nan
        row[prefix + "valsel_round"] = vsel.get("round") if vsel else None
    row["has_global"] = s.get("global") is not None
    for k in ("uplink_per_round", "downlink_per_round", "uplink_total", "downlink_total",
              "dropped_total", "skipped_total"):
        row[k] = _num(s.get(k))
    floors = run.get("floors") or {}
    row["floor_local"] = _num(floors.get("local_majority_acc"))
    row["floor_global"] = _num(floors.get("global_majority_acc"))
    params = run.get("params") or {}
    row["params_shared"] = _num(params.get("shared"))
    row["params_personal"] = _num(params.get("personal"))
    row["rounds_run"] = len(hist)
    sampled = {h["round"]: len(h.get("sampled") or []) for h in hist}
    row["sampled_per_round"] = float(np.mean(list(sampled.values()))) if sampled else math.nan
    if timing is not None:
        per_client = [t["train_s"] / sampled[t["round"]] for t in timing.get("rounds", [])
                      if sampled.get(t["round"])]
        row["train_s_per_client"] = float(np.mean(per_client)) if per_client else math.nan
        row["train_s_per_round"] = float(np.mean([t["train_s"] for t in timing.get("rounds", [])])) \
            if timing.get("rounds") else math.nan
        row["peak_rss_mb"] = _num(timing.get("peak_rss_mb"))
    else:
        row["train_s_per_client"] = row["train_s_per_round"] = row["peak_rss_mb"] = math.nan
    return row


def load_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run JSON (timing sidecars among ``paths`` are skipped; each run's own
    sidecar is read beside it). Adds ``label`` and ``hp_changes``/``changes`` (vs the
    method's defaults) and stores the setting dimensions in ``df.attrs['dims']``."""
    rows = []
    for p in paths:
        if not is_run_path(p):
            continue
        p = Path(p)
        rows.append(_row(p, read_run(p), read_timing(p)))
    if not rows:
        raise ValueError("no run JSONs among the inputs")
    df = pd.DataFrame(rows)
    defaults = {m: method_defaults(m) for m in df["method"].unique()}
    df["hp_changes"] = [hp_changes(hp, defaults[m]) for hp, m in zip(df["hp"], df["method"])]
    df["changes"] = [change_text(hp, defaults[m]) if defaults[m] is not None else "unknown defaults"
                     for hp, m in zip(df["hp"], df["method"])]
    df["label"] = _labels(df)
    df["method_rank"] = [method_rank(m) for m in df["method"]]
    df.attrs["dims"] = setting_dims(df)
    _check_unique(df, df.attrs["dims"])
    return df


def _hp_key(hp: dict) -> str:
    return json.dumps(hp, sort_keys=True, default=str)


def _labels(df: pd.DataFrame) -> list[str]:
    labels = []
    for arm, method, hp, text in zip(df["arm"], df["method"], df["hp"], df["changes"]):
        same = df[df["arm"] == arm]
        lab = pretty_arm(arm)
        if same["method"].nunique() > 1:
            lab = f"{lab} [{pretty_arm(method)}]"
        if len({_hp_key(h) for h in same["hp"]}) > 1 and text != "default":
            # one arm name, several hyperparameter sets: never average them together
            lab = f"{lab} ({text if text != 'unknown defaults' else _hp_key(hp)})"
        labels.append(lab)
    return labels


def _hashable(v):
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True)
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def setting_dims(df: pd.DataFrame) -> list[str]:
    """Config fields that vary within at least one label, seeds excluded, in display order."""
    from fedmic.config import RunConfig

    cfg_fields = set(RunConfig.__dataclass_fields__) - set(RunConfig.EXECUTION_FIELDS)
    candidates = [c for c in df.columns if c in cfg_fields
                  and c not in REPLICATE_FIELDS and c not in ARM_FIELDS]
    dims = set()
    for c in candidates:
        vals = df[c].map(_hashable)
        if vals.nunique(dropna=False) <= 1:
            continue
        if (vals.groupby(df["label"]).nunique(dropna=False) > 1).any():
            dims.add(c)
    # dataset and lambda always identify a result, even when only one value is present
    dims |= {"dataset", "lam"} & set(df.columns)
    return sorted(dims, key=lambda c: (DIM_ORDER.index(c) if c in DIM_ORDER else len(DIM_ORDER), c))


def _check_unique(df: pd.DataFrame, dims: Sequence[str]) -> None:
    key = ["label", *dims, *[c for c in REPLICATE_FIELDS if c in df.columns]]
    k = df[key].apply(lambda col: col.map(_hashable))
    dup = k.duplicated(keep=False)
    if dup.any():
        paths = df.loc[dup, "path"].tolist()
        raise ValueError(
            "several runs share one arm, setting and seed (they would be averaged as if they "
            f"were seeds): {paths}. Give the variants distinct arm names or pass one of each")


def dim_header(dim: str) -> str:
    return DIM_HEADER.get(dim, dim)


def dim_value(dim: str, v) -> str:
    if dim == "dataset":
        from fedmic.report.partitions import pretty_dataset
        return pretty_dataset(str(v))
    return _fmt_value(v)


def setting_text(dims: Sequence[str], values: Sequence) -> str:
    """'BloodMNIST, λ=0.1, K=20' for a setting."""
    parts = []
    for d, v in zip(dims, values):
        parts.append(dim_value(d, v) if d == "dataset" else f"{dim_header(d)}={dim_value(d, v)}")
    return ", ".join(parts)


def arm_order(df: pd.DataFrame) -> list[str]:
    """Labels in table order: by method (registry order), the method's default first."""
    if df.empty:
        return []
    first = df.groupby("label").agg(rank=("method_rank", "min"),
                                    changed=("changes", lambda s: (s != "default").all()))
    first = first.reset_index()
    return first.sort_values(["rank", "changed", "label"], kind="stable")["label"].tolist()


# --------------------------------------------------------------------------- per round


HISTORY_COLUMNS = ["run_index", "round", "evaluated", "acc", "auc", "g_acc", "uplink", "downlink",
                   "cum_uplink", "cum_downlink", "cum_bytes", "n_sampled", "upload_ranks",
                   "broadcast_ranks"]


def history_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run and round: personal/global test accuracy on evaluated rounds (NaN
    otherwise), bytes moved that round over all sampled clients, and the cumulative bytes
    through the end of that round."""
    rows = []
    for idx, r in runs.iterrows():
        cum_up = cum_down = 0
        for h in r["run"]["history"]:
            up = int(sum(h.get("uplink_bytes") or []))
            down = int(sum(h.get("downlink_bytes") or []))
            cum_up += up
            cum_down += down
            ev = h.get("eval") or {}
            pt = (ev.get("personal") or {}).get("test") or {}
            gt = (ev.get("global") or {}).get("test") or {}
            rows.append({
                "run_index": idx, "round": int(h["round"]), "evaluated": "eval" in h,
                "acc": _num(pt.get("acc")), "auc": _num(pt.get("auc")),
                "g_acc": _num(gt.get("acc")),
                "uplink": up, "downlink": down, "cum_uplink": cum_up, "cum_downlink": cum_down,
                "cum_bytes": cum_up + cum_down, "n_sampled": len(h.get("sampled") or []),
                "upload_ranks": h.get("upload_ranks") or {},
                "broadcast_ranks": h.get("broadcast_ranks") or {},
            })
    hist = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    keep = ["label", "method", "arm", *runs.attrs.get("dims", []), *REPLICATE_FIELDS, "path"]
    keep = [c for c in dict.fromkeys(keep) if c in runs.columns]
    return hist.join(runs[keep], on="run_index")


def bytes_to_target(history: Sequence[dict], target: float) -> tuple[int | None, int | None]:
    """(round, cumulative uplink+downlink bytes through that round) of the first evaluated
    round whose personalised test accuracy is >= target; (None, None) if never."""
    cum = 0
    for h in history:
        cum += int(sum(h.get("uplink_bytes") or [])) + int(sum(h.get("downlink_bytes") or []))
        ev = h.get("eval")
        if not ev:
            continue
        acc = _num(((ev.get("personal") or {}).get("test") or {}).get("acc"))
        if math.isfinite(acc) and acc >= target:
            return int(h["round"]), cum
    return None, None
