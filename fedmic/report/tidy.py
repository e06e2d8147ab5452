"""Every run as one tidy long-format table: a row per run, round and metric.

``collect(run_paths)`` reads run JSONs (``fedmic-run/2``; ``/1`` is read with its pooled AUC
as ``auc_pooled``, no per-client AUC, and its ``local_majority_acc`` as the client prior's ACC,
which it is by definition) and their timing sidecars; ``write``/``read`` store
it as gzip-compressed CSV (``pd.read_csv("results.csv.gz")``, R's ``read.csv``). Every table
and figure is a view over this frame. results/README.md documents the columns:

- the run: ``dataset scheme lam clients join_ratio arm method model hp_changes seed
  partition_seed`` (``hp_changes``: JSON of the hyperparameters that differ from the
  method's defaults, ``{}`` for none);
- the row: ``select`` (``round``: the value of that round; ``last``: the run's reported
  value, the mean over its last ``last_k`` evaluated rounds; ``valsel``: the test value at
  the round chosen on the clients' validation sets, that round in ``round``; ``run``: one
  value per run), ``round``, ``scope`` (personal, global, floor, comm, train, cost, config,
  data), ``split`` (train, val, test), ``client`` (per-client values), ``layer`` (kept SVD
  ranks), ``metric``, ``value``;
- bytes on every per-round row: that round's ``uplink_bytes`` / ``downlink_bytes`` over the
  sampled clients and the cumulative ``cum_uplink_bytes`` / ``cum_downlink_bytes`` through it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from fedmic.utils import atomic_write_bytes

RUN_COLUMNS = ["dataset", "scheme", "lam", "clients", "join_ratio", "arm", "method", "model", "hp_changes",
               "seed", "partition_seed"]
ROW_COLUMNS = ["select", "round", "scope", "split", "client", "layer", "metric", "value"]
BYTE_COLUMNS = ["uplink_bytes", "downlink_bytes", "cum_uplink_bytes", "cum_downlink_bytes"]
COLUMNS = RUN_COLUMNS + ROW_COLUMNS + BYTE_COLUMNS
# what tells two runs apart in one config (the grid's coordinates)
RUN_KEY = ["dataset", "scheme", "lam", "clients", "join_ratio", "arm", "seed"]
SETTING = ["dataset", "scheme", "lam", "clients", "join_ratio"]
FORMATS = ("fedmic-run/2",)
SUMMARY_COMM = ("uplink_per_round", "downlink_per_round", "uplink_total", "downlink_total",
                "dropped_total", "skipped_total")
# a per-round value that is the same every round, so only the run-level rows carry it
_CONSTANT_PER_ROUND = ("n",)


def _num(x) -> float:
    if x is None or isinstance(x, bool):
        return math.nan if x is None else float(x)
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


# Snakemake rebuilds a missing file only for a job that has to run: with the tables still in
# place nothing would, so the collecting rules are forced and the train rule then writes it
RETRAIN = ("Fix: `rm {path}`, then rerun the workflow with `--forcerun collect collect_all` added, which "
           "retrains it (or rerun the `fedmic train ... --out {path}` that made it)")


def read_run(path: str | Path) -> dict:
    import shlex

    from fedmic.outputs import RUN, file_kind

    path = Path(path)
    retrain = RETRAIN.format(path=shlex.quote(str(path)))
    try:
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read run JSON ({e}); check the path, or rerun `fedmic train` "
                         "(the workflow's train rule) to write it") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: run JSON is truncated or not JSON ({e}). {retrain}") from e
    got = run.get("format") if isinstance(run, dict) else type(run).__name__
    kind = file_kind(path)
    if kind not in (RUN, None):
        raise ValueError(f"{path} is a {kind}, not a run JSON: give run JSONs (results/runs/.../seed*.json) here")
    if got not in FORMATS:
        raise ValueError(f"{path}: not a run JSON of this version (format {got!r}, expected one of {FORMATS}); "
                         f"read it with the fedmic version that wrote it, or retrain it. {retrain}")
    for key in ("config", "history", "summary"):
        if key not in run:
            raise ValueError(f"{path}: run JSON has no {key!r}. {retrain}")
    return run


def hp_changes(method: str, hp: dict) -> dict:
    """Hyperparameters whose value differs from the method's defaults (a made-up or
    unimportable method: all of them)."""
    try:
        from fedmic.methods import hp_defaults
        defaults = hp_defaults(method)
    except Exception:  # a run of a method this code does not know still gets a row
        return dict(sorted(hp.items()))
    out = {}
    for k in sorted(hp):
        a, b = hp[k], defaults.get(k)
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
        if (not math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-15)) if numbers else a != b:
            out[k] = a
    return out


def run_rows(run: dict, timing: dict | None = None) -> list[dict]:
    """The tidy rows of one run JSON (and its timing sidecar)."""
    cfg, summary = run["config"], run["summary"]
    ident = {"dataset": cfg["dataset"], "scheme": cfg.get("scheme"), "lam": float(cfg["lam"]),
             "clients": int(cfg["clients"]), "join_ratio": float(cfg["join_ratio"]),
             "arm": cfg.get("arm") or cfg["method"], "method": cfg["method"], "model": cfg.get("model"),
             "hp_changes": json.dumps(hp_changes(cfg["method"], dict(cfg.get("hp") or {})), sort_keys=True),
             "seed": int(cfg["seed"]), "partition_seed": int(cfg.get("partition_seed", cfg["seed"]))}
    rows = []

    def add(select, scope, metric, value, rnd=None, split=None, client=None, layer=None, nbytes=None):
        rows.append({**ident, "select": select, "round": rnd, "scope": scope, "split": split,
                     "client": client, "layer": layer, "metric": metric, "value": _num(value),
                     **(nbytes or {})})

    cum_up = cum_down = 0
    for h in run["history"]:
        up, down = int(sum(h.get("uplink_bytes") or [])), int(sum(h.get("downlink_bytes") or []))
        cum_up, cum_down = cum_up + up, cum_down + down
        rnd = int(h["round"])
        b = {"uplink_bytes": up, "downlink_bytes": down, "cum_uplink_bytes": cum_up, "cum_downlink_bytes": cum_down}
        add("round", "comm", "sampled", len(h.get("sampled") or []), rnd, nbytes=b)
        add("round", "train", "loss", h.get("train_loss"), rnd, "train", nbytes=b)
        for kind in ("upload", "broadcast"):
            for layer, k in sorted((h.get(f"{kind}_ranks") or {}).items()):
                add("round", "comm", f"{kind}_rank", k, rnd, layer=layer, nbytes=b)
        for scope, splits in (h.get("eval") or {}).items():
            for split, d in (splits or {}).items():
                for metric, value in sorted(d.items()):
                    if metric not in _CONSTANT_PER_ROUND and not isinstance(value, (list, dict)):
                        add("round", scope, metric, value, rnd, split, nbytes=b)
    for scope in ("personal", "global"):
        for select, key in (("last", scope), ("valsel", f"{scope}_valsel")):
            d = summary.get(key)
            for metric, value in sorted((d or {}).items()):
                if metric != "round":
                    add(select, scope, metric, value, d.get("round"), "test")
    for metric, values in sorted((summary.get("personal_per_client") or {}).items()):
        for cid, value in enumerate(values):
            add("last", "personal", metric, value, split="test", client=cid)
    for metric in SUMMARY_COMM:
        add("run", "comm", metric, summary.get(metric))
    # rounds in which no update reached the server (every sampled client dropped, skipped or
    # lost): the tables flag the runs with such rounds, as they flag skipped updates
    add("run", "comm", "unaggregated_rounds", sum(h.get("aggregated") == 0 for h in run["history"]))
    for metric, value in sorted((run.get("floors") or {}).items()):
        add("run", "floor", metric, value, split="test")
    for split, sizes in (("train", run.get("n_train")), ("test", run.get("n_test"))):
        for cid, n in enumerate(sizes or []):
            add("run", "data", "n", n, split=split, client=cid)
    for name, value in (run.get("params") or {}).items():
        add("run", "cost", f"params_{name}", value)
    for key, value in sorted(cfg.items()):
        if key not in ident and isinstance(value, (int, float)) and not isinstance(value, bool):
            add("run", "config", key, value)
    if timing is not None:
        sampled = {int(h["round"]): len(h.get("sampled") or []) for h in run["history"]}
        rounds = [t for t in timing.get("rounds", []) if sampled.get(t["round"])]
        if rounds:
            add("run", "cost", "train_s_per_round", sum(t["train_s"] for t in rounds) / len(rounds))
            add("run", "cost", "train_s_per_client",
                sum(t["train_s"] / sampled[t["round"]] for t in rounds) / len(rounds))
        add("run", "cost", "peak_rss_mb", timing.get("peak_rss_mb"))
    return rows


def timing_of(path: Path) -> dict | None:
    import shlex

    tp = path.with_suffix(".timing.json")
    if not tp.exists():
        return None
    try:
        with open(tp, encoding="utf-8") as f:
            timing = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        timing = e
    if not isinstance(timing, dict) or not isinstance(timing.get("rounds"), list):
        why = timing if isinstance(timing, Exception) else "no list of rounds"
        raise ValueError(f"{tp}: the timing file of {path} is truncated or not one ({why}). Fix: `rm "
                         f"{shlex.quote(str(tp))}` (the run then has no time and memory rows), or retrain the run "
                         "to write both again")
    return timing


def collect(paths: Iterable[str | Path]) -> pd.DataFrame:
    """The tidy frame of the given run JSONs (their timing sidecars among the paths are
    skipped: each run's own is read beside it), rows in the order of the paths."""
    rows, seen = [], {}
    for p in paths:
        p = Path(p)
        if p.name.endswith(".timing.json"):
            continue
        run_rows_ = run_rows(read_run(p), timing_of(p))
        key = tuple(run_rows_[0][c] for c in RUN_KEY) if run_rows_ else None
        if key in seen:
            raise ValueError(f"{seen[key]} and {p} are the same run ({dict(zip(RUN_KEY, key))}): "
                             "give the variants distinct arm names, or pass one of them")
        seen[key] = p
        rows += run_rows_
    if not rows:
        raise ValueError("no run JSONs among the inputs")
    df = pd.DataFrame(rows, columns=COLUMNS)
    return _typed(df)


STRING_COLUMNS = ["dataset", "scheme", "arm", "method", "model", "hp_changes", "select", "scope", "split",
                  "layer", "metric"]


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    for c in STRING_COLUMNS:
        df[c] = df[c].astype("string")
    for c in ("round", "client", *BYTE_COLUMNS):
        df[c] = df[c].astype("Int64")
    for c in ("clients", "seed", "partition_seed"):
        df[c] = df[c].astype("int64")
    for c in ("lam", "join_ratio", "value"):
        df[c] = df[c].astype("float64")
    return df


def write(df: pd.DataFrame, path: str | Path) -> Path:
    """Gzip-compressed CSV (``.csv.gz``) or plain CSV, written atomically; mtime 0 keeps the
    bytes the same for the same runs."""
    import io

    path = Path(path)
    text = df.to_csv(index=False, float_format="%.10g").encode("utf-8")
    if path.name.endswith(".gz"):
        import gzip

        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
            gz.write(text)
        text = buf.getvalue()
    return atomic_write_bytes(path, text)


def read(path: str | Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={c: "string" for c in STRING_COLUMNS}, keep_default_na=False, na_values=[""])
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a fedmic results file (no column {', '.join(missing)}); "
                         "make it with `fedmic collect`")
    return _typed(df[COLUMNS].copy())


def load(inputs: Sequence[str | Path]) -> pd.DataFrame:
    """A results file (``.csv``/``.csv.gz``), or run JSONs collected on the fly."""
    inputs = [Path(p) for p in inputs]
    tidy = [p for p in inputs if p.name.endswith((".csv", ".csv.gz"))]
    if tidy and len(tidy) == len(inputs):
        return pd.concat([read(p) for p in tidy], ignore_index=True)
    if tidy:
        raise ValueError("give either results files (.csv.gz) or run JSONs, not both")
    return collect(inputs)
