"""Table T7: the number of clients, personalised ACC per arm and K."""
from __future__ import annotations

import pandas as pd

from fedmic import grid, paper
from fedmic.report.tables import PRIOR_FLOOR, Table, pivot, select_text

KIND = "table"
ORDER = 7
VALSEL = True
CAPTION = """\
**Table T7 — number of clients.** Personalised test accuracy per method and number of
clients K (each K with its own partition and client-prior floor), per dataset and λ,
mean ± std over seeds. Runs of the client-count study of the workflow config."""
OPTIONS = (
    *paper.axes("the client-count study"),
    paper.arm_list("arms compared"),
    paper.Option("clients", {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
                 "numbers of clients K, each with its own partition", default=[10, 20, 50, 100]),
)


def runs(config: dict) -> list[grid.RunKey]:
    o = paper.options(config, __name__)
    arms = grid.check_arms(config, f"{paper.section(__name__)}.arms", o["arms"])
    return [grid.RunKey(d, float(lam), int(k), grid.default_join_ratio(config), a, int(s)) for d in o["datasets"]
            for lam in o["lams"] for k in o["clients"] for a in arms for s in o["seeds"]]


def render(inputs: paper.Inputs, options: dict, select: str) -> Table:
    return table(inputs.tidy(), select)


def table(tidy: pd.DataFrame, select: str = "last") -> Table:
    """Number of clients: personalised ACC per arm × K."""
    t, per_cell = pivot(tidy, "clients", lambda x: f"K={int(x)}", select)
    t.caption = (
        f"Number of clients K: personalised test ACC ({select_text(select, tidy)}), mean ± std over "
        f"seeds ({per_cell} per cell), and Δ, the margin over the {PRIOR_FLOOR}. "
        f"Each K has its own partition, hence its own floor. Best per column within each setting "
        f"in bold; n/a: undefined; –: not run."
    )
    return t
