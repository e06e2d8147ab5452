"""Each method's declaration (METHOD in its file under fedmic/algorithms/, read by the registry
in fedmic/methods.py) is the one source of its hyperparameters: the checks, the defaults, the
typed hp its algorithm receives, the schema's hp sections and the docs table all come from it
and must agree."""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import DATA
from fedmic import methods
from fedmic.config import MODELS, ConfigError, RunConfig
from fedmic.methods import METHODS, hp_defaults, resolve_hp

REPO = Path(__file__).resolve().parents[1]
FLAG = "breastmnist"


# --------------------------------------------------------------------------- checks
@pytest.mark.parametrize("method, hp, expected", [
    # the cases: FedMIC was not range-checked, and types crashed in round 1
    ("fedmic", {"tau": -1}, "'tau' must be a number > 0, got -1"),
    ("fedmic", {"alpha": -3}, "'alpha' must be a number >= 0, got -3"),
    ("fedmic", {"teacher_width": 0}, "'teacher_width' must be a number > 0, got 0"),
    ("fedmic", {"fixed_rank": -2}, "'fixed_rank' must be an integer >= 1 or null, got -2"),
    ("fedmic", {"tau": "two"}, "'tau' must be a number > 0, got 'two' ["),
    ("fedmic", {"fixed_rank": "x"}, "'fixed_rank' must be an integer >= 1 or null, got 'x'"),
    ("fedmic", {"fixed_rank": 2.5}, "'fixed_rank' must be an integer >= 1 or null, got 2.5"),
    ("fedmic", {"decompose": "full"}, "'decompose' must be 'delta' or 'params', got 'full'"),
    ("fedmic", {"gpd": "no"}, "'gpd' must be true or false, got 'no'"),
    ("fedmic", {"energy_start": 0.99, "energy_end": 0.95}, "energy_start (0.99) > energy_end (0.95)"),
    ("fedmic", {"max_adaptive_weight": 0}, "'max_adaptive_weight' must be a number > 0, got 0"),
    # moved here from the per-method tests: the classes no longer check their own values
    ("fedprox", {"mu": -0.1}, "'mu' must be a number >= 0, got -0.1"),
    ("fedprox", {"mu": float("nan")}, "'mu' must be a number >= 0, got nan"),
    ("fedprox", {"mu": float("inf")}, "'mu' must be a number >= 0, got inf"),
    ("fedprox", {"mu": "1e-3"}, "got '1e-3' (YAML reads 1e-3 as a string: write 1.0e-3)"),
    ("fedprox", {"mu": True}, "'mu' must be a number >= 0, got True"),
    ("fedrep", {"head_epochs": 0}, "'head_epochs' must be an integer >= 1, got 0"),
    ("fedrep", {"head_epochs": 2.5}, "'head_epochs' must be an integer >= 1, got 2.5"),
    ("fedrep", {"head_epochs": True}, "'head_epochs' must be an integer >= 1, got True"),
    ("fedrep", {"head_epochs": "10"}, "'head_epochs' must be an integer >= 1, got '10'"),
    ("ditto", {"lam": -1.0}, "'lam' must be a number >= 0, got -1.0"),
    ("ditto", {"personal_epochs": 0}, "'personal_epochs' must be an integer >= 1 or null, got 0"),
    ("moon", {"mu": "one"}, "'mu' must be a number >= 0, got 'one'"),
    ("moon", {"tau": 0.0}, "'tau' must be a number > 0, got 0.0"),
    ("moon", {"proj_dim": 0}, "'proj_dim' must be an integer >= 1, got 0"),
    ("fml", {"alpha": 1.5}, "'alpha' must be a number in [0, 1], got 1.5"),
    ("fml", {"tau": -1}, "'tau' must be a number > 0, got -1"),
    ("fedkd", {"energy_start": 1.2}, "'energy_start' must be a number in (0, 1], got 1.2"),
    ("fedkd", {"energy_start": 0.99, "energy_end": 0.95}, "set energy_start <= energy_end"),
    ("fedkd", {"downlink": "full"}, "'downlink' must be 'delta' or 'params', got 'full'"),
    ("fedkd", {"adaptive": 1}, "'adaptive' must be true or false, got 1"),
    ("fedproto", {"lam": float("nan")}, "'lam' must be a number >= 0, got nan"),
    ("fedproto", {"inference": "knn"}, "'inference' must be 'own_prototypes' or 'all_prototypes' or 'head', got 'knn'"),
    ("fedavg", {"mu": 0.1}, "unknown hyperparameter(s) ['mu'] for method 'fedavg'; valid: none"),
    ("fedmic", {"taux": 2}, "unknown hyperparameter(s) ['taux'] for method 'fedmic'; valid: alpha, beta, tau,"),
])
def test_bad_values_are_refused_naming_key_and_rule(method, hp, expected):
    with pytest.raises(ConfigError) as e:
        RunConfig(dataset=FLAG, method=method, hp=hp)
    assert expected in str(e.value)
    assert str(e.value).startswith(f"{method}: ") or "unknown hyperparameter" in str(e.value)


def test_cross_field_rule_with_the_run_settings():
    with pytest.raises(ConfigError, match=r"fedbn: batch-norm layers stay local, but model 'cnn' has none; "
                                          r"use model cnn_bn or resnet18"):
        RunConfig(dataset=FLAG, method="fedbn")
    RunConfig(dataset=FLAG, method="fedbn", model="cnn_bn")


def test_fedbn_rule_matches_the_models():
    """The rule names the models with batch norm; models.py is the truth."""
    import torch
    from fedmic.models import build_model
    rule = METHODS["fedbn"].rules[0]
    for name in MODELS:
        has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in build_model(name, 1, 2).modules())
        assert rule.ok({}, {"model": name}) == has_bn, name


def test_defaults_fill_and_numbers_normalise():
    cfg = RunConfig(dataset=FLAG, method="fedmic", hp={"tau": 4})
    assert cfg.hp == {"tau": 4.0} and isinstance(cfg.hp["tau"], float)
    assert cfg.resolved_hp().to_dict() == {**hp_defaults("fedmic"), "tau": 4.0}
    # the same run either way: tau 4 and 4.0 share a fingerprint, hence a checkpoint
    assert cfg.fingerprint() == RunConfig(dataset=FLAG, method="fedmic", hp={"tau": 4.0}).fingerprint()
    assert cfg.fingerprint() != RunConfig(dataset=FLAG, method="fedmic").fingerprint()
    # FedMIC's contract values (issue 12)
    assert hp_defaults("fedmic")["decompose"] == "delta" and hp_defaults("fedkd")["downlink"] == "delta"


def test_every_default_passes_its_own_check():
    for name, m in METHODS.items():
        assert resolve_hp(name, hp_defaults(name), {"model": "cnn_bn"}).to_dict() == hp_defaults(name)
        for h in m.hps:
            assert h.accepts(h.default), (name, h.name)


def test_classes_match_the_declaration():
    import torch  # noqa: F401
    from fedmic.algorithms import get_algorithm
    for name, m in METHODS.items():
        cls = get_algorithm(name)
        assert cls.method.name == name and cls.__name__ == m.cls and cls.__module__ == f"fedmic.algorithms.{m.module}"
        # the file's own METHOD, as Python runs it, is what the registry read from its text
        # (rules hold lambdas, equal only to themselves: compared by their text)
        own = sys.modules[cls.__module__].METHOD
        read = methods.read_declaration(REPO / "fedmic" / "algorithms" / f"{m.module}.py")
        assert dataclasses.replace(own, module=m.module, rules=()) == dataclasses.replace(read, rules=())
        assert [r.text for r in own.rules] == [r.text for r in read.rules]


# --------------------------------------------------------------------------- the registry
def write_method(folder: Path, name: str, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(text))


def test_registry_is_read_from_the_files():
    """Every file under fedmic/algorithms/ with a METHOD is a method (no list to keep), base.py
    and mutual.py, which declare none, are not; a variant's declaration lists only what it adds."""
    files = {p.stem for p in (REPO / "fedmic" / "algorithms").glob("*.py") if "\nMETHOD = " in p.read_text()}
    assert set(m.module for m in METHODS.values()) == files and "base" not in files and "mutual" not in files
    assert list(METHODS) == sorted(METHODS)  # the order of the file names
    assert len(files) == len(METHODS) == 12
    fedrep = methods.read_declaration(REPO / "fedmic" / "algorithms" / "fedrep.py")
    assert fedrep.extends == "fedper" and fedrep.personalised is None and [h.name for h in fedrep.hps] == ["head_epochs"]
    assert METHODS["fedrep"].personalised is True and METHODS["fedprox"].personalised is False
    assert METHODS["fedkd"].factorised and METHODS["fedmic"].factorised and not METHODS["ditto"].factorised


def test_registry_finds_a_new_file_and_merges_a_variant(tmp_path):
    write_method(tmp_path, "base", "class Algorithm:\n    pass\n")  # no METHOD: not a method
    write_method(tmp_path, "plain", """
        import torch  # never run by the registry
        from fedmic.methods import Method, number
        METHOD = Method("plain", "Plain", "Plain", personalised=True, hps=(number("w", 1.0, "a weight", ge=0),))
    """)
    write_method(tmp_path, "variant", """
        from fedmic.methods import Method, integer
        METHOD = Method("variant", "Variant", "Variant", extends="plain", hps=(integer("k", 2, "a count", ge=1),))
    """)
    found = methods.discover(tmp_path)
    assert list(found) == ["plain", "variant"] and found["variant"].module == "variant"
    assert [h.name for h in found["variant"].hps] == ["w", "k"] and found["variant"].personalised is True
    assert found["plain"].factorised is False


@pytest.mark.parametrize("text, error", [
    ('METHOD = Method("fedavg", "X", "X")', r"method 'fedavg' is declared in fedmic/algorithms/.*py too"),
    ('METHOD = Method("v", "V", "V", extends="nope")', "extends unknown method 'nope'"),
    ('METHOD = Method("v", "V", "V", extends="fedprox", hps=(number("mu", 0.1, "again"),))',
     r"redeclares \['mu'\], which it inherits from fedprox; declare only what it adds"),
    ('METHOD = Method("v", "V", "V", hps=(number("w", 1, "an int default"),))', "default 1 is not a number"),
    ('W = 1.0\nMETHOD = Method("v", "V", "V", hps=(number("w", W, "w"),))', "uses a name the registry cannot see"),
    ('METHOD = {"name": "v"}', "must be a fedmic.methods.Method, got dict"),
])
def test_registry_refuses_a_bad_declaration_naming_the_file(tmp_path, text, error):
    import shutil
    folder = tmp_path / "algorithms"
    shutil.copytree(REPO / "fedmic" / "algorithms", folder)
    (folder / "zz_bad.py").write_text(text + "\n")
    with pytest.raises(ValueError, match=error) as e:
        methods.discover(folder)
    assert "zz_bad.py" in str(e.value) or "fedmic/algorithms/zz_bad.py" in str(e.value)


# --------------------------------------------------------------------------- typed hyperparameters
def test_resolved_hyperparameters_are_typed_and_frozen():
    hp = resolve_hp("fedmic", {"tau": 4, "fixed_rank": 3})
    assert type(hp) is METHODS["fedmic"].hp_type and hp.tau == 4.0 and type(hp.tau) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        hp.tau = 1.0
    for name, m in METHODS.items():
        resolved = resolve_hp(name, {}, {"model": "cnn_bn"})
        declared = {f.name: f.type for f in dataclasses.fields(resolved)}
        assert list(declared) == [h.name for h in m.hps], name
        for h in m.hps:
            value = getattr(resolved, h.name)
            assert declared[h.name] == (h.kind | None if h.nullable else h.kind)
            assert value is None and h.nullable or type(value) is h.kind, (name, h.name, value)
    assert resolve_hp("fedmic", {"fixed_rank": 3.0}).fixed_rank == 3 and type(resolve_hp("fedmic", {"fixed_rank": 3.0}).fixed_rank) is int


def test_the_algorithm_receives_its_hyperparameters_once(monkeypatch):
    """The engine resolves a run's hyperparameters once and hands them to the constructor; no
    algorithm resolves them again or reads them by string key."""
    import torch
    from fedmic import config
    from fedmic.simulation.setup import make_algorithm
    from fedmic.algorithms import Context, get_algorithm
    for path in (REPO / "fedmic" / "algorithms").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                assert "resolve_hp" not in [a.name for a in node.names], path.name
            if isinstance(node, ast.Subscript):  # self.hp["tau"]: a string key where an attribute belongs
                assert not ast.unparse(node.value).endswith(".hp"), (path.name, ast.unparse(node))
    calls = []
    real = config.resolve_hp
    monkeypatch.setattr(config, "resolve_hp", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    cfg = RunConfig(dataset=FLAG, method="fedmic", hp={"tau": 4}, rounds=2)
    calls.clear()
    ctx = Context(model="cnn", in_channels=1, n_classes=2, image_size=28, device=torch.device("cpu"), rounds=2,
                  local_epochs=1, batch_size=8, lr=0.05)
    algo = make_algorithm(cfg, ctx)
    assert calls == ["fedmic"] and algo.hp.tau == 4.0 and algo.hp == cfg.resolved_hp()
    with pytest.raises(TypeError, match=r"FedMIC takes resolve_hp\('fedmic', ...\), got dict"):
        get_algorithm("fedmic")(ctx, {"tau": 4.0})
    with pytest.raises(TypeError, match="got FedAvgHyperParameters"):
        get_algorithm("fedmic")(ctx, resolve_hp("fedavg", {}))


# --------------------------------------------------------------------------- generated files
@pytest.mark.parametrize("path", list(methods.generated_files()), ids=lambda p: p.name)
def test_generated_blocks_are_current(path):
    prefix, block = methods.generated_files()[path]
    assert methods.render(path, prefix, block) == path.read_text(encoding="utf-8"), \
        f"{path.name} is out of date: run `python -m fedmic.methods`"


def test_generator_writes_the_spec(tmp_path):
    """A changed spec changes both generated files (so the test above can fail)."""
    schema, docs = methods.SCHEMA_FILE.read_text(), methods.DOCS_FILE.read_text()
    fedmic = METHODS["fedmic"]
    changed = dataclasses.replace(fedmic.hp["tau"], default=3.0, meaning="a changed meaning")
    try:
        METHODS["fedmic"] = dataclasses.replace(fedmic, hps=tuple(changed if h.name == "tau" else h for h in fedmic.hps))
        files = methods.generated_files()
        new_schema = methods.render(methods.SCHEMA_FILE, *files[methods.SCHEMA_FILE])
        new_docs = methods.render(methods.DOCS_FILE, *files[methods.DOCS_FILE])
    finally:
        METHODS["fedmic"] = fedmic
    assert new_schema != schema and "a changed meaning; a number > 0" in new_schema and "default: 3.0" in new_schema
    assert new_docs != docs and "| FedMIC (`fedmic`) | `tau` | `3` | a number > 0 | {1.0, 2.0, 4.0} | a changed meaning |" in new_docs


def test_schema_hp_sections_agree_with_the_checks():
    """For every hyperparameter, the generated JSON schema and the spec's own check accept and
    refuse the same values (NaN aside: JSON has none, YAML's .nan is caught by RunConfig)."""
    schema = yaml.safe_load(methods.SCHEMA_FILE.read_text())
    probes = [None, True, False, "x", "delta", "params", "proto", "counts", -1, 0, 1, 2, 10, -0.5, 0.0, 0.5, 1.0, 1.5]
    for name, m in METHODS.items():
        sub = {**schema["definitions"][f"hp_{name}"], "definitions": schema["definitions"]}
        for h in m.hps:
            for v in probes:
                by_schema = jsonschema.Draft202012Validator(sub).is_valid({h.name: v})
                assert by_schema == h.accepts(v), (name, h.name, v)


def test_docs_table_lists_every_hyperparameter():
    text = methods.DOCS_FILE.read_text()
    for m in METHODS.values():
        for h in m.hps:
            assert f"| {m.pretty} (`{m.name}`) | `{h.name}` |" in text


# --------------------------------------------------------------------------- torch-free reading
def test_package_init_holds_only_constants():
    """fedmic/__init__.py is never a reason to retrain (grid.NOT_RUN_CODE): it must hold nothing
    that can change a number. Allowed besides constants: OpenMP's wait policy (how idle threads
    wait, an execution setting; docs/performance.md "Threads")."""
    tree = ast.parse((REPO / "fedmic" / "__init__.py").read_text())
    wait_policy = 'os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")'
    for node in tree.body:
        if isinstance(node, ast.Import) and [a.name for a in node.names] == ["os"]:
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            assert ast.unparse(node) == wait_policy.replace('"', "'"), ast.dump(node)
            continue
        assert isinstance(node, (ast.Expr, ast.Assign)) and not isinstance(getattr(node, "value", None), ast.Call), \
            ast.dump(node)


BLOCK_TORCH = textwrap.dedent("""
    import sys
    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"torch is blocked by the test ({name})")
    sys.meta_path.insert(0, NoTorch())
""")


def no_torch_env(tmp_path) -> dict:
    """An environment in which `import torch` fails in every Python started with it."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TORCH)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))


def test_config_grid_and_cli_need_no_torch(tmp_path):
    env = no_torch_env(tmp_path)
    code = ("import fedmic.grid, fedmic.config, fedmic.methods, fedmic.schema, fedmic.cli, fedmic.algorithms\n"
            "from fedmic import grid, config\n"
            "cfg = grid.run_config(__import__('yaml').safe_load(open('config/demo.yaml')), "
            "grid.all_runs(__import__('yaml').safe_load(open('config/demo.yaml')))[0])\n"
            "print(cfg.fingerprint(), len(grid.code_files('fedrep')))\n"
            "import torch\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert p.returncode == 1 and "ImportError: torch is blocked by the test (torch)" in p.stderr, p.stderr
    assert len(p.stdout.split()) == 2  # everything before `import torch` ran
    exe = Path(sys.executable).with_name("fedmic")
    p = subprocess.run([str(exe), "--version"], env=env, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == f"fedmic {__import__('fedmic').__version__}", p.stderr
    p = subprocess.run([str(exe), "--help"], env=env, capture_output=True, text=True)
    assert p.returncode == 0 and "report-grid" not in p.stdout
    assert set(p.stdout.split("{", 1)[1].split("}", 1)[0].split(",")) == {"download", "partition", "stamp-partition", "train",
                                                                         "collect", "table", "figure", "flower", "select"}


# --------------------------------------------------------------------------- docs/extending.md
def test_the_worked_example_in_extending_md_trains(tmp_path):
    """The toy method of docs/extending.md, "A method", copied from the page into a copy of the
    package: the registry finds it, the generator writes it into schema and docs table, and
    `fedmic train` trains it for two rounds."""
    page = (REPO / "docs" / "extending.md").read_text()
    section = page.split("## A method\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    repo = tmp_path / "repo"
    for part in ("fedmic", "workflow/schemas", "docs"):
        shutil.copytree(REPO / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "fedmic" / "algorithms" / "toy.py").write_text(textwrap.dedent(block))
    env = dict(os.environ, PYTHONPATH=str(repo))
    py = [sys.executable]
    gen = subprocess.run([*py, "-m", "fedmic.methods"], cwd=repo, env=env, capture_output=True, text=True)
    assert gen.returncode == 0, gen.stderr
    assert "| Toy (`toy`) | `decay` | `0.01` |" in (repo / "docs" / "hyperparameters.md").read_text()
    assert "hp_toy" in (repo / "workflow" / "schemas" / "config.schema.yaml").read_text()
    partition = tmp_path / "part.json"
    data = str(DATA)
    p = subprocess.run([*py, "-m", "fedmic.cli", "partition", "--dataset", FLAG, "--root", data, "--lam", "0.5",
                        "--clients", "2", "--min-size", "5", "--out", str(partition)], cwd=repo, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "toy.json"
    config = {"dataset": FLAG, "method": "toy", "hp": {"decay": 0.05}, "lam": 0.5, "clients": 2, "min_size": 5,
              "rounds": 2}
    t = subprocess.run([*py, "-m", "fedmic.cli", "train", "--config", json.dumps(config),
                        "--partition", str(partition), "--root", data, "--out", str(out), "--no-progress",
                        "--checkpoint-every", "0"], cwd=repo, env=env, capture_output=True, text=True)
    assert t.returncode == 0, t.stderr[-3000:]
    run = json.loads(out.read_text())
    assert run["config"]["method"] == "toy" and run["config"]["hp"] == {"decay": 0.05}
    assert len(run["history"]) == 2
