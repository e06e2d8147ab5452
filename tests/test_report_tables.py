"""Tables T2-T9 from synthetic run JSONs with known values (and T1 dispatch on real labels)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fedmic.config import RunConfig
from fedmic.engine import timing_path
from fedmic.report import build_figure, build_table
from fedmic.report.runs import bytes_to_target, load_runs
from fedmic.report.tables import (
    TARGET_FRACTION,
    default_target,
    t2_table,
    t3_table,
    t4_table,
    t5_table,
    t6_table,
    t7_table,
    t8_table,
    t9_table,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/medmnist"

# --------------------------------------------------------------------------- synthetic runs


def run_config(method: str, arm: str | None = None, hp: dict | None = None, **kw) -> dict:
    """A real RunConfig's science() dict; methods the registry cannot build here (or made-up
    ones) reuse FedAvg's fields with their own name and hp."""
    base = dict(dataset="bloodmnist", lam=0.1, clients=2, rounds=4, progress=False)
    base.update(kw)
    if method in ("fedavg", "fedmic"):
        return RunConfig(method=method, arm=arm, hp=hp or {}, **base).science()
    cfg = RunConfig(method="fedavg", **base).science()
    cfg.update(method=method, arm=arm or method, hp=dict(hp or {}))
    return cfg


def write_run(folder: Path, name: str, *, method: str = "fedavg", arm: str | None = None,
              hp: dict | None = None, accs=(0.5, 0.6, 0.7, 0.8), acc: float = 0.8,
              auc: float | None = 0.9, up=(1000, 1000), down=(500, 500), floors=(0.6, 0.3),
              glob: dict | None = None, ranks: dict | None = None, params=(100, None),
              timing: list | None = None, rss: float = 512.0, eval_every: int = 1,
              valsel_acc: float | None = None, acc_std: float = 0.1, worst: float = 0.4,
              **cfg_kw) -> Path:
    """A fedmic-run/2 JSON with known values. Each round moves sum(up) + sum(down) bytes;
    rounds whose number is a multiple of eval_every carry an eval with accs[round-1]."""
    cfg = run_config(method, arm, hp, **cfg_kw)
    history = []
    for i, a in enumerate(accs, start=1):
        h = {"round": i, "sampled": list(range(len(up))), "dropped": [], "skipped": [],
             "aggregated": len(up), "uplink_bytes": list(up), "downlink_bytes": list(down),
             "train_loss": 1.0 / i, "upload_ranks": {}, "broadcast_ranks": {}}
        if ranks:
            h["upload_ranks"] = {k: float(v[i - 1]) for k, v in ranks.items()}
            h["broadcast_ranks"] = {k: int(v[i - 1]) - 1 for k, v in ranks.items()}
        if i % eval_every == 0 or i == len(accs):
            ev = {"personal": {"test": {"acc": a, "auc": 0.5 + a / 2, "f1": a, "n": 100},
                               "val": {"acc": a, "auc": 0.5, "f1": a, "n": 50}}}
            if glob:
                ev["global"] = {"test": {"acc": glob["acc"], "auc": glob["auc"], "f1": 0.5, "n": 1000},
                                "val": {"acc": glob["acc"], "auc": 0.5, "f1": 0.5, "n": 500}}
            h["eval"] = ev
        history.append(h)
    personal = {"acc": acc, "auc": auc, "f1": acc, "acc_mean": acc, "acc_std": acc_std,
                "acc_worst_decile": worst, "auc_mean": auc}
    summary = {"uplink_per_round": float(sum(up)), "downlink_per_round": float(sum(down)),
               "uplink_total": sum(up) * len(accs), "downlink_total": sum(down) * len(accs),
               "dropped_total": 0, "skipped_total": 0, "personal": personal,
               "personal_valsel": {**personal, "acc": valsel_acc if valsel_acc is not None else acc,
                                   "round": len(accs)}}
    if glob:
        summary["global"] = {"acc": glob["acc"], "auc": glob["auc"], "f1": 0.5}
        summary["global_valsel"] = {"acc": glob["acc"], "auc": glob["auc"], "f1": 0.5, "round": 1}
    p = {"shared": params[0]}
    if params[1] is not None:
        p["personal"] = params[1]
    run = {"format": "fedmic-run/2", "config": cfg, "env": {"device": "cpu"},
           "partition": {"file": "p.json", "redraws": 0},
           "floors": {"local_majority_acc": floors[0], "global_majority_acc": floors[1]},
           "n_train": [50] * cfg["clients"], "history": history, "summary": summary, "params": p}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(run))
    if timing is not False:
        rounds = [{"round": i, "train_s": t, "eval_s": 0.1}
                  for i, t in enumerate(timing or [1.0] * len(accs), start=1)]
        timing_path(path).write_text(json.dumps({"rounds": rounds, "peak_rss_mb": rss, "env": {}}))
    return path


def main_runs(folder: Path) -> list[Path]:
    """λ=0.1: FedAvg and FedMIC with 3 seeds, Local (no global model, no bytes, no timing
    file, one seed's AUC undefined) with 2 seeds; λ=0.5: FedAvg only, one seed."""
    paths = []
    for seed, a in enumerate((0.70, 0.72, 0.74)):
        paths.append(write_run(folder, f"fedavg_s{seed}", method="fedavg", seed=seed, acc=a,
                               auc=0.80 + 0.01 * seed, glob={"acc": 0.65, "auc": 0.85},
                               up=(1000, 1000), down=(500, 500), params=(100, None),
                               timing=[2.0, 4.0, 2.0, 4.0], rss=500.0 + seed))
    for seed, a in enumerate((0.80, 0.83, 0.86)):
        paths.append(write_run(folder, f"fedmic_s{seed}", method="fedmic", seed=seed, acc=a,
                               auc=0.90, glob={"acc": 0.55, "auc": 0.75}, up=(250, 250),
                               down=(300, 300), params=(100, 120),
                               ranks={"encoder.conv2.weight": [10, 9, 8, 7], "head.fc.weight": [5, 5, 4, 4]},
                               timing=[1.0] * 4, rss=600.0))
    for seed, a in enumerate((0.60, 0.64)):
        paths.append(write_run(folder, f"local_s{seed}", method="local", seed=seed, acc=a,
                               auc=None if seed == 1 else 0.7, up=(0, 0), down=(0, 0),
                               params=(0, 100), timing=False, accs=(0.6, 0.6, 0.6, 0.6)))
    paths.append(write_run(folder, "fedavg_lam05", method="fedavg", lam=0.5, acc=0.9,
                           glob={"acc": 0.9, "auc": 0.95}, floors=(0.5, 0.2)))
    return paths


# --------------------------------------------------------------------------- reading tables


def read_md(path: Path) -> list[dict]:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows.append(dict(zip(header, cells)))
    return rows


def row_of(rows: list[dict], **match) -> dict:
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def strip_bold(s: str) -> str:
    return s[2:-2] if s.startswith("**") and s.endswith("**") else s


@pytest.fixture()
def runs_dir(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------- loading


def test_load_runs_labels_dims_and_sidecars(runs_dir):
    paths = main_runs(runs_dir)
    # Snakemake may pass the timing sidecars too: they are not runs
    df = load_runs(paths + [timing_path(paths[0])])
    assert len(df) == len(paths)
    assert set(df["label"]) == {"FedAvg", "FedMIC", "Local"}
    assert df.attrs["dims"] == ["dataset", "lam"]
    fa = df[(df["label"] == "FedAvg") & (df["lam"] == 0.1)].sort_values("seed")
    # train time per sampled client: rounds alternate 2 s and 4 s over 2 clients
    assert fa["train_s_per_client"].tolist() == pytest.approx([1.5, 1.5, 1.5])
    loc = df[df["label"] == "Local"]
    assert loc["train_s_per_client"].isna().all() and loc["g_acc"].isna().all()
    assert not loc["has_global"].any()


def test_same_arm_different_hp_gets_distinct_labels(runs_dir):
    write_run(runs_dir, "a", method="fedmic")
    write_run(runs_dir, "b", method="fedmic", hp={"tau": 4.0})
    df = load_runs(sorted(runs_dir.glob("?.json")))
    assert sorted(df["label"]) == ["FedMIC", "FedMIC (tau=4)"]


def test_duplicate_arm_setting_seed_is_an_error(runs_dir):
    write_run(runs_dir, "a", method="fedavg")
    write_run(runs_dir, "b", method="fedavg")
    with pytest.raises(ValueError, match="share one arm, setting and seed"):
        load_runs([runs_dir / "a.json", runs_dir / "b.json"])


def test_not_a_run_json_is_rejected(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"format": "fedmic-partition/1"}))
    with pytest.raises(ValueError, match="not a run JSON"):
        load_runs([p])


# --------------------------------------------------------------------------- T2


def test_t2_means_stds_bold_floors_and_na(runs_dir, tmp_path):
    paths = main_runs(runs_dir)
    out = build_table("t2", paths, tmp_path / "t2")
    assert [p.suffix for p in out] == [".csv", ".md", ".tex"]
    rows = read_md(tmp_path / "t2.md")
    col = "BloodMNIST, λ=0.1"
    fedavg, fedmic, local = (row_of(rows, method=m) for m in ("FedAvg", "FedMIC", "Local"))
    # std over seeds with ddof=1 (ddof=0 would print 0.016 and 0.024)
    assert fedavg[f"{col} ACC"] == "0.720 ± 0.020"
    assert fedmic[f"{col} ACC"] == "**0.830 ± 0.030**"
    assert fedmic[f"{col} ΔACC"] == "**+0.230 ± 0.030**"
    assert fedavg[f"{col} ΔACC"] == "+0.120 ± 0.020"
    assert local[f"{col} ΔACC"] == "+0.020 ± 0.028"
    # one seed's AUC undefined: n/a, never a number, never bold
    assert local[f"{col} AUC"] == "n/a"
    assert fedmic[f"{col} AUC"] == "**0.900 ± 0.000**"
    # one seed prints the mean alone; an arm not run in a setting prints "–"
    assert fedavg["BloodMNIST, λ=0.5 ACC"] == "**0.900**"
    assert fedmic["BloodMNIST, λ=0.5 ACC"] == "–"
    floor = row_of(rows, method="local-majority floor")
    assert floor[f"{col} ACC"] == "0.600" and floor["BloodMNIST, λ=0.5 ACC"] == "0.500"
    assert row_of(rows, method="global-majority floor")[f"{col} ACC"] == "0.300"
    # arms first in registry order, floors last
    assert [r["method"] for r in rows] == ["Local", "FedAvg", "FedMIC", "local-majority floor",
                                          "global-majority floor"]
    csv = pd.read_csv(tmp_path / "t2.csv")
    assert csv.loc[csv["method"] == "FedMIC", f"{col} ACC [value]"].item() == pytest.approx(0.83)
    tex = (tmp_path / "t2.tex").read_text()
    assert r"\textbf{0.830 $\pm$ 0.030}" in tex


def test_t2_floor_is_not_bold_even_when_highest(runs_dir, tmp_path):
    write_run(runs_dir, "a", method="fedavg", acc=0.5, floors=(0.9, 0.3))
    t = t2_table(load_runs([runs_dir / "a.json"]))
    t.write(tmp_path / "t")
    rows = read_md(tmp_path / "t.md")
    assert row_of(rows, method="local-majority floor")["BloodMNIST, λ=0.1 ACC"] == "0.900"
    assert row_of(rows, method="FedAvg")["BloodMNIST, λ=0.1 ACC"] == "**0.500**"


def test_t2_valsel_uses_validation_selected_values(runs_dir, tmp_path):
    write_run(runs_dir, "a", method="fedavg", acc=0.5, valsel_acc=0.55)
    build_table("t2_valsel", [runs_dir / "a.json"], tmp_path / "t")
    rows = read_md(tmp_path / "t.md")
    assert row_of(rows, method="FedAvg")["BloodMNIST, λ=0.1 ACC"] == "**0.550**"
    assert "validation" in (tmp_path / "t.md").read_text()


# --------------------------------------------------------------------------- T3 / T7


def test_t3_join_ratio_columns(runs_dir, tmp_path):
    paths = []
    for j, accs in ((0.5, (0.60, 0.62)), (1.0, (0.70, 0.74))):
        for s, a in enumerate(accs):
            paths.append(write_run(runs_dir, f"fa_{j}_{s}", method="fedavg", join_ratio=j, seed=s, acc=a))
        paths.append(write_run(runs_dir, f"fm_{j}", method="fedmic", join_ratio=j, acc=0.65))
    t3_table(load_runs(paths)).write(tmp_path / "t3")
    rows = read_md(tmp_path / "t3.md")
    fa = row_of(rows, method="FedAvg")
    fm = row_of(rows, method="FedMIC")
    assert fa["join ratio 0.5"] == "0.610 ± 0.014" and fm["join ratio 0.5"] == "**0.650**"
    assert fa["join ratio 1"] == "**0.720 ± 0.028**" and fm["join ratio 1"] == "0.650"
    assert row_of(rows, method="local-majority floor")["join ratio 1"] == "0.600"


def test_t7_clients_columns_bold_within_setting(runs_dir, tmp_path):
    paths = [write_run(runs_dir, f"a{k}{lam}", method="fedavg", clients=k, lam=lam, acc=0.5 + k / 100)
             for k in (10, 20) for lam in (0.1, 0.5)]
    paths += [write_run(runs_dir, f"m{lam}", method="fedmic", clients=10, lam=lam, acc=0.4 + lam)
              for lam in (0.1, 0.5)]
    t7_table(load_runs(paths)).write(tmp_path / "t7")
    rows = read_md(tmp_path / "t7.md")
    # λ=0.1: FedAvg 0.60 beats FedMIC 0.50 at K=10; λ=0.5: FedMIC 0.90 beats 0.60
    assert row_of(rows, **{"λ": "0.1", "method": "FedAvg"})["K=10"] == "**0.600**"
    assert row_of(rows, **{"λ": "0.5", "method": "FedMIC"})["K=10"] == "**0.900**"
    assert row_of(rows, **{"λ": "0.5", "method": "FedAvg"})["K=10"] == "0.600"
    assert row_of(rows, **{"λ": "0.1", "method": "FedMIC"})["K=20"] == "–"


# --------------------------------------------------------------------------- T4


def test_bytes_to_target_first_evaluated_round():
    h = [{"round": r, "uplink_bytes": [100, 200], "downlink_bytes": [50, 50],
          **({"eval": {"personal": {"test": {"acc": a}}}} if a is not None else {})}
         for r, a in ((1, 0.5), (2, None), (3, 0.7), (4, 0.9))]
    # round 2 is not evaluated, so the target 0.6 is first seen at round 3: 3 × 400 bytes
    assert bytes_to_target(h, 0.6) == (3, 1200)
    assert bytes_to_target(h, 0.9) == (4, 1600)
    assert bytes_to_target(h, 0.95) == (None, None)


def test_t4_bytes_ratio_and_target(runs_dir, tmp_path):
    paths = main_runs(runs_dir)
    # evaluated every 2 rounds: round 1 would pass but is not evaluated, round 2 fails
    paths.append(write_run(runs_dir, "late", method="fedmic", arm="FedMIC-late", eval_every=2,
                           accs=(0.7, 0.1, 0.7, 0.77), up=(250, 250), down=(300, 300)))
    paths.append(write_run(runs_dir, "never", method="fedavg", arm="FedAvg-never", accs=(0.1,) * 4))
    t = t4_table(load_runs(paths))
    t.write(tmp_path / "t4")
    csv = pd.read_csv(tmp_path / "t4.csv")
    rows = read_md(tmp_path / "t4.md")
    lam01 = csv[csv["λ"] == 0.1].set_index("method")
    # default target: 0.95 × FedAvg's reported accuracy (mean of 0.70, 0.72, 0.74)
    tgt = TARGET_FRACTION * 0.72
    assert lam01.loc["FedAvg", "target ACC"] == pytest.approx(round(tgt, 3))
    # history accs 0.5, 0.6, 0.7, 0.8 -> 0.684 first reached at round 3: 3 × 3000 bytes
    assert lam01.loc["FedAvg", "to target (MB) [value]"] == 9000
    assert lam01.loc["FedMIC", "to target (MB) [value]"] == 3 * 1100
    assert lam01.loc["FedMIC-late", "to target (MB) [value]"] == 4 * 1100
    assert lam01.loc["FedAvg-never", "to target (MB)"] == "not reached"
    assert lam01.loc["FedMIC", "uplink ÷ FedAvg [value]"] == pytest.approx(0.25)
    assert lam01.loc["FedAvg", "uplink ÷ FedAvg [value]"] == pytest.approx(1.0)
    assert lam01.loc["FedAvg", "uplink/round (MB) [value]"] == 2000
    assert lam01.loc["FedAvg", "uplink total (MB) [value]"] == 8000
    fm = row_of(rows, **{"λ": "0.1", "method": "FedMIC"})
    assert fm["uplink ÷ FedAvg"] == "0.25"
    # Local uploads nothing: the fewest bytes, hence bold
    assert row_of(rows, **{"λ": "0.1", "method": "Local"})["uplink ÷ FedAvg"] == "**0**"
    assert fm["to target (MB)"] == "**0.00330 ± 0.00000**"
    assert fm["uplink/round (MB)"] == "0.000500 ± 0.000000"
    assert row_of(rows, **{"λ": "0.1", "method": "Local"})["uplink/round (MB)"] == "**0.00 ± 0.00**"
    assert row_of(rows, **{"λ": "0.1", "method": "Local"})["to target (MB)"] == "not reached"
    # λ=0.5 has only FedAvg: its ratio is 1 and its target its own
    assert row_of(rows, **{"λ": "0.5", "method": "FedAvg"})["target ACC"] == f"{0.95 * 0.9:.3f}"


def test_t4_given_target_partial_seeds_and_no_fedavg(runs_dir, tmp_path):
    a = write_run(runs_dir, "a", method="fedmic", seed=0, accs=(0.5, 0.9, 0.9, 0.9))
    b = write_run(runs_dir, "b", method="fedmic", seed=1, accs=(0.5, 0.5, 0.5, 0.5))
    runs = load_runs([a, b])
    t4_table(runs, target=0.85).write(tmp_path / "t4")
    r = read_md(tmp_path / "t4.md")[0]
    assert r["target ACC"] == "0.850"
    assert r["to target (MB)"] == "0.00600 (1/2 seeds)"
    assert r["uplink ÷ FedAvg"] == "n/a"
    # without FedAvg the default falls back to the lowest arm's accuracy
    tgt, rule = default_target(runs)
    assert rule == "lowest" and tgt == pytest.approx(0.95 * 0.8)


# --------------------------------------------------------------------------- T5 / T6


def test_t5_ablation_labels_and_values(runs_dir, tmp_path):
    paths = [write_run(runs_dir, f"d{s}", method="fedmic", seed=s, acc=a) for s, a in ((0, 0.8), (1, 0.9))]
    paths.append(write_run(runs_dir, "norep", method="fedmic", hp={"rep_distill": False}, acc=0.7))
    paths.append(write_run(runs_dir, "nogpd", method="fedmic", arm="no-GPD", hp={"gpd": False}, acc=0.95))
    paths.append(write_run(runs_dir, "fa", method="fedavg", acc=0.99))  # not FedMIC: not in T5
    t5_table(load_runs(paths)).write(tmp_path / "t5")
    rows = read_md(tmp_path / "t5.md")
    assert [r["variant"] for r in rows] == ["FedMIC (default)", "FedMIC (w/o representation KD)",
                                           "no-GPD"]
    assert row_of(rows, variant="FedMIC (default)")["ACC"] == "0.850 ± 0.071"
    assert row_of(rows, variant="no-GPD")["changed from default"] == "w/o GPD (dense uploads)"
    assert row_of(rows, variant="no-GPD")["ACC"] == "**0.950**"
    assert row_of(rows, variant="FedMIC (w/o representation KD)")["ΔACC"] == "+0.100"


def test_t5_needs_fedmic_runs(runs_dir):
    with pytest.raises(ValueError, match="no FedMIC runs"):
        t5_table(load_runs([write_run(runs_dir, "fa", method="fedavg")]))


def test_t6_one_parameter_at_a_time(runs_dir, tmp_path):
    paths = [write_run(runs_dir, "d", method="fedmic", acc=0.8, up=(300, 300))]
    for tau, a in ((1.0, 0.7), (4.0, 0.85)):
        paths.append(write_run(runs_dir, f"t{tau}", method="fedmic", hp={"tau": tau}, acc=a))
    paths.append(write_run(runs_dir, "e", method="fedmic", hp={"energy_start": 0.9}, acc=0.75,
                           up=(200, 200)))
    paths.append(write_run(runs_dir, "two", method="fedmic", hp={"tau": 4.0, "alpha": 0.5}, acc=0.99))
    t6_table(load_runs(paths)).write(tmp_path / "t6")
    rows = read_md(tmp_path / "t6.md")
    energy = [r for r in rows if r["parameter"].startswith("energy")]
    tau = [r for r in rows if r["parameter"] == "τ"]
    assert [r["value"] for r in energy] == ["0.9→0.98", "0.95→0.98 (default)"]
    assert [r["value"] for r in tau] == ["1", "2 (default)", "4"]
    assert [r["ACC"] for r in tau] == ["0.700", "0.800", "**0.850**"]
    assert energy[0]["uplink/round (MB)"] == "**0.000400**"
    assert energy[1]["ACC"] == "**0.800**"
    # the run changing two parameters is in no row (its 0.99 would be bold otherwise)
    assert all("0.990" not in r["ACC"] for r in rows)
    assert not any(r["parameter"] == "α" for r in rows)


# --------------------------------------------------------------------------- T8 / T9


def test_t8_costs(runs_dir, tmp_path):
    paths = main_runs(runs_dir)
    t8_table(load_runs(paths)).write(tmp_path / "t8")
    rows = read_md(tmp_path / "t8.md")
    csv = pd.read_csv(tmp_path / "t8.csv").set_index("method")
    fa, fm, lo = (row_of(rows, method=m) for m in ("FedAvg", "FedMIC", "Local"))
    assert (fa["shared params"], fa["evaluated params"]) == ("100", "100")
    assert (fm["shared params"], fm["evaluated params"]) == ("100", "120")
    # FedAvg at λ 0.1 and 0.5: (2+4)/2 s per round / 2 clients = 1.5 s; the λ=0.5 run has 1 s
    # rounds, 0.5 s per client; T8 pools λ: mean of 1.5, 1.5, 1.5, 0.5
    assert csv.loc["FedAvg", "train s/client/round [value]"] == pytest.approx(1.25)
    assert fm["train s/client/round"] == "**0.500 ± 0.000**"
    assert lo["train s/client/round"] == "n/a" and lo["peak RSS (MB)"] == "n/a"
    # memory: personal params × 4 bytes; FedAvg clients keep nothing
    assert csv.loc["FedMIC", "client memory (MB) [value]"] == 480
    assert csv.loc["FedAvg", "client memory (MB) [value]"] == 0
    assert fa["client memory (MB)"].startswith("**0.00")
    assert csv.loc["FedMIC", "peak RSS (MB) [value]"] == 600


def test_t9_global_and_fairness(runs_dir, tmp_path):
    t9_table(load_runs(main_runs(runs_dir))).write(tmp_path / "t9")
    rows = read_md(tmp_path / "t9.md")
    lo = row_of(rows, **{"λ": "0.1", "method": "Local"})
    fa = row_of(rows, **{"λ": "0.1", "method": "FedAvg"})
    assert lo["global ACC"] == "n/a" and lo["global AUC"] == "n/a"
    assert fa["global ACC"] == "**0.650 ± 0.000**"
    assert row_of(rows, **{"λ": "0.1", "method": "FedMIC"})["global ACC"] == "0.550 ± 0.000"
    assert fa["client std"] == "**0.100 ± 0.000**" and fa["worst-decile ACC"] == "**0.400 ± 0.000**"


def test_unknown_table_name(runs_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown table"):
        build_table("t42", [write_run(runs_dir, "a")], tmp_path / "x")


# --------------------------------------------------------------------------- T1 dispatch


def test_t1_and_f3_dispatch_to_partition_builders(tmp_path):
    if not (DATA / "breastmnist.npz").exists():
        pytest.skip("real BreastMNIST not available")
    from fedmic.data.medmnist import load_dataset
    from fedmic.data.partition import make_partition, save_partition

    data = load_dataset("breastmnist", str(DATA))
    labels = {s: data.split(s)[1].numpy() for s in ("train", "val", "test")}
    part = make_partition("dirichlet_label", labels, 3, 0.5, 0, 10, n_classes=data.n_classes,
                          dataset="breastmnist", dataset_md5=data.info.md5(28))
    p = tmp_path / "part.json"
    save_partition(part, p)
    build_table("T1", [p], tmp_path / "t1", root=str(DATA))
    t1 = pd.read_csv(tmp_path / "t1.csv")
    assert t1["train"].item() == len(labels["train"]) and t1["clients"].item() == 3
    out = build_figure("f3", [p], tmp_path / "f3", root=str(DATA))
    assert all(o.stat().st_size > 0 for o in out)
