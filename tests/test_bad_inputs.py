"""Bad inputs and faults, one row each, through the real command line and the real workflow.

Every row runs one command in a fresh folder holding what a user would have there (a
partition, earlier results, a config) and asserts: the exit status; one message line, no
traceback; fragments that name the problem and the fix; and that every file that existed
before is byte-identical afterwards (nothing computed is lost or half-written). Workflow rows
run a real `snakemake` (not a dry run where it matters) in a folder whose results are
complete and up to date, so a row also shows that a bad value stops the run before Snakemake
deletes anything.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml
from conftest import DATA, mark_outputs_done

from fedmic.data.registry import MIRROR_ENV

REPO = Path(__file__).resolve().parents[1]
FLAG = "breastmnist"
FEDMIC = str(Path(sys.executable).with_name("fedmic"))
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile")]
RUN = {"dataset": FLAG, "clients": 3, "lam": 0.5, "rounds": 2, "checkpoint_every": 0}
TINY = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())


# --------------------------------------------------------------------------- the rows
@dataclass
class Case:
    id: str
    argv: list[str]                   # {part}, {data}, {cfg}, {dir} are filled in; "snakemake" or a fedmic command
    code: int                         # expected exit status
    says: tuple[str, ...]             # fragments of the one message line (problem and fix)
    setup: Callable | None = None     # setup(world) prepares the folder (config files, faults)
    env: dict = field(default_factory=dict)
    mark: object = None               # e.g. pytest.mark.xfail for what cannot be fixed here
    fix: bool = False                 # run the command the message prints, then this row's command: both succeed


def train(*extra, config=None, out="out/run.json"):
    return ["train", "--config", json.dumps({**RUN, **(config or {})}), "--partition", "{part}", "--root", "{data}",
            "--out", out, "--threads", "1", "--no-progress", *extra]


def sets(*pairs, config=None):
    return train(*[a for p in pairs for a in ("--set", p)], config=config)


def fake_run(w):
    """A made-up run JSON in the case's folder (an input the command must not replace)."""
    write(w, "run.json", FAKE_RUN)


def config_file(text):
    return lambda w: (w.dir / "cfg.yaml").write_text(text)


def folder(rel):
    return lambda w: (w.dir / rel).mkdir(parents=True)


def tiny(**change):
    """Write the tiny workflow config with `change` applied ({"a.b": v} sets a nested key; None deletes)."""
    def setup(w):
        cfg = json.loads(json.dumps(TINY))
        for key, value in change.items():
            *path, last = key.split(".")
            target = cfg
            for p in path:
                target = target.setdefault(p, {})
            if value is None:
                target.pop(last, None)
            else:
                target[last] = value
        (w.dir / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return setup


# the blocker first, then the checkout under test (the console script's own fedmic may be another's)
NO_TENSORBOARD_ENV = {"PYTHONPATH": f"blocker{os.pathsep}{REPO}"}


def no_tensorboard(w):
    """A `tensorboard` package that cannot be imported, in the case's folder (NO_TENSORBOARD_ENV)."""
    (w.dir / "blocker" / "tensorboard").mkdir(parents=True)
    (w.dir / "blocker" / "tensorboard" / "__init__.py").write_text("raise ImportError('no tensorboard here')\n")


def snake(*targets, dry=False):
    return ["snakemake", "--cores", "1", *(["-n"] if dry else []), *(targets or ["all"]), "--configfile", "{cfg}"]


FAKE_RUN = json.dumps({"format": "fedmic-run/2", "config": {}, "history": [], "summary": {}}) + "\n"
RESULTS_HEAD = ",".join(__import__("fedmic.report.tidy", fromlist=["COLUMNS"]).COLUMNS)


def write(w, rel, content):
    path = w.dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)


def edit_part(change):
    """Edit the row's partition file by hand, as a user might (its digest is kept as it was)."""
    def setup(w):
        d = json.loads(w.part.read_text())
        change(d)
        w.part.write_text(json.dumps(d))
    return setup


def stamp(w, source, out):
    subprocess.run([FEDMIC, "stamp-partition", "--in", source, "--root", str(DATA), "--out", str(out)], cwd=w.dir,
                   check=True, capture_output=True)


NO_CUDA = pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this row is for a machine without CUDA")
ENV_ROOT = "FEDMIC_MEDMNIST_ROOT"
TENSORBOARD_FIX = "pip install 'fedmic[tensorboard]'"
ROOT_FIX = "--root DIR, data_root: DIR in the workflow config, or $FEDMIC_MEDMNIST_ROOT=DIR"
# the folder when none is named (the home folder is the case's own): ../shared/data/medmnist beside
# this checkout when it exists, else ~/.medmnist
BESIDE = REPO.parent / "shared" / "data" / "medmnist"
UNNAMED_ROOT = str(BESIDE) if BESIDE.is_dir() else "~/.medmnist"
TARGETS_FIX = "write targets before --configfile"
# root writes through file modes, so there the row uses a read-only file system
RO_SAYS = ("ro: Read-only file system", "write elsewhere") if os.geteuid() == 0 else ("ro", "Permission denied", "use another folder")

CASES = [
    # --- command-line flags, checked like config values -------------------------------------
    Case("threads negative", train("--threads", "-3"), 2, ("threads must be >= 0 (0: torch's default), got -3",)),
    Case("threads not a number", train("--threads", "abc"), 2,
         ("argument --threads: invalid int value: 'abc'", "see fedmic train --help")),
    Case("device gpu", train("--device", "gpu"), 2, ("device must be auto, cpu, cuda or cuda:N, got 'gpu'",)),
    Case("device cuda without a GPU", train("--device", "cuda"), 2,
         ("device 'cuda': torch", "sees no CUDA device; use device auto or cpu"), mark=NO_CUDA),
    Case("device cuda:1 without a GPU", train("--device", "cuda:1"), 2, ("device 'cuda:1'", "use device auto or cpu"),
         mark=NO_CUDA),
    Case("device cuda:x", train("--device", "cuda:x"), 2, ("device must be auto, cpu, cuda or cuda:N, got 'cuda:x'",)),
    Case("memory format", train("--memory-format", "nhwc"), 2,
         ("memory_format must be auto, channels_last or contiguous, got 'nhwc'",)),
    Case("checkpoint_every negative", train("--checkpoint-every", "-1"), 2, ("checkpoint_every must be >= 0, got -1",)),
    Case("no subcommand", [], 2, ("the following arguments are required: cmd", "(see fedmic --help)")),
    Case("misspelt subcommand", ["trian"], 2, ("invalid choice: 'trian'", "see fedmic --help")),
    Case("fingerprint of another fedmic", train("--fingerprint", "0123456789abcdef"), 2,
         ("the workflow planned 0123456789abcdef", "install the same version in both")),
    # --- the run config ---------------------------------------------------------------------
    Case("empty config file", ["train", "--config", "cfg.yaml", "--partition", "{part}", "--out", "o.json"], 2,
         ("config file cfg.yaml is empty", "key: value", "dataset: NAME"), setup=config_file("")),
    Case("config file is a list", ["train", "--config", "cfg.yaml", "--partition", "{part}", "--out", "o.json"], 2,
         ("config cfg.yaml must be a mapping of key: value",), setup=config_file("- dataset\n")),
    Case("config file missing", ["train", "--config", "nope.yaml", "--partition", "{part}", "--out", "o.json"], 2,
         ("nope.yaml: No such file or directory. Fix: check the path",)),
    Case("config file is a folder", ["train", "--config", "cfgdir", "--partition", "{part}", "--out", "o.json"], 2,
         ("--config cfgdir is a folder; give a YAML/JSON run config file",), setup=folder("cfgdir")),
    Case("config file malformed YAML", ["train", "--config", "cfg.yaml", "--partition", "{part}", "--out", "o.json"],
         2, ('cfg.yaml", line 1', "flow sequence"), setup=config_file("dataset: [unclosed\n")),
    Case("inline JSON malformed", ["train", "--config", '{"dataset": ', "--partition", "{part}", "--out", "o.json"], 2,
         ("--config: inline JSON is malformed",)),
    Case("unknown config key", sets("lrr=0.1"), 2, ("unknown run config key(s) ['lrr']; valid keys:", "'lr'")),
    Case("--set without =", sets("lr"), 2, ("--set 'lr': write KEY=VALUE",)),
    Case("YAML reads 1e-3 as text", sets("lr=1e-3"), 2, ("lr must be a number, got '1e-3'", "write 1.0e-3")),
    Case("lr infinite", sets("lr=.inf"), 2, ("lr must be a finite number, got inf",)),
    Case("fedmic tau -1 (issue)", sets("hp.tau=-1", config={"method": "fedmic"}), 2,
         ("fedmic: hyperparameter 'tau' must be a number > 0, got -1", "[tau: distillation temperature]")),
    Case("fedmic alpha -3 (issue)", sets("hp.alpha=-3", config={"method": "fedmic"}), 2,
         ("'alpha' must be a number >= 0, got -3",)),
    Case("fedmic teacher_width 0 (issue)", sets("hp.teacher_width=0", config={"method": "fedmic"}), 2,
         ("'teacher_width' must be a number > 0, got 0",)),
    Case("fedmic fixed_rank -2 (issue)", sets("hp.fixed_rank=-2", config={"method": "fedmic"}), 2,
         ("'fixed_rank' must be an integer >= 1 or null, got -2",)),
    Case("fedmic tau 'two' (issue)", sets("hp.tau=two", config={"method": "fedmic"}), 2,
         ("'tau' must be a number > 0, got 'two'",)),
    Case("fedmic fixed_rank 'x' (issue)", sets("hp.fixed_rank=x", config={"method": "fedmic"}), 2,
         ("'fixed_rank' must be an integer >= 1 or null, got 'x'",)),
    Case("energy schedule shrinking", sets("hp.energy_start=0.99", "hp.energy_end=0.95", config={"method": "fedkd"}),
         2, ("fedkd: energy_start (0.99) > energy_end (0.95)", "set energy_start <= energy_end")),
    Case("fedprox mu negative", sets("hp.mu=-1", config={"method": "fedprox"}), 2, ("'mu' must be a number >= 0",)),
    Case("unknown hyperparameter", sets("hp.taux=1", config={"method": "fedmic"}), 2,
         ("unknown hyperparameter(s) ['taux'] for method 'fedmic'; valid: alpha, beta, tau,",)),
    Case("fedbn without batch norm", train(config={"method": "fedbn"}), 2,
         ("batch-norm layers stay local, but model 'cnn' has none; use model cnn_bn or resnet18",)),
    # --- input files --------------------------------------------------------------------------
    Case("partition missing", train(), 2, ("partition file", "missing.json not found; make it with `fedmic partition"),
         setup=lambda w: setattr(w, "part", w.dir / "missing.json")),
    Case("partition is a folder", train(), 2, ("pdir cannot be read", "Is a directory", "rerun the partition step"),
         setup=lambda w: (folder("pdir")(w), setattr(w, "part", w.dir / "pdir"))),
    Case("partition truncated", train(), 2, ("is truncated or not valid JSON", "rerun the partition step"),
         setup=lambda w: w.part.write_bytes(w.part.read_bytes()[:200])),
    Case("partition of other settings", train(config={"lam": 0.1}), 2,
         ("field 'lam' is 0.5 in the file but 0.1 is expected", "rerun the partition step")),
    Case("dataset file missing", train(), 2, (f"'{FLAG}' (28x28 images) not found at", ROOT_FIX),
         setup=lambda w: setattr(w, "data", w.dir / "empty-root")),
    Case("folder in place of the .npz", train(), 2, (f"{FLAG}.npz is a folder, where the dataset file belongs",
                                                     "Fix: remove or rename that folder"),
         setup=lambda w: (folder(f"root/{FLAG}.npz")(w), setattr(w, "data", w.dir / "root"))),
    Case("truncated .npz", train(), 2, ("has MD5", "(truncated, corrupt or another release). Fix: delete"),
         setup=lambda w: ((w.dir / "root").mkdir(), (w.dir / "root" / f"{FLAG}.npz").write_bytes(
             (DATA / f"{FLAG}.npz").read_bytes()[:50_000]), setattr(w, "data", w.dir / "root"))),
    Case("--tensorboard without tensorboard", train("--tensorboard", "tb"), 2,
         ("--tensorboard needs the tensorboard package", TENSORBOARD_FIX), setup=no_tensorboard,
         env=NO_TENSORBOARD_ENV),
    Case("download offline", ["download", "--dataset", FLAG, "--root", "dl", "--url", "{closed_url}", "--quiet"], 2,
         (f"could not download MedMNIST dataset '{FLAG}'", "Offline? download", ROOT_FIX)),
    Case("unknown dataset", ["partition", "--dataset", "foomnist", "--root", "{data}", "--lam", "0.5", "--clients",
                             "3", "--out", "p2.json"], 2, ("unknown MedMNIST 2D dataset 'foomnist'; choose one of:",)),
    Case("more clients than images", ["partition", "--dataset", FLAG, "--root", "{data}", "--lam", "0.5",
                                      "--clients", "100", "--out", "p2.json"], 2,
         ("more clients than images allow", "use fewer clients or a smaller min_size")),
    Case("table input missing", ["table", "t2", "--inputs", "x.json", "--out", "t"], 2,
         ("x.json: cannot read run JSON", "No such file or directory", "check the path, or rerun `fedmic train`")),
    # --- outputs: checked before training, earlier files untouched -----------------------------
    Case("output is a folder", train(), 2, ("out/run.json: Is a directory. Fix: a folder is where a file should be",),
         setup=folder("out/run.json")),
    Case("output folder is a file", train(out="afile/run.json"), 2,
         ("afile", "Fix: a file is where"), setup=lambda w: (w.dir / "afile").write_text("mine\n")),
    Case("checkpoint path is a folder", train(), 2, ("run.json.ckpt: Is a directory", "remove or rename the folder"),
         setup=folder("out/run.json.ckpt")),
    Case("read-only output folder", train(out="ro/run.json"), 2, RO_SAYS,
         setup=lambda w: w.read_only("ro")),
    Case("full disk before training", train(out="full/run.json"), 2,
         ("full: No space left on device", "Fix: free space on that file system (df -h"),
         setup=lambda w: w.tmpfs("full", "64k", fill=True)),
    Case("full disk at a checkpoint", train("--checkpoint-every", "1", out="small/run.json"), 2,
         ("round 1: cannot write the checkpoint", "run.json.ckpt: No space left on device", "free space",
          "previous checkpoint (if any) is kept"), setup=lambda w: w.tmpfs("small", "64k")),
    Case("full disk at the final write", train(out="small/run.json"), 2,
         ("small/run.json: No space left on device", "free space"), setup=lambda w: w.tmpfs("small", "8k")),
    Case("checkpoint of another config", train(), 2,
         ("was written by another configuration", "delete it to start this configuration from round 1"),
         setup=lambda w: w.checkpoint_of({**RUN, "lr": 0.01})),
    Case("checkpoint unreadable", train(), 2, ("is unreadable", "delete it to restart the run from round 1"),
         setup=lambda w: ((w.dir / "out").mkdir(), (w.dir / "out" / "run.json.ckpt").write_bytes(b"garbage"))),
    # --- the workflow: config keys, values and grid, refused before any job --------------------
    Case("figures key misspelt (issue)", snake(), 1,
         ("config error: figures: unknown key(s) 'svd_rank'; valid keys: f3, learning_curves, acc_vs_bytes, svd_ranks",),
         setup=tiny(**{"figures": {"svd_rank": {"enabled": False}}})),
    Case("scheme_per_dataset misspelt (issue)", snake(), 1,
         ("partition.scheme_per_dataset: key 'breastmnsit' is not one of:", "breastmnist"),
         setup=tiny(**{"partition.scheme_per_dataset": {"breastmnsit": "dirichlet_client"}})),
    Case("no fedmic arm, T6 on (issue)", snake(), 1,
         ("tables.t6.base: there is no arm 'fedmic' under methods (defined: fedavg)",
          "add one or set tables.t6.base", "tables.t6.enabled: false"),
         setup=tiny(**{"methods.fedmic": None, "tables.t6": {"values": {"tau": [1]}}})),
    Case("tensorboard: true without tensorboard", snake(dry=True), 1, ("tensorboard: true, but", TENSORBOARD_FIX),
         setup=lambda w: (tiny(tensorboard=True)(w), no_tensorboard(w)), env=NO_TENSORBOARD_ENV),
    Case("t6.base misspelt (issue)", snake(), 1, ("tables.t6.base: there is no arm 'fedmci' under methods",),
         setup=tiny(**{"tables.t6": {"base": "fedmci", "values": {"tau": [1]}}})),
    Case("t5.base misspelt", snake(), 1, ("tables.t5.base: there is no arm 'fedmc' under methods",),
         setup=tiny(**{"tables.t5": {"base": "fedmc", "arms": {"no-gpd": {"hp": {"gpd": False}}}}})),
    Case("t6 varies what the base lacks", snake(), 1,
         ("tables.t6.values.tau: the base arm 'fedavg' (method fedavg) has no hyperparameter tau",),
         setup=tiny(**{"tables.t6": {"base": "fedavg", "values": {"tau": [1]}}})),
    Case("fedmic tau -1 in the config", snake(), 1, ("methods.fedmic.hp.tau must be > 0, got -1", "distillation temperature"),
         setup=tiny(**{"methods.fedmic.hp": {"tau": -1}})),
    Case("fedmic fixed_rank 'x' in the config", snake(), 1, ("methods.fedmic.hp.fixed_rank must be an integer or null",),
         setup=tiny(**{"methods.fedmic.hp": {"fixed_rank": "x"}})),
    Case("ablation arm with a shrinking schedule (issue)", snake(), 1,
         ("tables.t5.arms.bad, run breastmnist lam=0.5 K=3 join_ratio=1 seed=0: fedmic: energy_start (0.99) > "
          "energy_end (0.95)",),
         setup=tiny(**{"tables.t5": {"arms": {"bad": {"hp": {"energy_start": 0.99, "energy_end": 0.95}}}}})),
    Case("ablation arm identical to its base", snake(), 1,
         ("methods.fedmic and tables.t5.arms.fedmic-delta are the same runs",
          "change a setting of 'fedmic-delta' or remove it"),
         setup=tiny(**{"tables.t5": {"arms": {"fedmic-delta": {"hp": {"decompose": "delta"}}}}})),
    Case("fedprox mu -1 in the config (issue)", snake(), 1, ("methods.prox.hp.mu must be >= 0, got -1",),
         setup=tiny(**{"methods.prox": {"method": "fedprox", "hp": {"mu": -1}}})),
    Case("unknown hyperparameter in the config", snake(), 1,
         ("methods.fedmic.hp: unknown key(s) 'taux'; valid keys: alpha, beta, tau",),
         setup=tiny(**{"methods.fedmic.hp": {"taux": 1}})),
    Case("unknown top-level key", snake(), 1, ("unknown key(s) 'result'; valid keys: results, logs, data_root",),
         setup=tiny(result="x")),
    Case("grid axis under train", snake(), 1, ("train: unknown key(s) 'lam'; valid keys: clients, rounds",),
         setup=tiny(**{"train.lam": 0.3})),
    Case("clients in an arm's train", snake(), 1,
         ("methods.fedavg.train: key 'clients' is not allowed here", "grid axes"),
         setup=tiny(**{"methods.fedavg.train": {"clients": 5}})),
    Case("table key that is ignored", snake(), 1, ("tables.t4: unknown key(s) 'lams'; valid keys: enabled, target",),
         setup=tiny(**{"tables.t4": {"lams": [0.1]}})),
    Case("T2 lists an unknown arm", snake(), 1, ("tables.t2.arms: unknown arm 'fedavgg'; defined arms: fedavg, fedmic",),
         setup=tiny(**{"tables.t2": {"arms": ["fedavgg"]}})),
    Case("arm name unusable in a path", snake(), 1, ("methods: key 'fed avg' is not valid", "letters, digits and _ . + -"),
         setup=tiny(**{"methods.fed avg": {"method": "fedavg"}})),
    Case("fedbn arm on the plain cnn", snake(), 1,
         ("methods.bn, run breastmnist", "use model cnn_bn or resnet18 (the arm's train: {model: cnn_bn})"),
         setup=tiny(**{"methods.bn": {"method": "fedbn"}})),
    Case("SVD-rank figure without a factorising arm", snake(), 1,
         ("figures.svd_ranks plots the upload ranks of fedkd or fedmic arms, and T2 has none",
          "figures.svd_ranks.enabled: false"), setup=tiny(**{"methods.fedmic": None})),
    Case("arm defined twice", snake(), 1, ("arm name 'fedmic' is defined twice with different settings; rename one",),
         setup=tiny(**{"tables.t5": {"arms": {"fedmic": {"hp": {"gpd": False}}}}})),
    Case("negative lambda", snake(), 1, ("lams.0 must be > 0, got -0.5",), setup=tiny(lams=[-0.5])),
    Case("device gpu in the config", snake(), 1, ("train.device: value 'gpu' is not valid [auto, cpu, cuda or cuda:N]",),
         setup=tiny(**{"train.device": "gpu"})),
    # --- the workflow: Snakemake-level mistakes ----------------------------------------------
    Case("target of a disabled table", snake("table_t5"), 1,
         ("target table_t5: tables.t5 is switched off in the config (tables.t5.enabled: false)",
          "remove that line (or set it to true)"), setup=tiny()),
    Case("unknown table target", snake("table_t10"), 1,
         ("unknown target table_t10; table targets: table_t1, table_t2",), setup=tiny()),
    Case("run JSON given as --configfile", ["snakemake", "--cores", "1", "--configfile", "{cfg}", "{a_run}"], 1,
         ("is an output of this workflow, not a config", TARGETS_FIX), setup=tiny()),
    Case("target written after --configfile", ["snakemake", "--cores", "1", "--configfile", "{cfg}", "all"], 1,
         (TARGETS_FIX,), setup=tiny(),
         mark=pytest.mark.xfail(strict=True, reason="Snakemake opens --configfile files before it reads the Snakefile "
                                                    "and crashes with FileNotFoundError: 'all' (a traceback)")),
    # issue 24: workflow checks before any job
    Case("seeds listed twice (issue 24)", snake(), 1,
         ("config error: seeds lists 0 twice so the same runs would be planned twice; list each value once",),
         setup=tiny(seeds=[0, 0])),
    Case("lams written alike in file names", snake(), 1,
         ("lams lists 0.5 and 0.5000001, which file names both write as '0.5'", "list each value once"),
         setup=tiny(lams=[0.5, 0.5000001])),
    Case("datasets listed twice in a table", snake(), 1, ("tables.t2.datasets lists 'breastmnist' twice",),
         setup=tiny(**{"tables.t2": {"datasets": [FLAG, FLAG]}})),
    Case("T6 value listed twice", snake(), 1, ("tables.t6.values.tau lists 2.0 twice",),
         setup=tiny(**{"tables.t6": {"values": {"tau": [2, 2.0]}}})),
    Case("read-only results folder (issue 24)", snake(), 1, ("ro/results",) + RO_SAYS[1:],
         setup=lambda w: (w.read_only("ro"), tiny(results="ro/results")(w))),
    Case("results folder of another workflow (issue 24)", snake(), 1,
         ("results-tiny is in use by another workflow (pid ", "working directory",
          "wait for it to finish, or give this config another results folder"),
         setup=lambda w: (tiny()(w), (w.dir / "results-tiny" / "tables" / "t2.md").unlink(),
                          w.hold_lock("results-tiny"))),
    # issue 24: inputs, partitions, printed fixes ------------------------------------------
    # outputs over inputs, or over files of another kind: refused before any work
    Case("train --out is its partition", train(out="p.json"), 2,
         ("p.json (--out) is also an input (--partition", "would replace that partition file", "choose another --out")),
    Case("train --out is its config", ["train", "--config", "cfg.yaml", "--partition", "{part}", "--out", "cfg.yaml"], 2,
         ("cfg.yaml (--out) is also an input (--config cfg.yaml)", "choose another --out"),
         setup=config_file(yaml.safe_dump(RUN))),
    Case("train --out holds a timing file", train(out="out/r.timing.json"), 2,
         ("out/r.timing.json holds a timing file; `fedmic train` would replace it with a run JSON",),
         setup=lambda w: write(w, "out/r.timing.json", '{"rounds": []}\n')),
    Case("collect --out is its run JSON", ["collect", "--inputs", "run.json", "--out", "run.json"], 2,
         ("run.json (--out) is also an input (--inputs run.json)", "would replace that run JSON"),
         setup=fake_run),
    Case("collect --out holds a partition", ["collect", "--inputs", "run.json", "--out", "{part}"], 2,
         ("p.json holds a partition file; `fedmic collect` would replace it with a results file",),
         setup=fake_run),
    Case("collect --provenance is its run JSON",
         ["collect", "--inputs", "run.json", "--out", "r.csv.gz", "--provenance", "run.json"], 2,
         ("run.json (--provenance) is also an input (--inputs run.json)",), setup=fake_run),
    Case("table --out writes over its results file", ["table", "t2", "--inputs", "t2.csv", "--out", "t2"], 2,
         ("t2.csv (--out) is also an input (--inputs t2.csv)", "would replace that results file"),
         setup=lambda w: write(w, "t2.csv", RESULTS_HEAD + "\n")),
    Case("figure --out writes over its input", ["figure", "learning_curves", "--inputs", "r.pdf", "--out", "r"], 2,
         ("r.pdf (--out) is also an input (--inputs r.pdf)",), setup=lambda w: write(w, "r.pdf", "%PDF-1.4\n")),
    Case("partition --out holds a run JSON", ["partition", "--dataset", FLAG, "--root", "{data}", "--lam", "0.5",
                                              "--clients", "3", "--out", "run.json"], 2,
         ("run.json holds a run JSON; `fedmic partition` would replace it with a partition file",),
         setup=fake_run),
    Case("stamp-partition --out is its input", ["stamp-partition", "--in", "mine.json", "--out", "mine.json"], 2,
         ("mine.json (--out) is also an input (--in mine.json)",), setup=lambda w: write(w, "mine.json", "{}\n")),
    Case("flower app over a project", ["flower", "app", "--out", "proj"], 2,
         ("proj/pyproject.toml holds a pyproject.toml of another project", "choose another --out"),
         setup=lambda w: write(w, "proj/pyproject.toml", '[project]\nname = "mine"\n')),
    Case("download onto a file that is not the dataset", ["download", "--dataset", FLAG, "--root", "root", "--quiet"], 2,
         ("has MD5", "Fix: delete it and download it again, `rm", f"fedmic download --dataset {FLAG} --size 28 --root"),
         setup=lambda w: write(w, f"root/{FLAG}.npz", w.part.read_text()), fix=True),
    # partitions that are not what they say
    Case("partition: five training indices removed", train(), 2,
         ("p.json was changed after it was made: its digest does not match", "Fix: `fedmic partition --dataset "
          f"{FLAG} --size 28 --root"), setup=edit_part(lambda d: d["indices"]["train"][0].__delitem__(slice(0, 5))),
         fix=True),
    Case("partition: a client emptied", train(), 2,
         ("p.json: client 1 has 0 training images", "a client needs a training image", "Fix: `fedmic partition"),
         setup=edit_part(lambda d: d["indices"]["train"][1].clear()), fix=True),
    Case("partition: size field deleted", train(), 2, ("p.json: missing field(s) ['n_images']",),
         setup=edit_part(lambda d: d.pop("n_images")), fix=True),
    Case("partition: index 10000", train(), 2,
         ("p.json: client 0 has index 10000 in split 'train', outside [0, 546)",),
         setup=edit_part(lambda d: d["indices"]["train"][0].append(10000)), fix=True),
    Case("partition: index -1", train(), 2, ("p.json: client 0 has index -1 in split 'train', outside [0, 546)",),
         setup=edit_part(lambda d: d["indices"]["train"][0].append(-1))),
    Case("partition of an older fedmic", train(), 2,
         ("format is 'fedmic-partition/1'", "without the digest every load checks", "Fix: `fedmic partition"),
         setup=edit_part(lambda d: d.update(format="fedmic-partition/1")), fix=True),
    Case("partition of other settings, fix as printed", train(config={"lam": 0.1}), 2,
         ("field 'lam' is 0.5 in the file but 0.1 is expected", "--lam 0.1 --clients 3"), fix=True),
    Case("partition truncated, fix as printed", train(), 2, ("is truncated or not valid JSON", "Fix: `fedmic partition"),
         setup=lambda w: w.part.write_bytes(w.part.read_bytes()[:200]), fix=True),
    Case("partition missing, fix as printed", train(), 2, ("missing.json not found; make it with `fedmic partition",),
         setup=lambda w: setattr(w, "part", w.dir / "missing.json"), fix=True),
    Case("partition with an empty client asked for", ["partition", "--dataset", FLAG, "--root", "{data}", "--lam", "0.5",
                                                      "--clients", "3", "--min-size", "0", "--out", "p2.json"], 2,
         ("min_size must be an integer >= 1 (every client needs a training image), got 0",)),
    Case("custom partition with an empty client", ["stamp-partition", "--in", "mine.json", "--root", "{data}",
                                                   "--out", "c.json"], 2,
         ("mine.json: client 2 has 0 training images",), setup=lambda w: w.custom("mine.json", empty=2)),
    Case("checkpoint of another partition", train(), 2,
         ("checkpoint out/run.json.ckpt was written with another partition", "than", "p.json",
          "Fix: give the partition it was made with, or `rm out/run.json.ckpt`"),
         setup=lambda w: (w.checkpoint_of(RUN), w.custom("mine.json"), stamp(w, "mine.json", w.part)), fix=True),
    # printed fixes: the command as printed, then the row's own command, both succeed
    Case("image_size 64 with only 28x28 files", train(config={"image_size": 64}), 2,
         (f"'{FLAG}' (64x64 images) not found at", f"{FLAG}_64.npz", f"`fedmic download --dataset {FLAG} --size 64 "
          "--root"),
         setup=lambda w: setattr(w, "data", w.dir / "root")),
    Case("dataset file missing, fix as printed", train(), 2,
         (f"Run `fedmic download --dataset {FLAG} --size 28 --root",),
         setup=lambda w: ((w.dir / "root").mkdir(), setattr(w, "data", w.dir / "root")), fix=True),
    Case("truncated .npz, fix as printed", train(), 2, ("has MD5", "`rm", "--size 28 --root"),
         setup=lambda w: (write(w, f"root/{FLAG}.npz", (DATA / f"{FLAG}.npz").read_bytes()[:50_000]),
                          setattr(w, "data", w.dir / "root")), fix=True),
    Case("folder in place of the .npz, fix as printed", train(), 2, ("is a folder", "`rmdir"),
         setup=lambda w: (folder(f"root/{FLAG}.npz")(w), setattr(w, "data", w.dir / "root")), fix=True),
    Case("partition given to collect", ["collect", "--inputs", "{part}", "--out", "r.csv.gz"], 2,
         ("p.json is a partition file, not a run JSON: give run JSONs",)),
    Case("corrupt run JSON given to collect", ["collect", "--inputs", "run.json", "--out", "r.csv.gz"], 2,
         ("run.json: run JSON is truncated or not JSON", "Fix: `rm run.json`, then rerun the workflow"),
         setup=lambda w: write(w, "run.json", '{"format": "fedmic-r')),
    Case("truncated timing file", ["collect", "--inputs", "run.json", "--out", "r.csv.gz"], 2,
         ("run.timing.json: the timing file of run.json is truncated", "Fix: `rm run.timing.json`"),
         setup=lambda w: w.finished_run(timing=b'{"rounds": [{"rou'), fix=True),
    # issue 22: tuning
    Case("select --out is one of its trials", ["select", "--inputs", "run.json", "--out", "run.json"], 2,
         ("run.json (--out) is also an input (--inputs run.json)", "would replace that run JSON"),
         setup=fake_run),
    Case("select --out holds a partition", ["select", "--inputs", "run.json", "--out", "{part}"], 2,
         ("p.json holds a partition file; `fedmic select` would replace it with a tuning selection",),
         setup=fake_run),
    Case("tuning seed among the reported seeds", snake(), 1,
         ("config error: tuning.seed 0 is also a reported seed; tune on a seed of its own",),
         setup=tiny(tuning={"budget": 2, "rounds": 1, "seed": 0})),
]

# Rows that succeed on purpose: the message (if any) is a notice, and the run goes ahead.
ALLOWED = [
    Case("no fedmic arm with T5/T6 off (issue)", snake(dry=True), 0, (),
         setup=tiny(**{"methods.fedmic": None, "figures": {"svd_ranks": {"enabled": False}}})),
    Case("no data root anywhere", snake(dry=True), 0,
         (f"MedMNIST files are read from, and downloaded to, {UNNAMED_ROOT}:", "data_root", f"${ENV_ROOT}"),
         setup=tiny(), env={ENV_ROOT: None}),
    # issue 24: a dry run writes nothing, so it may look at a read-only or busy results folder
    Case("dry run on a read-only results folder", snake(dry=True), 0, (),
         setup=lambda w: (w.read_only("ro"), tiny(results="ro/results")(w))),
    Case("dry run beside another workflow", snake(dry=True), 0, (),
         setup=lambda w: (tiny()(w), (w.dir / "results-tiny" / "tables" / "t2.md").unlink(),
                          w.hold_lock("results-tiny"))),
]


# --------------------------------------------------------------------------- the machinery
class World:
    """A case's folder: a partition for RUN, the real data, and for workflow rows a finished
    tiny pipeline (its outputs complete and up to date)."""

    def __init__(self, path: Path, part: Path, workflow_dir: Path | None):
        self.dir, self.data = path, DATA
        self.part = path / "p.json"
        shutil.copy(part, self.part)
        if workflow_dir is not None:
            shutil.copytree(workflow_dir, path, dirs_exist_ok=True, symlinks=True)
        self.mounts: list[Path] = []
        self.holders: list[subprocess.Popen] = []

    def tmpfs(self, rel: str, size: str, fill: bool = False, ro: bool = False) -> Path:
        d = self.dir / rel
        d.mkdir(parents=True)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], capture_output=True).returncode:
            pytest.skip("needs root to mount a small tmpfs")
        self.mounts.append(d)
        (d / "earlier.json").write_text('{"an": "earlier result"}\n')  # must survive untouched
        if fill:
            with open(d / "filler", "wb", buffering=0) as f, pytest.raises(OSError, match="No space"):
                while True:
                    f.write(b"\0" * 4096)
        if ro:
            subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True)
        return d

    def read_only(self, rel: str) -> None:
        if os.geteuid() == 0:  # root writes through chmod: use a read-only file system
            self.tmpfs(rel, "64k", ro=True)
        else:
            d = self.dir / rel
            d.mkdir()
            (d / "earlier.json").write_text('{"an": "earlier result"}\n')
            d.chmod(0o555)

    def hold_lock(self, rel: str) -> None:
        """Another process (as a second workflow would be) holding the lock of the folder `rel`."""
        code = ("import sys; from fedmic.utils import hold_folder_lock; hold_folder_lock(sys.argv[1]); "
                "print('held', flush=True); sys.stdin.read()")
        p = subprocess.Popen([sys.executable, "-c", code, str(self.dir / rel)], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        self.holders.append(p)
        assert p.stdout.readline().strip() == "held"
    def custom(self, name: str, empty: int | None = None) -> None:
        """A user's own indices (the row's partition less five training images of client 0)."""
        d = json.loads(self.part.read_text())
        mine = {k: d[k] for k in ("dataset", "scheme", "lam", "clients", "seed", "min_size", "indices")}
        del mine["indices"]["train"][0][:5]
        if empty is not None:
            mine["indices"]["train"][empty] = []
        (self.dir / name).write_text(json.dumps(mine))

    def finished_run(self, timing: bytes) -> None:
        """run.json of a real run of RUN, its timing file replaced by `timing`."""
        shutil.copy(real_run(self.part), self.dir / "run.json")
        (self.dir / "run.timing.json").write_bytes(timing)

    def checkpoint_of(self, run: dict) -> None:
        from fedmic.config import RunConfig
        from fedmic.engine import Simulation
        from fedmic.simulation.checkpoint import save_checkpoint
        sim = Simulation(RunConfig(**{**run, "progress": False, "threads": 1}), self.part, DATA)
        save_checkpoint(sim, self.dir / "out" / "run.json", 1)

    def close(self):
        for p in self.holders:
            p.communicate("")  # end of its stdin: it exits, and its lock goes with it
        for d in reversed(self.mounts):
            subprocess.run(["umount", str(d)], check=False)
            shutil.rmtree(d, ignore_errors=True)


_REAL_RUN: dict[str, Path] = {}


def real_run(part: Path) -> Path:
    """One real run of RUN (trained once per session)."""
    if "run" not in _REAL_RUN:
        import atexit
        import tempfile
        folder = tempfile.mkdtemp(prefix="real-run-")
        atexit.register(shutil.rmtree, folder, True)
        out = Path(folder) / "run.json"
        subprocess.run([FEDMIC, *[a.format(part=part, data=DATA) if a in ("{part}", "{data}") else a for a in
                                  train(out=str(out))]], check=True, capture_output=True,
                       env={**os.environ, ENV_ROOT: str(DATA)})
        _REAL_RUN["run"] = out
    return _REAL_RUN["run"]


def tree_hash(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and ".snakemake" not in p.parts:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def part(tmp_path_factory) -> Path:
    from fedmic.data.medmnist import load_dataset
    from fedmic.data.partition import make_partition, save_partition
    d = load_dataset(FLAG, DATA)
    labels = {s: d.split(s)[1].numpy() for s in ("train", "val", "test")}
    p = make_partition("dirichlet_label", labels, RUN["clients"], RUN["lam"], 0, 10, n_classes=d.n_classes,
                       dataset=FLAG, dataset_md5=d.info.md5(28))
    return save_partition(p, tmp_path_factory.mktemp("part") / "p.json")


@pytest.fixture(scope="module")
def finished_workflow(tmp_path_factory) -> Path:
    """config/tiny.yaml's outputs, present and up to date (created and marked done: the rows
    only need them to exist)."""
    wd = tmp_path_factory.mktemp("finished")
    mark_outputs_done(REPO / "workflow" / "Snakefile", wd, REPO / "config" / "tiny.yaml", {ENV_ROOT: str(DATA)})
    return wd


_MIRROR: dict[str, str] = {}


def mirror_url() -> str:
    """A local HTTP server of the real MedMNIST files: the download mirror of every row, as no
    test reaches Zenodo (started once, a daemon thread)."""
    if "url" not in _MIRROR:
        import functools
        import http.server
        import threading
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(DATA))
        handler.log_message = lambda *a: None
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        _MIRROR["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    return _MIRROR["url"]


def closed_port_url() -> str:
    with socket.socket() as s:  # a port nothing listens on: as good as no network
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/{FLAG}.npz"


def run_case(case: Case, tmp_path, part, finished_workflow, then_fix=False):
    workflow = case.argv[:1] == ["snakemake"]
    w = World(tmp_path, part, finished_workflow if workflow else None)
    try:
        if case.setup:
            case.setup(w)
        a_run = next((w.dir / "results-tiny" / "runs").rglob("seed0.json")) if workflow else None
        fill = {"part": str(w.part), "data": str(w.data), "cfg": str(w.dir / "cfg.yaml"), "dir": str(w.dir),
                "closed_url": closed_port_url(), "a_run": str(a_run)}
        argv = [a.format(**fill) if a.startswith("{") and a.endswith("}") and a[1:-1] in fill else a for a in case.argv]
        cmd = [*SNAKEMAKE, *argv[1:]] if workflow else [FEDMIC, *argv]
        env = {**os.environ, ENV_ROOT: str(DATA), "HOME": str(w.dir / "home"), MIRROR_ENV: mirror_url(),
               "PATH": f"{Path(FEDMIC).parent}{os.pathsep}{os.environ.get('PATH', '')}", **case.env}
        env = {k: v for k, v in env.items() if v is not None}
        before = tree_hash(w.dir)
        p = subprocess.run(cmd, cwd=w.dir, env=env, capture_output=True, text=True, timeout=300)
        after = tree_hash(w.dir)
        if then_fix:
            printed = printed_command(p.stderr)
            fixed = subprocess.run(["bash", "-c", printed], cwd=w.dir, env=env, capture_output=True, text=True,
                                   timeout=300)
            again = subprocess.run(cmd, cwd=w.dir, env=env, capture_output=True, text=True, timeout=300)
            return p, before, after, (printed, fixed, again)
    finally:
        w.close()
    return p, before, after


def printed_command(stderr: str) -> str:
    """The first command a message prints in backquotes (the fix it suggests)."""
    found = [c for c in re.findall(r"`([^`]+)`", stderr) if c.startswith(("fedmic ", "rm ", "rmdir "))]
    assert found, f"no command printed:\n{stderr}"
    return found[0]


def check(case: Case, p, before, after):
    err = p.stderr
    lines = [ln for ln in err.splitlines() if ln.strip()]
    ours = [ln for ln in lines if ln.startswith(("fedmic ", "fedmic:"))]
    assert p.returncode == case.code, f"exit {p.returncode}:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    if case.says:
        assert len(ours) == 1, f"expected one fedmic line:\n{err[-3000:]}"
        if case.code and case.argv[:1] != ["snakemake"]:
            assert len(lines) == 1, err  # the CLI prints nothing else
        for fragment in case.says:
            assert fragment in ours[0], f"{fragment!r} not in:\n{ours[0]}"
    changed = sorted(k for k in before if before[k] != after.get(k))
    assert not changed, f"files changed or removed: {changed}"
    if case.code:
        new = sorted(set(after) - set(before))
        assert not [f for f in new if not f.startswith(("home/", "logs-tiny/", ".snakemake"))], new


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.mark or ()) for c in CASES])
def test_bad_input_is_refused(case, tmp_path, part, finished_workflow):
    check(case, *run_case(case, tmp_path, part, finished_workflow))


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.mark or ()) for c in CASES if c.fix])
def test_printed_fix_works(case, tmp_path, part, finished_workflow):
    """The command the message prints, run as printed, then the row's own command: both succeed."""
    p, before, after, (printed, fixed, again) = run_case(case, tmp_path, part, finished_workflow, then_fix=True)
    check(case, p, before, after)
    assert fixed.returncode == 0, f"`{printed}` failed:\n{fixed.stderr[-3000:]}"
    assert again.returncode == 0, f"after `{printed}`, the command still fails:\n{again.stderr[-3000:]}"


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in ALLOWED])
def test_allowed_input_goes_ahead(case, tmp_path, part, finished_workflow):
    check(case, *run_case(case, tmp_path, part, finished_workflow))


def test_enough_rows():
    assert len(CASES) + len(ALLOWED) >= 40


def test_corrupt_run_json_in_the_workflow_fix_as_printed(tmp_path):
    """A run JSON under results/ cut short: the job that reads it stops with one line naming the
    file and the command that gets it rewritten; that command as printed, then `snakemake`
    again, retrains exactly that run (the same bytes as before) and finishes the workflow."""
    env = {**os.environ, ENV_ROOT: str(DATA)}
    sm = [*SNAKEMAKE, "--directory", str(tmp_path), "--cores", "1", "all", "--configfile", str(REPO / "config/tiny.yaml")]
    subprocess.run(sm, env=env, check=True, capture_output=True, timeout=900)
    runs = sorted((tmp_path / "results-tiny" / "runs").rglob("seed0.json"))
    victim, others = runs[0], runs[1:]
    good = victim.read_bytes()
    kept = {p: p.read_bytes() for p in [*others, *(tmp_path / "results-tiny" / "partitions").rglob("*.json")]}
    victim.write_bytes(good[: len(good) // 2])

    p = subprocess.run(sm, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode != 0, p.stderr[-3000:]
    logs = [f for f in (tmp_path / "logs-tiny").rglob("*.log") if "run JSON is truncated" in f.read_text()]
    assert logs, p.stderr[-3000:]
    for log in logs:
        text = log.read_text()
        assert "Traceback" not in text, text
        lines = [ln for ln in text.splitlines() if ln.startswith("fedmic ")]
        assert len(lines) == 1 and str(victim.relative_to(tmp_path)) in lines[0], text
    assert all(path.read_bytes() == data for path, data in kept.items())

    printed = printed_command(lines[0])
    assert printed == f"rm {victim.relative_to(tmp_path)}"
    # the two steps as printed: the rm, then the workflow with the flags the message names
    subprocess.run(["bash", "-c", printed], cwd=tmp_path, check=True)
    flags = re.search(r"rerun the workflow with `([^`]+)` added", lines[0]).group(1).split()
    again = subprocess.run([*sm, *flags], env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert victim.read_bytes() == good
    assert all(path.read_bytes() == data for path, data in kept.items())


def test_printed_download_asks_for_the_configured_size(tmp_path, part, finished_workflow):
    """The 64x64 row's printed command cannot succeed here (no network, no 64x64 file in the
    mirror), but it asks the mirror for breastmnist_64.npz and would put it where training looks."""
    case = next(c for c in CASES if c.id == "image_size 64 with only 28x28 files")
    p, before, after, (printed, fixed, again) = run_case(case, tmp_path, part, finished_workflow, then_fix=True)
    check(case, p, before, after)
    assert printed == f"fedmic download --dataset {FLAG} --size 64 --root {tmp_path / 'root'}"
    assert fixed.returncode == 2 and f"{mirror_url()}/{FLAG}_64.npz" in fixed.stderr, fixed.stderr
    assert f"copy it to {tmp_path / 'root' / (FLAG + '_64.npz')}" in fixed.stderr, fixed.stderr


def test_a_custom_partition_is_stamped_and_its_runs_say_so(tmp_path, part):
    """A user's own indices go through `fedmic stamp-partition`; the run JSON says custom and
    carries the partition's digest, and an edit after stamping is refused like any other."""
    w = World(tmp_path, part, None)
    w.custom("mine.json")
    env = {**os.environ, ENV_ROOT: str(DATA)}
    stamped = subprocess.run([FEDMIC, "stamp-partition", "--in", "mine.json", "--out", "c.json"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
    assert stamped.returncode == 0, stamped.stderr
    c = json.loads((tmp_path / "c.json").read_text())
    made = json.loads(w.part.read_text())
    assert c["custom"] is True and len(c["indices"]["train"][0]) == len(made["indices"]["train"][0]) - 5
    argv = [a.replace("{part}", "c.json").replace("{data}", str(DATA)) for a in train(out="run.json")]
    run = subprocess.run([FEDMIC, *argv], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    rec = json.loads((tmp_path / "run.json").read_text())["partition"]
    assert rec["custom"] is True and rec["digest"] == c["digest"]
    c["indices"]["train"][0].pop()
    (tmp_path / "c.json").write_text(json.dumps(c))
    again = subprocess.run([FEDMIC, *argv], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "c.json was changed after it was made" in again.stderr
    assert "fedmic stamp-partition --in YOURS.json --out c.json" in again.stderr, again.stderr
