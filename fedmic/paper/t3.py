"""Table T3: low participation, personalised ACC per arm and join ratio."""
from __future__ import annotations

import pandas as pd

from fedmic import grid, paper
from fedmic.report.tables import PRIOR_FLOOR, Table, pivot, select_text

KIND = "table"
ORDER = 3
VALSEL = True
CAPTION = """\
**Table T3 — low participation.** Personalised test accuracy per method and join ratio
(fraction of clients sampled each round), per dataset and λ, mean ± std over seeds, with
the client-prior floor. Runs of the participation study of the workflow config."""
OPTIONS = (
    *paper.axes("the participation study"),
    paper.arm_list("arms compared"),
    paper.Option("join_ratios", {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                                 "minItems": 1},
                 "fractions of clients sampled per round", default=[0.1, 0.2, 0.5, 1.0]),
    paper.Option("clients", {"type": "integer", "minimum": 2}, "clients of the low-participation runs",
                 default_from=grid.default_clients, default_text="train.clients"),
    paper.Option("scale_rounds", {"type": "boolean"},
                 "scale rounds and eval_every by (train.join_ratio / join ratio), so a client trains about as often "
                 "as in the main runs", default=True),
)


def runs(config: dict) -> list[grid.RunKey]:
    o = paper.options(config, __name__)
    arms = grid.check_arms(config, f"{paper.section(__name__)}.arms", o["arms"])
    return [grid.RunKey(d, float(lam), int(o["clients"]), float(j), a, int(s)) for d in o["datasets"]
            for lam in o["lams"] for j in o["join_ratios"] for a in arms for s in o["seeds"]]


def scale_rounds(config: dict) -> bool:
    """Whether runs at another join ratio than train.join_ratio get scaled rounds (grid.participation_schedule)."""
    return paper.options(config, __name__)["scale_rounds"] is not False


def render(inputs: paper.Inputs, options: dict, select: str) -> Table:
    return table(inputs.tidy(), select)


def table(tidy: pd.DataFrame, select: str = "last") -> Table:
    """Low participation: personalised ACC per arm × join ratio."""
    t, per_cell = pivot(tidy, "join_ratio", lambda x: f"join ratio {x:g}", select)
    config = tidy[(tidy["scope"] == "config") & tidy["metric"].isin(["rounds", "eval_every"])]
    schedule = config.pivot_table(index="join_ratio", columns="metric", values="value", aggfunc=lambda x: sorted(set(x)))
    rounds = "; ".join(f"{j:g}: {'/'.join(f'{r:g}' for r in row['rounds'])} rounds, evaluated every "
                       f"{'/'.join(f'{e:g}' for e in row['eval_every'])}" for j, row in schedule.iterrows())
    t.caption = (
        f"Low participation: personalised test ACC ({select_text(select, tidy)}) for each fraction of "
        f"clients sampled per round (join ratio), mean ± std over seeds ({per_cell} per "
        f"cell), and Δ, the margin over the {PRIOR_FLOOR} (each client outputs its own training label "
        f"distribution). Rounds per join ratio ({rounds}): unless the config says otherwise "
        f"(tables.t3.scale_rounds), they are scaled so that a client trains about as often, and is scored "
        f"as many times, as in the main runs. Every client is evaluated every time. Best per column "
        f"within each setting in bold; n/a: undefined; –: not run."
    )
    return t
