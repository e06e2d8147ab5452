"""The experiment grid: which runs each table and figure needs, where every file lives.

The workflow (workflow/rules/common.smk) only calls these functions, so the grid logic is
tested here. A run is identified by (dataset, lam, clients, join_ratio, arm, seed); an arm is
a named method variant (method + hyperparameters + training overrides). Runs are shared
between tables: T2, T4, T8 and T9 read the same runs, and T3's join ratio 1.0 or T7's
default client count are T2's runs again. The partition depends only on (dataset, lam,
clients, partition seed), never on the method.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, RunConfig

TABLES = ("t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9")
FIGURES = ("f3", "learning_curves", "acc_vs_bytes", "svd_ranks")
SENSITIVITY_PARAMS = ("energy", "tau", "alpha", "beta")


@dataclass(frozen=True, order=True)
class RunKey:
    dataset: str
    lam: float
    clients: int
    join_ratio: float
    arm: str
    seed: int


def fmt(x: float) -> str:
    """Numbers in paths: 0.1 -> '0.1', 1.0 -> '1'."""
    return f"{x:g}"


def run_dir(key: RunKey) -> str:
    return f"runs/{key.dataset}/lam{fmt(key.lam)}_K{key.clients}_jr{fmt(key.join_ratio)}/{key.arm}"


def run_path(results: str, key: RunKey) -> str:
    return f"{results}/{run_dir(key)}/seed{key.seed}.json"


def timing_file(results: str, key: RunKey) -> str:
    return f"{results}/{run_dir(key)}/seed{key.seed}.timing.json"


def partition_seed(config: dict, seed: int) -> int:
    fixed = config.get("partition", {}).get("seed")
    return seed if fixed is None else int(fixed)


def partition_scheme(config: dict, dataset: str) -> str:
    p = config.get("partition", {})
    return p.get("scheme_per_dataset", {}).get(dataset, p.get("scheme", "dirichlet_label"))


def partition_path(config: dict, dataset: str, lam: float, clients: int, seed: int) -> str:
    return (f"{config['results']}/partitions/{dataset}/{partition_scheme(config, dataset)}"
            f"_lam{fmt(lam)}_K{clients}_seed{partition_seed(config, seed)}.json")


# --- arms ----------------------------------------------------------------------------------
def base_arms(config: dict) -> dict[str, dict]:
    return {name: {"method": spec.get("method", name), "hp": dict(spec.get("hp", {})),
                   "train": dict(spec.get("train", {}))}
            for name, spec in config["methods"].items()}


def ablation_arms(config: dict) -> dict[str, dict]:
    t5 = config.get("tables", {}).get("t5", {})
    return {name: {"method": spec.get("method", "fedmic"), "hp": dict(spec.get("hp", {})),
                   "train": dict(spec.get("train", {}))}
            for name, spec in t5.get("arms", {}).items()}


def sensitivity_arms(config: dict) -> dict[str, dict]:
    """One arm per (parameter, value) of T6, named e.g. 'fedmic-tau4' or 'fedmic-energy0.9-0.95'."""
    t6 = config.get("tables", {}).get("t6", {})
    base = t6.get("base", "fedmic")
    spec = base_arms(config)[base]
    arms = {}
    for param, values in t6.get("values", {}).items():
        if param not in SENSITIVITY_PARAMS:
            raise ConfigError(f"tables.t6.values: unknown parameter {param!r}; choose from {', '.join(SENSITIVITY_PARAMS)}")
        for v in values:
            arm = copy.deepcopy(spec)
            if param == "energy":
                if not (isinstance(v, (list, tuple)) and len(v) == 2):
                    raise ConfigError(f"tables.t6.values.energy: each value must be a pair [E_start, E_end], got {v!r}")
                arm["hp"].update(energy_start=float(v[0]), energy_end=float(v[1]))
                name = f"{base}-energy{fmt(v[0])}-{fmt(v[1])}"
            else:
                arm["hp"][param] = float(v)
                name = f"{base}-{param}{fmt(float(v))}"
            arms[name] = arm
    return arms


def all_arms(config: dict) -> dict[str, dict]:
    arms = base_arms(config)
    for extra in (ablation_arms(config), sensitivity_arms(config)):
        for name, spec in extra.items():
            if name in arms and arms[name] != spec:
                raise ConfigError(f"arm name {name!r} is defined twice with different settings; rename one")
            arms[name] = spec
    return arms


# --- runs ----------------------------------------------------------------------------------
def _section(config: dict, name: str) -> dict:
    return (config.get("tables") or {}).get(name) or (config.get("figures") or {}).get(name) or {}


def _axes(config: dict, table: str) -> tuple[list, list, list]:
    sec = _section(config, table)
    return (sec.get("datasets", config["datasets"]), [float(x) for x in sec.get("lams", config["lams"])],
            [int(s) for s in sec.get("seeds", config["seeds"])])


def _default_clients(config) -> int:
    return int(config["train"].get("clients", 20))


def _default_jr(config) -> float:
    return float(config["train"].get("join_ratio", 1.0))


def _check_arms(config, table, arms):
    known = all_arms(config)
    for a in arms:
        if a not in known:
            raise ConfigError(f"tables.{table}.arms: unknown arm {a!r}; defined arms: {', '.join(sorted(known))}")
    return arms


def table_runs(config: dict, table: str) -> list[RunKey]:
    """The runs a table (or a figure built on T2's runs) reads."""
    if table in ("t2", "t4", "t8", "t9", "learning_curves", "acc_vs_bytes", "svd_ranks"):
        datasets, lams, seeds = _axes(config, "t2")
        arms = _check_arms(config, "t2", _section(config, "t2").get("arms", list(config["methods"])))
        if table == "svd_ranks":
            arms = [a for a in arms if all_arms(config)[a]["method"] in ("fedmic", "fedkd")]
        return [RunKey(d, l, _default_clients(config), _default_jr(config), a, s)
                for d in datasets for l in lams for a in arms for s in seeds]
    if table == "t3":
        datasets, lams, seeds = _axes(config, "t3")
        sec = _section(config, "t3")
        arms = _check_arms(config, "t3", sec.get("arms", list(config["methods"])))
        return [RunKey(d, l, _default_clients(config), float(j), a, s) for d in datasets for l in lams
                for j in sec.get("join_ratios", [0.1, 0.2, 0.5, 1.0]) for a in arms for s in seeds]
    if table == "t5":
        datasets, lams, seeds = _axes(config, "t5")
        arms = [_section(config, "t5").get("base", "fedmic"), *ablation_arms(config)]
        return [RunKey(d, l, _default_clients(config), _default_jr(config), a, s)
                for d in datasets for l in lams for a in arms for s in seeds]
    if table == "t6":
        datasets, lams, seeds = _axes(config, "t6")
        arms = [_section(config, "t6").get("base", "fedmic"), *sensitivity_arms(config)]
        return [RunKey(d, l, _default_clients(config), _default_jr(config), a, s)
                for d in datasets for l in lams for a in arms for s in seeds]
    if table == "t7":
        datasets, lams, seeds = _axes(config, "t7")
        sec = _section(config, "t7")
        arms = _check_arms(config, "t7", sec.get("arms", list(config["methods"])))
        return [RunKey(d, l, int(k), _default_jr(config), a, s) for d in datasets for l in lams
                for k in sec.get("clients", [10, 20, 50, 100]) for a in arms for s in seeds]
    raise ConfigError(f"unknown table {table!r}; choose one of {', '.join(TABLES + FIGURES)}")


def enabled(config: dict, name: str) -> bool:
    """A table/figure is built unless its section says `enabled: false`."""
    return _section(config, name).get("enabled", True) is not False


def all_runs(config: dict) -> list[RunKey]:
    keys = set()
    for t in ("t2", "t3", "t5", "t6", "t7"):
        if enabled(config, t):
            keys.update(table_runs(config, t))
    return sorted(keys)


def partitions_for_t1(config: dict) -> list[str]:
    """T1/F3 show each (dataset, lambda) once: the default client count, the first seed."""
    datasets, lams, seeds = _axes(config, "t2")
    return [partition_path(config, d, l, _default_clients(config), seeds[0]) for d in datasets for l in lams]


def run_config(config: dict, key: RunKey) -> dict:
    """The full RunConfig of one run (validated: a bad value fails at DAG-build time)."""
    arms = all_arms(config)
    if key.arm not in arms:
        raise ConfigError(f"unknown arm {key.arm!r}; defined arms: {', '.join(sorted(arms))}")
    arm = arms[key.arm]
    train = {k: v for k, v in config["train"].items()}
    train.update(arm["train"])
    d = dict(train, dataset=key.dataset, method=arm["method"], arm=key.arm, hp=arm["hp"], lam=key.lam,
             clients=key.clients, join_ratio=key.join_ratio, seed=key.seed,
             partition_seed=partition_seed(config, key.seed), scheme=partition_scheme(config, key.dataset),
             min_size=int(config.get("partition", {}).get("min_size", 10)))
    return RunConfig.from_dict(d).to_dict()


def code_files(method: str) -> list[str]:
    """Source files whose change must retrain a run of `method`: the engine and shared modules,
    plus the method's own file only, so editing one algorithm reruns only its runs."""
    pkg = Path(__file__).resolve().parent
    core = ["engine.py", "config.py", "comm.py", "distill.py", "metrics.py", "models.py", "utils.py",
            "algorithms/base.py", "algorithms/__init__.py", "data/medmnist.py", "data/partition.py"]
    from .algorithms import ALGORITHMS
    module = ALGORITHMS[method].split(":")[0]
    return [str(pkg / f) for f in core] + [str(pkg / "algorithms" / f"{module}.py")]


def report_code_files() -> list[str]:
    pkg = Path(__file__).resolve().parent
    return sorted(str(p) for p in (pkg / "report").glob("*.py"))
