"""Command line: `fedmic download | partition | train | table | figure | report-grid`.

Every Snakemake rule is one call of this command; errors a user can fix are printed as one
clear line (no traceback) with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import yaml

# OpenMP threads that spin while they wait for work take the cores from the threads doing it:
# with other jobs on the machine a 2-thread run trained 20-30x slower than with threads that
# sleep (docs/performance.md, "Threads"). libgomp reads this once, when torch loads it, so it is
# set here, before any command imports torch; a value set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _labels_loader(root):
    from .data.medmnist import load_dataset

    cache = {}

    def load(dataset):
        if dataset not in cache:
            d = load_dataset(dataset, root)
            cache[dataset] = {s: d.split(s)[1].numpy() for s in ("train", "val", "test")}
        return cache[dataset]
    return load


def cmd_download(a):
    from .data.medmnist import ensure_dataset
    for ds in a.dataset:
        print(ensure_dataset(ds, a.root, size=a.size, url=a.url, progress=not a.quiet))


def cmd_partition(a):
    from .data.medmnist import load_dataset
    from .data.partition import make_partition, save_partition
    data = load_dataset(a.dataset, a.root, size=a.size)
    labels = {s: data.split(s)[1].numpy() for s in ("train", "val", "test")}
    part = make_partition(a.scheme, labels, a.clients, a.lam, a.seed, a.min_size, n_classes=data.n_classes,
                          dataset=a.dataset, dataset_md5=data.info.md5(a.size))
    save_partition(part, a.out)
    sizes = part.sizes("train")
    logging.info("partition %s: %d clients, train sizes min %d / max %d, %d redraws",
                 a.out, a.clients, min(sizes), max(sizes), part.redraws)


def load_run_config(spec: str, overrides: list[str]):
    from .config import RunConfig
    if spec.lstrip().startswith("{"):
        d = json.loads(spec)
    else:
        with open(spec) as f:  # a stream, so a YAML error names the file
            d = yaml.safe_load(f)
    for item in overrides or []:
        key, _, value = item.partition("=")
        target = d
        *path, last = key.split(".")
        for p in path:
            target = target.setdefault(p, {})
        target[last] = yaml.safe_load(value)
    return RunConfig.from_dict(d)


def cmd_train(a):
    from .engine import Simulation
    cfg = load_run_config(a.config, a.set)
    if a.threads is not None:
        cfg.threads = a.threads
    if a.device is not None:
        cfg.device = a.device
    if a.no_progress:
        cfg.progress = False
    res = Simulation(cfg, a.partition, a.root).run(a.out)
    s = res["summary"]
    logging.info("%s: personalised acc %.4f auc %.4f; uplink %.0f B/round", a.out,
                 s.get("personal", {}).get("acc", float("nan")), s.get("personal", {}).get("auc", float("nan")),
                 s["uplink_per_round"])


def cmd_table(a):
    from .report import build_table
    build_table(a.name, a.inputs, a.out, root=a.root, target=a.target)


def cmd_figure(a):
    from .report import build_figure
    build_figure(a.name, a.inputs, a.out, root=a.root, target=a.target)


def cmd_collect(a):
    from .report import collect
    collect(a.inputs, a.out, a.provenance, json.loads(a.config) if a.config else None, a.source)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fedmic", description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)
    root_help = "MedMNIST folder (default: $FEDMIC_MEDMNIST_ROOT, else ~/.medmnist)"

    p = sub.add_parser("download", help="fetch and verify MedMNIST files")
    p.add_argument("--dataset", nargs="+", required=True)
    p.add_argument("--root", help=root_help)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--url", help="override the download URL (mirrors, tests)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("partition", help="write a Dirichlet partition file")
    p.add_argument("--dataset", required=True)
    p.add_argument("--root", help=root_help)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--scheme", default="dirichlet_label")
    p.add_argument("--lam", type=float, required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-size", type=int, default=10)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_partition)

    p = sub.add_parser("train", help="run one federated simulation")
    p.add_argument("--config", required=True, help="run config: a YAML/JSON file or an inline JSON object")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (hp.tau=3)")
    p.add_argument("--partition", required=True)
    p.add_argument("--out", required=True, help="run JSON to write")
    p.add_argument("--root", help=root_help)
    p.add_argument("--threads", type=int)
    p.add_argument("--device")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("collect", help="write the tidy results file (a row per run, round and metric)")
    p.add_argument("--inputs", nargs="+", required=True, help="run JSONs (timing sidecars are read beside them)")
    p.add_argument("--out", required=True, help="results file: .csv.gz or .csv")
    p.add_argument("--provenance", help="also write this provenance record (YAML)")
    p.add_argument("--config", help="the resolved workflow configuration (JSON) for the record")
    p.add_argument("--source", help="where the workflow came from (path @ commit, or its git URL)")
    p.set_defaults(func=cmd_collect)

    for name, func in (("table", cmd_table), ("figure", cmd_figure)):
        p = sub.add_parser(name, help=f"build one {name} from a results file, run JSONs or partition files")
        p.add_argument("name")
        p.add_argument("--inputs", nargs="+", required=True)
        p.add_argument("--out", required=True, help="output stem (extensions are added)")
        p.add_argument("--root", help=root_help)
        p.add_argument("--target", type=float, help="target accuracy for bytes-to-target")
        p.set_defaults(func=func)
    return ap


def main(argv=None) -> int:
    from .config import ConfigError
    from .data.medmnist import DatasetError
    from .data.partition import PartitionError
    from .engine import CheckpointError, DivergenceError

    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        a.func(a)
    # FileNotFoundError: a mistyped --config/--partition path; YAMLError: a malformed config file
    except (ConfigError, DatasetError, PartitionError, CheckpointError, DivergenceError, ValueError,
            FileNotFoundError, yaml.YAMLError) as e:
        if a.verbose:
            raise
        # one line even for multi-line messages (YAML's point to the faulty column)
        print(f"fedmic {a.cmd}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
