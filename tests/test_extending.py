"""The worked examples of docs/extending.md, "A dataset" and "A model", copied from the page into
a copy of the package and trained, so the page keeps working ("A method" is kept by
tests/test_methods.py). The copies stay out of the checkout: nothing here edits the repository."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from conftest import DATA
from fedmic.config import MODELS
from fedmic.models import ENCODERS

REPO = Path(__file__).resolve().parents[1]


def doc_example(section: str) -> str:
    """The one Python block of docs/extending.md's `## <section>`."""
    page = (REPO / "docs" / "extending.md").read_text()
    text = page.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", text, re.S)
    return textwrap.dedent(block)


def package_copy(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "fedmic", repo / "fedmic", ignore=shutil.ignore_patterns("__pycache__"))
    return repo


def fedmic(repo: Path, *args: str) -> None:
    res = subprocess.run([sys.executable, "-m", "fedmic.cli", *args], cwd=repo, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(repo)))
    assert res.returncode == 0, res.stderr[-3000:]


def train_two_clients(repo: Path, tmp_path: Path, root: Path, dataset: str, **config) -> dict:
    partition, out = tmp_path / "part.json", tmp_path / "run.json"
    fedmic(repo, "partition", "--dataset", dataset, "--root", str(root), "--lam", "0.5", "--clients", "2",
           "--min-size", "5", "--out", str(partition))
    cfg = {"dataset": dataset, "method": "fedavg", "lam": 0.5, "clients": 2, "min_size": 5, "rounds": 1, **config}
    fedmic(repo, "train", "--config", json.dumps(cfg), "--partition", str(partition), "--root", str(root),
           "--out", str(out), "--no-progress", "--checkpoint-every", "0")
    return json.loads(out.read_text())


def test_model_names_are_the_encoders():
    """config.MODELS (checked without torch) names exactly the encoders models.py builds."""
    assert MODELS == tuple(ENCODERS)


def test_the_worked_dataset_example_trains(tmp_path):
    repo = package_copy(tmp_path)
    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 60), ("val", 20), ("test", 20)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    np.savez(root / "toymnist.npz", **arrays)
    md5 = hashlib.md5((root / "toymnist.npz").read_bytes()).hexdigest()
    block = doc_example("A dataset")
    assert "MD5_OF_TOYMNIST_NPZ" in block  # the page's placeholder, filled in as its comment says
    with open(repo / "fedmic" / "data" / "registry.py", "a") as f:
        f.write("\n\n" + block.replace("MD5_OF_TOYMNIST_NPZ", md5))

    run = train_two_clients(repo, tmp_path, root, "toymnist")
    assert run["config"]["dataset"] == "toymnist"
    assert sum(run["n_train"]) == 60 and sum(run["n_test"]) == 20 and len(run["history"]) == 1


def test_the_worked_model_example_trains(tmp_path):
    repo = package_copy(tmp_path)
    with open(repo / "fedmic" / "models.py", "a") as f:
        f.write("\n\n" + doc_example("A model"))
    config_py = repo / "fedmic" / "config.py"
    text, named = re.subn(r"^MODELS = \((.*)\)$", r'MODELS = (\1, "mlp")', config_py.read_text(), flags=re.M)
    assert named == 1
    config_py.write_text(text)

    run = train_two_clients(repo, tmp_path, DATA, "breastmnist", model="mlp")
    assert run["config"]["model"] == "mlp"
    # 784 -> 256 -> 256 perceptron and a 256 -> 2 head, all shared by FedAvg
    assert run["params"] == {"shared": (784 * 256 + 256) + (256 * 256 + 256) + (256 * 2 + 2)}
