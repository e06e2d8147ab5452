"""One version everywhere, the conda environments pinned where they must be, and the catalog
files present and readable. conda cannot run here, so its files are checked by parsing them."""
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

import fedmic

REPO = Path(__file__).resolve().parents[1]


def pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==?\s*([^\s=#]+)\s*(#.*)?", line)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_version_has_one_source():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fedmic.__version__"}
    assert yaml.safe_load((REPO / "CITATION.cff").read_text())["version"] == fedmic.__version__
    first = re.search(r"^## (\S+)", (REPO / "CHANGELOG.md").read_text(), re.M).group(1)
    assert first == fedmic.__version__


def test_environment_yml_pins_what_ci_tests():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["channels"][:2] == ["conda-forge", "bioconda"]  # bioconda: snakemake and its SLURM plugin
    conda = pins(d for d in env["dependencies"] if isinstance(d, str))
    ci = pins((REPO / "constraints.txt").read_text().splitlines())
    for name, version in ci.items():  # PyPI and conda-forge names agree but for build's
        assert conda.get({"build": "python-build"}.get(name, name)) == version, name
    # and constraints.txt is what `make install` installs with
    assert "-c constraints.txt" in (REPO / "Makefile").read_text()


def test_dependencies_need_no_medmnist_or_torchvision():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in deps if re.match(r"(medmnist|torchvision)\b", d)]


def test_catalog_files():
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"] == "MIT"
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert catalog["usage"]["software-stack-deployment"]["conda"] is True and catalog["usage"]["report"] is True
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    paper = cff["preferred-citation"]
    assert [a["family-names"] for a in paper["authors"]] == ["Ren", "Hu", "Chen", "Wang"]
    assert {"type": "other", "value": "arXiv:2407.02261"} in paper["identifiers"]
    test_config = yaml.safe_load((REPO / ".test/config/config.yaml").read_text())
    assert test_config["datasets"] and test_config["methods"]
    assert (REPO / "config/README.md").stat().st_size > 0


def test_build_makes_an_sdist_and_a_wheel_whose_install_runs_the_cli(tmp_path):
    """`python -m build` from the tracked files (no network: --no-isolation builds with the
    setuptools at hand), then the wheel alone in a fresh environment: its `fedmic` command
    runs and reports the version, from the installed copy, not from a checkout."""
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True, text=True)
    for rel in filter(None, tracked.stdout.split("\0")):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    dist = tmp_path / "dist"
    res = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    version = fedmic.__version__
    assert sorted(p.name for p in dist.iterdir()) == [f"fedmic-{version}-py3-none-any.whl", f"fedmic-{version}.tar.gz"]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(dist / f"fedmic-{version}-py3-none-any.whl")], check=True)
    run = dict(cwd=tmp_path, capture_output=True, text=True,  # away from any checkout
               env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert subprocess.run([str(venv / "bin" / "fedmic"), "--version"], **run).stdout.strip() == f"fedmic {version}"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import fedmic; print(fedmic.__file__)"], **run)
    assert Path(where.stdout.strip()).is_relative_to(venv)
    commands = subprocess.run([str(venv / "bin" / "fedmic"), "--help"], **run).stdout
    assert all(c in commands for c in ("download", "partition", "train", "collect", "table", "figure"))


def test_make_takes_torch_from_the_index_it_is_given(tmp_path):
    def torch_line(*args):
        plan = subprocess.run(["make", "-n", "-B", "install", f"VENV={tmp_path / 'venv'}", *args], cwd=REPO,
                              check=True, capture_output=True, text=True).stdout
        return next(line for line in plan.splitlines() if "pip install -q \"torch" in line)

    assert "--index-url" not in torch_line()  # pip's own configuration
    cpu = torch_line("TORCH_INDEX=https://download.pytorch.org/whl/cpu")
    assert cpu.endswith('" --index-url "https://download.pytorch.org/whl/cpu"')
