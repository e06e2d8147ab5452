# Config validation and every input function; the grid logic itself lives in fedmic.grid.
import json
import os
import re
import shlex
import subprocess
import sys

from snakemake.common.configfile import load_configfile
from snakemake.exceptions import IncompleteCheckpointException, WorkflowError
from snakemake.settings.types import DeploymentMethod
from snakemake.sourcecache import HostingProviderFile, LocalGitFile, LocalSourceFile


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


def fedmic_requirement(source):
    """The pip requirement of the fedmic package this workflow's files came with: the same
    checkout, or the same git repository at the same tag, commit or branch. None for a
    source that names no repository (a plain URL of the Snakefile)."""
    if isinstance(source, LocalSourceFile):
        return f"fedmic @ file://{CHECKOUT}"
    if isinstance(source, LocalGitFile):
        return f"fedmic @ git+file://{os.path.abspath(source.repo_path)}@{source.ref}"
    if isinstance(source, HostingProviderFile):
        return f"fedmic @ git+https://{source.host}/{source.repo}.git@{source.ref}"
    return None


def require_installed_fedmic(version, requirement):
    install = (
        f"pip install {shlex.quote(requirement)}"
        if requirement
        else f"install fedmic {version} from the repository and tag this workflow came from"
    )
    try:
        import fedmic
    except ImportError:
        raise WorkflowError(
            f"this workflow is a module from a git URL, so Snakemake needs the fedmic package it came "
            f"with installed beside it: {install}"
        ) from None
    if fedmic.__version__ != version:
        raise WorkflowError(
            f"the workflow is fedmic {version} but the installed package is fedmic "
            f"{fedmic.__version__} ({os.path.dirname(fedmic.__file__)}): {install}"
        )


# Where jobs get the fedmic package. From a checkout (the Snakefile run in place, or a module
# given by a local path), jobs import that checkout's package: the code this workflow came
# with. As a module from a git URL (`snakefile: github(...)` or "git+file://...@ref") only
# workflow files are fetched, so the package comes installed beside Snakemake from the same
# repository and ref (FEDMIC_REQUIREMENT; the workflow reads it too) and, under --sdm conda,
# into the rules' environment (FEDMIC_ENV). workflow.basedir is the *user's* folder in a
# module: current_basedir is this file's.
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
FEDMIC_REQUIREMENT = fedmic_requirement(_rules_dir)
if CHECKOUT is None:
    require_installed_fedmic(WORKFLOW_VERSION, FEDMIC_REQUIREMENT)
# (the set holds DeploymentMethod members, whose str() is "DeploymentMethod.CONDA")
_conda = DeploymentMethod.CONDA in getattr(workflow.deployment_settings, "deployment_method", ())
_python = "python" if _conda else shlex.quote(sys.executable)
# PYTHONSAFEPATH (Python >= 3.11): `python -m` leaves the job's working directory off the path,
# so a `fedmic/` folder there can never stand in for the package
_pythonpath = f"PYTHONSAFEPATH=1 {_pythonpath}"
FEDMIC = f"{_pythonpath}{_python} -m fedmic.cli"


def rendered_environment(template, requirement, path):
    """workflow/envs/fedmic.yaml with the fedmic package added to its pip list, written to
    `path` (rewritten only when it changes): conda cannot take the package's source from the
    workflow, and Snakemake does not template environment files."""
    import yaml

    if requirement is None:
        raise WorkflowError(
            f"--sdm conda: {WORKFLOW_SOURCE} names no git repository to install fedmic from in the rules' "
            "environment; use the module as github(...) or git+https://...@tag"
        )
    env = yaml.safe_load(template)
    next(d for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)["pip"].append(requirement)
    # the same text for the same source and version: a new commit of a checkout keeps its
    # environment (its jobs import the checkout), a new version gets a new one
    header = f"# workflow/envs/fedmic.yaml with fedmic {WORKFLOW_VERSION} from the workflow's source\n"
    text = header + yaml.safe_dump(env, sort_keys=False)
    if not (os.path.exists(path) and open(path).read() == text):
        from fedmic.utils import atomic_write_text

        atomic_write_text(path, text)
    return path


# Every rule's conda environment: under --sdm conda the rendered one, in the working directory
# (.snakemake/, beside Snakemake's own state); otherwise the template, never read.
if _conda:
    FEDMIC_ENV = rendered_environment(
        open(workflow.source_path("../envs/fedmic.yaml")).read(),
        FEDMIC_REQUIREMENT,
        os.path.abspath(os.path.join(".snakemake", "fedmic", "fedmic-env.yaml")),
    )
else:
    FEDMIC_ENV = "../envs/fedmic.yaml"

from fedmic import dataroot, grid, paper, resources, schema, tuning, watch
from fedmic.data import registry
from fedmic.config import ConfigError
from fedmic.gpus import visible_gpus


def fail(message):
    """Stop reading the workflow with one line: a mistake in the config or the command line
    (Snakemake's own report of an exception adds the file, the line and a traceback)."""
    raise SystemExit(f"fedmic workflow: error: {message}")


def command_line_targets():
    """The targets of the `snakemake` command running this workflow ([] when it runs another
    way, e.g. through the API): Snakemake does not give a Snakefile its targets."""
    if "snakemake" not in os.path.basename(os.path.dirname(sys.argv[0])) + os.path.basename(sys.argv[0]):
        return []
    try:
        from snakemake.cli import get_argument_parser

        args, _ = get_argument_parser().parse_known_args(sys.argv[1:])
    except BaseException:  # argparse exits on what it cannot read; Snakemake will say why
        return []
    return list(args.targets or [])


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


# before the schema: a run JSON read as a config would only show as a pile of unknown keys
_configfiles = [str(f) for f in workflow.config_settings.configfiles]
if _problem := grid.misplaced_targets(config, _configfiles):
    fail(_problem)
CONFIG_SCHEMA = schema.load_schema(workflow.source_path("../schemas/config.schema.yaml"))
if _problem := schema.replace_sections(
    config,
    [(f, load_configfile(f)) for f in _configfiles],
    dict(workflow.config_settings.config),
    CONFIG_SCHEMA,
):
    fail(f"config error: {_problem}")
if _problem := schema.config_problem(config, CONFIG_SCHEMA):
    fail(f"config error: {_problem}")

RESULTS = config["results"]
LOGS = config.get("logs", "logs")
# fedmic.dataroot's rule, the command line's: $FEDMIC_MEDMNIST_ROOT, ../shared/data/medmnist
# beside the checkout, ~/.medmnist
if config.get("data_root"):
    DATA_ROOT = os.path.abspath(os.path.expanduser(config["data_root"]))
else:
    _root = dataroot.default_root(CHECKOUT)
    DATA_ROOT = os.path.abspath(_root)
    if not os.getenv(dataroot.ENV_ROOT):
        print(
            f"fedmic workflow: MedMNIST files are read from, and downloaded to, {dataroot.shown(_root)}: "
            f"neither data_root (config) nor ${dataroot.ENV_ROOT} is set",
            file=sys.stderr,
        )
# under --sdm conda the jobs' environment is not this one: their `fedmic train` checks
if config.get("tensorboard") and not _conda and (_problem := watch.tensorboard_missing()):
    fail(f"config error: tensorboard: true, but {_problem}")

if _problem := grid.repeated_values(config):
    fail(f"config error: {_problem}")

try:
    RUNS = grid.all_runs(config)
    ARMS = grid.all_arms(config)
    # Validates every run's full config now, so a bad value fails before any job starts. A tuned
    # arm's runs wait for their selection: their arm's own settings are checked instead.
    RUN_CONFIGS = {key: grid.run_config(config, key) for key in RUNS if "tuned_from" not in ARMS[key.arm]}
    for _key in RUNS:
        if "tuned_from" in ARMS[_key.arm]:
            grid.run_config(config, _key, selection={"lr": None, "hp": {}})
except ConfigError as e:
    fail(f"config error: {e}")
if _problem := grid.tuning_problem(config):
    fail(f"config error: {_problem}")
if _problem := grid.identical_arms(config, RUN_CONFIGS):
    fail(f"config error: {_problem}")

if _problem := paper.target_problem(config, command_line_targets()):
    fail(_problem)


def claim_results_folder():
    """Before the first job of a real run (onstart: never in a dry run, nor in a job that
    re-reads the workflow on a cluster node, as those skip hooks): the results and log
    folders must be writable, and no other workflow may be writing the results folder (a
    lock in it, held until this Snakemake exits). A dry run may look at a read-only or busy
    folder: it writes nothing."""
    from fedmic.utils import LOCK_NAME, FolderLocked, check_writable, describe_os_error, hold_folder_lock

    try:
        check_writable(os.path.join(RESULTS, LOCK_NAME), os.path.join(LOGS, LOCK_NAME))
        hold_folder_lock(RESULTS)
    except OSError as e:
        fail(describe_os_error(e))
    except FolderLocked as e:
        fail(str(e))


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


def run_of(wc):
    key = run_key(wc)
    if "tuned_from" in ARMS[key.arm]:
        # Until its selection exists (the checkpoint) a tuned run is a placeholder with its arm's
        # own settings: Snakemake evaluates the job again once the checkpoint is done, and
        # `fedmic train --selection` refuses settings that are not the selection's.
        try:
            selection = tuning.read_selection(selection_of_run(wc))
        except IncompleteCheckpointException:
            selection = {"lr": None, "hp": {}}
        return grid.run_config(config, key, selection=selection)
    return RUN_CONFIGS.get(key) or grid.run_config(config, key)


def selection_of_run(wc):
    """A tuned arm's selection, through the checkpoint (nothing for other arms)."""
    if "tuned_from" not in ARMS[wc.arm]:
        return []
    wildcards = grid.selection_wildcards(config, ARMS[wc.arm]["tuned_from"], wc.dataset, float(wc.lam))
    out = checkpoints.select_hp.get(**wildcards).output[0]
    return ancient(out)


def trial_runs_of_selection(wc):
    runs = grid.tuning_runs(config, wc.arm, wc.dataset, float(wc.lam))
    if not runs:
        raise WorkflowError(f"no tuning trials for arm {wc.arm!r} at {wc.dataset} lambda {wc.lam}")
    return [grid.run_path(RESULTS, k) for k in runs]


def run_fingerprint(wc):
    """The hash of everything that makes the run what it is, the method's defaults included
    (fedmic/config.py RunConfig.science): a change of it retrains the run."""
    return run_of(wc).fingerprint()


def train_settings(wc, threads):
    """The run's settings and execution flags (threads, device, checkpoints, ...). Snakemake
    retrains a job whose params change, except params derived from its threads, input or
    output: taking `threads` makes this one such a param, so only the fingerprint decides
    (changing checkpoint_every, switching tensorboard on, or writing a default out, retrains nothing)."""
    cfg = run_of(wc)
    args = ["--config", json.dumps(cfg.without_execution(), sort_keys=True), *cfg.execution_args(threads=threads)]
    if config.get("tensorboard"):
        args += ["--tensorboard", grid.tensorboard_dir(LOGS, run_key(wc))]
    return " ".join(map(shlex.quote, args))


def partition_of_run(wc):
    key = run_key(wc)
    return grid.partition_path(config, key.dataset, key.lam, key.clients, key.seed)


def code_of_run(wc):
    return grid.code_files(ARMS[wc.arm]["method"])


IMAGE_SIZE = grid.image_size(config)


def dataset_file(dataset):
    return f"{DATA_ROOT}/{registry.filename(dataset, IMAGE_SIZE)}"


def runs_of(name):
    return [grid.run_path(RESULTS, k) for k in paper.outputs()[name].runs(config)]


def timings_of(name):
    return [grid.timing_file(RESULTS, k) for k in paper.outputs()[name].runs(config)]


def train_runtime_min(wc):
    cfg = run_of(wc)
    return resources.train_runtime_min(wc.dataset, cfg.rounds, cfg.join_ratio, cfg.local_epochs)


def train_mem_mb(wc):
    return resources.train_mem_mb(wc.dataset, run_of(wc).image_size, int(wc.clients))


def report_inputs(name):
    """What a table or figure reads (the results file of its runs, tidy/<first output with the
    same runs>.csv.gz, or its partition files), and the report code."""
    out = paper.outputs()[name]
    if out.reads_partitions:
        files = [grid.partition_path(config, d, lam, k, seed) for d, lam, k, seed in out.partitions(config)]
    else:
        files = f"{RESULTS}/tidy/{paper.results_file_name(config, name)}.csv.gz"
    return {"runs": files, "code": grid.report_code_files()}


def report_labels(name):
    """Labels of a report item: its caption's title and which datasets and λ it covers."""
    return paper.report_labels(config, name)


def report_options(name):
    """The command's --options: the output's config section, every option resolved."""
    return json.dumps(paper.options(config, name), sort_keys=True)


def all_targets():
    targets = [f"{RESULTS}/results.csv.gz", f"{RESULTS}/provenance.yaml"]
    for out in paper.enabled(config):
        exts = ("csv", "md", "tex") if out.kind == "table" else ("png", "pdf")
        targets += [f"{RESULTS}/{out.kind}s/{out.name}.{ext}" for ext in exts]
    return targets
