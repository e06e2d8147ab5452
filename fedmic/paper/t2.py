"""Table T2: the main comparison, every arm in every setting beside the floors."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fedmic import grid, paper
from fedmic.report import views as v
from fedmic.report.tables import (
    GLOBAL_FLOOR, NA, PRIOR_FLOOR, Rows, Table, auc_clients, floor_rows, personal_runs, seed_span, select_text
)

KIND = "table"
ORDER = 2
VALSEL = True
CAPTION = """\
**Table T2 — main comparison.** Per dataset and λ, every method's personalised test ACC, AUC
and macro-F1 (computed per client and averaged over clients weighted by their test images;
AUC over the clients whose test set holds two classes or more, counted in "AUC clients"),
mean ± std over seeds, with each method's margin Δ over the client-prior floor (each client
outputs its own training label distribution) and the pooled AUC as a secondary column.
FedMIC against three comparators fixed in advance (Local, FedKD and the baseline best on
validation): the mean paired difference over seeds with its 95 % t interval, two-sided paired
t-test over seeds, Holm-adjusted over the table. The client-prior and global-majority floors
close each block."""
OPTIONS = (*paper.axes("the main comparison"), paper.arm_list("arms compared"))


def runs(config: dict) -> list[grid.RunKey]:
    """Every arm at every dataset, λ and seed, at train.clients and train.join_ratio (the main
    grid: T4, T8, T9 and the figures read these runs too)."""
    o = paper.options(config, __name__)
    arms = grid.check_arms(config, f"{paper.section(__name__)}.arms", o["arms"])
    return grid.main_runs(config, o["datasets"], o["lams"], arms, o["seeds"])


def render(inputs: paper.Inputs, options: dict, select: str) -> Table:
    return table(inputs.tidy(), select)


# Fixed before any test number is read (docs/results.md): FedMIC against Local, against FedKD,
# its nearest relative, and against the baseline that scores best on VALIDATION.
COMPARED = (("Local", "local"), ("FedKD", "fedkd"))
COMPARISON = "FedMIC − arm (95 % CI), p Holm"


def arm_pool(here: pd.DataFrame) -> pd.DataFrame:
    """The arms a setting's comparisons are drawn from: the tuned ones where the table holds
    tuned arms (tuned against tuned), else every arm at its method's defaults."""
    from fedmic.tuning import TUNED_SUFFIX

    tuned = here[here["arm"].str.endswith(TUNED_SUFFIX)]
    return tuned if not tuned.empty else here[here["hp_changes"] == "{}"]


def pool_arm(pool: pd.DataFrame, method: str) -> str | None:
    """The pool's arm of `method` (the one named after it where there are several), or None."""
    cand = pool[pool["method"] == method]
    if cand.empty:
        return None
    named = [a for a in v.arm_order(cand) if a.startswith(method)]
    return (named or v.arm_order(cand))[0]


BEST_ROLE = "best on validation"


def comparators(here: pd.DataFrame, scores: pd.Series) -> tuple[str | None, dict[str, str]]:
    """FedMIC's arm in a setting (one row per run) and the arm of each fixed comparison role:
    {"Local": arm, "FedKD": arm, "best on validation": arm}, roles without an arm left out."""
    from fedmic.report import stats

    pool = arm_pool(here)
    mic = pool_arm(pool, "fedmic")
    if mic is None:
        return None, {}
    roles = {label: arm for label, method in COMPARED if (arm := pool_arm(pool, method)) is not None}
    if (best := stats.best_on_validation(pool, scores)) is not None:
        roles[BEST_ROLE] = best
    return mic, roles


def seed_pairs(here: pd.DataFrame, a: str, b: str) -> np.ndarray:
    """Personalised test ACC of arms a and b over the seeds both ran: rows (a, b), one per seed."""
    by_seed = here.set_index(["arm", "seed"])["acc"]
    return pd.concat([by_seed[a], by_seed[b]], axis=1, join="inner").to_numpy()


def setting_comparisons(here: pd.DataFrame, scores: pd.Series) -> tuple[str | None, list[dict]]:
    """FedMIC's arm in a setting and its fixed comparisons: [{role, arm, n, mean, low, high, p}],
    each the paired difference FedMIC − arm over the seeds both ran (fedmic/report/stats.py)."""
    from fedmic.report import stats

    mic, by_role = comparators(here, scores)
    if mic is None:
        return None, []
    roles: dict[str, list[str]] = {}
    for label, arm in by_role.items():
        roles.setdefault(arm, []).append(label)
    out = []
    for arm, labels in roles.items():
        pair = seed_pairs(here, mic, arm)
        out.append({"role": ", ".join(labels), "arm": arm, **stats.paired_difference(pair[:, 0], pair[:, 1])})
    return mic, out


def _comparison_text(c: dict) -> str:
    if c["n"] < 2:
        return f"{c['role']}: {NA} ({c['n']} seed)"
    p = "1" if c["p_holm"] == 1.0 else f"{c['p_holm']:.2g}"
    return f"{c['role']}: {c['mean']:+.3f} ({c['low']:+.3f}, {c['high']:+.3f}), p={p}"


def table(tidy: pd.DataFrame, select: str = "last") -> Table:
    """Main comparison: per setting, every arm's personalised ACC, AUC, F1 with its margin over
    the client-prior floor, the pooled AUC, and FedMIC's comparisons fixed in advance."""
    from fedmic.report import stats

    runs = personal_runs(tidy, select)
    dim_cols = v.dims(runs)
    scores = stats.validation_scores(tidy)
    rows, cells = Rows(runs), []
    cols = {"ACC": "acc", "ΔACC": "d_acc", "AUC": "auc", "ΔAUC": "d_auc", "F1": "f1", "ΔF1": "d_f1",
            "AUC pooled": "auc_pooled"}
    for s in v.settings(runs, dim_cols):
        here = v.in_setting(runs, dim_cols, s)
        dcells = v.dim_cells(dim_cols, s)
        mic, comparisons = setting_comparisons(here, scores)
        by_arm = {c["arm"]: c for c in comparisons}
        for arm in v.arm_order(here):
            sub = here[here["arm"] == arm]
            row = {**dcells, "method": sub["label"].iloc[0]}
            for name, col in cols.items():
                rows.stat(row, name, sub[col], signed=name.startswith("Δ"))
            row["AUC clients"] = ""
            row[COMPARISON] = "reference" if arm == mic else ""
            if arm in by_arm:
                cells.append((row, by_arm[arm]))
            rows.rows.append(row)
        floor_rows(rows, dcells, here, list(cols), {
            PRIOR_FLOOR: {"ACC": "client_prior_acc", "AUC": "client_prior_auc", "F1": "client_prior_f1",
                          "AUC pooled": "client_prior_auc_pooled"},
            GLOBAL_FLOOR: {"ACC": "global_majority_acc"}})
        rows.rows[-2]["AUC clients"] = auc_clients(here)
        rows.rows[-1]["AUC clients"] = ""
        for r in rows.rows[-2:]:
            r[COMPARISON] = ""
    # one family: every comparison of the table
    for (row, c), p in zip(cells, stats.holm([c["p"] for _, c in cells])):
        c["p_holm"] = p
        row[COMPARISON] = _comparison_text(c)
    test_text = ""
    if cells:
        family = sum(1 for _, c in cells if math.isfinite(c["p"]))
        seeds = sorted({c["n"] for _, c in cells})
        test_text = (f" {COMPARISON}: fixed before any test number was read, FedMIC against Local, against "
                     f"FedKD (its nearest relative) and against the baseline with the highest mean personalised "
                     f"VALIDATION ACC over seeds (mean of each run's last k evaluated rounds), tuned arms "
                     f"against tuned arms where the table has them. Value: FedMIC minus the arm, the mean over "
                     f"seeds of the paired difference in personalised test ACC, with its 95 % t confidence "
                     f"interval; p: two-sided paired t-test over seeds (the run is the unit: the clients of a "
                     f"run share one federation), Holm-adjusted over the {family} comparisons of this table; "
                     f"{'/'.join(map(str, seeds))} seed{'' if seeds == [1] else 's'} per comparison.")
    caption = (
        f"Main comparison: personalised test ACC, AUC and macro-F1 ({select_text(select, tidy)}), "
        f"each client's evaluated model on its own test set, computed per client and averaged over "
        f"clients weighted by their test images; AUC over the clients whose test set holds two or "
        f"more classes ('AUC clients', the others have no AUC). Mean ± std over seeds "
        f"({seed_span(runs, dim_cols)} per cell). Δ: margin over the {PRIOR_FLOOR} (each client "
        f"outputs its own training label distribution: ACC = its majority class, AUC 0.5), run by "
        f"run. AUC pooled: one AUC over all clients' pooled predictions (secondary: it rewards "
        f"knowing each client's label mix, as the floor's pooled AUC shows). {GLOBAL_FLOOR}: every "
        f"client predicts the majority class of all training images.{test_text} Best per column "
        f"within each setting in bold; n/a: undefined; –: not applicable."
    )
    return rows.table(caption, [v.DIM_HEADER[d] for d in dim_cols])
