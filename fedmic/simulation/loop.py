"""The round loop shared by every algorithm and every runtime (docs/method.md, Engine and
protocol): sample clients, send each its downlink, let the clients train (behind the `Clients`
seam, fedmic/simulation/clients.py), aggregate what arrived, evaluate, record and checkpoint."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..comm import Upload, kept_ranks
from ..config import RunConfig
from ..utils import derive_seed
from ..watch import RoundWatch
from .checkpoint import resume, save_checkpoint
from .clients import Clients
from .evaluation import evaluate
from .record import train_outputs, write_outputs
from .setup import RunData, load_partitioned, make_algorithm, make_context, place_data, resolve_device

# the progress log's name (fedmic/watch.py writes its round lines there): the workflow's logs
# and the users' log filters read it
log = logging.getLogger("fedmic.engine")


class DivergenceError(FloatingPointError):
    pass


class Run:
    """One run's state: what its rounds are computed from (config, data, algorithm) and what
    they change (the server state, the clients, the history). `make_clients(cfg, algo, data)`
    gives its clients; they start as before round 1, the checkpoint may then restore them."""

    def __init__(self, cfg: RunConfig, partition_path: str | Path, data_root: str | None,
                 make_clients: Callable[[RunConfig, object, RunData], Clients]):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        dataset, self.part, split = load_partitioned(cfg, partition_path, data_root)
        self.partition_path = Path(partition_path)
        self.data = place_data(dataset, self.part, split, self.device)
        self.ctx = make_context(cfg, dataset, self.device)
        self.algo = make_algorithm(cfg, self.ctx)
        self.server = self.algo.init_server()
        self.clients = make_clients(cfg, self.algo, self.data)
        self.clients.init()
        self.history: list[dict] = []
        self.timing: list[dict] = []
        self.start_round = 1


def sample_clients(cfg: RunConfig, rnd: int) -> list[int]:
    m = max(1, int(round(cfg.join_ratio * cfg.clients)))
    rng = np.random.default_rng(derive_seed(cfg.seed, "sampling", rnd))
    return sorted(int(c) for c in rng.choice(cfg.clients, m, replace=False))


def dropped_clients(cfg: RunConfig, rnd: int, sampled: list[int]) -> set[int]:
    n_drop = int(round(cfg.drop_rate * len(sampled)))
    if n_drop == 0:
        return set()
    rng = np.random.default_rng(derive_seed(cfg.seed, "faults", rnd))
    return {int(c) for c in rng.choice(sampled, n_drop, replace=False)}


def run_rounds(run: Run, out: str | Path, tensorboard: str | Path | None = None,
               replace_stale_checkpoint: bool = False) -> dict:
    """Train the remaining rounds of `run` and write its run JSON atomically; the record.
    `tensorboard`: a folder for the per-round scalars (fedmic/watch.py); it changes nothing the
    run writes. `replace_stale_checkpoint`: a checkpoint of another configuration is removed,
    not refused."""
    out, cfg = Path(out), run.cfg
    # the command line checks before loading anything; a Flower ServerApp comes here directly
    from ..outputs import check_outputs
    check_outputs("train", train_outputs(out), [("--partition", run.partition_path)])
    resume(run, out, replace_stale_checkpoint)
    watch = RoundWatch(cfg, run.history, run.start_round, tensorboard)
    try:
        for rnd in range(run.start_round, cfg.rounds + 1):
            t0 = time.perf_counter()
            # 1. sample clients, and whose uploads the faults drop
            sampled = sample_clients(cfg, rnd)
            dropped = dropped_clients(cfg, rnd, sampled)
            # 2.-4. downlink, client training, aggregation
            rec = train_round(run, rnd, sampled, dropped)
            t1 = time.perf_counter()
            # 5. evaluation
            if rnd % cfg.eval_every == 0 or rnd == cfg.rounds:
                rec["eval"] = evaluate(run, rnd)
            t2 = time.perf_counter()
            # 6. record and checkpoint
            run.history.append(rec)
            run.timing.append({"round": rnd, "train_s": t1 - t0, "eval_s": t2 - t1})
            watch.round_done(rec, t2 - t0)
            if cfg.checkpoint_every and rnd % cfg.checkpoint_every == 0 and rnd < cfg.rounds:
                save_checkpoint(run, out, rnd)
    finally:
        watch.close()
    return write_outputs(run, out)


def train_round(run: Run, rnd: int, sampled: list[int], dropped: set[int]) -> dict:
    """Round `rnd` up to its evaluation: downlink, client training, aggregation. Its history
    record: who took part, the bytes each way, the mean training loss, the SVD ranks."""
    cfg, algo = run.cfg, run.algo

    # 2. downlink: what each sampled client receives, counted as it is sent
    down_bytes = {}

    def downlink(cid: int):
        down = algo.downlink(run.server, rnd, cid)
        down_bytes[cid] = down.nbytes
        return down

    # 3. client training
    replies = run.clients.train(rnd, sampled, downlink)

    # 4. aggregation: the non-finite policy first (docs/robustness.md), then every upload that
    # arrived and was not dropped
    uploads, up_bytes, losses, skipped, ranks = [], {}, [], [], {}
    for cid in sampled:
        reply = replies.get(cid)
        if reply is None:  # never replied: its upload is lost, as a dropped one
            continue
        if reply.problem:
            if cfg.on_nonfinite == "error":
                raise DivergenceError(f"round {rnd}, client {cid}: {reply.problem}. Lower lr, or set "
                                      "on_nonfinite: skip to drop such updates (counted in the run JSON)")
            log.warning("round %d, client %d: %s; update skipped", rnd, cid, reply.problem)
            skipped.append(cid)
            continue
        up, info = reply.upload, reply.info
        up_bytes[cid] = up.nbytes
        losses.append(info["loss"])
        for layer, k in info.get("ranks", {}).items():
            ranks.setdefault(layer, []).append(k)
        if cid not in dropped:
            uploads.append(Upload(cid, up, run.data.n_train[cid] if cfg.weighting == "samples" else 1.0))
    if uploads:  # an all-dropped round keeps the previous global model
        torch.manual_seed(derive_seed(cfg.seed, "torch", rnd, "server"))
        run.server = algo.aggregate(run.server, uploads, rnd)
    lost = [c for c in sampled if c not in replies]
    return {"round": rnd, "sampled": sampled, "dropped": sorted(dropped), "skipped": skipped,
            "aggregated": len(uploads),
            "uplink_bytes": [up_bytes.get(c, 0) for c in sampled],
            "downlink_bytes": [down_bytes[c] for c in sampled],
            "train_loss": float(np.mean(losses)) if losses else None,
            "upload_ranks": {k: float(np.mean(v)) for k, v in sorted(ranks.items())},
            "broadcast_ranks": kept_ranks(algo.broadcast(run.server, rnd)), **({"timed_out": lost} if lost else {})}
