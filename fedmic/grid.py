"""The experiment grid: arms, runs, where every file lives, what retrains a run.

The workflow (workflow/rules/common.smk) only calls these functions and fedmic.paper's, so
the grid logic is tested here. A run is identified by (dataset, lam, clients, join_ratio,
arm, seed); an arm is a named method variant (method + hyperparameters + training
overrides). Which runs each table and figure reads is its module's (fedmic/paper/<name>.py),
built with the helpers here; runs are shared between tables: T2, T4, T8 and T9 read the same
runs, and T3's join ratio 1.0 or T7's default client count are T2's runs again. The
partition depends only on (dataset, lam, clients, partition seed), never on the method.
"""
from __future__ import annotations

import ast
import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from . import tuning
from .config import ConfigError, RunConfig
from .methods import METHODS



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


def tensorboard_dir(logs: str, key: RunKey) -> str:
    """A run's TensorBoard folder, named by its grid coordinates as its run JSON is:
    <logs>/tensorboard/<dataset>/lam<lam>_K<clients>_jr<join ratio>/<arm>/seed<seed>."""
    return f"{logs}/tensorboard/{run_dir(key).removeprefix('runs/')}/seed{key.seed}"


def partition_seed(config: dict, seed: int) -> int:
    fixed = config.get("partition", {}).get("seed")
    return seed if fixed is None else int(fixed)


def partition_scheme(config: dict, dataset: str) -> str:
    p = config.get("partition", {})
    return p.get("scheme_per_dataset", {}).get(dataset, p.get("scheme", "dirichlet_label"))


def image_size(config: dict) -> int:
    """The image size every run of the workflow reads: its files are downloaded and
    partitioned at this size (train.image_size)."""
    return int(config.get("train", {}).get("image_size", RunConfig.image_size))


def partition_path(config: dict, dataset: str, lam: float, clients: int, seed: int) -> str:
    return (f"{config['results']}/partitions/{dataset}/{partition_scheme(config, dataset)}"
            f"_lam{fmt(lam)}_K{clients}_seed{partition_seed(config, seed)}.json")


# --- arms ----------------------------------------------------------------------------------
def base_arms(config: dict) -> dict[str, dict]:
    return {name: {"method": spec.get("method", name), "hp": dict(spec.get("hp", {})),
                   "train": dict(spec.get("train", {}))}
            for name, spec in config["methods"].items()}


def tuning_section(config: dict) -> dict:
    """The `tuning:` section, or {} when tuning is off (absent, or enabled: false)."""
    sec = config.get("tuning") or {}
    return sec if sec and sec.get("enabled", True) is not False else {}


def tuned_base_arms(config: dict) -> list[str]:
    sec = tuning_section(config)
    if not sec:
        return []
    names = sec.get("arms", list(config["methods"]))
    for a in names:
        if a not in config["methods"]:
            raise ConfigError(f"tuning.arms: unknown arm {a!r}; it must be one of methods: {', '.join(config['methods'])}")
    return list(names)


def trial_arms(config: dict) -> dict[str, dict]:
    """One arm per (tuned arm, trial): the arm's settings, the trial's lr and hyperparameters, and
    the tuning rounds (fedmic/tuning.py)."""
    sec = tuning_section(config)
    arms = {}
    for name in tuned_base_arms(config):
        spec = base_arms(config)[name]
        for t, trial in enumerate(tuning.trial_settings(spec["method"], name, spec["hp"], int(sec["budget"]),
                                                        int(sec["seed"]))):
            # a trial that diverges must not stop the workflow: its non-finite updates are dropped
            # and counted, and such a trial is not eligible for selection (fedmic/tuning.py)
            train = {**spec["train"], "rounds": int(sec["rounds"]), "on_nonfinite": "skip"}
            if trial["lr"] is not None:
                train["lr"] = trial["lr"]
            arms[tuning.trial_arm(name, t)] = {"method": spec["method"], "hp": {**spec["hp"], **trial["hp"]},
                                               "train": train}
    return arms


def tuned_arms(config: dict) -> dict[str, dict]:
    """`<arm>-tuned` for every tuned arm: its settings with the selected lr and hyperparameters
    (read by the workflow from the selection file; `run_config(..., selection=...)`)."""
    return {tuning.tuned_arm(name): {**base_arms(config)[name], "tuned_from": name}
            for name in tuned_base_arms(config)}


def tuned_from(config: dict, arm: str) -> str | None:
    """The arm whose selection `arm` runs with (None: not a tuned arm)."""
    return all_arms(config).get(arm, {}).get("tuned_from")


def output_arms(config: dict) -> list[tuple[object, dict[str, dict]]]:
    """(output, its arms) for every enabled table or figure that defines arms beyond `methods`
    (T5's ablations, T6's sensitivity variants)."""
    from . import paper

    return [(out, arms) for out in paper.enabled(config) if (arms := out.arms(config))]


def all_arms(config: dict) -> dict[str, dict]:
    arms = base_arms(config)
    extras = [a for _, a in output_arms(config)] + [trial_arms(config), tuned_arms(config)]
    for extra in extras:
        for name, spec in extra.items():
            if name in arms and arms[name] != spec:
                raise ConfigError(f"arm name {name!r} is defined twice with different settings; rename one")
            arms[name] = spec
    return arms


# --- runs ---------------------------------------------------------------------------------
def default_clients(config) -> int:
    return int(config["train"].get("clients", 20))


def default_join_ratio(config) -> float:
    return float(config["train"].get("join_ratio", 1.0))


def check_arms(config: dict, where: str, arms: list[str]) -> list[str]:
    """`arms` (a table's list, at config key `where`) if every one is defined."""
    known = all_arms(config)
    for a in arms:
        if a not in known:
            raise ConfigError(f"{where}: unknown arm {a!r}; defined arms: {', '.join(sorted(known))}")
    return arms


def main_runs(config: dict, datasets, lams, arms, seeds) -> list[RunKey]:
    """Every arm at every dataset, λ and seed, at train.clients and train.join_ratio."""
    return [RunKey(d, float(lam), default_clients(config), default_join_ratio(config), a, int(s))
            for d in datasets for lam in lams for a in arms for s in seeds]


def tuning_runs(config: dict, arm: str | None = None, dataset: str | None = None,
                lam: float | None = None) -> list[RunKey]:
    """The trial runs (all, or those of one arm at one dataset and lambda): every tuned arm at
    every (dataset, lambda) of T2, with T2's clients and join ratio, on the tuning seed."""
    from . import paper

    sec = tuning_section(config)
    if not sec:
        return []
    t2_options = paper.options(config, "t2")
    datasets, lams = t2_options["datasets"], [float(x) for x in t2_options["lams"]]
    return [RunKey(d, l, default_clients(config), default_join_ratio(config), tuning.trial_arm(a, t), int(sec["seed"]))
            for d in datasets for l in lams for a in tuned_base_arms(config) for t in range(int(sec["budget"]))
            if (arm is None or a == arm) and (dataset is None or d == dataset) and (lam is None or l == lam)]


def selection_wildcards(config: dict, arm: str, dataset: str, lam: float) -> dict[str, str]:
    """The selection of `arm` at (dataset, lambda): made from the trials at T2's clients and join
    ratio, and used by the arm's tuned runs at every client count and join ratio."""
    return {"dataset": dataset, "lam": fmt(lam), "clients": str(default_clients(config)),
            "jr": fmt(default_join_ratio(config)), "arm": arm}


def selection_path(config: dict, arm: str, dataset: str, lam: float) -> str:
    """Where the workflow writes the selection of `arm` at (dataset, lambda)."""
    w = selection_wildcards(config, arm, dataset, lam)
    return f"{config['results']}/tuning/{w['dataset']}/lam{w['lam']}_K{w['clients']}_jr{w['jr']}/{w['arm']}.json"


def tuning_problem(config: dict) -> str | None:
    """The tuning seed must not be a reported seed (the selection would then have seen the runs
    it is reported with)."""
    sec = tuning_section(config)
    if not sec:
        return None
    reported = set(int(s) for s in config["seeds"])
    for kind in ("tables", "figures"):
        for section in (config.get(kind) or {}).values():
            reported |= {int(s) for s in (section or {}).get("seeds", [])}
    if int(sec["seed"]) in reported:
        return (f"tuning.seed {sec['seed']} is also a reported seed; tune on a seed of its own "
                f"(reported: {', '.join(map(str, sorted(reported)))})")
    return None


def all_runs(config: dict) -> list[RunKey]:
    """Every run an enabled table or figure reads, and every tuning trial."""
    from . import paper

    keys = set(tuning_runs(config))
    for out in paper.enabled(config):
        keys.update(out.runs(config))
    return sorted(keys)


def arm_origin(config: dict, arm: str) -> str:
    """Where in the config an arm is defined, for error messages."""
    if arm in config["methods"]:
        return f"methods.{arm}"
    for out, arms in output_arms(config):
        if arm in arms:
            return out.module.arm_origin(config, arm)
    if arm in trial_arms(config) or arm in tuned_arms(config):
        return f"tuning (arm {arm})"
    raise ConfigError(f"unknown arm {arm!r}")


def run_config(config: dict, key: RunKey, selection: dict | None = None) -> RunConfig:
    """The full RunConfig of one run (validated: a bad value fails at DAG-build time). A tuned
    arm's run needs its `selection` ({"lr", "hp"}, fedmic/tuning.py; {"lr": None, "hp": {}}
    checks the arm's own settings before any selection exists)."""
    arms = all_arms(config)
    if key.arm not in arms:
        raise ConfigError(f"unknown arm {key.arm!r}; defined arms: {', '.join(sorted(arms))}")
    arm = copy.deepcopy(arms[key.arm])
    if "tuned_from" in arm:
        if selection is None:
            raise ConfigError(f"run {key}: arm {key.arm!r} runs with the selection of {arm['tuned_from']!r}, "
                              "which this call did not get")
        arm["hp"].update(selection["hp"])
        if selection["lr"] is not None:
            arm["train"]["lr"] = selection["lr"]
    train = {k: v for k, v in config["train"].items()}
    if arm["train"].get("image_size", image_size(config)) != image_size(config):
        raise ConfigError(f"{arm_origin(config, key.arm)}.train.image_size: {arm['train']['image_size']} differs from "
                          f"train.image_size {image_size(config)}; the workflow downloads and partitions one image "
                          "size, so set it under train (or run that arm with its own config)")
    train.update(arm["train"])
    train.update(participation_schedule(config, key.join_ratio, train))
    d = dict(train, dataset=key.dataset, method=arm["method"], arm=key.arm, hp=arm["hp"], lam=key.lam,
             clients=key.clients, join_ratio=key.join_ratio, seed=key.seed,
             partition_seed=partition_seed(config, key.seed), scheme=partition_scheme(config, key.dataset),
             min_size=int(config.get("partition", {}).get("min_size", 10)))
    try:
        return RunConfig.from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{arm_origin(config, key.arm)}, run {key.dataset} lam={fmt(key.lam)} K={key.clients} "
                          f"join_ratio={fmt(key.join_ratio)} seed={key.seed}: {e}") from None


def _round_half_up(x: float) -> int:
    return int(x + 0.5)


def participation_schedule(config: dict, join_ratio: float, train: dict) -> dict:
    """Rounds and evaluation interval of a run at another join ratio than the main runs' (T3's):
    scaled by (main join ratio / join ratio), so a client trains about as often, and is scored
    as many times, as in the main comparison (tables.t3.scale_rounds: false keeps them)."""
    from .paper import t3

    reference = default_join_ratio(config)
    if join_ratio == reference or not t3.scale_rounds(config):
        return {}
    factor = reference / join_ratio
    fields = RunConfig.__dataclass_fields__
    rounds = int(train.get("rounds", fields["rounds"].default))
    every = int(train.get("eval_every", fields["eval_every"].default))
    return {"rounds": max(1, _round_half_up(rounds * factor)), "eval_every": max(1, _round_half_up(every * factor))}


def identical_arms(config: dict, run_configs: dict[RunKey, RunConfig]) -> str | None:
    """Two arms whose runs are the same once the defaults are filled in (e.g. an ablation arm
    that sets a hyperparameter to its default) would train the same runs twice and show a
    difference that is only noise; name them before any job runs."""
    seen: dict[tuple, str] = {}
    for key, rc in sorted(run_configs.items()):
        science = {k: v for k, v in rc.science().items() if k != "arm"}
        what = (key.dataset, key.lam, key.clients, key.join_ratio, key.seed, json.dumps(science, sort_keys=True))
        other = seen.setdefault(what, key.arm)
        if other != key.arm:
            given = {a: all_arms(config)[a]["hp"] for a in (other, key.arm)}
            return (f"{arm_origin(config, other)} and {arm_origin(config, key.arm)} are the same runs once the "
                    f"method's defaults are filled in (hp {given[other]} and {given[key.arm]}); change a setting of "
                    f"{key.arm!r} or remove it")
    return None


def repeated_values(config: dict) -> str | None:
    """A value listed twice in a grid list (seeds: [0, 0]), or two values written alike in
    file names (lams: [0.1, 0.1000001] are both lam0.1): the same run would be planned twice,
    and only `fedmic collect`, after the runs, would notice. Say so before any job."""
    def name(x):  # as file and arm names write it
        if isinstance(x, str):
            return x
        if isinstance(x, (list, tuple)):  # T6's energy pairs
            return "-".join(fmt(float(e)) for e in x)
        return fmt(float(x))

    lists = [(axis, config.get(axis)) for axis in ("datasets", "lams", "seeds")]
    # every list in a table's or figure's section, and every list in a mapping there (T6's values)
    for kind in ("tables", "figures"):
        for output, sec in (config.get(kind) or {}).items():
            for key, value in (sec or {}).items():
                if isinstance(value, list):
                    lists.append((f"{kind}.{output}.{key}", value))
                elif isinstance(value, dict):
                    lists += [(f"{kind}.{output}.{key}.{k}", x) for k, x in value.items() if isinstance(x, list)]
    for where, values in lists:
        seen = {}
        for x in values or []:
            key = name(x)
            if key in seen:
                first = seen[key]
                same = f"{x!r} twice" if first == x else (f"{first!r} and {x!r}, which file names both write as "
                                                          f"{key!r},")
                return f"{where} lists {same} so the same runs would be planned twice; list each value once"
            seen[key] = x
    return None


# --- the command line ----------------------------------------------------------------------
TARGETS_FIRST = "write targets before --configfile (snakemake TARGET ... --configfile FILE), as it takes several files"


def misplaced_targets(config: dict, configfiles: list[str]) -> str | None:
    """A target written after --configfile is read as a config file. Snakemake stops by itself
    when no such file exists, before the workflow is read; an existing output (a run JSON)
    does load, and is caught here."""
    outputs = [Path(config[k]).resolve() for k in ("results", "logs") if isinstance(config.get(k), str)]
    for f in configfiles:
        if any(Path(f).resolve().is_relative_to(d) for d in outputs):
            return f"--configfile {f} is an output of this workflow, not a config; {TARGETS_FIRST}"
    return None


# --- code triggers -------------------------------------------------------------------------
# A run is retrained when a file it depends on changes: the modules its method's class needs
# and the engine's, found by reading their imports (ast: no torch, nothing executed).
PACKAGE = Path(__file__).resolve().parent
# Read by every run but never a reason to retrain one: the package's __init__ holds only the
# version string (a test keeps it so), and methods.py is the declarations' machinery; what a
# declaration means for a run (its full hyperparameters) is in the run's fingerprint, a rule
# parameter, so a changed default retrains exactly the runs it changes. A method's own file
# (declaration and class together) is run code: any edit of it, a description's included,
# retrains that method's runs (docs/extending.md, "A method").
NOT_RUN_CODE = ("__init__.py", "methods.py")


def _module_file(dotted: str) -> Path | None:
    parts = dotted.split(".")
    if parts[0] != PACKAGE.name:
        return None
    base = PACKAGE.parent.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=None)
def _imported_modules(path: Path) -> frozenset[str]:
    """Dotted names of every module `path` imports, at any depth (lazy imports in functions
    count: they run when the code does). `from pkg import name` yields pkg and pkg.name (the
    latter only matters if it is a submodule)."""
    # the package a relative import starts from (for a/b/c.py and a/b/__init__.py alike: a.b)
    package = path.relative_to(PACKAGE.parent).parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            anchor = list(package[:len(package) - node.level + 1]) if node.level else []
            mod = ".".join(anchor + ([node.module] if node.module else []))
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return frozenset(out)


def import_closure(*roots: Path) -> set[Path]:
    """The package's source files that importing `roots` runs: the roots, every package
    module they import, transitively, and the __init__.py of each package on the way."""
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        parent = path.parent
        while parent != PACKAGE.parent:  # importing a.b.c runs a/__init__ and a/b/__init__
            todo.append(parent / "__init__.py")
            parent = parent.parent
        todo.extend(f for f in map(_module_file, _imported_modules(path)) if f is not None)
    return seen


def code_files(method: str) -> list[str]:
    """Source files whose change must retrain a run of `method`: the method's module with
    everything it imports (its base classes' modules among them: FedProx's runs depend on
    fedavg.py, FedRep's on fedper.py) and the engine's import closure. Other methods' modules
    are imported by name at run time (fedmic.algorithms.get_algorithm), so they are not in it."""
    return list(_run_code(METHODS[method].module))


@functools.lru_cache(maxsize=None)  # once per method, not per job: the paper grid has ~1000
def _run_code(module: str) -> tuple[str, ...]:
    files = import_closure(PACKAGE / "engine.py", PACKAGE / "algorithms" / f"{module}.py")
    return tuple(sorted(str(f) for f in files if str(f.relative_to(PACKAGE)) not in NOT_RUN_CODE))


def selection_code_files() -> list[str]:
    """What `fedmic select` runs: a change of the selection rule selects again."""
    return sorted(str(f) for f in import_closure(PACKAGE / "tuning.py", PACKAGE / "report" / "tidy.py"))


def report_code_files() -> list[str]:
    """What `fedmic table` and `fedmic figure` run: a change rebuilds tables and figures."""
    return sorted(str(f) for f in import_closure(*(PACKAGE / "report").glob("*.py"), *(PACKAGE / "paper").glob("*.py")))
