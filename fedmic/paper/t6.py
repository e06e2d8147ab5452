"""Table T6: sensitivity of FedMIC to one hyperparameter at a time."""
from __future__ import annotations

import copy

import pandas as pd

from fedmic import grid, paper
from fedmic.config import ConfigError
from fedmic.report import views as v
from fedmic.report.tables import PRIOR_FLOOR, Rows, Table, floor_rows, fmt_num, personal_runs, select_text

KIND = "table"
ORDER = 6
VALSEL = True
BASE_METHODS = ("fedmic",)  # the config check and the rows the table keeps
CAPTION = """\
**Table T6 — sensitivity of FedMIC.** FedMIC runs that change exactly one of the energy
schedule (E_start → E_end), the temperature τ, or the distillation weights α and β, beside
the default: personalised ACC and AUC and uplink MB per round, mean ± std over seeds. Runs
of the sensitivity study of the workflow config."""
OPTIONS = (
    *paper.axes("the sensitivity study"),
    paper.base_arm("the arm whose hyperparameters are varied", BASE_METHODS),
    paper.Option("values", {"type": "object", "additionalProperties": False, "properties": {
        "energy": {"type": "array", "items": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0,
                                                                       "maximum": 1}, "minItems": 2, "maxItems": 2}},
        "tau": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}},
        "alpha": {"type": "array", "items": {"type": "number", "minimum": 0}},
        "beta": {"type": "array", "items": {"type": "number", "minimum": 0}}}},
        "values of each varied parameter (energy: pairs [E_start, E_end])", default={}),
)
# the parameters of the study; the energy schedule is one parameter of two hyperparameters
SENSITIVITY = {"energy (E_start→E_end)": ("energy_start", "energy_end"), "τ": ("tau",), "α": ("alpha",),
               "β": ("beta",)}
# their names under tables.t6.values, in the same order
PARAMS = dict(zip(("energy", "tau", "alpha", "beta"), SENSITIVITY.values()))


def arms(config: dict) -> dict[str, dict]:
    """One arm per (parameter, value), named e.g. 'fedmic-tau4' or 'fedmic-energy0.9-0.95'."""
    from fedmic.methods import METHODS

    values = paper.options(config, __name__)["values"]
    base = paper.base_of(config, __name__)
    spec = grid.base_arms(config)[base]
    out = {}
    for param, listed in values.items():
        if param not in PARAMS:
            raise ConfigError(f"tables.t6.values: unknown parameter {param!r}; choose from {', '.join(PARAMS)}")
        needed = PARAMS[param]
        if not set(needed) <= set(METHODS[spec["method"]].hp):
            raise ConfigError(f"tables.t6.values.{param}: the base arm {base!r} (method {spec['method']}) has no "
                              f"hyperparameter {' or '.join(needed)}; set tables.t6.base to an arm of method "
                              f"{' or '.join(BASE_METHODS)}")
        for x in listed:
            arm = copy.deepcopy(spec)
            if param == "energy":
                if not (isinstance(x, (list, tuple)) and len(x) == 2):
                    raise ConfigError(f"tables.t6.values.energy: each value must be a pair [E_start, E_end], got {x!r}")
                arm["hp"].update(energy_start=float(x[0]), energy_end=float(x[1]))
                name = f"{base}-energy{grid.fmt(x[0])}-{grid.fmt(x[1])}"
            else:
                arm["hp"][param] = float(x)
                name = f"{base}-{param}{grid.fmt(float(x))}"
            out[name] = arm
    paper.check_base_method(config, __name__, base, spec["method"], BASE_METHODS)
    return out


def arm_origin(config: dict, arm: str) -> str:
    return f"{paper.section(__name__)} (a variant of {paper.base_of(config, __name__)!r})"


def runs(config: dict) -> list[grid.RunKey]:
    o = paper.options(config, __name__)
    base = paper.base_of(config, __name__)
    return grid.main_runs(config, o["datasets"], o["lams"], [base, *arms(config)], o["seeds"])


def render(inputs: paper.Inputs, options: dict, select: str) -> Table:
    return table(inputs.tidy(), select)


def _sensitivity_param(changes: dict) -> str | None:
    """The one parameter a run varies ('' for the default), None if another or several."""
    if not changes:
        return ""
    for name, keys in SENSITIVITY.items():
        if set(changes) <= set(keys):
            return name
    return None


def table(tidy: pd.DataFrame, select: str = "last") -> Table:
    """Sensitivity: FedMIC runs that change exactly one of the energy schedule, τ, α, β."""
    tidy = paper.runs_of_methods(tidy, BASE_METHODS, "T6")
    runs = personal_runs(tidy, select)
    runs = runs.join(v.values(tidy, "run", "comm", ["uplink_per_round"], split=None)[["uplink_per_round"]])
    runs["param"] = [_sensitivity_param(c) for c in runs["changes"]]
    runs = runs[runs["param"].notna()]
    if (runs["param"] == "").all():
        raise ValueError("T6: no FedMIC run changes the energy schedule, tau, alpha or beta alone")
    dim_cols = v.dims(runs)
    rows = Rows(runs)
    for s in v.settings(runs, dim_cols):
        here = v.in_setting(runs, dim_cols, s)
        dcells = v.dim_cells(dim_cols, s)
        for name, keys in SENSITIVITY.items():
            varied = here[here["param"] == name]
            if varied.empty:
                continue
            group = pd.concat([here[here["param"] == ""], varied])
            arms = sorted(v.arm_order(group), key=lambda a: tuple(
                float(group.loc[group["arm"] == a, "changes"].iloc[0].get(k, _default(k))) for k in keys))
            for arm in arms:
                sub = group[group["arm"] == arm]
                ch = sub["changes"].iloc[0]
                value = "→".join(fmt_num(ch.get(k, _default(k))) for k in keys)
                row = {**dcells, "parameter": name, "value": value + (" (default)" if not ch else "")}
                rows.stat(row, "ACC", sub["acc"])
                rows.stat(row, "ΔACC", sub["d_acc"], signed=True)
                rows.stat(row, "AUC", sub["auc"])
                rows.stat(row, "uplink/round (MB)", sub["uplink_per_round"] / 1e6, how="min", digits=4)
                rows.rows.append(row)
        floor_rows(rows, dcells, here, ["ACC", "ΔACC", "AUC", "uplink/round (MB)"],
                    {PRIOR_FLOOR: {"ACC": "client_prior_acc", "AUC": "client_prior_auc"}}, "parameter")
        rows.rows[-1]["value"] = ""
    caption = (
        f"Sensitivity of FedMIC to the energy schedule (E_start→E_end of the kept singular-value "
        f"energy), the distillation temperature τ and the weights α (decision-level) and β "
        f"(representation-level): runs that change exactly one of them, beside the default. "
        f"Personalised test ACC and AUC ({select_text(select, tidy)}), Δ: margin over the "
        f"{PRIOR_FLOOR}, and uplink bytes per round (all sampled clients), mean ± std over seeds. "
        f"Best per parameter within each setting in bold; n/a: undefined."
    )
    return rows.table(caption, [v.DIM_HEADER[d] for d in dim_cols] + ["parameter"])


def _default(key: str):
    from fedmic.methods import hp_defaults

    return hp_defaults("fedmic")[key]
