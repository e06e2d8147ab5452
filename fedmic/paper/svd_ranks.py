"""Kept SVD ranks: the rank each factorised layer keeps, per round, uploads and broadcasts."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from fedmic import grid, paper
from fedmic.methods import METHODS
from fedmic.paper import t2
from fedmic.report import views as v
from fedmic.report.figures import MARKERS, PALETTE, RANK_LABEL, finish, round_axis, setting_text, subplots

log = logging.getLogger("fedmic.report")

KIND = "figure"
ORDER = 6
CAPTION = """\
**Kept SVD ranks — rank kept per layer and round.** For methods that decompose what they
send (FedMIC, FedKD): the rank kept for each factorised layer over rounds, a wide pale line
with open markers for client uploads (mean over the round's clients and the seeds), dashed
for the server's broadcast. One panel per method, dataset and λ. Runs of the main grid of
the workflow config."""
OPTIONS = ()


def runs(config: dict) -> list[grid.RunKey]:
    """T2's runs of the arms whose uploads are SVD factors (fedkd, fedmic)."""
    arms = grid.all_arms(config)
    keys = [k for k in t2.runs(config) if METHODS[arms[k.arm]["method"]].factorised]
    if not keys:
        raise grid.ConfigError("figures.svd_ranks plots the upload ranks of fedkd or fedmic arms, and T2 has none; "
                               "add one, or set figures.svd_ranks.enabled: false")
    return keys


def render(inputs: paper.Inputs, options: dict, select: str):
    return figure(inputs.tidy())


UPLOAD_TEXT = "client upload (mean)"
BROADCAST_TEXT = "server broadcast"


def figure(tidy: pd.DataFrame):
    """Kept rank per layer over rounds for the runs that record ranks (FedMIC, FedKD): a wide
    pale line with open markers = upload (mean over the round's clients, then seeds), a dashed
    line = the server's broadcast. One panel per arm and setting, one colour and marker per
    layer; layers that keep the same rank dash in turn, so each stays in sight."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D

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
    fig, axes = subplots(layout)
    layers = sorted(ranks["layer"].dropna().unique(), key=v.layer_depth)  # input to output
    n = len(layers)
    colours = {layer: PALETTE[i % len(PALETTE)] for i, layer in enumerate(layers)}
    markers = {layer: MARKERS[i % len(MARKERS)] for i, layer in enumerate(layers)}
    sizes = np.linspace(8.5, 4.5, n) if n > 1 else [6.0]  # nested outlines where layers tie
    # each layer's dash in its own slot of a cycle of up to four slots: tied layers dash in turn
    dash, slots = 3.0, min(n, 4)
    for r, c, (s, arm) in layout:
        ax = axes[r, c]
        here = v.in_setting(ranks, dim_cols, s)
        here = here[here["arm"] == arm]
        for i, layer in enumerate(layers):
            for kind in ("upload", "broadcast"):
                st = here[(here["layer"] == layer) & (here["kind"] == kind)].groupby("round")["value"].mean()
                if not len(st):
                    continue
                line = f"{v.pretty_layer(layer)} ({UPLOAD_TEXT if kind == 'upload' else BROADCAST_TEXT})"
                if kind == "upload":
                    ax.plot(st.index, st.values, label=line, color=to_rgba(colours[layer], 0.45), lw=3.0, zorder=2,
                            marker=markers[layer], ms=float(sizes[i]), mfc="none", mec=colours[layer], mew=1.2,
                            markevery=(i % max(1, len(st) // 6), max(1, len(st) // 6)))
                else:
                    ax.plot(st.index, st.values, label=line, color=colours[layer], lw=1.3, zorder=3,
                            ls=((i % slots) * dash, (dash, dash * (slots - 1) if slots > 1 else dash)))
        label = runs.loc[runs["arm"] == arm, "label"].iloc[0]
        ax.set_title(f"{label}: {setting_text(dim_cols, s)}", fontsize=10)
        round_axis(ax, RANK_LABEL)
        ax.grid(True, lw=0.3, alpha=0.5)
    handles = {v.pretty_layer(layer): Line2D([], [], color=colours[layer], marker=markers[layer], mfc="none",
                                              lw=1.3) for layer in layers}
    handles[UPLOAD_TEXT] = Line2D([], [], color=to_rgba("0.2", 0.45), lw=3.0)
    handles[BROADCAST_TEXT] = Line2D([], [], color="0.2", lw=1.3, ls=(0, (dash, dash)))
    finish(fig, "Kept rank per layer (wide pale: client uploads, mean; dashed: server broadcast)", handles)
    return fig
