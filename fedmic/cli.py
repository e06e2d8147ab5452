"""Command line: `fedmic download | partition | stamp-partition | train | collect | table | figure | flower`.

Every Snakemake rule is one call of this command; errors a user can fix are printed as one
clear line (no traceback) with exit status 2. Parsing needs no torch: `fedmic --help` and
`fedmic --version` answer at once, and a command imports only what it runs.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path

import yaml

from . import __version__
from .config import ConfigError, RunConfig, load_run_config


def cmd_download(a):
    from .data.medmnist import ensure_dataset
    for ds in a.dataset:
        print(ensure_dataset(ds, a.root, size=a.size, url=a.url, progress=not a.quiet))


def dataset_input(dataset: str, root: str | None, size: int) -> tuple[str, Path]:
    """The dataset file a command reads, as an input for check_outputs."""
    from .data.medmnist import dataset_info, resolve_root
    return "--root", resolve_root(root) / dataset_info(dataset).filename(size)


def cmd_partition(a):
    from .data.medmnist import load_dataset
    from .data.partition import make_partition, save_partition
    from .outputs import PARTITION, check_outputs
    from .utils import check_writable
    check_outputs("partition", {a.out: ("--out", PARTITION)}, [dataset_input(a.dataset, a.root, a.size)])
    check_writable(a.out)
    data = load_dataset(a.dataset, a.root, size=a.size)
    labels = {s: data.split(s)[1].numpy() for s in ("train", "val", "test")}
    part = make_partition(a.scheme, labels, a.clients, a.lam, a.seed, a.min_size, n_classes=data.n_classes,
                          dataset=a.dataset, dataset_md5=data.info.md5(a.size))
    save_partition(part, a.out)
    sizes = part.sizes("train")
    logging.info("partition %s: %d clients, train sizes min %d / max %d, %d redraws",
                 a.out, a.clients, min(sizes), max(sizes), part.redraws)


def cmd_stamp_partition(a):
    """A user's own partition, checked against the data and stamped custom (docs/robustness.md)."""
    from .data.medmnist import load_dataset
    from .data.partition import PartitionError, save_partition, stamp
    from .outputs import PARTITION, check_outputs
    from .utils import check_writable
    check_outputs("stamp-partition", {a.out: ("--out", PARTITION)}, [("--in", a.input)])
    check_writable(a.out)
    try:
        d = json.loads(Path(a.input).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PartitionError(f"{a.input}: not valid JSON ({e})") from None
    dataset = d.get("dataset") if isinstance(d, dict) else None
    if not isinstance(dataset, str):
        raise PartitionError(f"{a.input}: no \"dataset\" name (e.g. \"dataset\": \"breastmnist\")")
    data = load_dataset(dataset, a.root, size=a.size)
    part = stamp(d, {s: len(data.split(s)[1]) for s in ("train", "val", "test")}, data.n_classes,
                 data.info.md5(a.size), source=str(a.input))
    save_partition(part, a.out)
    logging.info("custom partition %s: %d clients, digest %s", a.out, part.clients, part.digest[:12])


def check_device(name: str) -> None:
    """Refuse a CUDA device torch cannot see now, before any data is loaded."""
    import torch

    if not name.startswith("cuda"):
        return
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(name.partition(":")[2] or 0)
    if index >= n:
        seen = f"{n} CUDA device(s) (cuda:0 .. cuda:{n - 1})" if n else "no CUDA device"
        raise ConfigError(f"device {name!r}: torch {torch.__version__} sees {seen}; use device auto or cpu, "
                          "or a CUDA build of torch on a machine with a GPU")


def cmd_train(a):
    from .utils import check_writable
    settings = {f: getattr(a, f) for f in RunConfig.EXECUTION_FIELDS}
    cfg = load_run_config(a.config, a.set, **settings)
    if a.fingerprint is not None and a.fingerprint != cfg.fingerprint():
        raise ConfigError(f"this fedmic ({__version__}, {Path(__file__).parent}) makes the run's fingerprint "
                          f"{cfg.fingerprint()}, the workflow planned {a.fingerprint}: the job runs another fedmic "
                          "than Snakemake does; install the same version in both (or drop --fingerprint)")
    if a.selection:
        check_selected(cfg, a.selection)
    from .engine import Simulation  # torch: only once the config is known to be good
    from .simulation.record import train_outputs
    from .outputs import check_outputs
    inputs = [("--partition", a.partition), dataset_input(cfg.dataset, a.root, cfg.image_size)]
    if not a.config.lstrip().startswith("{"):
        inputs.append(("--config", a.config))
    if a.selection:
        inputs.append(("--selection", a.selection))
    check_outputs("train", train_outputs(a.out), inputs)
    check_device(cfg.device)
    check_writable(*train_outputs(a.out))
    if a.tensorboard is not None:
        from .watch import summary_writer_class
        summary_writer_class()
        check_writable(Path(a.tensorboard) / "events")
    res = Simulation(cfg, a.partition, a.root).run(a.out, tensorboard=a.tensorboard,
                                                     replace_stale_checkpoint=a.replace_stale_checkpoint)
    s = res["summary"]
    logging.info("%s: personalised acc %.4f auc %.4f; uplink %.0f B/round", a.out,
                 s.get("personal", {}).get("acc", float("nan")), s.get("personal", {}).get("auc", float("nan")),
                 s["uplink_per_round"])


def check_selected(cfg: RunConfig, path: str) -> None:
    """A tuned run must run with its selection's learning rate and hyperparameters."""
    from .methods import resolve_hp
    from .tuning import read_selection
    sel = read_selection(path)
    want = resolve_hp(cfg.method, {**cfg.hp, **sel["hp"]})
    if cfg.lr != sel["lr"] or cfg.resolved_hp() != want:
        raise ConfigError(f"the run's settings (lr {cfg.lr}, hp {cfg.hp}) are not the selection in {path} "
                          f"(lr {sel['lr']}, hp {sel['hp']}); rerun the workflow, which reads the selection")


def check_report_outputs(a, kind: str, suffixes: tuple[str, ...]) -> None:
    from .outputs import check_outputs
    stem = Path(a.out)
    check_outputs(a.cmd, {stem.with_name(stem.name + s): ("--out", kind) for s in suffixes},
                  [("--inputs", p) for p in a.inputs])


def cmd_table(a):
    from .outputs import TABLE
    from .report import build_table
    check_report_outputs(a, TABLE, (".csv", ".md", ".tex"))
    build_table(a.name, a.inputs, a.out, root=a.root, options=a.options)


def cmd_figure(a):
    from .outputs import FIGURE
    from .report import build_figure
    check_report_outputs(a, FIGURE, (".png", ".pdf"))
    build_figure(a.name, a.inputs, a.out, root=a.root, options=a.options)


def options_json(text: str) -> dict:
    """--options: a JSON object (a table's or figure's config section)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"a JSON object ({{\"name\": value, ...}}) is needed, got {text!r}")
    return value


def cmd_collect(a):
    from .outputs import PROVENANCE, RESULTS, check_outputs
    from .report import collect
    outputs = {a.out: ("--out", RESULTS), **({a.provenance: ("--provenance", PROVENANCE)} if a.provenance else {})}
    if a.provenance and Path(a.provenance).resolve() == Path(a.out).resolve():
        raise ConfigError(f"--out and --provenance are both {a.out}; give each its own file")
    inputs = [("--inputs", p) for p in a.inputs]
    check_outputs("collect", outputs, inputs + [("--inputs (its timing file)", Path(p).with_suffix(".timing.json"))
                                                for p in a.inputs if not str(p).endswith(".timing.json")])
    collect(a.inputs, a.out, a.provenance, json.loads(a.config) if a.config else None, a.source)


def cmd_select(a):
    from .outputs import SELECTION, check_outputs
    from .report import tidy
    from .tuning import select
    from .utils import atomic_write_text
    check_outputs("select", {a.out: ("--out", SELECTION)}, [("--inputs", p) for p in a.inputs])
    sel = select(tidy.collect(a.inputs))
    atomic_write_text(a.out, json.dumps(sel, indent=1, sort_keys=True) + "\n")
    c = sel["chosen"]
    logging.info("%s: %s trial %d of %d (validation %.4f): lr %s, hp %s", a.out, sel["arm"], c["trial"],
                 len(sel["trials"]), c["score"], c["lr"], c["hp"])


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # one line, like every other error of this command (argparse adds the usage first)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# `fedmic train` flags for RunConfig's execution settings: how a run is computed, not which
# run it is (the workflow passes them outside the settings whose change retrains a run).
EXECUTION_HELP = {
    "threads": "CPU threads for torch (0: torch's default)",
    "device": "auto (CUDA if available), cpu, cuda or cuda:N",
    "memory_format": "auto, channels_last or contiguous",
    "checkpoint_every": "rounds between checkpoints (0: none)",
    "keep_checkpoint": "keep the checkpoint after the run ends",
    "progress": "a log line per round: seconds, test ACC, MB sent",
    "amp": "mixed precision (bfloat16) on CUDA",
}


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="fedmic", description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version", version=f"fedmic {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging; errors with their traceback")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    root_help = ("MedMNIST folder (default: $FEDMIC_MEDMNIST_ROOT, else ../shared/data/medmnist beside the "
                 "checkout when it exists, else ~/.medmnist)")

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

    p = sub.add_parser("stamp-partition", help="check your own client indices and write them as a custom "
                                               "partition file (docs/robustness.md)")
    p.add_argument("--in", dest="input", required=True,
                   help="JSON: dataset, scheme, lam, clients, seed, min_size (as the run config names them) and "
                        "indices {train, val, test}: one list of image indices per client")
    p.add_argument("--out", required=True, help="partition file to write")
    p.add_argument("--root", help=root_help)
    p.add_argument("--size", type=int, default=28)
    p.set_defaults(func=cmd_stamp_partition)

    p = sub.add_parser("train", help="run one federated simulation")
    p.add_argument("--config", required=True, help="run config: a YAML/JSON file or an inline JSON object")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (hp.tau=3)")
    p.add_argument("--partition", required=True)
    p.add_argument("--out", required=True, help="run JSON to write")
    p.add_argument("--root", help=root_help)
    p.add_argument("--fingerprint", help="refuse to run unless the config's fingerprint is this (the workflow's check)")
    p.add_argument("--tensorboard", metavar="DIR", help="also write each round's scalars (seconds, ACC, bytes, loss) "
                   "as TensorBoard events in DIR; needs pip install 'fedmic[tensorboard]'")
    p.add_argument("--selection", help="a tuning selection the run's lr and hyperparameters must equal (the workflow's check)")
    p.add_argument("--replace-stale-checkpoint", action="store_true",
                   help="remove a checkpoint of another configuration at --out and start from round 1 (the "
                        "workflow's, which retrains a run whose settings changed); without it, such a checkpoint "
                        "is refused")
    kinds = {f.name: f.type for f in fields(RunConfig)}
    for name in RunConfig.EXECUTION_FIELDS:
        flag = "--" + name.replace("_", "-")
        if kinds[name] == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=EXECUTION_HELP[name])
        else:
            p.add_argument(flag, type=int if kinds[name] == "int" else str, help=EXECUTION_HELP[name])
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("collect", help="write the tidy results file (a row per run, round and metric)")
    p.add_argument("--inputs", nargs="+", required=True, help="run JSONs (timing sidecars are read beside them)")
    p.add_argument("--out", required=True, help="results file: .csv.gz or .csv")
    p.add_argument("--provenance", help="also write this provenance record (YAML)")
    p.add_argument("--config", help="the resolved workflow configuration (JSON) for the record")
    p.add_argument("--source", help="where the workflow came from (path @ commit, or its git URL)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("select", help="choose one arm's hyperparameters from its tuning trials, on validation only")
    p.add_argument("--inputs", nargs="+", required=True, help="the trial run JSONs of one arm at one dataset and lambda")
    p.add_argument("--out", required=True, help="selection JSON to write")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("flower", help="deploy on Flower: the Flower app, test credentials, a byte-counting proxy "
                                      "(docs/deploy.md)")
    from .flower.cli import add_arguments as add_flower_arguments  # imports no Flower: works without the extra
    add_flower_arguments(p)

    for name, func in (("table", cmd_table), ("figure", cmd_figure)):
        p = sub.add_parser(name, help=f"build one {name} from a results file, run JSONs or partition files")
        p.add_argument("name")
        p.add_argument("--inputs", nargs="+", required=True)
        p.add_argument("--out", required=True, help="output stem (extensions are added)")
        p.add_argument("--root", help=root_help)
        p.add_argument("--options", type=options_json, default=None, metavar="JSON",
                       help=f"the {name}'s options, as its config section {name}s.<name> (e.g. "
                            f"'{{\"target\": 0.8}}' for table t4); docs/paper.md lists them")
        p.set_defaults(func=func)
    return ap


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user can fix (bad input, a file problem): one line, not a traceback. Only the
    modules a command imported can have raised their own, so none is imported here."""
    kinds = [ValueError, OSError, yaml.YAMLError]  # ConfigError, PartitionError: ValueErrors
    for module, names in (("fedmic.data.medmnist", ("DatasetError",)),
                          ("fedmic.simulation.checkpoint", ("CheckpointError",)),
                          ("fedmic.simulation.loop", ("DivergenceError",))):
        if module in sys.modules:
            kinds += [getattr(sys.modules[module], n) for n in names]
    return tuple(kinds)


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        a.func(a)
    except Exception as e:
        if a.verbose or not isinstance(e, user_errors()):
            raise
        from .utils import describe_os_error
        text = describe_os_error(e) if isinstance(e, OSError) else str(e)
        # one line even for multi-line messages (YAML's point to the faulty column)
        print(f"fedmic {a.cmd}: error: {' '.join(text.split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
