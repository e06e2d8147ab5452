"""The update codec on real training updates: the randomized sketch against the full SVD.

Runs a short FedMIC or FedKD simulation, records every matrix its channel encodes (client
uplinks and the server's downlink), then encodes each again both ways and prints, per layer:
how often the sketch's rank k equals the full SVD's energy-rule rank and by how much it
differs otherwise (it is never smaller), how many matrices a sketch settled (else the full SVD
decided), and the encoder's time both ways: `exact=True` is the path every matrix took before
(the Gram-eigenvalue dense check, then the full SVD).

    .venv/bin/python benchmarks/codec_rank.py --dataset retinamnist --clients 10 --rounds 10
    .venv/bin/python benchmarks/codec_rank.py --dataset pneumoniamnist --clients 20 --batch-size 10 \\
        --scheme dirichlet_client --rounds 5
    .venv/bin/python benchmarks/codec_rank.py --method fedkd --dataset retinamnist --clients 10 --rounds 10
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import fedmic  # noqa: E402,F401  (first: it sets the OpenMP wait policy before torch loads)

import torch


from fedmic import comm, gpd  # noqa: E402
from fedmic.config import RunConfig  # noqa: E402
from fedmic.data.medmnist import load_dataset  # noqa: E402
from fedmic.data.partition import make_partition, save_partition  # noqa: E402
from fedmic.engine import Simulation  # noqa: E402
from fedmic.simulation.loop import sample_clients, train_round  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="retinamnist")
    p.add_argument("--method", default="fedmic", choices=["fedmic", "fedkd"])
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--scheme", default="dirichlet_label")
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--root", default=os.environ.get("FEDMIC_MEDMNIST_ROOT") or str(ROOT.parent / "shared/data/medmnist"))
    return p.parse_args(argv)


def recorded_tensors(args) -> list[tuple[str, float, torch.Tensor]]:
    """(layer, energy, tensor) for every >= 2-D tensor the channel encoded during the run."""
    data = load_dataset(args.dataset, args.root)
    labels = {s: data.split(s)[1].numpy() for s in ("train", "val", "test")}
    out, encode = [], gpd.svd_encode

    def record(state, energy=None, *a, **k):
        out.extend((n, energy, w.detach().float().clone())
                   for n, w in state.items() if w.dim() >= 2 and w.is_floating_point())
        return encode(state, energy, *a, **k)

    with tempfile.TemporaryDirectory() as tmp:
        part = make_partition(args.scheme, labels, args.clients, args.lam, 0, 5, n_classes=data.n_classes,
                              dataset=args.dataset, dataset_md5=data.info.md5(28))
        path = save_partition(part, Path(tmp) / "part.json")
        cfg = RunConfig(dataset=args.dataset, method=args.method, scheme=args.scheme, lam=args.lam,
                        clients=args.clients, rounds=args.rounds, batch_size=args.batch_size, min_size=5,
                        progress=False, checkpoint_every=0, threads=args.threads)
        sim = Simulation(cfg, path, args.root)
        gpd.svd_encode = record
        try:
            for rnd in range(1, args.rounds + 1):
                train_round(sim, rnd, sample_clients(cfg, rnd), set())
        finally:
            gpd.svd_encode = encode
    return out


def timed_encode(w: torch.Tensor, energy: float, exact: bool) -> tuple[comm.Payload, float]:
    t0 = time.perf_counter()
    p = comm.svd_encode({"w": w}, energy, exact=exact)
    return p, time.perf_counter() - t0


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = collections.defaultdict(lambda: {"n": 0, "diff": collections.Counter(), "sketched": 0,
                                            "dense": 0, "t_exact": 0.0, "t_sketch": 0.0})
    for name, energy, w in recorded_tensors(args):
        m = w.reshape(w.shape[0], -1)
        r = rows[(name, tuple(m.shape))]
        exact, t_exact = timed_encode(w, energy, exact=True)
        sketch, t_sketch = timed_encode(w, energy, exact=False)
        r["n"] += 1
        r["t_exact"] += t_exact
        r["t_sketch"] += t_sketch
        k_full = comm.energy_rank(torch.linalg.svdvals(m.double()), energy)
        if "w" not in sketch.meta:
            r["dense"] += 1
            continue
        r["diff"][comm.kept_ranks(sketch)["w"] - k_full] += 1
        if min(m.shape) >= comm.SKETCH_MIN_SIDE:
            k_max = comm._dense_rank(*m.shape, ndim=w.dim(), elem=4) - 1
            r["sketched"] += comm._sketched_factors(m, energy, k_max) is not None
    print(f"{args.method} on {args.dataset}, {args.clients} clients, {args.rounds} rounds, batch {args.batch_size}, "
          f"{args.threads} thread(s); every matrix the channel encoded (uplinks and downlinks)")
    print("\n| layer | shape | matrices | sketched | k - full SVD's k: count | sent dense | exact path, ms | codec, ms |")
    print("|---|---|--:|--:|---|--:|--:|--:|")
    for (name, shape), r in rows.items():
        diff = ", ".join(f"{d:+d}: {c}" for d, c in sorted(r["diff"].items()))
        print(f"| {name} | {shape[0]}x{shape[1]} | {r['n']} | {r['sketched']} | {diff} | {r['dense']} | "
              f"{1e3 * r['t_exact'] / r['n']:.1f} | {1e3 * r['t_sketch'] / r['n']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
