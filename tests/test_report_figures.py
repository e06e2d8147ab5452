"""Figures from the synthetic run JSONs of test_report_tables (known values)."""

from __future__ import annotations

import numpy as np
import pytest

from fedmic.report import build_figure
from fedmic.report.figures import (
    ACC_LABEL,
    FLOOR_LABEL,
    RANK_LABEL,
    ROUND_LABEL,
    UPLINK_LABEL,
    acc_vs_bytes_figure,
    learning_curves_figure,
    svd_ranks_figure,
)
from fedmic.report.runs import load_runs

import matplotlib.pyplot as plt  # after fedmic.report, which selects the Agg backend

from test_report_tables import main_runs, write_run


@pytest.fixture()
def runs(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    return main_runs(folder)


def _panels(fig):
    return {ax.get_title(): ax for ax in fig.axes if ax.axison}


def _lines(ax):
    return {ln.get_label(): ln for ln in ax.get_lines()}


def test_learning_curves(runs):
    fig = learning_curves_figure(load_runs(runs))
    try:
        panels = _panels(fig)
        assert set(panels) == {"BloodMNIST, λ=0.1", "BloodMNIST, λ=0.5"}
        ax = panels["BloodMNIST, λ=0.1"]
        assert ax.get_xlabel() == ROUND_LABEL and ax.get_ylabel() == ACC_LABEL
        lines = _lines(ax)
        assert set(lines) == {"Local", "FedAvg", "FedMIC", FLOOR_LABEL}
        # every seed of FedAvg has accs 0.5..0.8 at rounds 1..4: the mean is that curve
        x, y = lines["FedAvg"].get_data()
        assert list(x) == [1, 2, 3, 4] and np.allclose(y, [0.5, 0.6, 0.7, 0.8])
        assert np.allclose(lines[FLOOR_LABEL].get_ydata(), 0.6)
        # λ=0.5 holds FedAvg only
        assert set(_lines(panels["BloodMNIST, λ=0.5"])) == {"FedAvg", FLOOR_LABEL}
        assert fig.legends, "figure legend missing"
    finally:
        plt.close(fig)


def test_learning_curves_band_is_std_over_seeds(tmp_path):
    paths = [write_run(tmp_path, f"s{s}", method="fedavg", seed=s, accs=(0.5 + 0.1 * s, 0.6))
             for s in range(3)]
    fig = learning_curves_figure(load_runs(paths))
    try:
        ax = _panels(fig)["BloodMNIST, λ=0.1"]
        band = ax.collections[0].get_paths()[0].vertices
        # round 1: accs 0.5, 0.6, 0.7 -> mean 0.6, std (ddof=1) 0.1
        at1 = band[np.isclose(band[:, 0], 1.0), 1]
        assert np.allclose(sorted(set(np.round(at1, 9))), [0.5, 0.7])
    finally:
        plt.close(fig)


def test_acc_vs_bytes(runs):
    fig = acc_vs_bytes_figure(load_runs(runs))
    try:
        ax = _panels(fig)["BloodMNIST, λ=0.1"]
        assert ax.get_xscale() == "log"
        assert ax.get_xlabel() == UPLINK_LABEL and ax.get_ylabel() == ACC_LABEL
        lines = _lines(ax)
        # Local sends nothing: a horizontal line at its last accuracy, not a point at 0 on log x
        assert set(lines) == {"FedAvg", "FedMIC", "Local (no uplink)"}
        x, y = lines["FedAvg"].get_data()
        # 2000 bytes uplink per round
        assert np.allclose(x, [0.002, 0.004, 0.006, 0.008]) and np.allclose(y, [0.5, 0.6, 0.7, 0.8])
        assert np.allclose(lines["Local (no uplink)"].get_ydata(), 0.6)
    finally:
        plt.close(fig)


def test_svd_ranks(runs):
    fig = svd_ranks_figure(load_runs(runs))
    try:
        panels = _panels(fig)
        # only FedMIC records ranks
        assert list(panels) == ["FedMIC: BloodMNIST, λ=0.1"]
        ax = panels["FedMIC: BloodMNIST, λ=0.1"]
        assert ax.get_xlabel() == ROUND_LABEL and ax.get_ylabel() == RANK_LABEL
        lines = _lines(ax)
        assert set(lines) == {"encoder.conv2", "encoder.conv2 (broadcast)", "head.fc",
                              "head.fc (broadcast)"}
        assert np.allclose(lines["encoder.conv2"].get_ydata(), [10, 9, 8, 7])
        assert np.allclose(lines["head.fc (broadcast)"].get_ydata(), [4, 4, 3, 3])
    finally:
        plt.close(fig)


def test_svd_ranks_without_ranks_explains_itself(tmp_path):
    fig = svd_ranks_figure(load_runs([write_run(tmp_path, "a", method="fedavg")]))
    try:
        assert "No run" in fig.axes[0].texts[0].get_text()
    finally:
        plt.close(fig)


@pytest.mark.parametrize("name", ["learning_curves", "acc_vs_bytes", "svd_ranks"])
def test_build_figure_writes_png_and_pdf(runs, tmp_path, name):
    out = build_figure(name, runs, tmp_path / "fig" / name)
    assert sorted(p.suffix for p in out) == [".pdf", ".png"]
    assert all(p.stat().st_size > 1000 for p in out)
    assert out[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_figure(runs, tmp_path):
    with pytest.raises(ValueError, match="unknown figure"):
        build_figure("nope", runs, tmp_path / "x")
