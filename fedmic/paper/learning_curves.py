"""Learning curves: personalised test ACC per round, one line per arm."""
from __future__ import annotations

import pandas as pd

from fedmic import grid, paper
from fedmic.paper import t2
from fedmic.report import views as v
from fedmic.report.figures import ACC_LABEL, arm_panels, finish, floor_line, line, round_axis, seed_stats, styles

KIND = "figure"
ORDER = 4
CAPTION = """\
**Learning curves — personalised test ACC per round.** Personalised test accuracy against
the communication round, one line per method (mean over seeds, shaded ± 1 std), the
client-prior floor dashed (each client outputs its own training label distribution); one
panel per dataset and λ. FedMIC is the wide grey band with black stars, drawn under the
other methods so a method that ties with it stays in sight. Runs of the main grid of the
workflow config."""
OPTIONS = ()


def runs(config: dict) -> list[grid.RunKey]:
    """T2's runs."""
    return t2.runs(config)


def render(inputs: paper.Inputs, options: dict, select: str):
    return figure(inputs.tidy())


def figure(tidy: pd.DataFrame):
    """Personalised test ACC vs round, one line per arm, one panel per setting."""
    style = styles(tidy)
    fig, axes, panels_ = arm_panels(tidy, v.per_round(tidy, "personal", "acc"))
    for ax, title, tidy_here, arms in panels_:
        for arm, label, sub in arms:
            st = seed_stats(sub, "round")
            line(ax, st["round"], st["mean"], style[arm], label, len(st))
            band = st["n"] >= 2
            if band.any():
                ax.fill_between(st["round"][band], (st["mean"] - st["std"])[band], (st["mean"] + st["std"])[band],
                                color=style[arm]["color"], alpha=0.12, lw=0, zorder=1)
        floor_line(ax, tidy_here)
        ax.set_title(title, fontsize=10)
        round_axis(ax, ACC_LABEL)
        ax.grid(True, lw=0.3, alpha=0.5)
    finish(fig, "Learning curves: personalised test ACC (mean over seeds, band ± 1 std)")
    return fig
