"""Figures over the tidy results frame, from hand-made run JSONs (tests/runfixtures.py)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from runfixtures import write_run  # noqa: E402

from fedmic import paper  # noqa: E402
from fedmic.paper import acc_vs_bytes, learning_curves, svd_ranks  # noqa: E402
from fedmic.report import build_figure, figures, tidy  # noqa: E402

ARMS = ("local", "fedavg", "fedprox", "fedbn", "fedper", "fedrep", "ditto", "moon", "fml", "fedkd", "fedproto", "fedmic")


def lines_by_label(ax) -> dict:
    return {ln.get_label(): ln for ln in ax.get_lines()}


@pytest.fixture
def twelve(tmp_path):
    """Every method on one setting, FedMIC last; FedMIC and FedKD record ranks."""
    paths = []
    for i, m in enumerate(ARMS):
        kw = {"ranks": {"encoder.conv2.weight": [10, 9, 8, 7], "head.weight": [5, 5, 4, 4]}} \
            if m in ("fedmic", "fedkd") else {}
        up = (0, 0) if m == "local" else (1000 + 10 * i, 1000)
        paths.append(write_run(tmp_path, m, method=m, accs=(0.5, 0.6, 0.7, 0.6 + 0.01 * i), up=up,
                               down=up, **kw))
    return tidy.collect(paths)


def test_every_arm_has_its_own_colour_and_marker_and_fedmic_stands_out(twelve):
    fig = learning_curves.figure(twelve)
    ax = fig.axes[0]
    lines = lines_by_label(ax)
    arms = [lab for lab in lines if lab != figures.FLOOR_LABEL]
    assert len(arms) == 12
    colours = [matplotlib.colors.to_hex(lines[a].get_color()) for a in arms]
    markers = [lines[a].get_marker() for a in arms]
    assert len(set(colours)) == 12 and len(set(markers)) == 12
    mic = lines["FedMIC"]
    # FedMIC stands out by width and colour, but lies *under* every other arm and the floor
    assert mic.get_linewidth() > max(lines[a].get_linewidth() for a in arms if a != "FedMIC")
    assert mic.get_zorder() < min(lines[a].get_zorder() for a in arms if a != "FedMIC")
    assert matplotlib.colors.to_hex(mic.get_color()) == "#000000"
    floor = lines[figures.FLOOR_LABEL]
    assert floor.get_linestyle() == "--" and floor.get_ydata()[0] == pytest.approx(0.6)
    assert floor.get_zorder() > max(lines[a].get_zorder() for a in arms)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[-1] == figures.FLOOR_LABEL and "FedMIC" in legend


def test_panels_are_the_settings_that_exist(tmp_path):
    # PneumoniaMNIST at λ 0.1 and 0.5, BreastMNIST (another partition scheme) at λ 0.1 only
    paths = [write_run(tmp_path, "p1", lam=0.1), write_run(tmp_path, "p5", lam=0.5),
             write_run(tmp_path, "b1", dataset="breastmnist", scheme="dirichlet_client", lam=0.1)]
    fig = learning_curves.figure(tidy.collect(paths))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["PneumoniaMNIST, λ=0.1", "PneumoniaMNIST, λ=0.5", "BreastMNIST, λ=0.1"]
    assert all(ax.has_data() for ax in fig.axes)  # no empty panel anywhere
    # complete: datasets as rows, λ as columns
    paths.append(write_run(tmp_path, "b5", dataset="breastmnist", scheme="dirichlet_client", lam=0.5))
    fig = acc_vs_bytes.figure(tidy.collect(paths))
    assert len(fig.axes) == 4 and all(ax.has_data() for ax in fig.axes)
    grid = {(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start): ax.get_title() for ax in fig.axes}
    assert grid[(1, 1)] == "BreastMNIST, λ=0.5"


def test_learning_curve_band_is_std_over_seeds(tmp_path):
    paths = [write_run(tmp_path, f"s{s}", seed=s, accs=(a, a)) for s, a in ((0, 0.5), (1, 0.7))]
    fig = learning_curves.figure(tidy.collect(paths))
    ax = fig.axes[0]
    assert np.allclose(lines_by_label(ax)["FedAvg"].get_ydata(), [0.6, 0.6])
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.6 - np.std([0.5, 0.7], ddof=1))


def test_acc_vs_bytes_counts_both_directions_and_draws_local_flat(twelve):
    ax = acc_vs_bytes.figure(twelve).axes[0]
    lines = lines_by_label(ax)
    # FedAvg: 2000 B up + 2000 B down per round, cumulative, in MB
    assert np.allclose(lines["FedAvg"].get_xdata(), [0.00402 * r for r in (1, 2, 3, 4)])
    assert "Local (no bytes)" in lines and lines["Local (no bytes)"].get_linestyle() == ":"
    assert ax.get_xscale() == "log"


def test_svd_ranks_one_panel_per_arm_that_records_ranks(twelve, tmp_path):
    fig = svd_ranks.figure(twelve)
    assert [ax.get_title().split(":")[0] for ax in fig.get_axes()] == ["FedKD", "FedMIC"]
    lines = lines_by_label(fig.get_axes()[1])
    assert list(lines[f"conv 2 ({svd_ranks.UPLOAD_TEXT})"].get_ydata()) == [10, 9, 8, 7]
    assert list(lines[f"classifier head ({svd_ranks.BROADCAST_TEXT})"].get_ydata()) == [4, 4, 3, 3]
    none = svd_ranks.figure(tidy.collect([write_run(tmp_path, "avg")]))
    assert "No run" in none.axes[0].texts[0].get_text()


@pytest.mark.parametrize("name", ["learning_curves", "acc_vs_bytes", "svd_ranks"])
def test_build_figure_from_a_results_file_writes_png_and_pdf(twelve, tmp_path, name):
    results = tidy.write(twelve, tmp_path / "results.csv.gz")
    out = build_figure(name, [results], tmp_path / name)
    assert [p.suffix for p in out] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in out)
    with pytest.raises(ValueError, match="unknown figure"):
        build_figure("nope", [results], tmp_path / "x")


# --------------------------------------------------------------------------- what a reader sees


def _pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def visible_pixels(fig, artists) -> int:
    """Pixels that change when ``artists`` are hidden: 0 means something else covers them."""
    before = _pixels(fig)
    for a in artists:
        a.set_visible(False)
    after = _pixels(fig)
    for a in artists:
        a.set_visible(True)
    return int(np.any(before != after, axis=-1).sum())


@pytest.fixture
def ties(tmp_path):
    """Local, FedKD and FedMIC on the client-prior floor (0.6) every round, with the same bytes
    for FedKD and FedMIC; FedAvg and FedProx tie with each other; FedRep differs."""
    at_floor = (0.6, 0.6, 0.6, 0.6)
    runs = [("local", at_floor, (0, 0)), ("fedavg", (0.5, 0.6, 0.7, 0.8), (1000, 1000)),
            ("fedprox", (0.5, 0.6, 0.7, 0.8), (1000, 1000)), ("fedrep", (0.4, 0.5, 0.5, 0.7), (800, 800)),
            ("fedkd", at_floor, (300, 300)), ("fedmic", at_floor, (300, 300))]
    return tidy.collect([write_run(tmp_path, m, method=m, accs=a, up=up, down=up) for m, a, up in runs])


@pytest.mark.parametrize("name", ["learning_curves", "acc_vs_bytes"])
def test_no_method_and_no_floor_is_hidden_where_they_tie(ties, name):
    fig = paper.outputs()[name].module.figure(ties)
    ax = fig.axes[0]
    lines = lines_by_label(ax)
    assert {"FedKD", "FedMIC", "FedAvg", "FedProx", figures.FLOOR_LABEL} <= set(lines)
    for label, line in lines.items():
        # a tied method still shows: a marker outline around the other's, or its line inside FedMIC's band
        assert visible_pixels(fig, [line]) >= 40, f"{label} is hidden behind another line"


def test_figures_name_the_floor_as_the_tables_do(twelve):
    from fedmic.report import tables, views

    assert figures.FLOOR_LABEL == views.PRIOR_FLOOR == tables.PRIOR_FLOOR == "client-prior floor"
    assert tables.GLOBAL_FLOOR == views.GLOBAL_FLOOR == "global-majority floor"
    for make in (learning_curves.figure, acc_vs_bytes.figure):
        legend = [t.get_text() for t in make(twelve).legends[0].get_texts()]
        assert legend[-1] == "client-prior floor"


def test_one_name_for_each_floor_in_captions_docs_and_code():
    """The retired names of the client-prior floor appear nowhere a reader looks."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    texts = [*repo.glob("workflow/report/*.rst"), *repo.glob("docs/*.md"), *repo.glob("fedmic/report/*.py"),
             repo / "README.md", repo / "config" / "README.md"]
    for path in texts:
        text = path.read_text().lower()
        for old in ("local-majority floor", "local majority floor", "local_majority_floor"):
            assert old not in text, f"{path.relative_to(repo)} calls a floor {old!r}"


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("name", ["learning_curves", "acc_vs_bytes", "svd_ranks"])
def test_legend_sits_beside_the_panels_and_leaves_them_their_room(twelve, name):
    fig = paper.outputs()[name].module.figure(twelve)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    for ax in fig.get_axes():
        assert not _overlaps(legend, ax.get_tightbbox(renderer)), f"the legend covers {ax.get_title()}"
    # it does not eat the plot: a small share of the figure, the panels keep the rest
    assert legend.width * legend.height < 0.2 * fig.bbox.width * fig.bbox.height


def test_svd_ranks_legend_reads_layer_names_and_keeps_tied_layers_in_sight(tmp_path):
    ranks = {"encoder.conv1.weight": [1, 1, 1, 1], "encoder.conv2.weight": [1, 1, 2, 2],
             "encoder.fc.weight": [1, 1, 1, 1], "head.weight": [1, 1, 1, 1]}
    fig = svd_ranks.figure(tidy.collect([write_run(tmp_path, "mic", method="fedmic", ranks=ranks)]))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["conv 1", "conv 2", "fully connected", "classifier head", svd_ranks.UPLOAD_TEXT,
                      svd_ranks.BROADCAST_TEXT]
    ax = fig.get_axes()[0]
    for label, line in lines_by_label(ax).items():
        assert visible_pixels(fig, [line]) >= 20, f"{label} is hidden behind another layer"


def test_layer_names_read_as_a_reader_says_them_from_input_to_output():
    from fedmic.report.views import layer_depth, pretty_layer

    raw = ["head.weight", "encoder.layers.1.shortcut.0.weight", "encoder.layers.0.conv2.weight",
           "encoder.stem.0.weight", "encoder.layers.10.conv1.weight", "encoder.layers.2.conv1.weight"]
    assert [pretty_layer(n) for n in sorted(raw, key=layer_depth)] == [
        "stem conv", "block 1 conv 2", "block 2 shortcut conv", "block 3 conv 1", "block 11 conv 1",
        "classifier head"]
    assert [pretty_layer(f"encoder.{n}.weight") for n in ("conv1", "conv2", "fc")] == [
        "conv 1", "conv 2", "fully connected"]
