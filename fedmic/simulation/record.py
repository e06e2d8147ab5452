"""What a run writes: its run JSON (format fedmic-run/2: config, environment, partition, floors,
history, summary, parameter counts), its timing file, and their paths."""
from __future__ import annotations

import math
import platform
import resource
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import __version__
from ..utils import dump_json
from .checkpoint import checkpoint_path
from .setup import memory_format_name

if TYPE_CHECKING:
    from .loop import Run


def environment(device: torch.device, threads: int, memory_format: torch.memory_format) -> dict:
    return {"device": device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "memory_format": memory_format_name(memory_format),
            "threads": threads, "python": platform.python_version(), "fedmic": __version__}


def run_record(run: Run) -> dict:
    """The run JSON's content once the rounds are done."""
    cfg = run.cfg
    return {
        "format": "fedmic-run/2",
        "config": cfg.science(),
        "env": environment(run.device, torch.get_num_threads(), run.ctx.memory_format),
        "partition": {"file": run.partition_path.name, "redraws": run.part.redraws,
                      "digest": run.part.digest, "custom": run.part.custom},
        "floors": run.data.floors,
        "n_train": run.data.n_train,
        "n_test": run.data.n_test,
        "history": run.history,
        "summary": summarise(run.history, cfg.last_k),
        "params": param_counts(run.algo, run.server),
        **run.clients.report(),
    }


def param_counts(algo, server) -> dict:
    # Shared: the floating tensors the server holds for everyone (a whole model, or only an
    # encoder or the non-BN part for partly personalised methods; nothing for Local).
    shared = server.get("global", {}) if isinstance(server, dict) else {}
    out = {"shared": sum(v.numel() for v in shared.values() if torch.is_tensor(v) and v.is_floating_point())}
    if algo.personalised:
        # a fresh client state (Algorithm.init_client without data): the shapes are what is
        # counted, and a server whose clients are elsewhere has no state of theirs
        model = algo.personal_model(0, algo.init_client(0), algo.eval_broadcast(server))
        out["personal"] = sum(p.numel() for p in model.parameters())
    return out


def write_outputs(run: Run, out: Path) -> dict:
    """Write the timing file and the run JSON, remove the checkpoint (unless kept); the record."""
    result = run_record(run)
    env = environment(run.device, torch.get_num_threads(), run.ctx.memory_format)
    # the run JSON last: once it exists, everything is written; if it cannot be, nothing
    # of this run is left but its checkpoint, for the rerun to resume from
    dump_json({"rounds": run.timing, "peak_rss_mb": peak_rss_mb(), "env": env}, timing_path(out))
    try:
        dump_json(result, out)
    except BaseException:
        timing_path(out).unlink(missing_ok=True)
        raise
    ck = checkpoint_path(out)
    if ck.exists() and not run.cfg.keep_checkpoint:
        ck.unlink()
    # temp files of writes cut short by a kill (SIGKILL skips the cleanup in atomic_open)
    for tmp in out.parent.glob(f".{out.name}.*.tmp"):
        tmp.unlink(missing_ok=True)
    return result


def timing_path(out: Path) -> Path:
    return Path(out).with_suffix(".timing.json")


def train_outputs(out: str | Path) -> dict[Path, tuple[str, str]]:
    """What a run writes: its run JSON, timing file and checkpoint (for fedmic.outputs)."""
    from ..outputs import CHECKPOINT, RUN, TIMING
    out = Path(out)
    return {out: ("--out", RUN), timing_path(out): ("--out (its timing file)", TIMING),
            checkpoint_path(out): ("--out (its checkpoint)", CHECKPOINT)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pick(ev: dict, who: str, split: str) -> dict | None:
    return ev.get(who, {}).get(split)


def summarise(history: list[dict], last_k: int) -> dict:
    """Reported values (docs/method.md, Engine and protocol): mean over the last k evaluated rounds, and the test value at
    the round chosen on validation accuracy. Never the maximum over test rounds."""
    evals = [h for h in history if "eval" in h]
    up = [sum(h["uplink_bytes"]) for h in history]
    down = [sum(h["downlink_bytes"]) for h in history]
    out = {"uplink_per_round": float(np.mean(up)) if up else 0.0,
           "downlink_per_round": float(np.mean(down)) if down else 0.0,
           "uplink_total": int(sum(up)), "downlink_total": int(sum(down)),
           "dropped_total": sum(len(h["dropped"]) for h in history),
           "skipped_total": sum(len(h["skipped"]) for h in history)}
    keys = ("acc", "auc", "f1", "acc_mean", "acc_std", "acc_worst_decile", "auc_mean", "auc_pooled", "auc_clients")
    for who in ("personal", "global"):
        rows = [e["eval"] for e in evals if _pick(e["eval"], who, "test")]
        if not rows:
            continue
        tail = rows[-last_k:]
        test_keys = [k for k in keys if k in rows[0][who]["test"]]
        out[who] = {k: _nanmean([r[who]["test"][k] for r in tail]) for k in test_keys}
        if who == "personal":  # per client, over the same rounds: what paired tests compare
            out["personal_per_client"] = {
                m: [None if math.isnan(v) else v for v in
                    (_nanmean(vals) for vals in zip(*[r[who]["test"][f"per_client_{m}"] for r in tail]))]
                for m in ("acc", "auc", "f1")}
        vals = [r[who]["val"]["acc"] for r in rows]
        vals = [v if v is not None and math.isfinite(v) else -1.0 for v in vals]
        best = int(np.argmax(vals))  # first round reaching the best validation accuracy
        chosen = [e for e in evals if _pick(e["eval"], who, "test")][best]
        out[who + "_valsel"] = {"round": chosen["round"], **{k: rows[best][who]["test"][k] for k in test_keys}}
    return out


def _nanmean(v):
    a = np.array([x if x is not None else np.nan for x in v], dtype=float)
    return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan
