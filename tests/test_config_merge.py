"""Snakemake's config conventions: config/config.yaml is the default, a --configfile updates it,
--config sets one key of whatever is in effect, and a file's `replace:` sections are its own
(workflow/rules/common.smk, fedmic.schema.replace_sections). Every check reads the resolved
config where the workflow hands it on: the `--config` of the provenance job in a dry run."""
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DATA

from fedmic import schema

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["config/demo.yaml", "config/compare.yaml", "config/tiny.yaml", ".test/config/config.yaml"]



def load(rel):
    return yaml.safe_load((REPO / rel).read_text())


def meant(rel):
    """What a shipped config file means on its own: the file, less the `replace` key."""
    cfg = load(rel)
    cfg.pop("replace")
    return cfg


@pytest.fixture
def project(tmp_path):
    """A working directory like a clone's: config/ (the defaults among it) and .test/config/."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / ".test", tmp_path / ".test")
    return tmp_path


def resolved(workdir, *args, target="all"):
    """The config the workflow resolves for `snakemake -n -p <target> <args>` run in workdir."""
    env = dict(os.environ, FEDMIC_MEDMNIST_ROOT=str(DATA), CUDA_VISIBLE_DEVICES="")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow/Snakefile"), "-n", "-p",
                          "--cores", "1", target, *args], cwd=workdir, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    m = re.search(r"-m fedmic\.cli collect .* --provenance \S+ --config '([^']*)'", res.stdout)
    assert m, res.stdout[-3000:]
    return json.loads(m.group(1))


@pytest.mark.parametrize("rel", SHIPPED)
def test_a_shipped_config_resolves_to_exactly_the_file(project, rel):
    # before `replace` the workflow skipped config/config.yaml under a --configfile: the
    # resolved config was the file itself; the defaults are in the folder, and merged now
    assert resolved(project, "--configfile", rel) == meant(rel)


def test_config_sets_one_key_of_the_defaults(project):
    got = resolved(project, "--config", "results=elsewhere", target="elsewhere/provenance.yaml")
    assert got == {**load("config/config.yaml"), "results": "elsewhere"}


def test_config_sets_one_key_on_top_of_a_configfile(project):
    # Snakemake reads a nested --config value's leaves as strings: device is one
    got = resolved(project, "--configfile", "config/tiny.yaml", "--config", "results=elsewhere", "threads_per_run=2",
                   "train={device: cpu}", target="elsewhere/provenance.yaml")
    expected = meant("config/tiny.yaml")
    expected["results"], expected["threads_per_run"] = "elsewhere", 2
    expected["train"]["device"] = "cpu"  # a replaced section is still updated key by key by --config
    assert got == expected


def test_a_configfile_without_replace_updates_the_defaults(project):
    (project / "mine.yaml").write_text("results: mine\ntrain: {rounds: 7}\nmethods: {fedavg-e2: {method: fedavg, "
                                       "train: {local_epochs: 2}}}\n")
    got = resolved(project, "--configfile", "mine.yaml", target="mine/provenance.yaml")
    expected = load("config/config.yaml")
    expected["results"] = "mine"
    expected["train"]["rounds"] = 7
    expected["methods"]["fedavg-e2"] = {"method": "fedavg", "train": {"local_epochs": 2}}
    assert got == expected


def test_replace_takes_the_last_file_that_replaces_a_section_and_updates_it_with_later_ones():
    defaults = {"results": "r", "train": {"rounds": 100, "lr": 0.05}, "methods": {"a": {"method": "fedavg"}}}
    first = {"replace": ["methods", "train"], "methods": {"b": {"method": "fedmic"}}, "train": {"rounds": 3}}
    second = {"methods": {"c": {"method": "local"}}, "train": {"lr": 0.1}}
    overrides = {"train": {"clients": 4}}
    config = copy.deepcopy(defaults)
    for layer in (first, second, overrides):  # what Snakemake hands the workflow
        for key, value in layer.items():
            if isinstance(value, dict):
                config.setdefault(key, {}).update(copy.deepcopy(value))
            else:
                config[key] = value
    assert schema.replace_sections(config, [("first.yaml", first), ("second.yaml", second)], overrides) is None
    assert config == {"results": "r", "methods": {"b": {"method": "fedmic"}, "c": {"method": "local"}},
                      "train": {"rounds": 3, "lr": 0.1, "clients": 4}}


def test_replace_of_a_section_the_file_leaves_out_drops_it():
    config = {"results": "r", "figures": {"f3": {"enabled": False}}, "replace": ["figures"]}
    assert schema.replace_sections(config, [("f.yaml", {"results": "r", "replace": ["figures"]})], {}) is None
    assert config == {"results": "r"}


@pytest.mark.parametrize("bad", [["datasets"], "methods", ["methods", "tabels"]])
def test_a_bad_replace_is_one_line_naming_the_file_and_the_valid_sections(bad):
    config = {"results": "r", "replace": bad}
    problem = schema.replace_sections(config, [("mine.yaml", {"replace": bad})], {})
    assert problem == (f"mine.yaml: replace: {bad!r} is not valid; write a list of sections among: "
                       "partition, train, methods, tuning, tables, figures")


def test_a_bad_replace_stops_the_workflow_in_one_line(project):
    (project / "mine.yaml").write_text("replace: [seeds]\nresults: mine\n")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow/Snakefile"), "-n",
                          "--cores", "1", "all", "--configfile", "mine.yaml"], cwd=project, capture_output=True,
                         text=True, env=dict(os.environ, FEDMIC_MEDMNIST_ROOT=str(DATA)))
    assert res.returncode != 0
    assert "fedmic workflow: error: config error: " in res.stderr and "replace: ['seeds'] is not valid" in res.stderr
    assert "Traceback" not in res.stderr


def test_the_participation_follow_up_is_make_compare_at_another_lambda(project):
    # config/participation.yaml updates compare.yaml: same protocol and tuning budget, T3 alone
    # at λ 0.5 (docs/results.md), in its own results folder so compare's tables stay as they are
    from fedmic import paper

    got = resolved(project, "--configfile", "config/compare.yaml", "config/participation.yaml")
    compare = meant("config/compare.yaml")
    assert got["results"] == "results-participation" != compare["results"]
    for section in ("partition", "train", "methods", "seeds"):
        assert got[section] == compare[section]
    assert {k: got["tuning"][k] for k in ("budget", "rounds", "seed")} == \
        {k: compare["tuning"][k] for k in ("budget", "rounds", "seed")}
    t3 = paper.runs(got, "t3")
    assert {(k.dataset, k.lam, k.clients) for k in t3} == {("retinamnist", 0.5, 20), ("breastmnist", 0.5, 20)}
    assert {k.arm for k in t3} == {*compare["tables"]["t3"]["arms"], "fedmic"}
    assert {k.join_ratio for k in t3} == set(compare["tables"]["t3"]["join_ratios"])
    assert [name for name in ("t2", "t4", "t5", "t9") if got["tables"][name].get("enabled", True)] == []
