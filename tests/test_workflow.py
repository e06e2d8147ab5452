"""The workflow end to end on config/tiny.yaml (one real dataset, 3 clients, 2 rounds), and
dry runs that check what a change reruns."""
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "medmnist"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
PAPER_ARMS = 13  # config/config.yaml: the 12 methods and FedAvg on FedBN's model

pytestmark = pytest.mark.skipif(not (SHARED / "breastmnist.npz").exists(), reason="needs ../shared/data/medmnist")


def snakemake(workdir, *args, config="config/tiny.yaml", check=True, gpus=""):
    """gpus: CUDA_VISIBLE_DEVICES, the GPUs the workflow finds ("": a CPU machine)."""
    env = dict(os.environ, FEDMIC_MEDMNIST_ROOT=str(SHARED), CUDA_VISIBLE_DEVICES=gpus)
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
    # 4 datasets x 3 lambdas x every arm x 3 seeds runs for T2 alone
    assert counts["train"] >= 4 * 3 * PAPER_ARMS * 3
    assert counts["download"] >= 1


def test_single_table_target_needs_only_its_runs(tmp_path):
    counts = job_counts(snakemake(tmp_path, "-n", "--quiet", "rules", "--cores", "8", "table_t4",
                                  config="config/config.yaml").stdout)
    assert counts["train"] == 4 * 3 * PAPER_ARMS * 3  # exactly T2's runs
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
