# Config validation and every input function; the grid logic itself lives in fedmic.grid.
import json
import os
import re
import shlex
import subprocess
import sys

from snakemake.exceptions import WorkflowError
from snakemake.sourcecache import LocalSourceFile
from snakemake.utils import validate


def git_describe(folder):
    """'<folder> @ <commit>[ (uncommitted changes)]', or the folder alone outside git."""
    try:
        git = ["git", "-C", folder]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return folder
    return f"{folder} @ {commit.strip()}{' (uncommitted changes)' if dirty.strip() else ''}"


def require_installed_fedmic(version):
    try:
        import fedmic
    except ImportError:
        raise WorkflowError(
            f"this workflow is a module from a git URL, so its jobs need the fedmic package "
            f"installed beside Snakemake: pip install fedmic=={version} (or run with --sdm conda)"
        ) from None
    if fedmic.__version__ != version:
        raise WorkflowError(
            f"the workflow is fedmic {version} but the installed package is fedmic "
            f"{fedmic.__version__} ({os.path.dirname(fedmic.__file__)}): pip install fedmic=={version}"
        )


# Where jobs get the fedmic package. From a checkout (the Snakefile run in place, or a module
# given by a local path), jobs import that checkout's package: the code this workflow came
# with. As a module from a git URL (`snakefile: github(...)` or "git+file://...@ref") only
# workflow files are fetched, so the package comes installed beside Snakemake (`pip install
# fedmic==<version>`) or, under --sdm conda, from workflow/envs/fedmic.yaml; either way at
# exactly this workflow's version. workflow.basedir is the *user's* folder in a module:
# current_basedir is this file's.
_rules_dir = workflow.current_basedir
WORKFLOW_VERSION = re.search(
    r'__version__ = "([^"]+)"',
    open(workflow.source_path("../../fedmic/__init__.py")).read(),
).group(1)
if isinstance(_rules_dir, LocalSourceFile):
    CHECKOUT = os.path.abspath(os.path.join(str(_rules_dir), "..", ".."))
    sys.path.insert(0, CHECKOUT)
    _pythonpath = f"PYTHONPATH={shlex.quote(CHECKOUT)}${{PYTHONPATH:+:$PYTHONPATH}} "
    WORKFLOW_SOURCE = git_describe(CHECKOUT)
else:
    CHECKOUT, _pythonpath = None, ""
    WORKFLOW_SOURCE = _rules_dir.get_path_or_uri(secret_free=True)
    require_installed_fedmic(WORKFLOW_VERSION)
_conda = "conda" in str(getattr(workflow.deployment_settings, "deployment_method", ""))
_python = "python" if _conda else shlex.quote(sys.executable)
# PYTHONSAFEPATH (Python >= 3.11): `python -m` leaves the job's working directory off the path,
# so a `fedmic/` folder there can never stand in for the package
_pythonpath = f"PYTHONSAFEPATH=1 {_pythonpath}"
FEDMIC = f"{_pythonpath}{_python} -m fedmic.cli"

from fedmic import grid
from fedmic.config import ConfigError
from fedmic.gpus import visible_gpus

# GPUs (fedmic/gpus.py): a training job takes one unit of the `gpu` resource. The pool is
# --resources gpu=N when given (the SLURM profiles give one of their own), else the number of
# GPUs this machine shows; none on a CPU machine, where --cores alone limits how many runs
# train at once. With more than one GPU, each job takes a slot of its own (slot s on GPU
# s mod G), so --resources gpu=2G packs two runs on each GPU.
GPUS = visible_gpus()
if "gpu" not in workflow.global_resources and GPUS:
    workflow.register_resource("gpu", len(GPUS))
_pool = getattr(workflow.global_resources.get("gpu"), "value", None)
if len(GPUS) > 1 and isinstance(_pool, int):
    FEDMIC_TRAIN = f"{_pythonpath}{_python} -m fedmic.gpus --slots {_pool} -- {_python} -m fedmic.cli train"
else:
    FEDMIC_TRAIN = f"{FEDMIC} train"


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results"]
LOGS = config.get("logs", "logs")
DATA_ROOT = os.path.abspath(
    os.path.expanduser(config.get("data_root") or os.getenv("FEDMIC_MEDMNIST_ROOT") or "~/.medmnist")
)

try:
    RUNS = grid.all_runs(config)
    ARMS = grid.all_arms(config)
    # Validates every run's full config now, so a bad value fails before any job starts.
    RUN_CONFIGS = {key: grid.run_config(config, key) for key in RUNS}
except ConfigError as e:
    raise ValueError(f"config error: {e}") from None


wildcard_constraints:
    dataset=r"[a-z0-9]+",
    lam=r"[0-9.e+-]+",
    clients=r"\d+",
    jr=r"[0-9.e+-]+",
    arm=r"[A-Za-z0-9_.+-]+",
    seed=r"\d+",
    scheme=r"[a-z_]+",


def run_key(wc):
    return grid.RunKey(wc.dataset, float(wc.lam), int(wc.clients), float(wc.jr), wc.arm, int(wc.seed))


def run_config_json(wc):
    key = run_key(wc)
    cfg = RUN_CONFIGS.get(key) or grid.run_config(config, key)
    return json.dumps(cfg, sort_keys=True)


def partition_of_run(wc):
    key = run_key(wc)
    return grid.partition_path(config, key.dataset, key.lam, key.clients, key.seed)


def code_of_run(wc):
    return grid.code_files(ARMS[wc.arm]["method"])


def dataset_file(dataset):
    return f"{DATA_ROOT}/{dataset}.npz"


def runs_of(name):
    return [grid.run_path(RESULTS, k) for k in grid.table_runs(config, name)]


def timings_of(name):
    return [grid.timing_file(RESULTS, k) for k in grid.table_runs(config, name)]


def train_runtime_min(wc):
    """Minutes for SLURM: grows with images trained (rounds x join ratio x epochs) and clients."""
    cfg = json.loads(run_config_json(wc))
    sizes = {
        "bloodmnist": 11959,
        "tissuemnist": 165466,
        "organamnist": 34561,
        "organsmnist": 13932,
        "organcmnist": 12975,
        "pneumoniamnist": 4708,
        "retinamnist": 1080,
        "breastmnist": 546,
    }
    images = sizes.get(wc.dataset, 50000) * cfg["rounds"] * cfg["join_ratio"] * cfg["local_epochs"]
    return int(10 + images / 2000 / 60 * 4)  # ~2000 images/s per model on a GPU, 4x margin


def train_mem_mb(wc):
    """Dataset tensors (float32) + per-client persistent state."""
    sizes = {"tissuemnist": 236386, "organamnist": 58830}
    return int(2000 + sizes.get(wc.dataset, 30000) * 28 * 28 * 3 * 4 / 2**20 + 20 * int(wc.clients))


def tidy_file(name):
    """The results file of a table's or figure's runs, named by the first table or figure
    that needs exactly those runs (T2, T4, T8, T9 and two figures share one)."""
    runs = grid.table_runs(config, name)
    first = next(
        n
        for n in (*grid.TABLES, *grid.FIGURES)
        if n not in ("t1", "f3") and grid.enabled(config, n) and grid.table_runs(config, n) == runs
    )
    return f"{RESULTS}/tidy/{first}.csv.gz"


def report_inputs(name):
    """T1 and F3 read the partition files; every other table and figure its results file."""
    if name in ("t1", "f3"):
        return {
            "runs": grid.partitions_for_t1(config),
            "code": grid.report_code_files(),
        }
    return {"runs": tidy_file(name), "code": grid.report_code_files()}


def report_labels(name):
    """Labels of a report item: what it is and which datasets and λ it covers."""
    kind = "table" if name in grid.TABLES else "figure"
    keys = [(k.dataset, k.lam) for k in grid.table_runs(config, "t2" if name in ("t1", "f3") else name)]
    return {
        kind: name.upper() if kind == "table" else name.replace("_", " "),
        "datasets": ", ".join(dict.fromkeys(d for d, _ in keys)),
        "λ": ", ".join(f"{l:g}" for l in sorted({l for _, l in keys})),
    }


def all_targets():
    targets = [f"{RESULTS}/results.csv.gz", f"{RESULTS}/provenance.yaml"]
    for name in grid.TABLES:
        if grid.enabled(config, name):
            targets += [f"{RESULTS}/tables/{name}.{ext}" for ext in ("csv", "md", "tex")]
    for name in grid.FIGURES:
        if grid.enabled(config, name):
            targets += [f"{RESULTS}/figures/{name}.{ext}" for ext in ("png", "pdf")]
    return targets
