"""Figures as views over the tidy results frame: learning curves, accuracy vs bytes, kept SVD ranks.

Each ``*_figure(tidy)`` returns the matplotlib Figure (tests inspect it); ``build`` saves it
as PNG + PDF. One panel per setting that has runs (datasets in order, then λ...), laid out
as datasets × the other values when every dataset has the same ones, else wrapped in rows:
never an empty panel. Every arm has its own colour and marker, the same in every panel;
FedMIC is drawn last, thicker and black, so it stands out; the client-prior floor is a
dashed grey line. Curves are the mean over seeds, the band ± one std (ddof=1) where there
are two seeds or more.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

from fedmic.report import views as v
from fedmic.report.io import save_figure  # noqa: F401  (selects the Agg backend first)

log = logging.getLogger("fedmic.report")

ACC_LABEL = "Personalised test ACC"
ROUND_LABEL = "Communication round"
BYTES_LABEL = "Cumulative uplink + downlink (MB, log scale)"
RANK_LABEL = "Kept rank (singular values)"
FLOOR_LABEL = "client-prior floor"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*", "d", "8")
HIGHLIGHT = {"color": "black", "lw": 2.6, "zorder": 5, "ms": 6}


def styles(tidy: pd.DataFrame) -> dict[str, dict]:
    """arm -> plot style: colour and marker both differ between any two arms."""
    import matplotlib.pyplot as plt

    arms = [a for a in v.arm_order(tidy)]
    others = [a for a in arms if a != "fedmic"]
    cmap = plt.get_cmap("tab10" if len(others) <= 10 else "tab20")
    out = {a: {"color": cmap(i % cmap.N), "marker": MARKERS[i % len(MARKERS)], "lw": 1.4, "zorder": 3, "ms": 4}
           for i, a in enumerate(others)}
    if "fedmic" in arms:
        out["fedmic"] = {**HIGHLIGHT, "marker": "*", "ms": 9}
    return out


def panels(df: pd.DataFrame, dim_cols: Sequence[str], n_cols: int = 3) -> list[tuple[int, int, tuple]]:
    """(row, col, setting) of each panel: datasets × the rest when complete, else wrapped."""
    present = v.settings(df, dim_cols)
    if not dim_cols:
        return [(0, 0, ())]
    datasets = list(dict.fromkeys(s[0] for s in present))
    rest = list(dict.fromkeys(s[1:] for s in present))
    if len(present) == len(datasets) * len(rest) and len(rest) <= 4:
        return [(datasets.index(s[0]), rest.index(s[1:]), s) for s in present]
    n_cols = min(n_cols, len(present))
    return [(i // n_cols, i % n_cols, s) for i, s in enumerate(present)]


def _subplots(layout, w: float = 4.3, h: float = 3.3):
    import matplotlib.pyplot as plt

    n_rows = max(r for r, _, _ in layout) + 1
    n_cols = max(c for _, c, _ in layout) + 1
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False, figsize=(w * n_cols, h * n_rows + 0.9))
    used = {(r, c) for r, c, _ in layout}
    for r in range(n_rows):
        for c in range(n_cols):
            if (r, c) not in used:
                axes[r, c].remove()  # a wrapped layout's last row: no empty frame left behind
    return fig, axes


def _seed_stats(df: pd.DataFrame, x: str, y: str = "value") -> pd.DataFrame:
    g = df.groupby(x)[y]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).reset_index()


def _line(ax, x, y, style: dict, label: str, n_points: int) -> None:
    every = max(1, n_points // 10)  # about ten markers a line, so long runs stay readable
    ax.plot(x, y, label=label, markevery=every, **style)


def _finish(fig, axes, title: str) -> None:
    handles = {}
    for ax in fig.axes:
        for hdl, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, hdl)
    labels = sorted(handles, key=lambda lab: lab == FLOOR_LABEL)  # the floor after the arms
    n_cols = min(len(labels), 6) or 1
    n_leg_rows = -(-len(labels) // n_cols)
    height = fig.get_size_inches()[1]
    fig.suptitle(title, fontsize=12)
    # room for the legend below the panels: about a quarter inch a row
    fig.tight_layout(rect=(0, (0.15 + 0.25 * n_leg_rows) / height, 1, 1 - 0.45 / height))
    if labels:
        fig.legend([handles[lab] for lab in labels], labels, loc="lower center", ncol=n_cols,
                   frameon=False, fontsize=9, bbox_to_anchor=(0.5, 0.0))


def _floor_line(ax, tidy_here: pd.DataFrame) -> None:
    floor = v.values(tidy_here, "run", "floor", ["client_prior_acc"])
    value = v.finite_mean(v.partition_floor(floor, "client_prior_acc"))
    if np.isfinite(value):
        ax.axhline(value, color="0.45", ls="--", lw=1.2, label=FLOOR_LABEL, zorder=1)


def _arm_panels(tidy: pd.DataFrame, curves: pd.DataFrame):
    """The figure, its axes, and per panel: the axes, its title, the tidy rows of its setting,
    and (arm, label, that arm's rows of ``curves``) for each arm there."""
    runs = v.runs(tidy)
    dim_cols = v.dims(runs)
    layout = panels(runs, dim_cols)
    fig, axes = _subplots(layout)
    out = []
    for r, c, s in layout:
        here = v.in_setting(curves, dim_cols, s)
        arms = [(arm, runs.loc[runs["arm"] == arm, "label"].iloc[0], here[here["arm"] == arm])
                for arm in v.arm_order(v.in_setting(runs, dim_cols, s))]
        out.append((axes[r, c], setting_text(dim_cols, s), v.in_setting(tidy, dim_cols, s), arms))
    return fig, axes, out


# --------------------------------------------------------------------------- learning curves


def _round_axis(ax, ylabel: str) -> None:
    """Rounds on the x axis, ticked at whole rounds only (a 3-round run must not show 1.5)."""
    from matplotlib.ticker import MaxNLocator

    ax.set(xlabel=ROUND_LABEL, ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def learning_curves_figure(tidy: pd.DataFrame):
    """Personalised test ACC vs round, one line per arm, one panel per setting."""
    style = styles(tidy)
    fig, axes, panels_ = _arm_panels(tidy, v.per_round(tidy, "personal", "acc"))
    for ax, title, tidy_here, arms in panels_:
        for arm, label, sub in arms:
            st = _seed_stats(sub, "round")
            _line(ax, st["round"], st["mean"], style[arm], label, len(st))
            band = st["n"] >= 2
            if band.any():
                ax.fill_between(st["round"][band], (st["mean"] - st["std"])[band], (st["mean"] + st["std"])[band],
                                color=style[arm]["color"], alpha=0.15, lw=0)
        _floor_line(ax, tidy_here)
        ax.set_title(title, fontsize=10)
        _round_axis(ax, ACC_LABEL)
        ax.grid(True, lw=0.3, alpha=0.5)
    _finish(fig, axes, "Learning curves: personalised test ACC (mean over seeds, band ± 1 std)")
    return fig


def setting_text(dim_cols, s) -> str:
    return v.setting_text(dim_cols, s) if dim_cols else "all runs"


# --------------------------------------------------------------------------- accuracy vs bytes


def acc_vs_bytes_figure(tidy: pd.DataFrame):
    """Personalised test ACC vs cumulative uplink + downlink MB (log x) on evaluated rounds.
    An arm that moves no bytes (Local) is a dotted horizontal line at its final ACC."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    curves = v.per_round(tidy, "personal", "acc").assign(mb=lambda d: d["cum_bytes"].astype(float) / 1e6)
    style = styles(tidy)
    fig, axes, panels_ = _arm_panels(tidy, curves)
    for ax, title, tidy_here, arms in panels_:
        for arm, label, sub in arms:
            x, y = sub.groupby("round")["mb"].mean(), sub.groupby("round")["value"].mean()
            if not (x > 0).any():
                if len(y) and np.isfinite(y.iloc[-1]):
                    ax.axhline(y.iloc[-1], color=style[arm]["color"], ls=":", lw=1.5, label=f"{label} (no bytes)")
                continue
            keep = x > 0
            _line(ax, x[keep], y[keep], style[arm], label, int(keep.sum()))
        _floor_line(ax, tidy_here)
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        # 1-2-5 ticks over up to two decades, one a decade beyond: labels never overlap
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if hi / lo <= 100 else (1.0,)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda val, _: f"{val:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(title, fontsize=10)
        ax.set(xlabel=BYTES_LABEL, ylabel=ACC_LABEL)
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
    _finish(fig, axes, "Personalised test ACC vs communication (mean over seeds, evaluated rounds)")
    return fig


# --------------------------------------------------------------------------- SVD ranks


def svd_ranks_figure(tidy: pd.DataFrame):
    """Kept rank per layer over rounds for the runs that record ranks (FedMIC, FedKD): solid =
    upload (mean over the round's clients, then seeds), dashed = the server's broadcast. One
    panel per arm and setting, one colour per layer."""
    import matplotlib.pyplot as plt

    ranks = pd.concat([v.per_round(tidy, "comm", f"{kind}_rank", split=None).assign(kind=kind)
                       for kind in ("upload", "broadcast")])
    if ranks.empty:
        log.warning("svd_ranks: no run among the inputs records kept ranks")
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.set_axis_off()
        ax.text(0.5, 0.5, "No run among the inputs records kept SVD ranks\n(FedMIC/FedKD with decomposition)",
                ha="center", va="center")
        return fig
    runs = v.runs(tidy)
    dim_cols = v.dims(runs)
    groups = [(s, arm) for s in v.settings(ranks, dim_cols)
              for arm in v.arm_order(v.in_setting(ranks, dim_cols, s))]
    n_cols = min(3, len(groups))
    layout = [(i // n_cols, i % n_cols, g) for i, g in enumerate(groups)]
    fig, axes = _subplots(layout)
    layers = sorted(ranks["layer"].dropna().unique())
    colours = {layer: plt.get_cmap("tab10")(i % 10) for i, layer in enumerate(layers)}
    for r, c, (s, arm) in layout:
        ax = axes[r, c]
        here = v.in_setting(ranks, dim_cols, s)
        here = here[here["arm"] == arm]
        for layer in layers:
            for kind, ls, suffix in (("upload", "-", ""), ("broadcast", "--", " (broadcast)")):
                st = here[(here["layer"] == layer) & (here["kind"] == kind)].groupby("round")["value"].mean()
                if len(st):
                    ax.plot(st.index, st.values, color=colours[layer], ls=ls, lw=1.4,
                            label=layer.removesuffix(".weight") + suffix)
        label = runs.loc[runs["arm"] == arm, "label"].iloc[0]
        ax.set_title(f"{label}: {setting_text(dim_cols, s)}", fontsize=10)
        _round_axis(ax, RANK_LABEL)
        ax.grid(True, lw=0.3, alpha=0.5)
    _finish(fig, axes, "Kept rank per layer (solid: client uploads, mean; dashed: server broadcast)")
    return fig


FIGURES = {
    "learning_curves": learning_curves_figure,
    "acc_vs_bytes": acc_vs_bytes_figure,
    "svd_ranks": svd_ranks_figure,
}


def build(name: str, tidy: pd.DataFrame):
    key = name.lower().replace("-", "_")
    if key not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; choose one of f3, {', '.join(FIGURES)}")
    return FIGURES[key](tidy)
