"""Peak memory of a FedMIC simulation, and the cost of checkpoints.

    .venv/bin/python benchmarks/memory.py                    # peak RSS at 20 and 100 clients
    .venv/bin/python benchmarks/memory.py --clients 20 50 100 --rounds 2
    .venv/bin/python benchmarks/memory.py --checkpoint-overhead   # demo-like run, ckpt every round vs never

Each measurement runs in a fresh subprocess, so ru_maxrss (the peak resident set size of that
process) belongs to that run alone. Printed per run: RSS after loading data and building every
client (`init`), the peak over the whole run (`peak`), the persistent state of one client
(sum of tensor bytes in sim.clients[i]: for FedMIC the teacher plus the two auxiliary matrices)
and of the server. Numbers are printed, not asserted; docs/robustness.md records them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared/data/medmnist"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def tensor_bytes(obj) -> int:
    """Bytes of every tensor in nested dicts/lists, Payloads (FedMIC's broadcast factors) included."""
    import torch
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if hasattr(obj, "tensors") and hasattr(obj, "meta"):  # a Payload
        return tensor_bytes(obj.tensors)
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def make_partition_file(flag, clients, lam, seed, min_size, root, folder) -> tuple[Path, str]:
    """dirichlet_label when it can meet min_size, else dirichlet_client (docs/method.md, Partitions)."""
    from fedmic.data.medmnist import load_dataset
    from fedmic.data.partition import PartitionError, make_partition, save_partition
    data = load_dataset(flag, root)
    labels = {s: data.split(s)[1].numpy() for s in ("train", "val", "test")}
    for scheme in ("dirichlet_label", "dirichlet_client"):
        try:
            part = make_partition(scheme, labels, clients, lam, seed, min_size, n_classes=data.n_classes,
                                  dataset=flag, dataset_md5=data.info.md5(28))
            break
        except PartitionError:
            continue
    path = save_partition(part, Path(folder) / f"{flag}_{scheme}_K{clients}.json")
    return path, scheme


def child(a) -> None:
    """One measured run (in its own process)."""
    import torch
    from fedmic.config import RunConfig
    from fedmic.engine import Simulation
    from fedmic.simulation import loop
    from fedmic.simulation.checkpoint import checkpoint_path

    torch.set_num_threads(a.threads)
    after_import = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        part, scheme = make_partition_file(a.dataset, a.clients, a.lam, 0, a.min_size, a.root, tmp)
        cfg = RunConfig(dataset=a.dataset, method=a.method, clients=a.clients, rounds=a.rounds, lam=a.lam,
                        scheme=scheme, min_size=a.min_size, join_ratio=a.join_ratio, eval_every=a.eval_every,
                        checkpoint_every=a.checkpoint_every, keep_checkpoint=True, threads=a.threads,
                        progress=False)
        sim = Simulation(cfg, part, a.root)
        init = rss_mb()
        ckpt_s = []
        save = loop.save_checkpoint

        def timed_save(run, out, rnd):
            t = time.perf_counter()
            save(run, out, rnd)
            ckpt_s.append(time.perf_counter() - t)

        loop.save_checkpoint = timed_save  # the name the loop calls
        out = Path(tmp) / "run.json"
        t0 = time.perf_counter()
        sim.run(out)
        wall = time.perf_counter() - t0
        ck = checkpoint_path(out)
        per_client = [tensor_bytes(s) for s in sim.clients.states]
        print(json.dumps({
            "dataset": a.dataset, "method": a.method, "clients": a.clients, "rounds": a.rounds, "scheme": scheme,
            "checkpoint_every": a.checkpoint_every, "threads": a.threads,
            "rss_after_import_mb": round(after_import, 1), "rss_init_mb": round(init, 1),
            "rss_peak_mb": round(rss_mb(), 1),
            "client_state_bytes": per_client[0], "client_state_bytes_max": max(per_client),
            "clients_state_total_mb": round(sum(per_client) / 2**20, 1),
            "server_state_bytes": tensor_bytes(sim.server),
            "checkpoint_bytes": ck.stat().st_size if ck.exists() else 0,
            "checkpoint_saves": len(ckpt_s), "checkpoint_s_mean": round(sum(ckpt_s) / len(ckpt_s), 4) if ckpt_s else 0.0,
            "wall_s": round(wall, 2),
        }), flush=True)


def spawn(**kw) -> dict:
    args = [sys.executable, __file__, "--child"]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    p = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    if p.returncode:
        sys.exit(f"measurement failed: {' '.join(args)}\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dataset", default="pneumoniamnist")
    ap.add_argument("--method", default="fedmic")
    ap.add_argument("--clients", type=int, nargs="+", default=[20, 100])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--min-size", type=int, default=10)
    ap.add_argument("--join-ratio", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=1)
    ap.add_argument("--checkpoint-every", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--root", default=os.environ.get("FEDMIC_MEDMNIST_ROOT", str(DATA)))
    ap.add_argument("--checkpoint-overhead", action="store_true",
                    help="demo-like run (breastmnist, 10 clients, 8 rounds, join 0.5) with a checkpoint every round vs none")
    a = ap.parse_args()
    if a.child:
        a.clients = a.clients[0]
        return child(a)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    common = dict(method=a.method, threads=a.threads, root=a.root)
    if a.checkpoint_overhead:
        demo = dict(dataset="breastmnist", clients=10, rounds=8, lam=0.1, min_size=5, join_ratio=0.5, eval_every=2)
        for every in (0, 1, 0, 1):  # interleaved: a busy machine drifts
            print(json.dumps(spawn(**common, **demo, checkpoint_every=every)), flush=True)
        return
    for k in a.clients:
        for every in (0, a.checkpoint_every):
            print(json.dumps(spawn(**common, dataset=a.dataset, clients=k, rounds=a.rounds, lam=a.lam,
                                   min_size=a.min_size, join_ratio=a.join_ratio, eval_every=a.eval_every,
                                   checkpoint_every=every)), flush=True)


if __name__ == "__main__":
    main()
