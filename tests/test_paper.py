"""The paper's tables and figures are the modules of fedmic/paper/: the registry is found from
the package's files, the schema, captions and docs listing are generated from the modules,
and a new module is a new table through the workflow (the worked example of
docs/extending.md, taken from the page itself)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
import yaml
from conftest import DATA
from runfixtures import write_run

from fedmic import grid, paper
from fedmic.config import ConfigError
from fedmic.report import tidy

REPO = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
EXTENDING = REPO / "docs" / "extending.md"


def worked_examples() -> dict[str, tuple[str, str]]:
    """{kind: (module name, source)} of the worked modules in docs/extending.md, each a block
    headed `# fedmic/paper/<name>.py`: one table and one figure."""
    text = EXTENDING.read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n# fedmic/paper/(\w+)\.py\n(.*?)^```$", text, re.S | re.M)
    kinds = {re.search(r'^KIND = "(\w+)"', source, re.M).group(1): (name, source) for name, source in blocks}
    assert len(blocks) == 2 and set(kinds) == {"table", "figure"}, \
        "docs/extending.md has one worked table and one worked figure module, headed # fedmic/paper/<name>.py"
    return kinds


def worked_example() -> tuple[str, str]:
    return worked_examples()["table"]


@pytest.fixture
def dropped_in(tmp_path, monkeypatch):
    """The worked example as a module of its own folder added to the package's path (the
    registry looks at the package's files, wherever they are)."""
    name, source = worked_example()
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / f"{name}.py").write_text(source)
    monkeypatch.setattr(paper, "__path__", [*paper.__path__, str(folder)])
    paper._scan.cache_clear()
    yield name
    sys.modules.pop(f"fedmic.paper.{name}", None)
    paper._scan.cache_clear()


# --------------------------------------------------------------------------- the registry
def test_registry_is_the_package_files_in_the_papers_order():
    files = sorted(p.stem for p in Path(paper.__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    assert sorted(paper.outputs()) == files
    assert list(paper.outputs("table")) == ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9", "tuning", "claims"]
    assert list(paper.outputs("figure")) == ["f3", "learning_curves", "acc_vs_bytes", "svd_ranks"]


def test_a_module_dropped_into_the_package_is_a_table_with_its_schema_section(dropped_in):
    out = paper.outputs()[dropped_in]
    assert out.kind == "table" and out.target == f"table_{dropped_in}"
    section = paper.schema_properties()["tables"]["properties"][dropped_in]
    assert list(section["properties"]) == ["enabled", "min_seeds"]
    assert section["properties"]["min_seeds"]["default"] == 1
    assert section["description"] == "Runs per arm — seeds finished"
    config = {**TINY, "tables": {dropped_in: {"min_seeds": 2}}}
    assert out in paper.enabled(config) and out.resolved(config)["min_seeds"] == 2
    assert out.runs(config) == paper.runs(config, "t2")
    # it shares T2's results file, and its labels come from its caption
    assert paper.results_file_name(config, dropped_in) == "t2"
    assert paper.report_labels(config, dropped_in)["item"] == "Runs per arm — seeds finished"
    assert paper.target_problem({**TINY, "tables": {dropped_in: {"enabled": False}}}, [out.target]).startswith(
        f"target table_{dropped_in}: tables.{dropped_in} is switched off")


def test_a_module_that_declares_too_little_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "half.py").write_text('KIND = "table"\nCAPTION = "**Half.**"\n')
    monkeypatch.setattr(paper, "__path__", [*paper.__path__, str(folder)])
    paper._scan.cache_clear()
    try:
        with pytest.raises(TypeError, match=r"fedmic/paper/half.py declares no OPTIONS, ORDER, render"):
            paper.outputs()
    finally:
        sys.modules.pop("fedmic.paper.half", None)
        paper._scan.cache_clear()


def test_names_that_are_no_output_are_refused_with_the_known_ones(tmp_path):
    p = write_run(tmp_path, "a")
    with pytest.raises(ValueError, match="unknown table 't42'; choose one of t1, t2"):
        paper.render("table", "t42", paper.Inputs(frame=tidy.collect([p])))
    with pytest.raises(ValueError, match=r"tuning has no _valsel variant \(it reports validation scores\)"):
        paper.get("table", "tuning_valsel")
    assert paper.get("figure", "learning-curves")[0].name == "learning_curves"


def test_options_reach_the_table_and_are_checked_as_the_config_is(tmp_path):
    paths = [write_run(tmp_path, "avg", gaccs=(0.5, 0.6, 0.7, 0.8)),
             write_run(tmp_path, "mic", method="fedmic", gaccs=(0.5, 0.6, 0.7, 0.8))]
    results = tidy.write(tidy.collect(paths), tmp_path / "results.csv.gz")
    out = paper.build("table", "t4", [results], tmp_path / "t4", options={"target": 0.65})
    assert "| 0.650 |" in out[1].read_text()
    with pytest.raises(ValueError, match=r"--options of table t4: its section: unknown key\(s\) 'targte'; "
                                         r"valid keys: enabled, target"):
        paper.build("table", "t4", [results], tmp_path / "t4", options={"targte": 0.65})
    with pytest.raises(ValueError, match=r"--options of table t4: target must be <= 1, got 2"):
        paper.build("table", "t4", [results], tmp_path / "t4", options={"target": 2})
    cli = subprocess.run([sys.executable, "-m", "fedmic.cli", "table", "t4", "--inputs", str(results), "--out",
                          str(tmp_path / "cli"), "--options", '{"target": 0.65}'], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert (tmp_path / "cli.md").read_text() == out[1].read_text()


# --------------------------------------------------------------------------- one declaration each
def test_t6_base_methods_are_one_declaration_for_the_config_and_the_table():
    """The config check used to suggest a fedkd base, which the table then refused."""
    from fedmic.paper import t6

    cfg = {**TINY, "methods": {"fedavg": {"method": "fedavg"}, "fedkd": {"method": "fedkd"}},
           "tables": {"t6": {"base": "fedkd", "values": {"tau": [1]}}}}
    with pytest.raises(ConfigError, match=r"tables.t6.base: the arm 'fedkd' runs method fedkd, and t6 reads fedmic "
                                          r"runs only; set tables.t6.base to an arm of method fedmic"):
        grid.all_runs(cfg)
    assert t6.BASE_METHODS == ("fedmic",)
    schema = paper.schema_properties()["tables"]["properties"]["t6"]["properties"]["base"]
    assert "running fedmic" in schema["description"]


# --------------------------------------------------------------------------- generated files
@pytest.mark.parametrize("path", list(paper.generated_files()), ids=lambda p: p.name)
def test_generated_files_are_current(path):
    assert path.read_text(encoding="utf-8") == paper.generated_files()[path], (
        f"{path.relative_to(REPO)} is stale; run `python -m fedmic.paper`")


def test_generation_follows_the_modules(dropped_in):
    """A new module changes the schema, the docs listing and adds its caption (so the test
    above can fail)."""
    files = paper.generated_files()
    caption = paper.CAPTIONS / f"{dropped_in}.rst"
    assert files[caption].startswith("**Runs per arm — seeds finished.**")
    assert f"      {dropped_in}:\n" in files[paper.SCHEMA_FILE]
    assert f"`snakemake table_{dropped_in}`" in files[paper.DOCS_FILE]
    assert files[paper.SCHEMA_FILE] != paper.SCHEMA_FILE.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- the worked example, end to end
def test_the_worked_examples_of_extending_md_build_through_the_workflow(tmp_path):
    """One file each plus `python -m fedmic.paper`: the schema takes the table's option, the
    workflow gets both target rules, and `snakemake table_<name> figure_<name>` writes them,
    on the tiny config."""
    examples = worked_examples()
    (table, table_source), (figure, figure_source) = examples["table"], examples["figure"]
    root = tmp_path / "repo"
    for d in ("fedmic", "workflow", "config", "docs"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    for name, source in examples.values():
        (root / "fedmic" / "paper" / f"{name}.py").write_text(source)
    env = dict(os.environ, PYTHONPATH=str(root), FEDMIC_MEDMNIST_ROOT=str(DATA), CUDA_VISIBLE_DEVICES="")
    gen = subprocess.run([sys.executable, "-m", "fedmic.paper"], cwd=root, env=env, capture_output=True, text=True)
    assert gen.returncode == 0, gen.stderr
    for name in (table, figure):
        assert f"updated workflow/report/{name}.rst" in gen.stdout
    assert "updated docs/paper.md" in gen.stdout
    work = tmp_path / "work"
    work.mkdir()
    (root / "mine.yaml").write_text(yaml.safe_dump({"tables": {table: {"min_seeds": 2}}}))
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(root / "workflow" / "Snakefile"),
                          "--directory", str(work), "--cores", "2", f"table_{table}", f"figure_{figure}",
                          "--configfile", str(root / "config" / "tiny.yaml"), str(root / "mine.yaml")],
                         cwd=root, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = work / "results-tiny"
    frame = pd.read_csv(out / "tables" / f"{table}.csv")
    assert frame["seeds"].tolist() == ["1 (too few)", "1 (too few)"]  # fedavg and fedmic, one seed each
    assert (out / "tables" / f"{table}.md").read_text().startswith("| dataset")
    assert not (out / "tables" / "t2.csv").exists()  # only their own targets
    png = matplotlib.image.imread(out / "figures" / f"{figure}.png")
    assert png.shape[0] > 300 and png.shape[1] > 300 and png.std() > 0  # drawn, not blank
    assert (out / "figures" / f"{figure}.pdf").read_bytes().startswith(b"%PDF")
