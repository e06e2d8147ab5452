"""Figures from run JSONs: learning curves, accuracy vs uplink bytes, kept SVD ranks.

Each ``*_figure(runs)`` returns the matplotlib Figure (so tests can inspect it); the
``figure_*`` functions save it as PNG + PDF through ``fedmic.report.io.save_figure``.
Curves are the mean over seeds; a shaded band is ± one std (ddof=1) where there are at
least two seeds. Panels are laid out with the first setting dimension (the dataset) as
rows and the others (λ, ...) as columns; one colour per arm across all panels.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from fedmic.report.io import save_figure  # noqa: F401  (selects the Agg backend first)
from fedmic.report.runs import arm_order, history_frame, load_runs, setting_text

log = logging.getLogger("fedmic.report")

ACC_LABEL = "Personalised test accuracy"
ROUND_LABEL = "Communication round"
UPLINK_LABEL = "Cumulative uplink (MB, log scale)"
RANK_LABEL = "Kept rank (singular values)"
FLOOR_LABEL = "local-majority floor"


def _runs(runs_or_paths) -> pd.DataFrame:
    return runs_or_paths if isinstance(runs_or_paths, pd.DataFrame) else load_runs(runs_or_paths)


def _colours(labels: Sequence[str]) -> dict[str, tuple]:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def _grid(runs: pd.DataFrame, dims: Sequence[str]):
    """Rows = values of the first dim, columns = combinations of the others."""
    def key(x):
        return (0, float(x), "") if isinstance(x, (int, float)) and not isinstance(x, bool) else (1, 0.0, str(x))
    if not dims:
        return [()], [()]
    row_vals = sorted(runs[dims[0]].unique(), key=key)
    rest = list(dims[1:])
    col_vals = sorted({tuple(t) for t in runs[rest].itertuples(index=False, name=None)},
                      key=lambda t: tuple(key(x) for x in t)) if rest else [()]
    return [(v,) for v in row_vals], col_vals


def _subplots(n_rows: int, n_cols: int, w: float = 4.2, h: float = 3.2):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False, figsize=(w * n_cols, h * n_rows + 0.6))
    return fig, axes


def _select(df: pd.DataFrame, dims: Sequence[str], values: Sequence) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for d, v in zip(dims, values):
        mask &= (df[d] == v).to_numpy()
    return df[mask]


def _seed_stats(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    g = df.groupby(x)[y]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).reset_index()


def _legend(fig, axes) -> None:
    handles, labels = {}, []
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    # references (the floor) after the arms
    labels.sort(key=lambda lab: lab == FLOOR_LABEL)
    if handles:
        fig.legend([handles[lab] for lab in labels], labels, loc="lower center",
                   ncol=min(len(labels), 5), frameon=False, fontsize=9, bbox_to_anchor=(0.5, 0.0))


def _integer_rounds(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _finish(fig, axes, title: str) -> None:
    for ax in axes.ravel():
        if not ax.has_data():
            ax.set_axis_off()
    n_leg = len({lab for ax in axes.ravel() for lab in ax.get_legend_handles_labels()[1]})
    legend_rows = -(-n_leg // 5) if n_leg else 0
    _legend(fig, axes)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0.05 + 0.035 * legend_rows, 1, 0.97))


# --------------------------------------------------------------------------- learning curves


def learning_curves_figure(runs) -> "object":
    """Personalised test accuracy vs round: one line per arm (mean over seeds, ± std band),
    the local-majority floor dashed, one panel per setting."""
    runs = _runs(runs)
    dims = runs.attrs["dims"]
    hist = history_frame(runs)
    hist = hist[hist["evaluated"]]
    rows, cols = _grid(runs, dims)
    colours = _colours(arm_order(runs))
    fig, axes = _subplots(len(rows), len(cols))
    for i, rv in enumerate(rows):
        for j, cv in enumerate(cols):
            values = (*rv, *cv)
            ax = axes[i, j]
            here = _select(hist, dims, values)
            if here.empty:
                continue
            for arm in arm_order(_select(runs, dims, values)):
                st = _seed_stats(here[here["label"] == arm], "round", "acc")
                ax.plot(st["round"], st["mean"], color=colours[arm], label=arm, lw=1.5,
                        marker="o" if len(st) <= 12 else None, ms=3)
                band = st["n"] >= 2
                if band.any():
                    ax.fill_between(st["round"][band], (st["mean"] - st["std"])[band],
                                    (st["mean"] + st["std"])[band], color=colours[arm], alpha=0.18,
                                    lw=0)
            floor = _select(runs, dims, values)["floor_local"].mean()
            if np.isfinite(floor):
                ax.axhline(floor, color="0.35", ls="--", lw=1, label=FLOOR_LABEL)
            ax.set_title(setting_text(dims, values), fontsize=10)
            ax.set_xlabel(ROUND_LABEL)
            ax.set_ylabel(ACC_LABEL)
            _integer_rounds(ax)
            ax.grid(True, lw=0.3, alpha=0.5)
    _finish(fig, axes, "Learning curves (mean over seeds, band: ± 1 std)")
    return fig


def figure_learning_curves(runs, stem: str | Path) -> list[Path]:
    return save_figure(learning_curves_figure(runs), stem)


# --------------------------------------------------------------------------- accuracy vs bytes


def acc_vs_bytes_figure(runs) -> "object":
    """Personalised test accuracy vs cumulative uplink MB (log x) on evaluated rounds.
    An arm that uploads nothing (Local) is a horizontal dotted line at its accuracy."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    runs = _runs(runs)
    dims = runs.attrs["dims"]
    hist = history_frame(runs)
    hist = hist[hist["evaluated"]].assign(cum_uplink_mb=lambda d: d["cum_uplink"] / 1e6)
    rows, cols = _grid(runs, dims)
    colours = _colours(arm_order(runs))
    fig, axes = _subplots(len(rows), len(cols))
    for i, rv in enumerate(rows):
        for j, cv in enumerate(cols):
            values = (*rv, *cv)
            ax = axes[i, j]
            here = _select(hist, dims, values)
            if here.empty:
                continue
            flat = []
            for arm in arm_order(_select(runs, dims, values)):
                sub = here[here["label"] == arm]
                x = sub.groupby("round")["cum_uplink_mb"].mean()
                y = sub.groupby("round")["acc"].mean()
                if not (x > 0).any():
                    flat.append((arm, float(y.iloc[-1]) if len(y) else np.nan))
                    continue
                keep = x > 0
                ax.plot(x[keep], y[keep], color=colours[arm], label=arm, lw=1.5, marker="o", ms=3)
            for arm, acc in flat:
                if np.isfinite(acc):
                    ax.axhline(acc, color=colours[arm], ls=":", lw=1.5, label=f"{arm} (no uplink)")
            ax.set_xscale("log")
            # 1-2-5 ticks with plain numbers: readable over a decade or ten
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_title(setting_text(dims, values), fontsize=10)
            ax.set_xlabel(UPLINK_LABEL)
            ax.set_ylabel(ACC_LABEL)
            ax.grid(True, which="both", lw=0.3, alpha=0.5)
    _finish(fig, axes, "Accuracy vs uplink communication (mean over seeds, evaluated rounds)")
    return fig


def figure_acc_vs_bytes(runs, stem: str | Path) -> list[Path]:
    return save_figure(acc_vs_bytes_figure(runs), stem)


# --------------------------------------------------------------------------- SVD ranks


def _short_layer(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


def svd_ranks_figure(runs) -> "object":
    """Kept rank per layer over rounds, for runs that record ranks (FedMIC, FedKD): solid =
    upload (mean over the round's clients, then over seeds), dashed = the server's broadcast.
    One panel per arm and setting, one colour per layer."""
    import matplotlib.pyplot as plt

    runs = _runs(runs)
    dims = runs.attrs["dims"]
    hist = history_frame(runs)
    has = hist.groupby("run_index")["upload_ranks"].apply(lambda s: any(bool(r) for r in s))
    hist = hist[hist["run_index"].isin(has[has].index)]
    if hist.empty:
        log.warning("svd_ranks: no run among the inputs records kept ranks")
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.set_axis_off()
        ax.text(0.5, 0.5, "No run among the inputs records kept SVD ranks\n(FedMIC/FedKD with "
                "decomposition)", ha="center", va="center")
        return fig
    groups = []
    for values in sorted({tuple(t) for t in hist[dims].itertuples(index=False, name=None)},
                         key=lambda t: tuple(str(x) for x in t)):
        here = _select(hist, dims, values)
        for arm in arm_order(_select(runs, dims, values)):
            if (here["label"] == arm).any():
                groups.append((values, arm, here[here["label"] == arm]))
    n_cols = min(3, len(groups))
    n_rows = -(-len(groups) // n_cols)
    fig, axes = _subplots(n_rows, n_cols)
    for k, (values, arm, sub) in enumerate(groups):
        ax = axes[k // n_cols, k % n_cols]
        layers = sorted({layer for r in sub["upload_ranks"] for layer in r}
                        | {layer for r in sub["broadcast_ranks"] for layer in r})
        colours = _colours(layers)
        for layer in layers:
            for col, ls, suffix in (("upload_ranks", "-", ""), ("broadcast_ranks", "--", " (broadcast)")):
                v = sub.assign(rank=[r.get(layer, np.nan) for r in sub[col]])
                v = v.assign(rank=pd.to_numeric(v["rank"], errors="coerce"))
                st = v.groupby("round")["rank"].mean()
                if st.notna().any():
                    ax.plot(st.index, st.values, color=colours[layer], ls=ls, lw=1.4,
                            label=_short_layer(layer) + suffix)
        ax.set_title(f"{arm}: {setting_text(dims, values)}", fontsize=10)
        ax.set_xlabel(ROUND_LABEL)
        ax.set_ylabel(RANK_LABEL)
        _integer_rounds(ax)
        ax.grid(True, lw=0.3, alpha=0.5)
        ax.legend(fontsize=7, frameon=False)
    for ax in axes.ravel():
        if not ax.has_data():
            ax.set_axis_off()
    fig.suptitle("Kept rank per layer (solid: client uploads, mean; dashed: server broadcast)",
                 fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def figure_svd_ranks(runs, stem: str | Path) -> list[Path]:
    return save_figure(svd_ranks_figure(runs), stem)


FIGURES = {
    "learning_curves": learning_curves_figure,
    "acc_vs_bytes": acc_vs_bytes_figure,
    "svd_ranks": svd_ranks_figure,
}


def run_figure(name: str, run_paths: Sequence[str | Path], stem: str | Path) -> list[Path]:
    key = name.lower().replace("-", "_")
    if key not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; choose one of f3, {', '.join(FIGURES)}")
    return save_figure(FIGURES[key](load_runs(run_paths)), stem)
