"""fedmic used as a Snakemake module from a git URL, the way snakedeploy deploys a workflow:
a folder of its own with config/config.yaml (.test/config/config.yaml, the tiny config) and a
workflow/Snakefile that declares the module and uses all its rules. The module's files come
from git; its jobs must import the installed fedmic package, never the user's folder."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DATA

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")  # the console script: cwd stays off sys.path

pytestmark = pytest.mark.slow

DEPLOYED_SNAKEFILE = '''from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


# declare fedmic as a module
module fedmic:
    snakefile:
        "git+file://{repo}/workflow/Snakefile@main"
    config:
        config


# use all rules from fedmic
use rule * from fedmic
'''


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)


def commit_working_tree(dest: Path) -> None:
    """This working tree, as it is, committed on branch main of a fresh repository."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_symlink() or src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel, follow_symlinks=False)
    git("init", "-q", "-b", "main", cwd=dest)
    git("add", "-A", cwd=dest)
    git("-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-q", "-m", "snapshot", cwd=dest)


def test_module_from_a_git_url_runs_the_test_config_to_the_end(tmp_path):
    source, deploy = tmp_path / "fedmic", tmp_path / "analysis"
    commit_working_tree(source)
    (deploy / "workflow").mkdir(parents=True)
    (deploy / "config").mkdir()
    (deploy / "workflow" / "Snakefile").write_text(DEPLOYED_SNAKEFILE.format(repo=source))
    config_text = (REPO / ".test" / "config" / "config.yaml").read_text()
    (deploy / "config" / "config.yaml").write_text(config_text)
    # A stand-in package in the user's folder, the one the old workflow put on PYTHONPATH: any
    # job (or the parse) that imports from there fails
    (deploy / "fedmic").mkdir()
    (deploy / "fedmic" / "__init__.py").write_text("raise ImportError('imported fedmic from the user folder')\n")
    env = dict(os.environ, FEDMIC_MEDMNIST_ROOT=str(DATA))
    # "installed beside Snakemake": this working tree's package, the one under test
    env["PYTHONPATH"] = str(REPO)
    res = subprocess.run([str(SNAKEMAKE), "--cores", "2"], cwd=deploy, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    results = deploy / yaml.safe_load(config_text)["results"]
    for name in ("t1", "t2", "t4", "t8", "t9"):
        assert (results / "tables" / f"{name}.md").stat().st_size > 0
    for name in ("f3", "learning_curves", "acc_vs_bytes", "svd_ranks"):
        assert (results / "figures" / f"{name}.png").stat().st_size > 1000
    assert (results / "results.csv.gz").stat().st_size > 0
    provenance = yaml.safe_load((results / "provenance.yaml").read_text())
    assert provenance["workflow"]["source"] == f"git+file://{source}/workflow/rules@main"
    import fedmic
    assert provenance["workflow"]["fedmic"] == fedmic.__version__


def test_module_with_a_different_installed_version_stops_before_any_job(tmp_path):
    import fedmic

    source, deploy = tmp_path / "fedmic", tmp_path / "analysis"
    commit_working_tree(source)
    init = source / "fedmic" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "9.'))
    git("-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qam", "bump", cwd=source)
    (deploy / "workflow").mkdir(parents=True)
    (deploy / "config").mkdir()
    (deploy / "workflow" / "Snakefile").write_text(DEPLOYED_SNAKEFILE.format(repo=source))
    shutil.copy(REPO / ".test" / "config" / "config.yaml", deploy / "config" / "config.yaml")
    res = subprocess.run([str(SNAKEMAKE), "-n", "--cores", "1"], cwd=deploy, capture_output=True, text=True,
                         env=dict(os.environ, FEDMIC_MEDMNIST_ROOT=str(DATA), PYTHONPATH=str(REPO)))
    assert res.returncode != 0
    # the fedmic of that repository and ref, never a PyPI version
    assert f"installed package is fedmic {fedmic.__version__}" in res.stdout + res.stderr
    assert f"pip install 'fedmic @ git+file://{source}@main'" in res.stdout + res.stderr
