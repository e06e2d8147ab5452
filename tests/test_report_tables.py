"""The tidy results file and tables T2-T9 over it, from hand-made run JSONs (tests/runfixtures.py)."""
from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from runfixtures import prior_floors, write_run

from fedmic import paper
from fedmic.paper import t2, t3, t4, t5, t6, t7, t8, t9
from fedmic.report import build_table, tables, tidy
from conftest import DATA


def md_rows(path: Path) -> list[list[str]]:
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("|")][2:]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def row(t: tables.Table, **match) -> pd.Series:
    df = t.df
    for k, val in match.items():
        df = df[df[k] == val]
    assert len(df) == 1, (match, t.df)
    return df.iloc[0]


# --------------------------------------------------------------------------- the tidy file


def test_collect_one_row_per_run_round_and_metric(tmp_path):
    p = write_run(tmp_path, "a", accs=(0.5, 0.7), gaccs=(0.6, 0.65), up=(100, 300), down=(50, 50))
    df = tidy.collect([p, p.with_suffix(".timing.json")])
    assert list(df.columns) == tidy.COLUMNS
    assert set(df[["dataset", "lam", "clients", "join_ratio", "arm", "method", "seed"]].drop_duplicates()
               .itertuples(index=False, name=None)) == {("pneumoniamnist", 0.1, 3, 1.0, "fedavg", "fedavg", 0)}
    acc = df[(df["select"] == "round") & (df["scope"] == "personal") & (df["split"] == "test") & (df["metric"] == "acc")]
    assert acc["round"].tolist() == [1, 2] and acc["value"].tolist() == [0.5, 0.7]
    # bytes of that round over the sampled clients, and through it
    assert acc["uplink_bytes"].tolist() == [400, 400] and acc["cum_uplink_bytes"].tolist() == [400, 800]
    assert acc["cum_downlink_bytes"].tolist() == [100, 200]
    g = df[(df["select"] == "round") & (df["scope"] == "global") & (df["split"] == "test") & (df["metric"] == "acc")]
    assert g["value"].tolist() == [0.6, 0.65]
    per_client = df[(df["select"] == "last") & df["client"].notna() & (df["metric"] == "acc")]
    assert per_client["client"].tolist() == [0, 1, 2]
    floor = df[(df["scope"] == "floor") & (df["metric"] == "client_prior_acc")]
    assert floor["value"].tolist() == [0.6] and floor["select"].tolist() == ["run"]
    cost = df[(df["scope"] == "cost") & (df["metric"] == "train_s_per_client")]
    assert cost["value"].tolist() == [0.5]  # 1 s per round over 2 sampled clients
    # no metric is a list: per-client values have a client number instead
    assert df["value"].map(lambda x: isinstance(x, float)).all()


def test_results_file_round_trips_and_is_byte_stable(tmp_path):
    paths = [write_run(tmp_path, f"s{s}", seed=s, gaccs=(0.6,) * 4) for s in range(2)]
    df = tidy.collect(paths)
    a = tidy.write(df, tmp_path / "r1.csv.gz")
    b = tidy.write(tidy.collect(paths), tmp_path / "r2.csv.gz")
    assert a.read_bytes() == b.read_bytes()  # gzip without a timestamp
    back = tidy.read(a)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    # what a researcher types
    assert len(pd.read_csv(a)) == len(df)
    assert gzip.decompress(a.read_bytes()).decode().splitlines()[0].split(",") == tidy.COLUMNS


def test_same_run_twice_and_foreign_files_are_errors(tmp_path):
    a = write_run(tmp_path, "a")
    b = write_run(tmp_path, "b")  # same arm, setting and seed
    with pytest.raises(ValueError, match="same run"):
        tidy.collect([a, b])
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"format": "something"}))
    with pytest.raises(ValueError, match="not a run JSON"):
        tidy.collect([bad])
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="fedmic collect"):
        tidy.read(csv)


def test_format_1_runs_are_refused_with_the_fix(tmp_path):
    p = write_run(tmp_path, "old")
    run = json.loads(p.read_text())
    run["format"] = "fedmic-run/1"
    p.write_text(json.dumps(run))
    with pytest.raises(ValueError, match="retrain it"):
        tidy.collect([p])


# --------------------------------------------------------------------------- T2


def test_t2_client_prior_floor_of_a_hand_made_partition_and_margins_run_by_run(tmp_path):
    # seed 0: client 0 trains on 0,0,1 (prior: class 0) and tests on 0,1; client 1 trains on
    # 1,1 and tests on 1,1,1 (one class: no AUC); client 2 trains on 0,1,1 and tests on 0,1,1,1
    floors0 = prior_floors([[0, 0, 1], [1, 1], [0, 1, 1]], [[0, 1], [1, 1, 1], [0, 1, 1, 1]])
    assert floors0["client_prior_acc"] == pytest.approx(7 / 9) and floors0["auc_clients"] == 2
    # seed 1: another partition, another floor
    floors1 = prior_floors([[0, 0], [0, 1, 1], [0]], [[0, 0, 1], [1, 1], [0, 1]])
    assert floors1["client_prior_acc"] == pytest.approx(5 / 7)
    paths = [write_run(tmp_path, f"avg{s}", seed=s, acc=a, f1=0.6, floors=f)
             for s, a, f in ((0, 0.85, floors0), (1, 0.80, floors1))]
    t = t2.table(tidy.collect(paths))
    floor = row(t, method="client-prior floor")
    f_acc = [floors0["client_prior_acc"], floors1["client_prior_acc"]]
    assert floor["ACC"] == tables.mean_std(f_acc)
    assert floor["AUC"] == "0.500 ± 0.000" and floor["AUC clients"] == "2/3"
    assert floor["F1"] == tables.mean_std([floors0["client_prior_f1"], floors1["client_prior_f1"]])
    avg = row(t, method="FedAvg")
    # margin of each run over its own partition's floor, then mean ± std over seeds
    assert avg["ΔACC"] == "+" + tables.mean_std([0.85 - f_acc[0], 0.80 - f_acc[1]])
    assert avg["ΔAUC"] == "+0.400 ± 0.000" and avg["ΔF1"].startswith("+")
    glob = row(t, method="global-majority floor")
    assert glob["ACC"] == tables.mean_std([floors0["global_majority_acc"], floors1["global_majority_acc"]])
    # floors are references: never bold, even where higher
    md = (t.write(tmp_path / "t2")[1]).read_text()
    assert f"**{floor['ACC']}**" not in md


def test_t2_headline_auc_is_per_client_and_pooled_is_secondary(tmp_path):
    # pooled predictions of a label-skewed federation can score far above the per-client AUC
    p = write_run(tmp_path, "a", auc=0.62, auc_pooled=0.91)
    r = row(t2.table(tidy.collect([p])), method="FedAvg")
    assert (r["AUC"], r["AUC pooled"]) == ("0.620", "0.910")
    assert r["AUC [value]"] == pytest.approx(0.62)


def comparison_runs(tmp_path, arms: dict, seeds=5, suffix="") -> list[Path]:
    """{method: (test ACC per seed, validation ACC)} -> one run per (arm, seed)."""
    paths = []
    for method, (accs, val) in arms.items():
        for s in range(seeds):
            paths.append(write_run(tmp_path, f"{method}{suffix}{s}", method=method, arm=method + suffix, seed=s,
                                   acc=accs[s], val_accs=(val,) * 4))
    return paths


MIC = [0.80, 0.82, 0.79, 0.85, 0.81]
ARMS = {"local": ([0.78, 0.80, 0.78, 0.80, 0.80], 0.70),
        "fedavg": ([0.70, 0.71, 0.69, 0.72, 0.70], 0.95),   # best on VALIDATION
        "fedprox": ([0.90, 0.91, 0.89, 0.92, 0.90], 0.60),  # best on test: must not be chosen
        "fedkd": ([0.80, 0.83, 0.80, 0.84, 0.80], 0.80),
        "fedmic": (MIC, 0.90)}


def test_t2_compares_fedmic_with_local_fedkd_and_the_validation_best_over_seeds(tmp_path):
    from fedmic.report import stats

    t = t2.table(tidy.collect(comparison_runs(tmp_path, ARMS)))
    col = t2.COMPARISON
    raw = {m: stats.paired_difference(MIC, ARMS[m][0]) for m in ("local", "fedkd", "fedavg")}
    holm = dict(zip(raw, stats.holm([raw[m]["p"] for m in raw])))
    for method, label, role in (("local", "Local", "Local"), ("fedkd", "FedKD", "FedKD"),
                                ("fedavg", "FedAvg", "best on validation")):
        r, want = raw[method], holm[method]
        assert row(t, method=label)[col] == (f"{role}: {r['mean']:+.3f} ({r['low']:+.3f}, {r['high']:+.3f}), "
                                             f"p={want:.2g}")
    assert row(t, method="FedProx")[col] == "" and row(t, method="FedMIC")[col] == "reference"
    # FedMIC - Local: differences 0.02, 0.02, 0.01, 0.05, 0.01 -> mean 0.022, a known t interval
    assert raw["local"]["mean"] == pytest.approx(0.022) and raw["local"]["low"] < 0.022 < raw["local"]["high"]
    assert "Holm-adjusted over the 3 comparisons" in t.caption and "paired t-test over seeds" in t.caption
    assert "5 seeds per comparison" in t.caption and "Wilcoxon" not in t.caption
    # the Snakemake report's caption (workflow/report/t2.rst) names the same test
    assert "paired t-test over seeds" in " ".join(t2.CAPTION.split()) and "Wilcoxon" not in t2.CAPTION


def test_t2_a_baseline_in_two_roles_is_compared_once(tmp_path):
    arms = {**ARMS, "local": (ARMS["local"][0], 0.99)}  # Local is also the best on validation
    t = t2.table(tidy.collect(comparison_runs(tmp_path, arms)))
    assert row(t, method="Local")[t2.COMPARISON].startswith("Local, best on validation: ")
    assert row(t, method="FedAvg")[t2.COMPARISON] == ""
    assert "over the 2 comparisons" in t.caption


def test_t2_compares_tuned_arms_with_tuned_arms(tmp_path):
    paths = comparison_runs(tmp_path, ARMS) + comparison_runs(
        tmp_path, {**ARMS, "fedprox": (ARMS["fedprox"][0], 0.99)}, suffix="-tuned")
    t = t2.table(tidy.collect(paths))
    col = t2.COMPARISON
    assert row(t, method="FedMIC-tuned")[col] == "reference" and row(t, method="FedMIC")[col] == ""
    assert row(t, method="FedProx-tuned")[col].startswith("best on validation: ")
    assert row(t, method="Local-tuned")[col].startswith("Local: ") and row(t, method="Local")[col] == ""


def test_t2_fedavg_bn_sits_beside_fedbn_in_config_order(tmp_path):
    paths = [write_run(tmp_path, a, method=m, arm=a, model=model) for a, m, model in
             (("fedavg", "fedavg", "cnn"), ("fedbn", "fedbn", "cnn_bn"), ("fedavg-bn", "fedavg", "cnn_bn"),
              ("fedmic", "fedmic", "cnn"))]
    t = t2.table(tidy.collect(paths))
    assert t.df["method"].tolist()[:4] == ["FedAvg", "FedBN", "FedAvg-bn", "FedMIC"]


# --------------------------------------------------------------------------- T4


def comm_runs(tmp_path, fedavg_g=(0.60, 0.70, 0.80, 0.90), floor=0.55) -> list[Path]:
    f = {"global_majority_acc": floor, "client_prior_acc": 0.6}
    return [
        write_run(tmp_path, "avg", gaccs=fedavg_g, up=(1000, 1000), down=(500, 500), floors=f),
        write_run(tmp_path, "mic", method="fedmic", gaccs=(0.55, 0.80, 0.85, 0.86), up=(50, 50), down=(100, 100),
                  floors=f),
        # an untrained shared model: it predicts the majority class, every round
        write_run(tmp_path, "frozen", method="fedprox", gaccs=(floor,) * 4, up=(1000, 1000), down=(500, 500),
                  floors=f),
        # Local: no bytes, no global model, and a personalised ACC above the floor
        write_run(tmp_path, "local", method="local", accs=(0.9,) * 4, acc=0.9, up=(0, 0), down=(0, 0), floors=f),
    ]


def test_t4_target_must_be_learned_local_and_untrained_never_reach_it(tmp_path):
    t = t4.table(tidy.collect(comm_runs(tmp_path)))
    target = 0.55 + 0.9 * (0.85 - 0.55)  # FedAvg reports the mean of its last 2 rounds
    assert row(t, method="FedAvg")["target global ACC"] == f"{target:.3f}"
    avg = row(t, method="FedAvg")
    assert avg["round reached"] == "4.0" and avg["to target (MB)"] == "0.0120"  # 4 rounds x 3000 B
    mic = row(t, method="FedMIC")
    assert mic["round reached"] == "3.0" and mic["to target (MB)"] == "0.000900"
    assert row(t, method="FedProx")["to target (MB)"] == "not reached"
    local = row(t, method="Local")
    assert local["to target (MB)"] == "n/a" and local["round reached"] == "no global model"
    assert (mic["uplink ÷ FedAvg"], mic["downlink ÷ FedAvg"]) == ("0.05", "0.2")
    assert "0.9 × (FedAvg's reported global ACC" in t.caption


def test_t4_no_target_when_fedavg_does_not_beat_the_floor_and_an_absolute_override(tmp_path):
    t = t4.table(tidy.collect(comm_runs(tmp_path, fedavg_g=(0.5, 0.5, 0.5, 0.5), floor=0.55)))
    assert row(t, method="FedMIC")["target global ACC"] == "n/a"
    assert row(t, method="FedMIC")["to target (MB)"] == "n/a"
    t = t4.table(tidy.collect(comm_runs(tmp_path)), target=0.8)
    assert row(t, method="FedMIC")["round reached"] == "2.0"
    assert row(t, method="Local")["to target (MB)"] == "n/a"
    assert "given target global ACC 0.800" in t.caption


def test_bytes_to_target_first_evaluated_round():
    rounds = pd.DataFrame({"round": [1, 2, 3], "value": [0.5, 0.81, 0.9], "cum_bytes": [10, 20, 30]})
    assert t4.bytes_to_target(rounds, 0.8) == (2.0, 20.0)
    assert all(math.isnan(x) for x in t4.bytes_to_target(rounds, 0.95))


# --------------------------------------------------------------------------- T3 T5 T6 T7 T8 T9


def test_t3_and_t7_pivot_with_a_floor_row(tmp_path):
    paths = [write_run(tmp_path, f"avg{jr}", join_ratio=jr, acc=a) for jr, a in ((0.5, 0.7), (1.0, 0.8))]
    t = t3.table(tidy.collect(paths))
    avg = row(t, method="FedAvg")
    assert (avg["join ratio 0.5"], avg["join ratio 1"], avg["Δ join ratio 1"]) == ("0.700", "0.800", "+0.200")
    assert "mean ± std over seeds (1 per cell)" in t.caption  # a cell is one join ratio, not the row's runs
    assert row(t, method="client-prior floor")["join ratio 0.5"] == "0.600"
    paths = [write_run(tmp_path, f"k{k}", clients=k, acc=0.9, floors={"client_prior_acc": 0.3 + 0.1 * k})
             for k in (2, 3)]
    t = t7.table(tidy.collect(paths))
    floor = row(t, method="client-prior floor")
    assert (floor["K=2"], floor["K=3"]) == ("0.500", "0.600")  # each K its own partition
    assert "seeds (1 per cell)" in t.caption


def test_t5_ablation_and_t6_one_parameter_at_a_time(tmp_path):
    paths = [write_run(tmp_path, "mic", method="fedmic", acc=0.8),
             write_run(tmp_path, "norep", method="fedmic", arm="fedmic-no-rep", hp={"rep_distill": False}, acc=0.7),
             write_run(tmp_path, "tau4", method="fedmic", arm="fedmic-tau4", hp={"tau": 4.0}, acc=0.75),
             write_run(tmp_path, "tau1", method="fedmic", arm="fedmic-tau1", hp={"tau": 1.0}, acc=0.72),
             write_run(tmp_path, "avg", acc=0.9)]
    df = tidy.collect(paths)
    ablation = t5.table(df)
    assert row(ablation, variant="FedMIC-no-rep")["changed from default"] == "w/o representation KD"
    assert row(ablation, variant="FedMIC")["ΔACC"] == "+0.200"
    assert "FedAvg" not in ablation.df["variant"].tolist() and "client-prior floor" in ablation.df["variant"].tolist()
    sensitivity = t6.table(df)
    tau = sensitivity.df[sensitivity.df["parameter"] == "τ"]
    assert tau["value"].tolist() == ["1", "2 (default)", "4"] and tau["ACC"].tolist() == ["0.720", "0.800", "0.750"]
    with pytest.raises(ValueError, match="no FedMIC runs"):
        t5.table(tidy.collect([paths[-1]]))


def test_t5_compares_each_variant_with_the_base_over_seeds_holm_adjusted(tmp_path):
    from fedmic.report import stats

    base = [0.80, 0.82, 0.79, 0.85, 0.81]
    variants = {"fedmic-aux-decision": ({"aux_on": "decision"}, [0.81, 0.84, 0.80, 0.85, 0.83]),
                "fedmic-teacher-broadcast": ({"teacher_start": "broadcast"}, [0.70, 0.73, 0.69, 0.76, 0.70])}
    paths = [write_run(tmp_path, f"mic{s}", method="fedmic", seed=s, acc=a) for s, a in enumerate(base)]
    for arm, (hp, accs) in variants.items():
        paths += [write_run(tmp_path, f"{arm}{s}", method="fedmic", arm=arm, hp=hp, seed=s, acc=a)
                  for s, a in enumerate(accs)]
    t = t5.table(tidy.collect(paths), base="fedmic")
    raw = {arm: stats.paired_difference(accs, base) for arm, (_, accs) in variants.items()}
    adjusted = dict(zip(raw, stats.holm([r["p"] for r in raw.values()])))
    for arm, r in raw.items():
        want = f"{r['mean']:+.3f} ({r['low']:+.3f}, {r['high']:+.3f}), p={adjusted[arm]:.2g}"
        assert row(t, variant=arm.replace("fedmic", "FedMIC"))[t5.COMPARISON] == want
    assert raw["fedmic-teacher-broadcast"]["mean"] == pytest.approx(-0.098)
    assert row(t, variant="FedMIC")[t5.COMPARISON] == "reference"
    assert row(t, variant="client-prior floor")[t5.COMPARISON] == ""
    assert "Holm-adjusted over the 2 comparisons" in t.caption
    # without a configured base, the run at FedMIC's defaults is the reference
    assert row(t5.table(tidy.collect(paths)), variant="FedMIC")[t5.COMPARISON] == "reference"


def test_t8_costs_and_t9_global_and_fairness(tmp_path):
    paths = [write_run(tmp_path, "avg", gaccs=(0.7,) * 4, params=(100, None), timing=[2.0, 4.0, 2.0, 4.0], rss=500),
             write_run(tmp_path, "mic", method="fedmic", gaccs=(0.6,) * 4, params=(100, 120), timing=False)]
    df = tidy.collect(paths)
    cost = t8.table(df)
    avg, mic = row(cost, method="FedAvg"), row(cost, method="FedMIC")
    assert avg["train s/client/round"] == "1.500" and avg["client memory (MB)"] == "0.00"
    assert mic["evaluated params"] == "120" and mic["client memory (MB)"] == "0.000480"
    assert mic["train s/client/round"] == "n/a" and mic["peak RSS (MB)"] == "n/a"
    fairness = t9.table(df)
    assert row(fairness, method="FedAvg")["global ACC"] == "0.700"
    assert row(fairness, method="global-majority floor")["global ACC"] == "0.550"
    assert row(fairness, method="client-prior floor")["personal ACC"] == "0.600"


def test_valsel_tables_use_the_validation_selected_values(tmp_path):
    p = write_run(tmp_path, "a", acc=0.8, valsel_acc=0.77)
    assert row(paper.render("table", "t2_valsel", paper.Inputs(frame=tidy.collect([p]))), method="FedAvg")["ACC"] == "0.770"
    with pytest.raises(ValueError, match="no _valsel"):
        paper.render("table", "t4_valsel", paper.Inputs(frame=tidy.collect([p])))
    with pytest.raises(ValueError, match="unknown table"):
        paper.render("table", "t42", paper.Inputs(frame=tidy.collect([p])))


# --------------------------------------------------------------------------- command line


def test_collect_then_table_from_the_results_file(tmp_path):
    paths = comm_runs(tmp_path)
    out = tmp_path / "results.csv.gz"
    cli = [sys.executable, "-m", "fedmic.cli"]
    subprocess.run([*cli, "collect", "--inputs", *map(str, paths), "--out", str(out), "--provenance",
                    str(tmp_path / "prov.yaml"), "--config", '{"results": "r", "seeds": [0]}', "--source", "here @ abc"],
                   check=True)
    subprocess.run([*cli, "table", "t4", "--inputs", str(out), "--out", str(tmp_path / "t4")], check=True)
    direct = build_table("t4", paths, tmp_path / "direct")
    assert (tmp_path / "t4.md").read_text() == direct[1].read_text()
    import yaml
    prov = yaml.safe_load((tmp_path / "prov.yaml").read_text())
    assert prov["workflow"]["source"] == "here @ abc" and prov["config"] == {"results": "r", "seeds": [0]}
    assert prov["runs"]["count"] == 4 and prov["runs"]["environments"][0]["runs"] == 4
    assert prov["collected_with"]["packages"]["pandas"] == pd.__version__


def test_t1_and_f3_dispatch_to_partition_builders(tmp_path):
    from fedmic.data.medmnist import load_dataset
    from fedmic.data.partition import make_partition, save_partition

    data = load_dataset("breastmnist", DATA)
    labels = {s: data.split(s)[1].numpy() for s in ("train", "val", "test")}
    part = make_partition("dirichlet_label", labels, 3, 0.5, 0, 5, n_classes=2, dataset="breastmnist")
    save_partition(part, tmp_path / "p.json")
    out = build_table("t1", [tmp_path / "p.json"], tmp_path / "t1", root=str(DATA))
    assert md_rows(out[1])[0][0] == "breastmnist"


# --------------------------------------------------------------------------- run health (issue 24)


def unhealthy(path: Path, skipped_round: int | None = None, unaggregated_round: int | None = None) -> Path:
    """The run at `path` with one round's updates skipped as non-finite (on_nonfinite: skip) and/or
    one round in which no update was aggregated, as the engine records them."""
    run = json.loads(path.read_text())
    for h in run["history"]:
        if h["round"] == skipped_round:
            h["skipped"] = [0, 1]
            h["aggregated"] -= 2
            run["summary"]["skipped_total"] += 2
        if h["round"] == unaggregated_round:
            h["aggregated"] = 0
    path.write_text(json.dumps(run))
    return path


def health_runs(tmp_path, faults: bool) -> list[Path]:
    """FedAvg healthy; FedMIC seed 0 skips updates in round 2, seed 1 aggregates nothing in round 3."""
    paths = [write_run(tmp_path, f"avg{s}", seed=s, acc=0.7, gaccs=(0.6,) * 4, up=(10, 10, 10)) for s in (0, 1)]
    mic = [write_run(tmp_path, f"mic{s}", method="fedmic", seed=s, acc=0.9, gaccs=(0.7,) * 4, params=(100, 120),
                     up=(10, 10, 10)) for s in (0, 1)]
    if faults:
        unhealthy(mic[0], skipped_round=2)
        unhealthy(mic[1], unaggregated_round=3)
    return paths + mic


@pytest.mark.parametrize("name", ["t2", "t3", "t4", "t7", "t8", "t9"])
def test_runs_in_poor_health_are_marked_in_every_table_that_uses_them(tmp_path, name):
    outs = build_table(name, health_runs(tmp_path, faults=True), tmp_path / name)
    csv, md, tex = (p.read_text() for p in outs)
    rows = md_rows(outs[1])
    header = [c.strip() for c in md.splitlines()[0].strip("|").split("|")]
    mic = next(r for r in rows if "FedMIC" in r)
    avg = next(r for r in rows if "FedAvg" in r)
    # the number cells: FedAvg's print a number there (bold or not), and no setting column
    # (T4's target is the setting's, from FedAvg's runs)
    numbers = [i for i, (h, c) in enumerate(zip(header, avg)) if h not in ("dataset", "λ", "K", "join ratio",
                                                                             "target global ACC")
               and c.strip("*")[:1] in "0123456789+-." and c.strip("*")]
    assert numbers and all(mic[i].strip("*").endswith(" †‡") for i in numbers), [(header[i], mic[i]) for i in numbers]
    assert not any("†" in c or "‡" in c for r in rows if "FedMIC" not in r for c in r)  # FedAvg, floors
    caption = md.split("Table: ", 1)[1]
    assert "†: from runs that dropped client updates with non-finite values (on_nonfinite: skip; 1 of the " \
           "table's 4 runs, 2 updates in all)" in caption
    assert "‡: from runs with rounds in which no update was aggregated" in caption and "1 of the table's 4 runs, " \
           "1 round in all" in caption
    assert "\\textdagger{}" in tex and "\\textdaggerdbl{}" in tex and " †‡" in csv


def test_healthy_runs_get_no_mark_and_no_footnote(tmp_path):
    for name in ("t2", "t4", "t8", "t9"):
        outs = build_table(name, health_runs(tmp_path, faults=False), tmp_path / name)
        assert not any(m in p.read_text() for p in outs for m in "†‡"), name


def test_a_marked_value_stays_best_and_right_aligned(tmp_path):
    outs = build_table("t2", health_runs(tmp_path, faults=True), tmp_path / "t2")
    mic = next(r for r in md_rows(outs[1]) if "FedMIC" in r)
    # columns: dataset, λ, method, ACC; the best ACC is still the best: the mark says how it came about
    assert mic[3] == "**0.900 ± 0.000 †‡**"
    assert outs[1].read_text().splitlines()[1].split("|")[4] == "---:"


@pytest.mark.parametrize("rounds, last_k, says", [
    ((4, 4), (2, 2), "mean over the last 2 evaluated rounds)"),
    ((2, 2), (5, 5), "mean over the last 2 evaluated rounds: all a run evaluated where that is fewer than its "
                     "last_k (5))"),
    ((2, 4), (3, 3), "mean over the last 2–3 evaluated rounds: all a run evaluated where that is fewer than its "
                     "last_k (3))"),
])
def test_caption_states_the_k_actually_averaged(tmp_path, rounds, last_k, says):
    paths = [write_run(tmp_path, f"s{s}", seed=s, accs=(0.5,) * r, rounds=r, last_k=k)
             for s, (r, k) in enumerate(zip(rounds, last_k))]
    assert says in t2.table(tidy.collect(paths)).caption
