"""The round loop shared by every algorithm: sampling, local updates, exact byte counts, faults,
aggregation, evaluation of all clients, checkpoints and the run's JSON."""
from __future__ import annotations

import logging
import math
import platform
import resource
import time
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from . import __version__
from .algorithms import ClientData, Context, get_algorithm
from .algorithms.base import Upload
from .comm import NonFiniteError, Payload, all_finite, kept_ranks
from .config import RunConfig
from .metrics import floors, personalised_summary, scores
from .utils import atomic_open, derive_seed, dump_json
from .watch import RoundWatch

log = logging.getLogger("fedmic.engine")


class DivergenceError(FloatingPointError):
    pass


class CheckpointError(RuntimeError):
    pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but torch sees no CUDA device "
                           f"(torch {torch.__version__}); use device: auto or cpu")
    return torch.device(name)


def resolve_memory_format(name: str, device: torch.device) -> torch.memory_format:
    if name == "auto":
        name = "channels_last" if device.type == "cpu" else "contiguous"
    return torch.channels_last if name == "channels_last" else torch.contiguous_format


def memory_format_name(memory_format: torch.memory_format) -> str:
    return "channels_last" if memory_format == torch.channels_last else "contiguous"


def environment(device: torch.device, threads: int, memory_format: torch.memory_format) -> dict:
    env = {"device": device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           "memory_format": memory_format_name(memory_format),
           "threads": threads, "python": platform.python_version(), "fedmic": __version__}
    return env


def _tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))


def first_nonfinite(obj) -> str | None:
    for name, t in _tensors(obj):
        if t.is_floating_point() and not all_finite(t):
            return name
    return None


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


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch: int = 64) -> np.ndarray:
    # 64: 1.05-1.15x faster than 256 for the CNN and 1.5x for ResNet-18 on one thread of this
    # project's CPU, with the same predictions (docs/performance.md); the activations stay in cache
    model.eval()
    out = [torch.softmax(model(x[i:i + batch]).float(), 1) for i in range(0, len(x), batch)]
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 0), dtype=np.float32)


def load_partitioned(cfg: RunConfig, partition_path: str | Path, data_root: str | None):
    """(the dataset, the partition checked against the run config, each split's (images, labels))."""
    from .data.medmnist import load_dataset
    from .data.partition import PartitionError, load_partition, partition_command

    data = load_dataset(cfg.dataset, data_root, size=cfg.image_size)
    expect = {"dataset": cfg.dataset, "scheme": cfg.scheme, "lam": cfg.lam, "clients": cfg.clients,
              "seed": cfg.partition_seed, "min_size": cfg.min_size, "dataset_md5": data.info.md5(cfg.image_size)}
    part = load_partition(partition_path, expect=expect, root=data.path.parent)
    split = {s: data.split(s) for s in ("train", "val", "test")}
    for s, (x, _) in split.items():
        if part.n_images[s] != len(x):  # a stamped partition's counts come from the data; a made one's too
            raise PartitionError(f"partition file {partition_path} is for {part.n_images[s]} {s} images, {data.path} "
                                 f"has {len(x)}; Fix: `{partition_command(expect, partition_path, data.path.parent)}`")
    return data, part, split


def make_context(cfg: RunConfig, data, device: torch.device) -> Context:
    return Context(model=cfg.model, in_channels=data.n_channels, n_classes=data.n_classes,
                   image_size=cfg.image_size, device=device, rounds=cfg.rounds,
                   local_epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                   momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                   transport_dtype=torch.float16 if cfg.transport == "float16" else torch.float32,
                   memory_format=resolve_memory_format(cfg.memory_format, device))


def make_algorithm(cfg: RunConfig, ctx: Context):
    """Every party (server and each client) constructs the algorithm under the same seed, so the
    constants set in its __init__ (initial weights) agree everywhere."""
    torch.manual_seed(derive_seed(cfg.seed, "init", "server"))
    return get_algorithm(cfg.method)(ctx, cfg.resolved_hp())


def init_client_state(algo, cfg: RunConfig, cid: int, data: ClientData) -> dict:
    torch.manual_seed(derive_seed(cfg.seed, "init", cid))
    return algo.init_client(cid, data)


class ClientReply(NamedTuple):
    """A client's answer to a round: its upload and training info, or the problem that made it
    keep its previous state (non-finite weights or loss)."""

    upload: Payload | None
    info: dict | None
    problem: str | None = None


def client_update(algo, cfg: RunConfig, cid: int, state: dict, received: Payload, data: ClientData, rnd: int,
                  device: torch.device) -> tuple[dict | None, ClientReply]:
    """One client's local update for round `rnd`: (its new state, its reply); the state is None
    when the reply reports a problem. In the engine and at a deployed site alike."""
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "batches", rnd, cid))
    # Any use of torch's global RNG by an algorithm is then a function of (seed, round,
    # client) too, so a resumed run needs no saved generator state.
    torch.manual_seed(derive_seed(cfg.seed, "torch", rnd, cid))
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cfg.amp and device.type == "cuda" else nullcontext()
    problem = None
    try:
        with amp:
            state, up, info = algo.local_update(cid, state, received, data, rnd, gen)
    except NonFiniteError as e:  # a codec (SVD) refusing diverged weights: same handling
        problem = str(e)
    else:
        if (name := up.first_nonfinite() or first_nonfinite(state)) is not None:
            problem = f"tensor {name!r} has non-finite values"
        if not math.isfinite(info["loss"]):
            problem = f"{problem}; training loss is {info['loss']}" if problem else f"training loss is {info['loss']}"
    if problem:
        return None, ClientReply(None, None, problem)
    return state, ClientReply(up, info)


def personal_predictions(algo, cid: int, state: dict, shared: Payload, x: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Client `cid`'s personal model's predictions on each of its local sets `x` (split -> images)."""
    model = algo.personal_model(cid, state, shared)
    return {s: predict(model, xs) for s, xs in x.items()}


class Simulation:
    """One run: a config, a partition, a method. `run()` writes the run JSON atomically."""

    def __init__(self, cfg: RunConfig, partition_path: str | Path, data_root: str | None = None):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        data, self.part, split = load_partitioned(cfg, partition_path, data_root)
        self.partition_path = Path(partition_path)
        self.n_classes = data.n_classes
        dev = self.device
        self.x = {s: split[s][0].to(dev) for s in split}
        self.y = {s: split[s][1].to(dev) for s in split}
        self.idx = {s: [torch.as_tensor(np.asarray(i, dtype=np.int64), device=dev) for i in self.part.indices[s]]
                    for s in split}
        # Each client's training images gathered once: batches are then plain index lookups.
        self.train = [ClientData(self.x["train"][i], self.y["train"][i]) for i in self.idx["train"]]
        self.n_train = [d.n for d in self.train]
        self.ctx = make_context(cfg, data, dev)
        self.algo = make_algorithm(cfg, self.ctx)
        self.server = self.algo.init_server()
        self.clients = self.init_clients()
        self.history: list[dict] = []
        self.timing: list[dict] = []
        self.start_round = 1
        ylab = {s: split[s][1].numpy() for s in ("train", "test")}
        self.n_test = [len(i) for i in self.part.indices["test"]]
        self.floors = floors([ylab["train"][np.asarray(i, dtype=np.int64)] for i in self.part.indices["train"]],
                             [ylab["test"][np.asarray(i, dtype=np.int64)] for i in self.part.indices["test"]],
                             self.n_classes)

    # --- the clients, in this process (fedmic/flower/server_app.py: behind Flower messages) ---
    def init_clients(self) -> list:
        return [init_client_state(self.algo, self.cfg, cid, self.train[cid]) for cid in range(self.cfg.clients)]

    def train_clients(self, rnd: int, sampled: list[int], downlink) -> dict[int, ClientReply]:
        """Each sampled client's reply to round `rnd`; `downlink(cid)` is what it receives. A
        client absent from the result never replied (a deployment's timed-out site)."""
        replies = {}
        for cid in sampled:
            state, replies[cid] = client_update(self.algo, self.cfg, cid, self.clients[cid], downlink(cid),
                                                self.train[cid], rnd, self.device)
            if replies[cid].problem is None:
                self.clients[cid] = state
        return replies

    def client_predictions(self, shared) -> list[dict[str, np.ndarray]]:
        """Every client's predictions on its local val and test sets, from its personal model."""
        return [personal_predictions(self.algo, cid, self.clients[cid], shared,
                                     {s: self.x[s][self.idx[s][cid]] for s in ("val", "test")})
                for cid in range(self.cfg.clients)]

    # --- checkpoints -------------------------------------------------------------------
    def checkpoint_path(self, out: Path) -> Path:
        return out.with_name(out.name + ".ckpt")

    def save_checkpoint(self, out: Path, rnd: int) -> None:
        # Streamed into the file: serialising to memory first held two extra copies of every
        # client's state (+0.8x the checkpoint in peak RSS, measured at 100 clients).
        path = self.checkpoint_path(out)
        try:
            with atomic_open(path) as f:
                torch.save({"fingerprint": self.cfg.fingerprint(), "partition_digest": self.part.digest,
                            "partition_file": str(self.partition_path), "round": rnd, "server": self.server,
                            "clients": self.clients, "history": self.history, "timing": self.timing}, f)
        except (OSError, RuntimeError) as e:
            # torch reports a failed write as its C++ writer's RuntimeError (inline_container.cc);
            # the OSError it met says why
            cause = e if isinstance(e, OSError) else e.__context__
            if not isinstance(cause, OSError):
                raise
            from .utils import describe_os_error
            raise CheckpointError(
                f"round {rnd}: cannot write the checkpoint, "
                f"{describe_os_error(cause, path)}; the run stopped, and its "
                "previous checkpoint (if any) is kept for the rerun (checkpoint_every: 0 trains without)") from e

    def try_resume(self, out: Path, replace_stale: bool = False) -> None:
        """Resume from the checkpoint beside `out`, if any. One of another configuration is
        refused (it may be a run someone still wants), unless `replace_stale`: the workflow
        passes that, as it has already deleted that configuration's run JSON to retrain it
        with changed settings (a checkpoint kept by keep_checkpoint, or left by a stopped run)."""
        path = self.checkpoint_path(out)
        if not path.exists():
            return
        try:
            ck = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as e:
            raise CheckpointError(f"checkpoint {path} is unreadable ({e}); delete it to restart the run from round 1") from e
        if ck.get("fingerprint") != self.cfg.fingerprint() and replace_stale:
            path.unlink()
            log.warning("checkpoint %s was written by another configuration (fingerprint %s, this run %s): "
                        "removed, the run starts from round 1", path, ck.get("fingerprint"), self.cfg.fingerprint())
            return
        if ck.get("fingerprint") != self.cfg.fingerprint():
            raise CheckpointError(f"checkpoint {path} was written by another configuration "
                                  f"(fingerprint {ck.get('fingerprint')} != {self.cfg.fingerprint()}); "
                                  "delete it to start this configuration from round 1")
        if ck.get("partition_digest") != self.part.digest:
            made = ck.get("partition_file", "a partition fedmic did not record")
            raise CheckpointError(f"checkpoint {path} was written with another partition ({made}, digest "
                                  f"{str(ck.get('partition_digest'))[:12]}) than {self.partition_path} (digest "
                                  f"{self.part.digest[:12]}); resuming would mix the two. Fix: give the partition it "
                                  f"was made with, or `rm {path}` to start from round 1 on this one")
        self.server, self.clients = ck["server"], ck["clients"]
        self.history, self.timing = ck["history"], ck["timing"]
        self.start_round = ck["round"] + 1
        log.info("resumed from %s at round %d", path, self.start_round)

    # --- evaluation --------------------------------------------------------------------
    def evaluate(self) -> dict:
        algo, res = self.algo, {}
        g = algo.global_model(self.server)
        glob = {s: predict(g, self.x[s]) for s in ("val", "test")} if g is not None else None
        if glob is not None:
            res["global"] = {s: scores(self.y[s].cpu().numpy(), glob[s]) for s in ("val", "test")}
        personal = {"val": [], "test": []}
        preds = self.client_predictions(algo.eval_broadcast(self.server)) if algo.personalised else None
        for cid in range(self.cfg.clients):
            for s in ("val", "test"):
                idx = self.idx[s][cid]
                y = self.y[s][idx].cpu().numpy()
                if preds is not None:
                    p = preds[cid][s]
                else:  # every client uses the global model: reuse its predictions
                    p = glob[s][idx.cpu().numpy()]
                personal[s].append((y, p.reshape(len(y), self.n_classes)))
        res["personal"] = {s: personalised_summary(personal[s]) for s in ("val", "test")}
        return res

    # --- the loop ----------------------------------------------------------------------
    def local_round(self, rnd: int, sampled: list[int], dropped: set[int]) -> dict:
        cfg, algo = self.cfg, self.algo
        uploads, up_bytes, down_bytes, losses, skipped, ranks = [], {}, {}, [], [], {}

        def downlink(cid: int):
            down = algo.downlink(self.server, rnd, cid)
            down_bytes[cid] = down.nbytes
            return down

        replies = self.train_clients(rnd, sampled, downlink)
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
                uploads.append(Upload(cid, up, self.n_train[cid] if cfg.weighting == "samples" else 1.0))
        if uploads:  # an all-dropped round keeps the previous global model
            torch.manual_seed(derive_seed(cfg.seed, "torch", rnd, "server"))
            self.server = algo.aggregate(self.server, uploads, rnd)
        lost = [c for c in sampled if c not in replies]
        return {"round": rnd, "sampled": sampled, "dropped": sorted(dropped), "skipped": skipped,
                "aggregated": len(uploads),
                "uplink_bytes": [up_bytes.get(c, 0) for c in sampled],
                "downlink_bytes": [down_bytes[c] for c in sampled],
                "train_loss": float(np.mean(losses)) if losses else None,
                "upload_ranks": {k: float(np.mean(v)) for k, v in sorted(ranks.items())},
                "broadcast_ranks": kept_ranks(algo.broadcast(self.server, rnd)), **({"timed_out": lost} if lost else {})}

    def run(self, out: str | Path, tensorboard: str | Path | None = None,
            replace_stale_checkpoint: bool = False) -> dict:
        """Train the remaining rounds and write the run JSON. `tensorboard`: a folder for the
        per-round scalars (fedmic/watch.py); it changes nothing the run writes.
        `replace_stale_checkpoint`: a checkpoint of another configuration is removed, not refused."""
        from .outputs import check_outputs
        out = Path(out)
        cfg = self.cfg
        # the command line checks before loading anything; a Flower ServerApp comes here directly
        check_outputs("train", train_outputs(out), [("--partition", self.partition_path)])
        self.try_resume(out, replace_stale_checkpoint)
        watch = RoundWatch(cfg, self.history, self.start_round, tensorboard)
        try:
            for rnd in range(self.start_round, cfg.rounds + 1):
                t0 = time.perf_counter()
                sampled = sample_clients(cfg, rnd)
                rec = self.local_round(rnd, sampled, dropped_clients(cfg, rnd, sampled))
                t1 = time.perf_counter()
                if rnd % cfg.eval_every == 0 or rnd == cfg.rounds:
                    rec["eval"] = self.evaluate()
                t2 = time.perf_counter()
                self.history.append(rec)
                self.timing.append({"round": rnd, "train_s": t1 - t0, "eval_s": t2 - t1})
                watch.round_done(rec, t2 - t0)
                if cfg.checkpoint_every and rnd % cfg.checkpoint_every == 0 and rnd < cfg.rounds:
                    self.save_checkpoint(out, rnd)
        finally:
            watch.close()
        result = self.result()
        env = environment(self.device, torch.get_num_threads(), self.ctx.memory_format)
        # the run JSON last: once it exists, everything is written; if it cannot be, nothing
        # of this run is left but its checkpoint, for the rerun to resume from
        dump_json({"rounds": self.timing, "peak_rss_mb": peak_rss_mb(), "env": env},
                  timing_path(out))
        try:
            dump_json(result, out)
        except BaseException:
            timing_path(out).unlink(missing_ok=True)
            raise
        ck = self.checkpoint_path(out)
        if ck.exists() and not cfg.keep_checkpoint:
            ck.unlink()
        # temp files of writes cut short by a kill (SIGKILL skips the cleanup in atomic_open)
        for tmp in out.parent.glob(f".{out.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
        return result

    def result(self) -> dict:
        cfg = self.cfg
        return {
            "format": "fedmic-run/2",
            "config": cfg.science(),
            "env": environment(self.device, torch.get_num_threads(), self.ctx.memory_format),
            "partition": {"file": self.partition_path.name, "redraws": self.part.redraws,
                          "digest": self.part.digest, "custom": self.part.custom},
            "floors": self.floors,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "history": self.history,
            "summary": summarise(self.history, cfg.last_k),
            "params": self.param_counts(),
        }

    def param_counts(self) -> dict:
        # Shared: the floating tensors the server holds for everyone (a whole model, or only an
        # encoder or the non-BN part for partly personalised methods; nothing for Local).
        shared = self.server.get("global", {}) if isinstance(self.server, dict) else {}
        out = {"shared": sum(v.numel() for v in shared.values() if torch.is_tensor(v) and v.is_floating_point())}
        if self.algo.personalised:
            model = self.algo.personal_model(0, self.clients[0], self.algo.eval_broadcast(self.server))
            out["personal"] = sum(p.numel() for p in model.parameters())
        return out


def timing_path(out: Path) -> Path:
    return Path(out).with_suffix(".timing.json")


def train_outputs(out: str | Path) -> dict[Path, tuple[str, str]]:
    """What a run writes: its run JSON, timing file and checkpoint (for fedmic.outputs)."""
    from .outputs import CHECKPOINT, RUN, TIMING
    out = Path(out)
    return {out: ("--out", RUN), timing_path(out): ("--out (its timing file)", TIMING),
            out.with_name(out.name + ".ckpt"): ("--out (its checkpoint)", CHECKPOINT)}


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
