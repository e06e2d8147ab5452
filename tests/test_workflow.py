"""The workflow end to end on config/tiny.yaml (one real dataset, 3 clients, 2 rounds), and
dry runs that check what a change reruns."""
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
import golden
from conftest import DATA, mark_outputs_done

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# config/config.yaml: 4 datasets x 3 lambdas; the 12 methods and FedAvg on FedBN's model, each
# tuned with 8 trials on the tuning seed; T2 = the 13 tuned arms and 3 at their defaults, 5 seeds
SETTINGS, METHOD_ARMS, TRIALS, T2_ARMS, SEEDS = 4 * 3, 13, 8, 16, 5


def snakemake(workdir, *args, config="config/tiny.yaml", check=True, gpus="", root=DATA):
    """gpus: CUDA_VISIBLE_DEVICES, the GPUs the workflow finds ("": a CPU machine)."""
    env = dict(os.environ, FEDMIC_MEDMNIST_ROOT=str(root), CUDA_VISIBLE_DEVICES=gpus)
    cmd = [*SNAKEMAKE, "-s", str(REPO / "workflow/Snakefile"), "--directory", str(workdir),
           "--configfile", str(REPO / config), *args]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def job_counts(output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table into {rule: count}."""
    counts, in_table = {}, False
    for line in output.splitlines():
        if line.startswith("Job stats"):
            in_table = True
            continue
        if in_table:
            m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
            if m and m.group(1) != "total":
                counts[m.group(1)] = int(m.group(2))
            elif line.strip().startswith("total"):
                break
    return counts


def train_order(output: str) -> str:
    """'S' when a training job starts, 'F' when one finishes, in the order Snakemake logs them."""
    events = re.findall(r"^((?:local)?rule train:|Finished jobid: \d+ \(Rule: train\))", output, re.M)
    return "".join("F" if e.startswith("Finished") else "S" for e in events)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("tiny")
    snakemake(wd, "--cores", "2", "all")
    return wd


@pytest.mark.parametrize("gpus, resources, order", [
    ("", [], "SSFF"),  # a CPU machine: no gpu pool, both 1-thread runs at once on 2 cores
    ("0", [], "SFSF"),  # one GPU: one run at a time, though a core is free
    ("0", ["--resources", "gpu=2"], "SSFF"),  # two runs packed on the one GPU
])
def test_training_runs_at_once_follow_cores_and_gpus(tmp_path, gpus, resources, order):
    # the GPU is only what the workflow finds (CUDA_VISIBLE_DEVICES); torch here has no CUDA,
    # so the runs train on the CPU either way
    runs = [f"results-tiny/runs/breastmnist/lam0.5_K3_jr1/{arm}/seed0.json" for arm in ("fedavg", "fedmic")]
    res = snakemake(tmp_path, *resources, "--cores", "2", *runs, gpus=gpus)  # targets after a one-value option
    assert train_order(res.stdout + res.stderr) == order


def test_tiny_workflow_writes_the_results_file_and_provenance(tiny_run):
    import pandas as pd
    import yaml

    res = tiny_run / "results-tiny"
    tidy = pd.read_csv(res / "results.csv.gz")
    assert set(tidy["arm"]) == {"fedavg", "fedmic"} and set(tidy["dataset"]) == {"breastmnist"}
    assert set(tidy.loc[tidy["select"] == "round", "round"]) == {1, 2}
    prov = yaml.safe_load((res / "provenance.yaml").read_text())
    assert prov["workflow"]["source"].startswith(f"{REPO} @ ")
    assert prov["config"]["results"] == "results-tiny" and prov["runs"]["count"] == 2


def test_tiny_outputs_match_the_golden_set(tiny_run):
    """Item 4 of the refactor rule: the run JSONs, results files, partitions and table files
    byte-identical, the figures pixel-identical, to tests/golden/tiny.json. A change that is
    meant to change results rewrites it (`python tests/golden.py results-tiny`, tests/golden.py)
    and says why in its commit; a refactor never does."""
    expected = json.loads((REPO / "tests" / "golden" / "tiny.json").read_text())
    diff = golden.differences(expected, golden.manifest(tiny_run / "results-tiny"))
    assert not diff, "outputs differ from tests/golden/tiny.json:\n" + "\n".join(diff)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_workflow_builds_t1_t2_f3_with_sane_values(tiny_run):
    res = tiny_run / "results-tiny"
    for ext in ("csv", "md", "tex"):
        assert (res / "tables" / f"t1.{ext}").stat().st_size > 0
        assert (res / "tables" / f"t2.{ext}").stat().st_size > 0
    for ext in ("png", "pdf"):
        assert (res / "figures" / f"f3.{ext}").stat().st_size > 1000
    t1 = read_csv(res / "tables" / "t1.csv")
    assert len(t1) == 1 and t1[0]["dataset"] == "breastmnist"
    # the three clients hold every official training image
    assert int(t1[0]["train"]) == 546
    runs = sorted((res / "runs").rglob("seed0.json"))
    assert {json.loads(p.read_text())["config"]["method"] for p in runs} == {"fedavg", "fedmic"}
    for p in runs:
        run = json.loads(p.read_text())
        acc = run["summary"]["personal"]["acc"]
        assert 0.0 <= acc <= 1.0
        assert run["summary"]["uplink_per_round"] > 0
        assert len(run["history"]) == 2
        # the rule's `threads:` (threads_per_run: 1; torch's default here is the core count)
        # is the thread count torch trained with
        assert json.loads(p.with_suffix(".timing.json").read_text())["env"]["threads"] == 1
    md = (res / "tables" / "t2.md").read_text()
    assert "fedavg" in md.lower() and "fedmic" in md.lower()


def test_rerun_is_a_no_op(tiny_run):
    out = snakemake(tiny_run, "-n", "--cores", "2", "all").stdout
    assert "Nothing to be done" in out or job_counts(out) == {}


def test_a_fresh_copy_of_the_data_retrains_nothing(tiny_run, tmp_path):
    """A dataset file copied again (newer mtime, same verified bytes) must not make Snakemake's
    mtime trigger repartition and retrain (seen: a re-provisioned data folder rescheduled a
    whole comparison). Only the mtime trigger is on, as the root's path is a parameter."""
    root = tmp_path / "medmnist"
    root.mkdir()
    copy = root / "breastmnist.npz"
    shutil.copyfile(DATA / "breastmnist.npz", copy)
    os.utime(copy, (time.time() + 60, time.time() + 60))
    out = snakemake(tiny_run, "-n", "--cores", "2", "all", "--rerun-triggers", "mtime", root=root).stdout
    counts = job_counts(out)
    assert "partition" not in counts and "train" not in counts, out[-3000:]


def dry_run_after_editing(src: Path, workdir) -> dict[str, int]:
    """Edit a source file (Snakemake compares checksums, so touching is not enough), dry-run,
    then restore the file byte for byte and its modification time."""
    original, st = src.read_bytes(), src.stat()
    try:
        src.write_bytes(original + b"\n# edited by a test\n")
        os.utime(src, (st.st_atime, time.time() + 60))
        return job_counts(snakemake(workdir, "-n", "--cores", "2", "all").stdout)
    finally:
        src.write_bytes(original)
        os.utime(src, (st.st_atime, st.st_mtime))


def test_changing_one_algorithm_reruns_only_its_runs(tiny_run):
    counts = dry_run_after_editing(REPO / "fedmic" / "algorithms" / "fedavg.py", tiny_run)
    assert counts.get("train") == 1  # fedavg's run only, not fedmic's
    assert "partition" not in counts


def test_changing_plotting_code_reruns_no_training(tiny_run):
    counts = dry_run_after_editing(REPO / "fedmic" / "report" / "figures.py", tiny_run)
    assert "train" not in counts and "partition" not in counts
    assert counts.get("figure_learning_curves") == 1 and counts.get("collect") >= 1


def test_paper_grid_dry_run(tmp_path):
    t0 = time.perf_counter()
    res = snakemake(tmp_path, "-n", "--quiet", "rules", "--cores", "8", "all", config="config/config.yaml")
    elapsed = time.perf_counter() - t0
    counts = job_counts(res.stdout)
    print(f"paper grid: {sum(counts.values())} jobs, dry run {elapsed:.1f} s")
    # T2's runs and every tuning trial, before the tables of their own grids
    assert counts["train"] >= SETTINGS * (T2_ARMS * SEEDS + METHOD_ARMS * TRIALS)
    assert counts["select_hp"] == SETTINGS * METHOD_ARMS
    assert counts["download"] >= 1


def test_single_table_target_needs_only_its_runs(tmp_path):
    counts = job_counts(snakemake(tmp_path, "-n", "--quiet", "rules", "--cores", "8", "table_t4",
                                  config="config/config.yaml").stdout)
    # exactly T2's runs and the trials that select its tuned arms' settings
    assert counts["train"] == SETTINGS * (T2_ARMS * SEEDS + METHOD_ARMS * TRIALS)
    assert counts["table_t4"] == 1 and "table_t2" not in counts


def test_bad_config_value_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (REPO / "config" / "tiny.yaml").read_text().replace("lams: [0.5]", "lams: [-0.5]")
    bad.write_text(text)
    res = snakemake(tmp_path, "-n", "--cores", "1", "all", config=str(bad), check=False)
    assert res.returncode != 0
    assert "lams" in (res.stdout + res.stderr)


def test_workflow_is_snakefmt_formatted_and_lint_clean(tmp_path):
    fmt = subprocess.run([sys.executable, "-m", "snakefmt", "--check", str(REPO / "workflow")], cwd=REPO,
                         capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
    lint = snakemake(tmp_path, "--lint", check=False)
    assert lint.returncode == 0 and "Lints for" not in lint.stdout + lint.stderr, lint.stdout + lint.stderr


# --------------------------------------------------------------------------- what retrains a run
def dry_run_with(workdir, tmp_path, **train) -> dict[str, int]:
    """Dry-run the tiny config with `train` settings changed."""
    cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    methods = train.pop("methods", None)
    cfg["train"].update(train)
    if methods:
        cfg["methods"] = methods
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return job_counts(snakemake(workdir, "-n", "--cores", "2", "all", config=str(path)).stdout)


@pytest.mark.parametrize("change", [
    {"checkpoint_every": 3}, {"keep_checkpoint": True}, {"progress": True}, {"device": "cpu"},
    {"memory_format": "contiguous"}, {"amp": True},
    # the default written out is the same run
    {"methods": {"fedavg": {"method": "fedavg"}, "fedmic": {"method": "fedmic", "hp": {"tau": 2.0}}}},
], ids=lambda c: next(iter(c)))
def test_execution_settings_retrain_nothing(tiny_run, tmp_path, change):
    assert set(dry_run_with(tiny_run, tmp_path, **change)) <= PROVENANCE_ONLY


# the provenance record holds the resolved config, so it is rewritten; no run, no table
PROVENANCE_ONLY = {"collect_all", "all"}


def test_more_threads_retrain_nothing(tiny_run, tmp_path):
    cfg = (REPO / "config" / "tiny.yaml").read_text().replace("threads_per_run: 1", "threads_per_run: 2")
    (tmp_path / "threads.yaml").write_text(cfg)
    counts = job_counts(snakemake(tiny_run, "-n", "--cores", "2", "all", config=str(tmp_path / "threads.yaml")).stdout)
    assert set(counts) <= PROVENANCE_ONLY


def with_tensorboard(tmp_path) -> str:
    cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    (tmp_path / "tensorboard.yaml").write_text(yaml.safe_dump({**cfg, "tensorboard": True}))
    return str(tmp_path / "tensorboard.yaml")


def test_tensorboard_on_retrains_nothing(tiny_run, tmp_path):
    counts = job_counts(snakemake(tiny_run, "-n", "--cores", "2", "all", config=with_tensorboard(tmp_path)).stdout)
    assert set(counts) <= PROVENANCE_ONLY


def test_tensorboard_run_folder_log_lines_and_same_run_json(tiny_run, tmp_path):
    """tensorboard: true: the run's scalars in a folder named by its grid coordinates, its log
    a line per round (tiny.yaml, like every shipped config, has progress: true), and its run
    JSON byte for byte the one trained without."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    coords = "breastmnist/lam0.5_K3_jr1/fedavg/seed0"
    wd = tmp_path / "wd"
    snakemake(wd, "--cores", "1", f"results-tiny/runs/{coords}.json", config=with_tensorboard(tmp_path))
    assert (wd / f"results-tiny/runs/{coords}.json").read_bytes() == (tiny_run / f"results-tiny/runs/{coords}.json").read_bytes()
    events = EventAccumulator(str(wd / "logs-tiny" / "tensorboard" / coords))
    events.Reload()
    assert [e.step for e in events.Scalars("acc/personal_test")] == [1, 2]
    for folder in (wd, tiny_run):
        log = (folder / f"logs-tiny/train/{coords}.log").read_text()
        assert re.findall(r"fedmic\.engine: round (\d)/2: ", log) == ["1", "2"], log


@pytest.mark.parametrize("change, retrained", [
    ({"lr": 0.01}, 2), ({"rounds": 3}, 2),
    ({"methods": {"fedavg": {"method": "fedavg"}, "fedmic": {"method": "fedmic", "hp": {"tau": 3}}}}, 1),
], ids=["lr", "rounds", "fedmic-tau"])
def test_science_settings_retrain_their_runs(tiny_run, tmp_path, change, retrained):
    counts = dry_run_with(tiny_run, tmp_path, **change)
    assert counts.get("train") == retrained and "partition" not in counts


def test_a_changed_default_changes_exactly_its_runs_fingerprints(monkeypatch):
    """A default lives in fedmic/methods.py, which is not a code input (grid.NOT_RUN_CODE):
    its runs are retrained through the fingerprint, a rule parameter (test above: tau)."""
    import dataclasses
    from fedmic import grid
    from fedmic.methods import METHODS
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    before = {k: grid.run_config(cfg, k).fingerprint() for k in grid.all_runs(cfg)}
    prox = METHODS["fedprox"]
    monkeypatch.setitem(METHODS, "fedprox", dataclasses.replace(prox, hps=(dataclasses.replace(prox.hps[0], default=0.02),)))
    after = {k: grid.run_config(cfg, k).fingerprint() for k in grid.all_runs(cfg)}
    changed = {k.arm for k in before if before[k] != after[k]}
    assert changed == {"fedprox"}


EVERY_METHOD = {"local": {}, "fedavg": {}, "fedprox": {}, "fedbn": {"train": {"model": "cnn_bn"}}, "fedper": {},
                "fedrep": {}, "ditto": {}, "moon": {}, "fml": {}, "fedkd": {}, "fedproto": {}, "fedmic": {}}


@pytest.fixture(scope="module")
def copied_workflow(tmp_path_factory):
    """A copy of the package and the workflow, with every method's tiny run done (marked done:
    only which jobs a code change reschedules is tested)."""
    root = tmp_path_factory.mktemp("copy")
    for d in ("fedmic", "workflow"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data").mkdir()
    shutil.copy(DATA / "breastmnist.npz", root / "data")  # --touch must not touch the shared file
    cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    cfg.update(data_root=str(root / "data"), methods={m: {"method": m, **extra} for m, extra in EVERY_METHOD.items()})
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    work = root / "work"
    work.mkdir()
    mark_outputs_done(root / "workflow" / "Snakefile", work, root / "config.yaml", {})
    return root, work


def rescheduled_after_editing(copied, rel: str) -> tuple[set[str], dict[str, int]]:
    """(arms retrained, job counts) in a dry run after editing fedmic/<rel> in the copy."""
    root, work = copied
    src = root / "fedmic" / rel
    original, st = src.read_bytes(), src.stat()
    try:
        src.write_bytes(original + b"\n# edited by a test\n")
        os.utime(src, (st.st_atime, time.time() + 60))
        res = subprocess.run([*SNAKEMAKE, "-s", str(root / "workflow/Snakefile"), "--directory", str(work), "-n",
                              "--cores", "1", "all", "--configfile", str(root / "config.yaml")],
                             capture_output=True, text=True, check=True)
    finally:
        src.write_bytes(original)
        os.utime(src, (st.st_atime, st.st_mtime))
    arms = set(re.findall(r"output: \S*/runs/[^/]+/[^/]+/([^/]+)/seed\d+\.json", res.stdout))
    return arms, job_counts(res.stdout)


@pytest.mark.parametrize("edited, retrained", [
    ("algorithms/fedavg.py", {"fedavg", "fedprox", "ditto", "moon"}),   # FedAvg's subclasses
    ("algorithms/fedper.py", {"fedper", "fedrep"}),                     # FedRep subclasses FedPer
    ("algorithms/fedrep.py", {"fedrep"}),
    ("distill.py", {"fml", "fedkd", "fedmic"}),                         # a shared module they import
    ("algorithms/base.py", set(EVERY_METHOD)),
    ("engine.py", set(EVERY_METHOD)),
    ("methods.py", set()),        # declarative: its defaults reach runs through the fingerprint
    ("__init__.py", set()),       # the version string
    ("report/figures.py", set()),
])
def test_code_change_retrains_exactly_the_runs_that_use_it(copied_workflow, edited, retrained):
    arms, counts = rescheduled_after_editing(copied_workflow, edited)
    assert arms == retrained
    assert counts.get("train", 0) == len(retrained) and "partition" not in counts


def test_the_local_profile_plans_rarely_without_limiting_job_starts():
    """Snakemake re-plans after every timespan of max-jobs-per-timespan, statting every input of
    every ready job; at its default (1 s) that loop took ~45 % of a core on the 2-core machine
    (docs/performance.md). The profile's value must be one Snakemake parses, re-plan at most every
    10 s and still allow more starts per timespan than any local run makes."""
    from snakemake.settings.types import MaxJobsPerTimespan

    profile = yaml.safe_load((REPO / "workflow/profiles/default/config.yaml").read_text())
    limit = MaxJobsPerTimespan.parse_choice(profile["max-jobs-per-timespan"])
    assert limit.timespan >= 10
    assert limit.max_jobs / limit.timespan >= 10  # starts per second: a finishing job's successor is never held


def test_workflow_reads_without_torch(tmp_path):
    """Parsing the Snakefile and planning every run of the demo imports no torch (issue 14)."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('torch is blocked by the test')\n"
        "sys.meta_path.insert(0, NoTorch())\n")
    env = dict(os.environ, FEDMIC_MEDMNIST_ROOT=str(DATA), PYTHONPATH=str(blocker))
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert "torch is blocked by the test" in probe.stderr  # the blocker works
    res = subprocess.run([*SNAKEMAKE, "-s", str(REPO / "workflow/Snakefile"), "--directory", str(tmp_path), "-n",
                          "--cores", "2", "all", "--configfile", str(REPO / "config/demo.yaml")],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    from fedmic import grid
    assert job_counts(res.stdout)["train"] == len(grid.all_runs(yaml.safe_load((REPO / "config/demo.yaml").read_text())))


def test_report_items_are_labelled_with_the_titles_of_their_captions():
    """The HTML report lists each table and figure by what it shows, not as 'T1' or 'f3'."""
    from fedmic import paper

    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    titles = {}
    for name in (o.name for o in paper.enabled(config)):
        caption = (REPO / "workflow" / "report" / f"{name}.rst").read_text()
        labels = paper.report_labels(config, name)
        assert caption.startswith(f"**{labels['item']}")  # one title, in the caption and the list
        assert labels["datasets"] and labels["λ"]
        titles[name] = labels["item"]
    assert titles["t1"] == "Table T1 — datasets and partitions"
    assert titles["f3"].startswith("Figure F3 — Dirichlet partitions")
    for name in paper.outputs("figure"):
        if name != "f3":
            # a figure's title says what it plots, beyond its file name
            assert len(titles[name].partition(" — ")[2].split()) >= 3
    with pytest.raises(ValueError, match="no bold title"):
        paper.caption_title("Learning curves, without a title")
    rules = (REPO / "workflow" / "rules" / "report.smk").read_text()
    assert rules.count("labels=report_labels(_out.name)") == 2  # tables and figures both use them


# --------------------------------------------------------------------------- issue 24
@pytest.fixture(scope="module")
def spaced_run(tmp_path_factory):
    """The tiny config run to the end from a working directory, with results, logs and data
    folders whose paths hold spaces (every rule quotes its paths), keeping checkpoints."""
    wd = tmp_path_factory.mktemp("spaced") / "a work dir"
    data = wd.parent / "data root"
    wd.mkdir()
    data.mkdir()
    (data / "breastmnist.npz").symlink_to(DATA / "breastmnist.npz")
    cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    cfg.update(results="results tiny", logs="logs tiny", data_root=str(data))
    cfg["train"]["keep_checkpoint"] = True
    (wd / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(wd, "--cores", "2", "all", config=str(wd / "cfg.yaml"))
    return wd, cfg


def test_paths_with_spaces_run_to_the_end(spaced_run):
    wd, _ = spaced_run
    res = wd / "results tiny"
    assert (res / "results.csv.gz").stat().st_size > 0 and (res / "tables" / "t2.md").read_text().count("FedMIC")
    runs = sorted(res.glob("runs/breastmnist/*/*/seed0.json"))
    assert [r.parent.name for r in runs] == ["fedavg", "fedmic"]
    assert all(r.with_name(r.name + ".ckpt").exists() for r in runs)  # keep_checkpoint


def test_a_changed_run_replaces_its_kept_checkpoint(spaced_run):
    """keep_checkpoint: true, then a changed lr: Snakemake deletes the run JSON and retrains;
    the job must replace the old configuration's checkpoint (by hand it is refused), and only
    that run is retrained."""
    wd, cfg = spaced_run
    runs = wd / "results tiny" / "runs" / "breastmnist" / "lam0.5_K3_jr1"
    fedmic_before = (runs / "fedmic" / "seed0.json").read_bytes()
    cfg = json.loads(json.dumps(cfg))
    cfg["methods"]["fedavg"]["train"] = {"lr": 0.02}
    (wd / "changed.yaml").write_text(yaml.safe_dump(cfg))
    res = snakemake(wd, "--cores", "2", "all", config=str(wd / "changed.yaml"))
    assert job_counts(res.stdout + res.stderr).get("train") == 1
    assert json.loads((runs / "fedavg" / "seed0.json").read_text())["config"]["lr"] == 0.02
    assert (runs / "fedmic" / "seed0.json").read_bytes() == fedmic_before
    log = (wd / "logs tiny" / "train" / "breastmnist" / "lam0.5_K3_jr1" / "fedavg" / "seed0.log").read_text()
    assert "was written by another configuration" in log and "removed, the run starts from round 1" in log
