"""Under --sdm conda every rule gets workflow/envs/fedmic.yaml plus the fedmic package from the
source the workflow came from: the checkout, or the git repository and ref of a module. conda
does not run here: a stand-in answers the questions Snakemake asks before it creates an
environment, and a dry run shows which environment file the jobs get and their commands."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DATA

from test_module import DEPLOYED_SNAKEFILE, commit_working_tree

import fedmic

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
RENDERED = Path(".snakemake/fedmic/fedmic-env.yaml")


FAKE_CONDA = """#!/bin/sh
case "$*" in
  "info --json") echo '{"conda_prefix": "%s", "platform": "linux-64", "envs_dirs": []}' ;;
  "--version") echo "conda 24.11.0" ;;
  "config --get channel_priority --json") echo '{"get": {"channel_priority": "strict"}}' ;;
  *) echo "stand-in conda cannot: $*" >&2; exit 1 ;;
esac
"""


def dry_run_under_conda(tmp_path, workdir, *args):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "conda").write_text(FAKE_CONDA % (tmp_path / "conda"))
    (bin_dir / "conda").chmod(0o755)
    env = dict(os.environ, FEDMIC_MEDMNIST_ROOT=str(DATA), PATH=f"{bin_dir}:{os.environ['PATH']}")
    env["PYTHONPATH"] = str(REPO)  # a module's Snakemake reads the installed fedmic: the one under test
    res = subprocess.run([str(SNAKEMAKE), "-n", "-p", "--sdm", "conda", "--cores", "1", *args], cwd=workdir,
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def expected_environment(requirement):
    env = yaml.safe_load((REPO / "workflow/envs/fedmic.yaml").read_text())
    next(d for d in env["dependencies"] if isinstance(d, dict))["pip"].append(requirement)
    return env


def assert_jobs_use_the_rendered_environment(out, workdir):
    # one environment for every rule: the rendered file, and the jobs run its `python`
    envs = [line for line in out.splitlines() if line.startswith("Conda environment ")]
    assert envs == [f"Conda environment {RENDERED} will be created."]
    commands = [line for line in out.splitlines() if line.startswith("Shell command: ") and line != "Shell command: None"]
    assert commands and all(" python -m fedmic." in c and sys.executable not in c for c in commands)
    text = (workdir / RENDERED).read_text()
    assert text.startswith(f"# workflow/envs/fedmic.yaml with fedmic {fedmic.__version__} ")
    return yaml.safe_load(text)


def test_from_a_checkout_the_environment_installs_that_checkout(tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(REPO / "config", workdir / "config")
    out = dry_run_under_conda(tmp_path, workdir, "-s", str(REPO / "workflow/Snakefile"), "all", "--configfile",
                              "config/tiny.yaml")
    env = assert_jobs_use_the_rendered_environment(out, workdir)
    assert env == expected_environment(f"fedmic @ file://{REPO}")


def test_as_a_module_from_a_git_url_the_environment_installs_that_repository_and_ref(tmp_path):
    source, deploy = tmp_path / "fedmic", tmp_path / "analysis"
    commit_working_tree(source)
    (deploy / "workflow").mkdir(parents=True)
    (deploy / "config").mkdir()
    (deploy / "workflow" / "Snakefile").write_text(DEPLOYED_SNAKEFILE.format(repo=source))
    shutil.copy(REPO / ".test" / "config" / "config.yaml", deploy / "config" / "config.yaml")
    out = dry_run_under_conda(tmp_path, deploy)
    env = assert_jobs_use_the_rendered_environment(out, deploy)
    assert env == expected_environment(f"fedmic @ git+file://{source}@main")


def test_the_template_holds_no_fedmic_of_its_own():
    # a fedmic from PyPI (no such project of ours) must never stand in for the workflow's own
    env = yaml.safe_load((REPO / "workflow/envs/fedmic.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == [] and env["channels"][0] == "conda-forge"
