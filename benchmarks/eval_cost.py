"""What evaluating every client costs against a training round, at any dataset's size.

Times whole rounds (`fedmic.simulation.loop.train_round`) and the evaluation of all clients that follows
each (`fedmic.simulation.evaluation.evaluate`: the global model and, for personalised methods, every client's
model on validation and test images), interleaved, and splits the evaluation into the models'
forward passes and the metrics. `--synthetic` fills the named dataset's official split sizes
with random images (timing only, no file needed), e.g. TissueMNIST's 165,466 training, 23,640
validation and 47,280 test images. `--auc-against REV` also times the metrics (AUC + F1 on one
test split's worth of scores) against fedmic/metrics.py as it was at git revision REV.

    .venv/bin/python benchmarks/eval_cost.py --dataset tissuemnist --synthetic --rounds 2 --auc-against 1f75362
    .venv/bin/python benchmarks/eval_cost.py --dataset pneumoniamnist --method fedmic --rounds 3
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import fedmic  # noqa: E402,F401  (first: it sets the OpenMP wait policy before torch loads)

import torch


from fedmic import engine  # noqa: E402
from fedmic.simulation import clients, evaluation  # noqa: E402
from fedmic.simulation.loop import sample_clients, train_round  # noqa: E402
from fedmic import metrics  # noqa: E402
from fedmic.config import RunConfig  # noqa: E402
from fedmic.data import medmnist  # noqa: E402
from fedmic.data.partition import make_partition, save_partition  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="tissuemnist")
    p.add_argument("--synthetic", action="store_true", help="random images in the dataset's official split sizes")
    p.add_argument("--method", default="fedavg")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2, help="timed rounds (after one warm-up round)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--auc-against", metavar="REV", help="also time fedmic/metrics.py of this git revision")
    p.add_argument("--root", default=os.environ.get("FEDMIC_MEDMNIST_ROOT") or str(ROOT.parent / "shared/data/medmnist"))
    return p.parse_args(argv)


def synthetic_loader(flag: str):
    """A stand-in for medmnist.load_dataset: the real registry entry, random images and labels."""
    info = medmnist.dataset_info(flag)
    g = torch.Generator().manual_seed(0)

    def load(_flag, _root=None, size=28, verify=True):
        splits = {}
        for s in medmnist.SPLITS:
            n = info.n_samples[s]
            splits[f"{s}_images"] = torch.rand(n, info.n_channels, size, size, generator=g) * 2 - 1
            splits[f"{s}_labels"] = torch.randint(0, info.n_classes, (n,), generator=g)
        return medmnist.MedMNISTData(info=info, path=Path("synthetic"), **splits)
    return load


class Clock:
    """Adds up the time spent in one module-level function while installed, in each of the
    modules that call it by its name."""

    def __init__(self, modules, name: str):
        self.modules, self.name, self.total = modules, name, 0.0
        self.orig = getattr(modules[0], name)

    def __enter__(self):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return self.orig(*a, **k)
            finally:
                self.total += time.perf_counter() - t0
        for module in self.modules:
            setattr(module, self.name, timed)
        return self

    def __exit__(self, *exc):
        for module in self.modules:
            setattr(module, self.name, self.orig)

    def take(self) -> float:
        t, self.total = self.total, 0.0
        return t


def metrics_at(rev: str):
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:fedmic/metrics.py"], capture_output=True,
                         text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / f"metrics_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"metrics_{rev}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def compare_metrics(rev: str, n: int, n_classes: int) -> str:
    """AUC + F1 on softmax-like scores of one test split's size, now and at `rev` (best of 3)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, n_classes, n)
    z = rng.normal(size=(n, n_classes)).astype(np.float32) + 2 * np.eye(n_classes, dtype=np.float32)[y]
    prob = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    out = []
    for name, mod in ((rev, metrics_at(rev)), ("now", metrics)):
        best = min(timed(lambda: (mod.auc_ovr(y, prob), mod.macro_f1(y, prob))) for _ in range(3))
        out.append((name, best, mod.auc_ovr(y, prob)))
    (_, t_old, a_old), (_, t_new, a_new) = out
    return (f"AUC + F1 on {n} x {n_classes} float32 softmax scores: {rev} {1e3 * t_old:.0f} ms, now "
            f"{1e3 * t_new:.0f} ms ({t_old / t_new:.1f}x); AUC {a_new:.12f} vs {a_old:.12f}")


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.synthetic:
        medmnist.load_dataset = synthetic_loader(args.dataset)
    data = medmnist.load_dataset(args.dataset, args.root)
    labels = {s: data.split(s)[1].numpy() for s in medmnist.SPLITS}
    with tempfile.TemporaryDirectory() as tmp:
        part = make_partition("dirichlet_label", labels, args.clients, args.lam, 0, 10, n_classes=data.n_classes,
                              dataset=args.dataset, dataset_md5=data.info.md5(28))
        path = save_partition(part, Path(tmp) / "part.json")
        cfg = RunConfig(dataset=args.dataset, method=args.method, lam=args.lam, clients=args.clients, rounds=50,
                        batch_size=args.batch_size, progress=False, checkpoint_every=0, threads=args.threads)
        sim = engine.Simulation(cfg, path, args.root)
        rows = []
        with Clock((evaluation, clients), "predict") as fwd:
            for rnd in range(1, args.rounds + 2):
                train_s = timed(lambda: train_round(sim, rnd, sample_clients(cfg, rnd), set()))
                fwd.take()
                eval_s = timed(lambda: evaluation.evaluate(sim, rnd))
                if rnd > 1:
                    rows.append((train_s, eval_s, fwd.take()))
    n = {s: len(labels[s]) for s in medmnist.SPLITS}
    print(f"{args.method} on {args.dataset}{' (synthetic images)' if args.synthetic else ''}: {args.clients} clients, "
          f"all joining, batch {args.batch_size}, {args.threads} thread(s); {n['train']} training, {n['val']} validation, "
          f"{n['test']} test images; machine: {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
          f"1-min load {os.getloadavg()[0]:.1f} at end")
    print("\n| round | train s | eval s | of which forward s | of which metrics etc. s | eval share of the round |")
    print("|--:|--:|--:|--:|--:|--:|")
    for i, (tr, ev, fw) in enumerate(rows, start=2):
        print(f"| {i} | {tr:.2f} | {ev:.2f} | {fw:.2f} | {ev - fw:.2f} | {ev / (tr + ev):.1%} |")
    tr, ev, fw = (statistics.median(c) for c in zip(*rows))
    print(f"| median | {tr:.2f} | {ev:.2f} | {fw:.2f} | {ev - fw:.2f} | {ev / (tr + ev):.1%} |")
    if args.auc_against:
        print("\n" + compare_metrics(args.auc_against, n["test"], data.n_classes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
