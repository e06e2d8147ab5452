# Config validation and every input function; the grid logic itself lives in fedmic.grid.
import json
import os
import sys

from snakemake.utils import validate

# Jobs call the package with the Python that runs Snakemake, or, with --sdm conda, with the
# rule's environment and this checkout on its path (the package is not installed there).
REPO = os.path.abspath(os.path.join(workflow.basedir, ".."))
sys.path.insert(0, REPO)
_conda = "conda" in str(getattr(workflow.deployment_settings, "deployment_method", ""))
FEDMIC = f"env PYTHONPATH={REPO} python -m fedmic.cli" if _conda else f"{sys.executable} -m fedmic.cli"

from fedmic import grid
from fedmic.config import ConfigError


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results"]
LOGS = config.get("logs", "logs")
DATA_ROOT = os.path.abspath(os.path.expanduser(
    config.get("data_root") or os.getenv("FEDMIC_MEDMNIST_ROOT") or "~/.medmnist"))

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
    sizes = {"bloodmnist": 11959, "tissuemnist": 165466, "organamnist": 34561, "organsmnist": 13932,
             "organcmnist": 12975, "pneumoniamnist": 4708, "retinamnist": 1080, "breastmnist": 546}
    images = sizes.get(wc.dataset, 50000) * cfg["rounds"] * cfg["join_ratio"] * cfg["local_epochs"]
    return int(10 + images / 2000 / 60 * 4)  # ~2000 images/s per model on a GPU, 4x margin


def train_mem_mb(wc):
    """Dataset tensors (float32) + per-client persistent state."""
    sizes = {"tissuemnist": 236386, "organamnist": 58830}
    return int(2000 + sizes.get(wc.dataset, 30000) * 28 * 28 * 3 * 4 / 2**20 + 20 * int(wc.clients))


def all_targets():
    targets = []
    for name in grid.TABLES:
        if grid.enabled(config, name):
            targets += [f"{RESULTS}/tables/{name}.{ext}" for ext in ("csv", "md", "tex")]
    for name in grid.FIGURES:
        if grid.enabled(config, name):
            targets += [f"{RESULTS}/figures/{name}.{ext}" for ext in ("png", "pdf")]
    return targets
