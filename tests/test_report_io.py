"""Table/figure writers and the T1/F3 outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedmic.data.partition import client_dirichlet_partition, dirichlet_partition, save_partition
from fedmic.report.io import latex_escape, mean_std, save_figure, write_table
from fedmic.paper import f3, t1
from fedmic.report.partitions import T1_COLUMNS

import matplotlib.pyplot as plt  # after fedmic.report.io, which selects the Agg backend
from conftest import DATA

SPLITS = ("train", "val", "test")


def _loader(flag: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"{flag}.npz") as d:
        return {s: d[f"{s}_labels"] for s in SPLITS}


def _read(paths):
    return {p.suffix: p.read_text(encoding="utf-8") for p in paths}


def _table():
    return pd.DataFrame({
        "method": ["Fed_Avg", "FedMIC 10%", "Local"],
        "acc": [0.8123, 0.9012, 0.7001],
        "loss": [0.30, 0.12, 0.45],
    })


def test_write_table_files_and_bold(tmp_path):
    paths = write_table(_table(), tmp_path / "t_main", "Main results (λ = 0.1, 10%)",
                        bold={"acc": "max", "loss": "min"})
    assert [p.name for p in paths] == ["t_main.csv", "t_main.md", "t_main.tex"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t_main.csv", "t_main.md", "t_main.tex"]
    out = _read(paths)
    csv = pd.read_csv(paths[0])
    assert list(csv.columns) == ["method", "acc", "loss"]
    assert csv["acc"].tolist() == [0.8123, 0.9012, 0.7001]  # full precision in CSV

    md = out[".md"]
    assert "**0.901**" in md and "**0.120**" in md
    assert "**0.812**" not in md and "**0.450**" not in md
    assert md.count("**") == 4
    assert "| method | acc | loss |" in md and "Table: Main results" in md

    tex = out[".tex"]
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert tex.count(rule) == 1
    assert "\\textbf{0.901}" in tex and "\\textbf{0.120}" in tex
    assert tex.count("\\textbf") == 2
    assert "Fed\\_Avg" in tex and "FedMIC 10\\%" in tex
    assert "\\caption{Main results ($\\lambda$ = 0.1, 10\\%)}" in tex
    assert "\\label{tab:t-main}" in tex
    assert "\\begin{tabular}{lrr}" in tex


def test_write_table_ties_and_mean_std_columns(tmp_path):
    df = pd.DataFrame({
        "method": ["A", "B", "C"],
        "ACC": [mean_std([0.9, 0.92, 0.91]), mean_std([0.91, 0.91, 0.91]), mean_std([0.5, 0.6])],
        "acc_mean": [0.91, 0.91, 0.55],
        "bytes": [10, 5, 5],
    })
    paths = write_table(df, tmp_path / "t2", "ties", bold={"ACC": "max", "bytes": "min"},
                        bold_by={"ACC": "acc_mean"})
    out = _read(paths)
    assert "acc_mean" in out[".csv"]
    assert "acc_mean" not in out[".md"] and "acc\\_mean" not in out[".tex"]
    assert "**0.910 ± 0.010**" in out[".md"] and "**0.910 ± 0.000**" in out[".md"]
    assert "0.550 ± 0.071" in out[".md"] and "**0.550" not in out[".md"]
    assert out[".md"].count("**5**") == 2 and "**10**" not in out[".md"]
    assert "\\textbf{0.910 $\\pm$ 0.010}" in out[".tex"]
    assert out[".tex"].count("\\textbf{5}") == 2


def test_write_table_group_and_errors(tmp_path):
    df = pd.DataFrame({"dataset": ["x", "x", "y", "y"], "acc": [0.1, 0.2, 0.9, 0.3]})
    md = _read(write_table(df, tmp_path / "g", "g", bold={"acc": "max"}, group_by="dataset"))[".md"]
    assert "**0.200**" in md and "**0.900**" in md and md.count("**") == 4
    with pytest.raises(ValueError, match="max"):
        write_table(df, tmp_path / "e", "e", bold={"acc": "best"})
    with pytest.raises(ValueError, match="not numeric"):
        write_table(df, tmp_path / "e", "e", bold={"dataset": "max"})
    assert not (tmp_path / "e.csv").exists(), "a failed table leaves no files"


def test_latex_escape():
    assert latex_escape("a_b 5% & $x# {y}") == r"a\_b 5\% \& \$x\# \{y\}"


def test_mean_std():
    assert mean_std([0.9, 0.92, 0.91]) == "0.910 ± 0.010"
    assert mean_std([0.9, 0.92, 0.91], digits=2) == "0.91 ± 0.01"
    assert mean_std([0.5]) == "0.500"
    assert mean_std([0.5, float("nan")]) == "n/a"
    with pytest.raises(ValueError):
        mean_std([])


def test_save_figure(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    paths = save_figure(fig, tmp_path / "fig" / "curve")
    assert [p.name for p in paths] == ["curve.png", "curve.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:4] == b"%PDF"
    assert all(p.stat().st_size > 1000 for p in paths)
    assert not plt.fignum_exists(fig.number)
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["curve.pdf", "curve.png"]


@pytest.fixture
def two_partitions(tmp_path):
    breast, retina = _loader("breastmnist"), _loader("retinamnist")
    pa = dirichlet_partition(breast, 4, 0.5, seed=0, min_size=10, dataset="breastmnist")
    pb = client_dirichlet_partition(retina, 5, 0.1, seed=0, min_size=10, dataset="retinamnist")
    pc = dirichlet_partition(retina, 5, 1.0, seed=0, min_size=10, dataset="retinamnist")
    paths = [save_partition(p, tmp_path / f"p{i}.json") for i, p in enumerate((pa, pb, pc))]
    return paths, (pa, pb, pc), breast


def test_table_t1(tmp_path, two_partitions):
    paths, (pa, _, _), breast = two_partitions
    out = t1.table(paths, _loader).write(tmp_path / "t1")
    assert [p.suffix for p in out] == [".csv", ".md", ".tex"]
    df = pd.read_csv(out[0])
    assert list(df.columns) == T1_COLUMNS
    assert len(df) == 3
    row = df[df.dataset == "breastmnist"].iloc[0]
    sizes = pa.sizes("train")
    assert row.train_min == sizes.min() and row.train_max == sizes.max()
    assert row.train_median == pytest.approx(np.median(sizes))
    assert (row.train, row.val, row.test) == (546, 78, 156)
    train = pa.counts("train", breast)
    held = (train > 0).sum(axis=1)
    assert row.classes_mean == pytest.approx(held.mean())
    assert (row.classes_min, row.classes_max) == (held.min(), held.max())
    # client-prior floor (each client's training-majority class), by hand
    y_test = breast["test"].ravel()
    hits = sum(int((y_test[ix] == train[i].argmax()).sum()) for i, ix in enumerate(pa.indices["test"]))
    assert row.client_prior_floor == pytest.approx(hits / len(y_test))
    assert row.scheme == "dirichlet_label" and row["lambda"] == 0.5 and row.clients == 4
    md = out[1].read_text()
    assert "client_prior_floor" in md and "| breastmnist |" in md


def test_figure_f3(tmp_path, two_partitions):
    paths, _, _ = two_partitions
    out = save_figure(f3.figure(paths, _loader), tmp_path / "f3")
    assert [p.name for p in out] == ["f3.png", "f3.pdf"]
    assert all(p.stat().st_size > 5000 for p in out)
    with pytest.raises(ValueError, match="one partition per dataset and lambda"):
        f3.figure(paths + paths[:1], _loader)


def test_f3_names_each_rows_classes_from_the_registry(two_partitions):
    from fedmic.data.registry import DATASETS

    paths, _, _ = two_partitions
    fig = f3.figure(paths, _loader)
    fig.canvas.draw()
    rows = {}
    for ax in fig.axes:
        shown = [t.get_text() for t in ax.get_yticklabels() if t.get_visible() and t.get_text()]
        if ax.yaxis.get_tick_params()["labelleft"] and ax.has_data():
            rows.setdefault(ax.get_title().split(",")[0], shown)
    assert rows["BreastMNIST"] == ["malignant", "normal, benign"]
    retina = DATASETS["retinamnist"]["label"]
    assert rows["RetinaMNIST"] == [retina[str(i)] for i in range(len(retina))]
    # one panel of a row names the classes, the next leaves them to it
    assert sum(1 for ax in fig.axes if ax.get_title().startswith("RetinaMNIST")
               and ax.has_data() and ax.yaxis.get_tick_params()["labelleft"]) == 1
