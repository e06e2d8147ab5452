"""Partitions (docs/method.md) on real MedMNIST labels."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from fedmic.data.partition import (
    FORMAT,
    SCHEMES,
    Partition,
    PartitionError,
    client_dirichlet_partition,
    dirichlet_partition,
    label_counts,
    load_partition,
    make_partition,
    save_partition,
)
from conftest import DATA

SPLITS = ("train", "val", "test")


def _labels(flag: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"{flag}.npz") as d:
        return {s: d[f"{s}_labels"] for s in SPLITS}


@pytest.fixture(scope="module")
def pneumonia():
    return _labels("pneumoniamnist")


@pytest.fixture(scope="module")
def retina():
    return _labels("retinamnist")


def _assert_disjoint_complete(part: Partition, labels, splits=SPLITS):
    for s in splits:
        allix = np.concatenate(part.indices[s])
        assert len(allix) == len(np.unique(allix)), f"{s}: an image is given to two clients"
        np.testing.assert_array_equal(np.sort(allix), np.arange(len(labels[s])))
        for ix in part.indices[s]:
            assert ix.dtype == np.int64
            assert np.all(np.diff(ix) > 0), "client indices must be sorted"


@pytest.mark.parametrize("flag", ["pneumoniamnist", "retinamnist"])
def test_dirichlet_label_disjoint_and_complete(flag):
    labels = _labels(flag)
    part = dirichlet_partition(labels, 10, 0.5, seed=0, min_size=10, dataset=flag)
    assert part.scheme == "dirichlet_label" and part.clients == 10
    _assert_disjoint_complete(part, labels)
    # counts agree with the labels
    for s in SPLITS:
        c = part.counts(s, labels)
        assert c.shape == (10, part.n_classes)
        np.testing.assert_array_equal(c.sum(axis=0), label_counts(labels[s], part.n_classes))
        np.testing.assert_array_equal(c.sum(axis=1), part.sizes(s))


@pytest.mark.parametrize("flag", ["pneumoniamnist", "retinamnist"])
def test_same_proportions_across_splits(flag):
    labels = _labels(flag)
    part = dirichlet_partition(labels, 10, 0.3, seed=1, min_size=5)
    tr = part.counts("train", labels)
    n_tr = tr.sum(axis=0)
    for s in ("val", "test"):
        ev = part.counts(s, labels)
        n_ev = ev.sum(axis=0)
        for c in range(part.n_classes):
            # Client i's count of n images is floor(n*C_i) - floor(n*C_{i-1}) with C the
            # cumulative p_c, which lies strictly within 1 of n*p_ic. So the share of each
            # split is within 1/n of p_ic, and the two shares within 1/n_train + 1/n_eval.
            tol = 1.0 / n_tr[c] + 1.0 / n_ev[c]
            diff = np.abs(tr[:, c] / n_tr[c] - ev[:, c] / n_ev[c])
            assert diff.max() < tol, (s, c, diff.max(), tol)


def test_deterministic_by_seed(retina):
    a = dirichlet_partition(retina, 8, 0.5, seed=3)
    b = dirichlet_partition(retina, 8, 0.5, seed=3)
    c = dirichlet_partition(retina, 8, 0.5, seed=4)
    for s in SPLITS:
        for x, y in zip(a.indices[s], b.indices[s]):
            np.testing.assert_array_equal(x, y)
    assert a.redraws == b.redraws
    assert any(not np.array_equal(x, y) for x, y in zip(a.indices["train"], c.indices["train"]))
    ca = client_dirichlet_partition(retina, 8, 0.5, seed=3)
    cb = client_dirichlet_partition(retina, 8, 0.5, seed=3)
    for s in SPLITS:
        for x, y in zip(ca.indices[s], cb.indices[s]):
            np.testing.assert_array_equal(x, y)


def test_min_size_honoured(retina):
    for seed in range(3):
        part = dirichlet_partition(retina, 10, 0.5, seed=seed, min_size=40, max_tries=500)
        assert part.sizes("train").min() >= 40
        assert part.redraws >= 0


def _mean_entropy(counts: np.ndarray) -> float:
    p = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    return float(h.mean())


def test_smaller_lambda_more_skew(retina):
    ent = {}
    held = {}
    for lam in (0.1, 10.0):
        e, k = [], []
        for seed in range(4):
            part = dirichlet_partition(retina, 10, lam, seed=seed, min_size=1, max_tries=500)
            c = part.counts("train", retina)
            e.append(_mean_entropy(c))
            k.append((c > 0).sum(axis=1).mean())
        ent[lam], held[lam] = np.mean(e), np.mean(k)
    assert ent[0.1] < ent[10.0] - 0.3
    assert held[0.1] < held[10.0]


def test_impossible_min_size_names_second_scheme(pneumonia):
    with pytest.raises(PartitionError) as ei:
        dirichlet_partition(pneumonia, 20, 0.1, seed=0, min_size=10, max_tries=20)
    msg = str(ei.value)
    assert "dirichlet_client" in msg
    assert "K=20" in msg and "0.1" in msg and "min_size=10" in msg
    assert isinstance(ei.value, ValueError)


def test_client_scheme_terminates_on_pneumonia(pneumonia):
    t0 = time.perf_counter()
    part = client_dirichlet_partition(pneumonia, 20, 0.1, seed=0, min_size=10)
    assert time.perf_counter() - t0 < 5
    n = len(pneumonia["train"])
    np.testing.assert_array_equal(part.sizes("train"), np.full(20, n // 20))
    train = np.concatenate(part.indices["train"])
    assert len(np.unique(train)) == len(train)
    _assert_disjoint_complete(part, pneumonia, splits=("val", "test"))
    # a client's share of class-c val/test follows its share of class-c train
    tr = part.counts("train", pneumonia)
    f = tr / tr.sum(axis=0)
    for s in ("val", "test"):
        ev = part.counts(s, pneumonia)
        n_ev = ev.sum(axis=0)
        assert np.all(np.abs(ev / n_ev - f) < 1.0 / n_ev + 1e-12)

    sizes = [300] * 5 + [100] * 15
    custom = make_partition("dirichlet_client", pneumonia, 20, 0.1, 1, 10, client_sizes=sizes)
    np.testing.assert_array_equal(custom.sizes("train"), sizes)


def test_client_scheme_extreme_settings_terminate():
    labels = _labels("breastmnist")
    part = client_dirichlet_partition(labels, 54, 0.01, seed=2, min_size=10)
    assert part.sizes("train").min() == len(labels["train"]) // 54
    _assert_disjoint_complete(part, labels, splits=("val", "test"))


def test_bad_inputs(retina):
    n = len(retina["train"])
    with pytest.raises(ValueError, match="lam"):
        dirichlet_partition(retina, 5, 0.0, seed=0)
    with pytest.raises(ValueError, match="lam"):
        client_dirichlet_partition(retina, 5, -1.0, seed=0)
    with pytest.raises(ValueError, match="lam"):
        dirichlet_partition(retina, 5, float("nan"), seed=0)
    with pytest.raises(ValueError, match="n_clients"):
        dirichlet_partition(retina, 0, 0.5, seed=0)
    with pytest.raises(ValueError, match="more clients than images allow"):
        dirichlet_partition(retina, n // 10 + 1, 0.5, seed=0, min_size=10)
    with pytest.raises(ValueError, match="more clients than images allow"):
        client_dirichlet_partition(retina, n + 1, 0.5, seed=0, min_size=1)
    with pytest.raises(ValueError, match="unknown partition scheme"):
        make_partition("iid", retina, 5, 0.5, 0, 10)
    with pytest.raises(ValueError, match="train"):
        dirichlet_partition({"test": retina["test"]}, 5, 0.5, seed=0)
    with pytest.raises(ValueError, match="multi-label"):
        dirichlet_partition({"train": np.zeros((n, 3), np.uint8)}, 5, 0.5, seed=0)
    with pytest.raises(ValueError, match="client_sizes"):
        client_dirichlet_partition(retina, 2, 0.5, seed=0, client_sizes=[n, n])
    assert set(SCHEMES) == {"dirichlet_label", "dirichlet_client"}


def test_save_load_round_trip(tmp_path, retina):
    part = make_partition("dirichlet_label", retina, 6, 0.3, 7, 10, dataset="retinamnist",
                          dataset_md5="bd4c0672f1bba3e3a89f0e4e876791e4")
    path = save_partition(part, tmp_path / "sub" / "p.json")
    assert [p.name for p in path.parent.iterdir()] == ["p.json"], "no temp files left behind"
    d = json.loads(path.read_text())
    assert d["format"] == FORMAT
    assert isinstance(d["indices"]["train"][0][0], int)
    back = load_partition(path, expect={"dataset": "retinamnist", "scheme": "dirichlet_label",
                                        "lam": 0.3, "clients": 6, "seed": 7, "min_size": 10,
                                        "dataset_md5": part.dataset_md5})
    for k in ("dataset", "scheme", "lam", "clients", "seed", "min_size", "dataset_md5",
              "n_classes", "redraws", "n_images"):
        assert getattr(back, k) == getattr(part, k), k
    for s in SPLITS:
        for x, y in zip(part.indices[s], back.indices[s]):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(back.counts("test", retina), part.counts("test", retina))


def test_load_mismatch_names_field(tmp_path, retina):
    part = dirichlet_partition(retina, 4, 0.5, seed=0, dataset="retinamnist")
    path = save_partition(part, tmp_path / "p.json")
    with pytest.raises(PartitionError) as ei:
        load_partition(path, expect={"dataset": "retinamnist", "lam": 0.1})
    msg = str(ei.value)
    assert "'lam'" in msg and "0.5" in msg and "0.1" in msg and "delete" in msg
    with pytest.raises(PartitionError, match="'seed'"):
        load_partition(path, expect={"seed": 1})
    with pytest.raises(ValueError, match="unknown expect"):
        load_partition(path, expect={"colour": "red"})


def test_truncated_file_raises(tmp_path, retina):
    part = dirichlet_partition(retina, 4, 0.5, seed=0)
    path = save_partition(part, tmp_path / "p.json")
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(PartitionError, match="p.json"):
        load_partition(path)
    path.write_text(json.dumps({"format": "something-else/9"}))
    with pytest.raises(PartitionError, match="format"):
        load_partition(path)
    bad = part.to_dict()
    bad["indices"]["train"][1] = bad["indices"]["train"][0]  # same images twice
    path.write_text(json.dumps(bad))
    with pytest.raises(PartitionError, match="two clients"):
        load_partition(path)
