"""Accuracy vs communication: personalised test ACC against the bytes moved."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fedmic import grid, paper
from fedmic.paper import t2
from fedmic.report import views as v
from fedmic.report.figures import ACC_LABEL, BYTES_LABEL, arm_panels, finish, floor_line, line, styles

KIND = "figure"
ORDER = 5
CAPTION = """\
**Accuracy vs communication — personalised test ACC against bytes moved.** Personalised
test accuracy against the cumulative uplink + downlink bytes (MB, log scale) at each
evaluated round, one line per method (mean over seeds), the client-prior floor dashed; a
method that moves no bytes (Local) is a dotted horizontal line. One panel per dataset and
λ. Runs of the main grid of the workflow config."""
OPTIONS = ()


def runs(config: dict) -> list[grid.RunKey]:
    """T2's runs."""
    return t2.runs(config)


def render(inputs: paper.Inputs, options: dict, select: str):
    return figure(inputs.tidy())


def figure(tidy: pd.DataFrame):
    """Personalised test ACC vs cumulative uplink + downlink MB (log x) on evaluated rounds.
    An arm that moves no bytes (Local) is a dotted horizontal line at its final ACC."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    curves = v.per_round(tidy, "personal", "acc").assign(mb=lambda d: d["cum_bytes"].astype(float) / 1e6)
    style = styles(tidy)
    fig, axes, panels_ = arm_panels(tidy, curves)
    for ax, title, tidy_here, arms in panels_:
        for arm, label, sub in arms:
            x, y = sub.groupby("round")["mb"].mean(), sub.groupby("round")["value"].mean()
            if not (x > 0).any():
                if len(y) and np.isfinite(y.iloc[-1]):
                    # wider than the floor's dashes, which it often equals, so both stay in sight
                    ax.axhline(y.iloc[-1], color=style[arm]["color"], ls=":", lw=2.4, zorder=3,
                               label=f"{label} (no bytes)")
                continue
            keep = x > 0
            line(ax, x[keep], y[keep], style[arm], label, int(keep.sum()))
        floor_line(ax, tidy_here)
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        # 1-2-5 ticks over up to two decades, one a decade beyond: labels never overlap
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if hi / lo <= 100 else (1.0,)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda val, _: f"{val:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(title, fontsize=10)
        ax.set(xlabel=BYTES_LABEL, ylabel=ACC_LABEL)
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
    finish(fig, "Personalised test ACC vs communication (mean over seeds, evaluated rounds)")
    return fig
