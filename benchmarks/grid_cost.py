"""What a config's whole grid costs on this device, before running it.

From a short measured run per arm (a few rounds on a small real dataset with the arm's method,
model, batch size, epochs and hyperparameters, on the device asked for), the seconds per
trained image and per evaluated image; then, for every run of the grid (fedmic.grid, as the
workflow expands it), the images it trains (rounds x local epochs x the join ratio's share of
the dataset's training images), the images it evaluates (validation + test split at every
evaluated round) and its start-up, summed per arm and in total, for one device and for N jobs
in parallel (runs packed longest first onto N slots, each slot as fast as the probe).

    .venv/bin/python benchmarks/grid_cost.py --config config/config.yaml --jobs 2 8
    .venv/bin/python benchmarks/grid_cost.py --config config/compare.yaml --device cuda

The probe uses clients of equal size (dirichlet_client, at most 20, at least ~200 images
each) and all of them every round; the grid's larger clients (600-8,300 images at 20 clients)
spread the per-client work over more images, so per image the estimate errs high; T7's 100
clients spread it over fewer. Channels: the probe dataset has the run's channel count
(PneumoniaMNIST for 1, RetinaMNIST for 3), or pass --probe-data synthetic.
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import fedmic  # noqa: E402,F401  (first: it sets the OpenMP wait policy before torch loads)

import torch
import yaml

sys.path.insert(0, str(ROOT / "benchmarks"))

from eval_cost import synthetic_loader  # noqa: E402
from fedmic import engine, grid, schema  # noqa: E402
from fedmic.simulation.evaluation import evaluate  # noqa: E402
from fedmic.simulation.loop import sample_clients, train_round  # noqa: E402
from fedmic.config import RunConfig  # noqa: E402
from fedmic.data import medmnist  # noqa: E402
from fedmic.data.partition import make_partition, save_partition  # noqa: E402

PROBE_DATASETS = {1: "pneumoniamnist", 3: "retinamnist"}
PROBE_CLIENTS = 20
# Clients of at least this many images in the probe, so that per-client work (loading states,
# the codec) weighs per image about as in the grid, whose clients hold 600-8,300 images
# (RetinaMNIST's 1,080 images then make 5 clients, PneumoniaMNIST's 4,708 make 20)
PROBE_MIN_CLIENT_IMAGES = 200


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "config/config.yaml"))
    p.add_argument("--jobs", type=int, nargs="+", default=[2, 8], help="parallel jobs (devices, or cores at 1 thread)")
    p.add_argument("--device", default="cpu", help="the device the probes run on (the grid's runs use device: auto)")
    p.add_argument("--probe-rounds", type=int, default=2, help="timed probe rounds per arm, after one warm-up round")
    p.add_argument("--probe-data", choices=["real", "synthetic"], default="real")
    p.add_argument("--root", default=os.environ.get("FEDMIC_MEDMNIST_ROOT") or str(ROOT.parent / "shared/data/medmnist"))
    p.add_argument("--json", help="also write every run's estimate here")
    return p.parse_args(argv)


def load_config(path: str) -> dict:
    """The config as the workflow reads it: checked against its schema, refused in one line."""
    with open(path) as f:
        config = yaml.safe_load(f)
    if problem := schema.config_problem(config):
        raise SystemExit(f"{path}: config error: {problem}")
    return config


def run_configs(config: dict) -> dict:
    """Every run of the grid. A tuned arm's runs are costed at its arm's own settings: the
    selection exists only after tuning, and of what it picks only a hyperparameter that
    changes the work per image (e.g. epochs) would change the cost."""
    own_settings = {"lr": None, "hp": {}}
    return {key: grid.run_config(config, key, own_settings if grid.tuned_from(config, key.arm) else None).to_dict()
            for key in grid.all_runs(config)}


def cost_signature(run: dict, channels: int) -> str:
    """What decides a run's cost per image: everything but the data, the partition and the seed."""
    drop = {"dataset", "lam", "seed", "partition_seed", "arm", "scheme", "min_size", "join_ratio", "rounds",
            "clients", "eval_every", "last_k", "checkpoint_every", "keep_checkpoint", "progress", "lr", "on_nonfinite"}
    return json.dumps({**{k: v for k, v in run.items() if k not in drop}, "channels": channels}, sort_keys=True)


class Probe:
    """Seconds per trained and per evaluated image of one run config, from a short run."""

    def __init__(self, args, run: dict, channels: int, workdir: Path):
        ds = PROBE_DATASETS.get(channels)
        if ds is None:
            raise SystemExit(f"no probe dataset with {channels} channels; use --probe-data synthetic")
        load = synthetic_loader(ds) if args.probe_data == "synthetic" else medmnist.load_dataset
        t0 = time.perf_counter()
        data = load(ds, args.root)
        clients = max(2, min(PROBE_CLIENTS, len(data.split("train")[1]) // PROBE_MIN_CLIENT_IMAGES))
        part_path = workdir / f"{ds}.json"
        if not part_path.exists():
            labels = {s: data.split(s)[1].numpy() for s in medmnist.SPLITS}
            save_partition(make_partition("dirichlet_client", labels, clients, 0.5, 0, 10,
                                          n_classes=data.n_classes, dataset=ds, dataset_md5=data.info.md5(28)),
                           part_path)
        self.what = f"{ds}, {clients} clients"
        cfg = RunConfig.from_dict({**run, "dataset": ds, "lam": 0.5, "clients": clients, "scheme": "dirichlet_client",
                                   "min_size": 10, "join_ratio": 1.0, "device": args.device, "checkpoint_every": 0,
                                   "progress": False, "partition_seed": 0})
        saved = medmnist.load_dataset
        medmnist.load_dataset = lambda *a, **k: data  # Simulation loads through the module
        try:
            sim = engine.Simulation(cfg, part_path, args.root)
        finally:
            medmnist.load_dataset = saved
        self.setup_s = time.perf_counter() - t0
        self.setup_images = sum(len(data.split(s)[1]) for s in medmnist.SPLITS)
        train, evals = [], []
        for rnd in range(1, args.probe_rounds + 2):
            t0 = time.perf_counter()
            train_round(sim, rnd, sample_clients(cfg, rnd), set())
            t1 = time.perf_counter()
            evaluate(sim, rnd)
            if rnd > 1:  # round 1 warms up
                train.append(t1 - t0)
                evals.append(time.perf_counter() - t1)
        self.train_s = statistics.median(train) / (sum(sim.data.n_train) * cfg.local_epochs)
        self.eval_s = statistics.median(evals) / sum(len(data.split(s)[1]) for s in ("val", "test"))


def evaluated_rounds(rounds: int, every: int) -> int:
    return sum(1 for r in range(1, rounds + 1) if r % every == 0 or r == rounds)


def import_seconds() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import fedmic.engine, fedmic.cli"], check=True, cwd=ROOT)
    return time.perf_counter() - t0


def makespan(seconds: list[float], slots: int) -> float:
    """Longest first onto the least loaded of `slots` parallel slots."""
    heap = [0.0] * slots
    for s in sorted(seconds, reverse=True):
        heapq.heappush(heap, heapq.heappop(heap) + s)
    return max(heap)


def hours(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 60:.0f} min" if s >= 60 else f"{s:.0f} s"


def millions(n: float) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def main(argv=None) -> int:
    args = parse_args(argv)
    config = load_config(args.config)
    threads = int(config.get("threads_per_run", 1))
    torch.set_num_threads(threads)
    runs = run_configs(config)
    infos = {d: medmnist.dataset_info(d) for d in {k.dataset for k in runs}}
    t_import = import_seconds()
    probes: dict[str, Probe] = {}
    estimates = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for key, run in runs.items():
            info = infos[key.dataset]
            sig = cost_signature(run, info.n_channels)
            if sig not in probes:
                probes[sig] = Probe(args, run, info.n_channels, Path(tmp))
                print(f"probed {key.arm} on {probes[sig].what}: {1e3 * probes[sig].train_s:.3f} ms per "
                      f"trained image, {1e3 * probes[sig].eval_s:.3f} ms per evaluated image", file=sys.stderr)
            pr, n = probes[sig], info.n_samples
            share = max(1, round(key.join_ratio * key.clients)) / key.clients
            trained = run["rounds"] * run["local_epochs"] * share * n["train"]
            evaluated = evaluated_rounds(run["rounds"], run["eval_every"]) * (n["val"] + n["test"])
            setup = t_import + pr.setup_s * sum(n.values()) / pr.setup_images
            estimates.append({"run": grid.run_dir(key) + f"/seed{key.seed}", "arm": key.arm, "method": run["method"],
                              "trained_images": trained, "evaluated_images": evaluated,
                              "seconds": trained * pr.train_s + evaluated * pr.eval_s + setup})
    probe_s = time.perf_counter() - t_start
    by_arm = defaultdict(list)
    for e in estimates:
        by_arm[e["arm"]].append(e)
    total = [e["seconds"] for e in estimates]
    print(f"config {args.config}: {len(estimates)} runs on {', '.join(sorted(infos))}; device {args.device}, "
          f"{threads} thread(s) per run, {len(probes)} probes of {args.probe_rounds} rounds ({probe_s:.0f} s); "
          f"machine: {os.cpu_count()} logical CPUs, torch {torch.__version__}, 1-min load {os.getloadavg()[0]:.1f}")
    print(f"\n| arm | method | runs | images trained | images evaluated | one device | {' | '.join(f'{j} jobs' for j in args.jobs)} |")
    print("|---|---|--:|--:|--:|--:|" + "--:|" * len(args.jobs))
    for arm, es in sorted(by_arm.items(), key=lambda kv: -sum(e["seconds"] for e in kv[1])):
        s = [e["seconds"] for e in es]
        print(f"| {arm} | {es[0]['method']} | {len(es)} | {millions(sum(e['trained_images'] for e in es))} | "
              f"{millions(sum(e['evaluated_images'] for e in es))} | {hours(sum(s))} | "
              + " | ".join(hours(sum(s) / j) for j in args.jobs) + " |")
    print(f"| **all** | | {len(estimates)} | {millions(sum(e['trained_images'] for e in estimates))} | "
          f"{millions(sum(e['evaluated_images'] for e in estimates))} | **{hours(sum(total))}** | "
          + " | ".join(f"**{hours(makespan(total, j))}**" for j in args.jobs) + " |")
    print("\nPer arm, N jobs = its one-device time / N; the total for N jobs packs the runs longest first onto N "
          "slots (each as fast as the probe: N devices, or N free cores at one thread per run).")
    if args.json:
        Path(args.json).write_text(json.dumps(estimates, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
