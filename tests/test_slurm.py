"""config/tiny.yaml through a real SLURM (the single-node cluster of .ci/start-slurm.sh) with
profiles/slurm: every training run must be its own sbatch job asking for a GPU, local rules must
stay local, and the run JSONs must be byte-identical to a local run. A second SLURM run with
profiles/slurm/grouped must bundle the runs into ONE job with ONE GPU, run one after another.

Skipped without a usable SLURM, unless FEDMIC_REQUIRE_SLURM=1 (set by .ci/run): then it fails.
The three Snakemake runs (local, SLURM, grouped SLURM) start together to save wall time; the
cluster has one GPU, so SLURM queues the GPU jobs of both SLURM runs one after another."""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import DATA

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "tiny.yaml"
RESULTS = yaml.safe_load(CONFIG.read_text())["results"]
SLURM_PROFILES = ["--profile", str(REPO / "profiles/slurm"), "--profile", str(REPO / ".ci/slurm-profile"),
                  "--workflow-profile", "none"]
GROUPED = ["--profile", str(REPO / "profiles/slurm/grouped")]
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.?$", re.M)
# gres:gpu:1 or gres/gpu:1 depending on the SLURM version; \b keeps gpu:10 out.
ONE_GPU = re.compile(r"TresPerJob=\S*gres[:/]gpu:1\b")
# Generous: a hung status poll must end the test, not the CI run.
TIMEOUT_S = 900

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def slurm_problem() -> str | None:
    """Why SLURM cannot run jobs here, or None."""
    missing = [c for c in ("sbatch", "squeue", "sinfo", "scontrol") if shutil.which(c) is None]
    if missing:
        return f"SLURM commands not found: {', '.join(missing)} (run .ci/start-slurm.sh)"
    try:
        res = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 20 s (slurmctld down?)"
    states = res.stdout.split()
    # A trailing '*' means the node does not respond; drain/down nodes take no jobs.
    if res.returncode != 0 or not any(s in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"no responsive SLURM node (sinfo rc={res.returncode}: {(res.stdout + res.stderr).strip()!r})"
    return None


def require_slurm():
    problem = slurm_problem()
    if problem is None:
        return
    if os.environ.get("FEDMIC_REQUIRE_SLURM") == "1":
        pytest.fail(f"FEDMIC_REQUIRE_SLURM=1 but SLURM is not usable: {problem}", pytrace=False)
    pytest.skip(problem)


class Run:
    """One Snakemake process started in the background in its own directory."""

    def __init__(self, workdir: Path, targets: list[str], *options: str):
        self.workdir = workdir
        env = dict(os.environ, FEDMIC_MEDMNIST_ROOT=str(DATA))
        # Targets before every option: list-valued ones (--configfile, --resources) swallow them.
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow/Snakefile"), *targets,
               "--directory", str(workdir), "--configfile", str(CONFIG), *options]
        self.log = workdir.parent / f"{workdir.name}.out"
        self._f = open(self.log, "w")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._f, stderr=subprocess.STDOUT)
        self.wall_s = None
        self.output = ""

    def finish(self, rc) -> str | None:
        """Record the end; returns an error message, or None on success."""
        self.wall_s = time.perf_counter() - self.t0
        self._f.close()
        self.output = self.log.read_text()
        return None if rc == 0 else f"snakemake in {self.workdir} failed ({rc}):\n{self.output[-6000:]}"

    def submissions(self) -> list[tuple[str, Path]]:
        return [(jid, Path(log)) for jid, log in SUBMITTED.findall(self.output)]


def wait_all(runs: list[Run]) -> list[str]:
    """Poll until every run ended (so each wall time is its own); returns the errors."""
    errors, pending = [], list(runs)
    while pending:
        time.sleep(1)
        for r in list(pending):
            rc = r.proc.poll()
            if rc is None and time.perf_counter() - r.t0 > TIMEOUT_S:
                r.proc.terminate()  # snakemake cancels its SLURM jobs on SIGTERM
                r.proc.wait(60)
                rc = f"timeout after {TIMEOUT_S} s"
            if rc is not None:
                pending.remove(r)
                err = r.finish(rc)
                if err:
                    errors.append(err)
    return errors


@pytest.fixture(scope="module")
def runs(tmp_path_factory, pytestconfig):
    require_slurm()
    from fedmic import grid
    run_jsons = [grid.run_path(RESULTS, k) for k in grid.all_runs(yaml.safe_load(CONFIG.read_text()))]
    assert len(run_jsons) >= 2  # grouping below needs at least two runs
    base = tmp_path_factory.mktemp("slurm")
    # gpu=2: both local runs train at once
    local = Run(base / "local", run_jsons, "--cores", "2", "--resources", "gpu=2")
    slurm = Run(base / "slurm", ["all"], *SLURM_PROFILES)
    grouped = Run(base / "grouped", run_jsons, *SLURM_PROFILES, *GROUPED)
    errors = wait_all([local, slurm, grouped])
    assert not errors, "\n\n".join(errors)
    # shown even under `pytest -q` (CI's make test), to follow the cost of the SLURM path
    with pytestconfig.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(f"\n[test_slurm] wall time: SLURM run of tiny 'all' {slurm.wall_s:.0f} s, grouped SLURM run "
              f"{grouped.wall_s:.0f} s, local run {local.wall_s:.0f} s (all three at once, one fake GPU)")
    return {"local": local, "slurm": slurm, "grouped": grouped, "run_jsons": run_jsons}


def scontrol(jobid: str) -> str:
    return subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True, check=True).stdout


def assert_completed_with_one_gpu(jobid: str, log: Path):
    info = scontrol(jobid)
    assert "JobState=COMPLETED" in info, info
    assert ONE_GPU.search(info), f"job {jobid} did not ask for exactly one GPU:\n{info}"
    assert log.is_file(), f"SLURM log of job {jobid} missing: {log}"


def run_files(workdir: Path) -> set[str]:
    return {p.relative_to(workdir).as_posix() for p in (workdir / RESULTS / "runs").rglob("seed*.json")
            if not p.name.endswith(".timing.json")}


def assert_same_runs(a: Path, b: Path, run_jsons: list[str]):
    assert run_files(a) == run_files(b) == set(run_jsons)
    for rel in run_jsons:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), f"{rel} differs between {a.name} and {b.name}"


def test_every_training_run_is_one_gpu_sbatch_job(runs):
    slurm, run_jsons = runs["slurm"], runs["run_jsons"]
    subs = slurm.submissions()
    train = [(jid, log) for jid, log in subs if "/rule_train/" in log.as_posix()]
    assert len(train) == len(run_jsons), slurm.output[-4000:]
    assert len({jid for jid, _ in train}) == len(train)
    logs = {}
    for jid, log in train:
        assert_completed_with_one_gpu(jid, log)
        logs[jid] = log.read_text()
    # each run's training happened inside one of those jobs
    for rel in run_jsons:
        assert sum(rel in text for text in logs.values()) == 1, rel


def test_local_rules_are_not_submitted(runs):
    slurm = runs["slurm"]
    subs = slurm.submissions()
    assert all("/rule_train/" in log.as_posix() for _, log in subs), subs
    ran_locally = set(re.findall(r"^localrule (\w+):", slurm.output, re.M))
    assert {"partition", "table_t1", "table_t2", "all"} <= ran_locally
    assert "train" not in ran_locally
    assert {p.name for p in (slurm.workdir / ".snakemake/slurm_logs").iterdir()} == {"rule_train"}


def test_slurm_runs_match_a_local_run_byte_for_byte_and_tables_are_built(runs):
    local, slurm = runs["local"], runs["slurm"]
    assert_same_runs(local.workdir, slurm.workdir, runs["run_jsons"])
    tables = slurm.workdir / RESULTS / "tables"
    for name in ("t1", "t2"):
        for ext in ("csv", "md", "tex"):
            assert (tables / f"{name}.{ext}").stat().st_size > 0
    assert re.search(r"(\d+) of \1 steps \(100%\) done", slurm.output)


def test_grouped_runs_share_one_job_and_one_gpu_and_run_in_turn(runs):
    grouped, run_jsons = runs["grouped"], runs["run_jsons"]
    subs = grouped.submissions()
    assert len(subs) == 1, subs
    jid, log = subs[0]
    assert "/group_train_group_train/" in log.as_posix(), log
    assert_completed_with_one_gpu(jid, log)
    text = log.read_text()
    assert all(rel in text for rel in run_jsons)
    # The job's own Snakemake logs 'localrule train:' when a run starts and 'Finished jobid'
    # when it ends: one after another means no second start before a finish.
    events = re.findall(r"^(localrule train:|Finished jobid: \d+ \(Rule: train\))", text, re.M)
    order = re.sub(r"F+", "F", "".join("S" if e.startswith("localrule") else "F" for e in events))
    assert order == "SF" * len(run_jsons), events
    # ...so the group asks for the runs' time added up (hours:minutes:seconds)
    per_run = yaml.safe_load((REPO / ".ci/slurm-profile/config.yaml").read_text())["set-resources"]["train"]["runtime"]
    h, m, _ = re.search(r"TimeLimit=(\d+):(\d+):(\d+)", scontrol(jid)).groups()
    assert int(h) * 60 + int(m) == per_run * len(run_jsons)
    assert_same_runs(runs["local"].workdir, grouped.workdir, run_jsons)
