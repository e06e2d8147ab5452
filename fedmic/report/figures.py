"""What the figures of the paper (fedmic/paper/) share: panels, styles, lines and legend.

Each figure module's ``figure(tidy)`` returns the matplotlib Figure (tests inspect it);
``fedmic figure`` saves it as PNG + PDF. One panel per setting that has runs (datasets in order, then λ...), laid out
as datasets × the other values when every dataset has the same ones, else wrapped in rows:
never an empty panel. Every arm has its own colour and open marker, the same in every panel.
Methods often tie (FedAvg and FedProx early on, personalised methods on the client-prior
floor), so no line may cover another: FedMIC is a wide translucent black band drawn *under*
the others, the other arms are thin lines with open markers on top (a tied arm's marker still
shows around the other's), markers are staggered between arms on long runs, and the floor is
a dashed grey line over everything. The legend sits outside the panels, on the right. Curves
are the mean over seeds, the band ± one std (ddof=1) where there are two seeds or more.
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
FLOOR_LABEL = v.PRIOR_FLOOR
# distinct shapes first; FedMIC's star is kept for FedMIC
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "d", "p", "8", "H")
# tab10 without its grey (the floor is grey), then darker extras for long method lists
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
           "#17becf", "#393b79", "#e7ba52", "#637939", "#843c39", "#7b4173")
ARM = {"lw": 1.3, "mew": 1.2, "mfc": "none", "zorder": 4}
# under the other arms: a tie shows the other arm's line inside FedMIC's band
HIGHLIGHT = {"color": (0.0, 0.0, 0.0, 0.35), "lw": 5.0, "zorder": 2, "marker": "*", "ms": 11,
             "mfc": "black", "mec": "black", "mew": 0.8}
FLOOR = {"color": "0.3", "ls": (0, (5, 3)), "lw": 1.1, "zorder": 6}


def styles(tidy: pd.DataFrame) -> dict[str, dict]:
    """arm -> plot style: colour and marker both differ between any two arms (up to 14 besides
    FedMIC); ``stagger`` shifts the arm's markers on long runs."""
    others = [a for a in v.arm_order(tidy) if a != "fedmic"]
    # earlier arms get larger open markers: where arms tie, the outlines nest instead of covering
    sizes = np.linspace(8.5, 4.5, len(others)) if len(others) > 1 else [6.0]
    out = {a: {**ARM, "color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)], "ms": float(sizes[i]),
               "stagger": i} for i, a in enumerate(others)}
    if "fedmic" in v.arm_order(tidy):
        out["fedmic"] = {**HIGHLIGHT, "stagger": 0}
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


def subplots(layout, w: float = 4.3, h: float = 3.3):
    import matplotlib.pyplot as plt

    n_rows = max(r for r, _, _ in layout) + 1
    n_cols = max(c for _, c, _ in layout) + 1
    # constrained layout keeps room for the suptitle and the legend outside the panels
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False, figsize=(w * n_cols, h * n_rows + 0.5),
                             layout="constrained")
    used = {(r, c) for r, c, _ in layout}
    for r in range(n_rows):
        for c in range(n_cols):
            if (r, c) not in used:
                axes[r, c].remove()  # a wrapped layout's last row: no empty frame left behind
    return fig, axes


def seed_stats(df: pd.DataFrame, x: str, y: str = "value") -> pd.DataFrame:
    g = df.groupby(x)[y]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).reset_index()


def line(ax, x, y, style: dict, label: str, n_points: int) -> None:
    every = max(1, n_points // 6)  # about six markers a line, so long runs stay readable
    style = dict(style)
    offset = style.pop("stagger", 0) % every  # tied arms put their markers on different rounds
    ax.plot(x, y, label=label, markevery=(offset, every), **style)


def finish(fig, title: str, handles: dict | None = None) -> None:
    """Suptitle and one legend for all panels, outside them on the right (it never covers data)."""
    if handles is None:
        handles = {}
        for ax in fig.axes:
            for hdl, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, hdl)
    labels = sorted(handles, key=lambda lab: lab == FLOOR_LABEL)  # the floor after the arms
    fig.suptitle(title, fontsize=12)
    if labels:
        width, height = fig.get_size_inches()
        # about a quarter inch an entry: a second column where one would outgrow the figure
        n_cols = 1 if len(labels) * 0.25 <= height - 0.6 else 2
        legend = fig.legend([handles[lab] for lab in labels], labels, loc="outside right center", ncol=n_cols,
                            frameon=False, fontsize=9)
        # the legend gets its own width: the panels keep theirs
        extra = legend.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi
        fig.set_size_inches(width + extra + 0.2, height)


def floor_line(ax, tidy_here: pd.DataFrame) -> None:
    floor = v.values(tidy_here, "run", "floor", ["client_prior_acc"])
    value = v.finite_mean(v.partition_floor(floor, "client_prior_acc"))
    if np.isfinite(value):
        ax.axhline(value, label=FLOOR_LABEL, **FLOOR)


def arm_panels(tidy: pd.DataFrame, curves: pd.DataFrame):
    """The figure, its axes, and per panel: the axes, its title, the tidy rows of its setting,
    and (arm, label, that arm's rows of ``curves``) for each arm there."""
    runs = v.runs(tidy)
    dim_cols = v.dims(runs)
    layout = panels(runs, dim_cols)
    fig, axes = subplots(layout)
    out = []
    for r, c, s in layout:
        here = v.in_setting(curves, dim_cols, s)
        arms = [(arm, runs.loc[runs["arm"] == arm, "label"].iloc[0], here[here["arm"] == arm])
                for arm in v.arm_order(v.in_setting(runs, dim_cols, s))]
        out.append((axes[r, c], setting_text(dim_cols, s), v.in_setting(tidy, dim_cols, s), arms))
    return fig, axes, out


def round_axis(ax, ylabel: str) -> None:
    """Rounds on the x axis, ticked at whole rounds only (a 3-round run must not show 1.5)."""
    from matplotlib.ticker import MaxNLocator

    ax.set(xlabel=ROUND_LABEL, ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def setting_text(dim_cols, s) -> str:
    return v.setting_text(dim_cols, s) if dim_cols else "all runs"
