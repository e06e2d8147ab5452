"""Training throughput per job when several jobs share the CPU: how many threads a run should
use, and which OpenMP wait policy, so that a busy machine cannot collapse a run.

For each setting (concurrent jobs x threads per job x OMP_WAIT_POLICY) it starts that many
processes at once; each trains the engine's model (the small CNN, channels-last on CPU, batch
32, the engine's SGD) on synthetic 28x28 images for the same wall-clock window and reports the
images it trained. Printed per repeat: each setting's images/s per job (median over its jobs),
the sum over its jobs, the images per CPU-second its jobs used (the work a thread wastes
spinning or synchronising shows here, whatever share of the CPU other work leaves), and the
1-minute load average when it started (other work on the machine counts: compare settings
within one repeat; the scheduler shares the cores per thread, so under foreign load a job with
more threads also takes a larger share). The settings of one repeat run one after
another, and the repeats are interleaved, so slow phases of a shared machine hit all settings.

    .venv/bin/python benchmarks/threads.py                       # 1, 2, 4 jobs x 1, 2 threads x passive, default
    .venv/bin/python benchmarks/threads.py --jobs 1 2 --threads 1 2 --seconds 10 --repeats 3
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICIES = {"passive": "PASSIVE", "active": "ACTIVE", "default": None}  # default: libgomp's spin-then-sleep


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--policies", nargs="+", default=["passive", "default"], choices=sorted(POLICIES))
    p.add_argument("--seconds", type=float, default=8.0, help="measured window per setting")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--start", type=float, help=argparse.SUPPRESS)
    p.add_argument("--nthreads", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(args) -> None:
    """One job: build, warm up, wait for the common start, train for the window, print the count."""
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, str(ROOT))
    from fedmic.algorithms.base import Context

    torch.set_num_threads(args.nthreads)
    ctx = Context(model="cnn", in_channels=1, n_classes=2, image_size=28, device=torch.device("cpu"), rounds=1,
                  local_epochs=1, batch_size=args.batch_size, lr=0.05, memory_format=torch.channels_last)
    model = ctx.make_model()
    opt = ctx.optimizer(model.parameters())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 1, 28, 28, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (args.batch_size,), generator=g)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    late = time.time() - args.start
    time.sleep(max(0.0, -late))
    begin, cpu, stop, images = time.time(), time.process_time(), args.start + args.seconds, 0
    while time.time() < stop:
        step()
        images += args.batch_size
    print(json.dumps({"images": images, "seconds": time.time() - begin, "cpu_s": time.process_time() - cpu,
                      "late_s": max(0.0, late)}))


def run_setting(args, jobs: int, threads: int, policy: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if POLICIES[policy]:
        env["OMP_WAIT_POLICY"] = POLICIES[policy]
    load = os.getloadavg()[0]
    start = time.time() + 4.0 + 2.0 * jobs  # time for every job to import torch and warm up
    cmd = [sys.executable, __file__, "--worker", "--start", str(start), "--seconds", str(args.seconds),
           "--nthreads", str(threads), "--batch-size", str(args.batch_size)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(jobs)]
    outs = [json.loads(p.communicate()[0]) for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed ({jobs} jobs, {threads} threads, {policy})")
    late = max(o["late_s"] for o in outs)
    per_job = [o["images"] / o["seconds"] for o in outs]
    return {"per_job": statistics.median(per_job), "total": sum(per_job), "load": load, "late": late,
            "per_cpu_s": sum(o["images"] for o in outs) / sum(o["cpu_s"] for o in outs)}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    settings = list(itertools.product(args.jobs, args.threads, args.policies))
    res: dict[tuple, list[dict]] = {s: [] for s in settings}
    print(f"machine: {os.cpu_count()} logical CPUs; window {args.seconds:.0f} s per setting, batch {args.batch_size}")
    for rep in range(1, args.repeats + 1):
        print(f"\nrepeat {rep} (uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()})")
        print("| jobs | threads/job | OMP_WAIT_POLICY | images/s per job | images/s, all jobs | images per CPU-s "
              "| load at start |")
        print("|--:|--:|---|--:|--:|--:|--:|")
        for s in settings:
            r = run_setting(args, *s)
            res[s].append(r)
            note = f" (a job started {r['late']:.1f} s late)" if r["late"] > 0 else ""
            print(f"| {s[0]} | {s[1]} | {s[2]} | {r['per_job']:.0f} | {r['total']:.0f} | {r['per_cpu_s']:.0f} | "
                  f"{r['load']:.2f}{note} |", flush=True)
    print(f"\nmedian over {args.repeats} repeats")
    print("| jobs | threads/job | OMP_WAIT_POLICY | images/s per job | per job, min-max | images/s, all jobs "
          "| images per CPU-s |")
    print("|--:|--:|---|--:|---|--:|--:|")
    for s, rs in res.items():
        pj = [r["per_job"] for r in rs]
        print(f"| {s[0]} | {s[1]} | {s[2]} | {statistics.median(pj):.0f} | {min(pj):.0f}-{max(pj):.0f} | "
              f"{statistics.median([r['total'] for r in rs]):.0f} | "
              f"{statistics.median([r['per_cpu_s'] for r in rs]):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
