"""One version everywhere, the conda environments pinned where they must be, and the catalog
files present and readable. conda cannot run here, so its files are checked by parsing them."""
import re
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
    for name, version in ci.items():  # PyPI and conda-forge names agree for all of them
        assert conda.get(name) == version, name
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
