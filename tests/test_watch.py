"""What a long run shows while it trains (fedmic/watch.py): a log line per round, the same
scalars as TensorBoard events read back with TensorBoard's own reader, neither changing the run
JSON; and every shipped config showing the lines."""
from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedmic.config import RunConfig
from fedmic.data.medmnist import load_dataset
from fedmic.data.partition import make_partition, save_partition
from fedmic.engine import Simulation
from fedmic.simulation import loop
from fedmic.simulation.record import timing_path
from conftest import DATA, REPO

FLAG = "breastmnist"
ROUNDS = 5  # evaluated at 2, 4 and 5 (the last): rounds 1 and 3 carry the last evaluation
LINE = re.compile(r"round (\d+)/(\d+): (\d+\.\d) s, test ACC personal (\S+) global (\S+)( \(round (\d+)\))?, "
                  r"MB up (\d+\.\d{3}) down (\d+\.\d{3})$")


@pytest.fixture(scope="module")
def part(tmp_path_factory):
    data = load_dataset(FLAG, DATA)
    labels = {s: data.split(s)[1].numpy() for s in ("train", "val", "test")}
    p = make_partition("dirichlet_label", labels, 3, 0.5, 0, 10, n_classes=data.n_classes,
                       dataset=FLAG, dataset_md5=data.info.md5(28))
    return save_partition(p, tmp_path_factory.mktemp("part") / f"{FLAG}_lam0.5_K3.json")


def cfg(**over) -> RunConfig:
    base = dict(dataset=FLAG, method="fedavg", clients=3, rounds=ROUNDS, lam=0.5, eval_every=2, last_k=2,
                checkpoint_every=0, threads=1, progress=True)
    if over.get("method") == "fedmic":  # 1/4-width CNNs: fast; its uplink (SVD factors) is not its downlink
        base["hp"] = {"teacher_width": 0.25, "student_width": 0.25}
    return RunConfig(**{**base, **over})


def round_lines(caplog) -> list[re.Match]:
    lines = [r.getMessage() for r in caplog.records if r.name == "fedmic.engine" and r.getMessage().startswith("round ")]
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    return matches


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def f32(v) -> float:
    return float(np.float32(v))  # TensorBoard keeps scalars as float32


def expected_scalars(run: dict, timing: dict) -> dict[str, list[tuple[int, float]]]:
    """What the run JSON (and, for seconds, its timing file) says each round was."""
    hist = run["history"]
    out = {"bytes/uplink": [(h["round"], f32(sum(h["uplink_bytes"]))) for h in hist],
           "bytes/downlink": [(h["round"], f32(sum(h["downlink_bytes"]))) for h in hist],
           "loss/train": [(h["round"], f32(h["train_loss"])) for h in hist],
           "time/round_s": [(t["round"], f32(t["train_s"] + t["eval_s"])) for t in timing["rounds"]]}
    for who in ("personal", "global"):
        rows = [(h["round"], f32(h["eval"][who]["test"]["acc"])) for h in hist if who in h.get("eval", {})]
        if rows:
            out[f"acc/{who}_test"] = rows
    return out


@pytest.mark.parametrize("method", ["fedmic", "local"])
def test_round_lines_and_tensorboard_say_what_the_run_json_says(part, tmp_path, caplog, method):
    caplog.set_level(logging.INFO, logger="fedmic.engine")
    Simulation(cfg(method=method, progress=False), part, DATA).run(tmp_path / "plain.json")
    assert not round_lines(caplog)  # progress: false, no lines
    out, tb = tmp_path / "run.json", tmp_path / "tb" / "breastmnist" / method / "seed0"
    Simulation(cfg(method=method), part, DATA).run(out, tensorboard=tb)
    # the same run JSON, with and without the lines and the events
    assert out.read_bytes() == (tmp_path / "plain.json").read_bytes()
    run, timing = json.loads(out.read_text()), json.loads(timing_path(out).read_text())

    lines = round_lines(caplog)
    assert [(int(m[1]), int(m[2])) for m in lines] == [(r, ROUNDS) for r in range(1, ROUNDS + 1)]
    last = None
    for m, h, t in zip(lines, run["history"], timing["rounds"]):
        if "eval" in h:
            last = h
        assert m[3] == f"{t['train_s'] + t['eval_s']:.1f}"
        want = {who: f"{last['eval'][who]['test']['acc']:.4f}" if last and who in last["eval"] else "-"
                for who in ("personal", "global")}
        assert (m[4], m[5]) == (want["personal"], want["global"])
        assert m[7] == (str(last["round"]) if last and last is not h else None)
        assert (m[8], m[9]) == (f"{sum(h['uplink_bytes']) / 1e6:.3f}", f"{sum(h['downlink_bytes']) / 1e6:.3f}")
    assert lines[0][4] == "-" and lines[2][7] == "2"  # nothing evaluated yet; then round 2's, carried
    assert lines[0][5] == "-" and (lines[1][5] == "-") == (method == "local")  # Local has no global model

    got = scalars(tb)
    assert got == expected_scalars(run, timing)
    assert ("acc/global_test" in got) == (method != "local") and len(got["bytes/uplink"]) == ROUNDS
    assert (got["bytes/uplink"] != got["bytes/downlink"]) == (method == "fedmic")  # the two are told apart


def test_resumed_run_has_one_value_per_round(part, tmp_path, monkeypatch, caplog):
    """A run that dies after round 3 resumes from its round-2 checkpoint: round 3's events of
    the first attempt are replaced, and the first line after the resume carries round 2's ACC."""
    out, tb = tmp_path / "run.json", tmp_path / "tb"
    c = cfg(checkpoint_every=2)
    real = loop.train_round

    def dies_in_round_4(run, rnd, *a):
        if rnd == 4:
            raise KeyboardInterrupt  # a killed job
        return real(run, rnd, *a)

    monkeypatch.setattr(loop, "train_round", dies_in_round_4)
    with pytest.raises(KeyboardInterrupt):
        Simulation(c, part, DATA).run(out, tensorboard=tb)
    assert [s for s, _ in scalars(tb)["bytes/uplink"]] == [1, 2, 3]
    monkeypatch.setattr(loop, "train_round", real)
    caplog.set_level(logging.INFO, logger="fedmic.engine")
    Simulation(c, part, DATA).run(out, tensorboard=tb)
    run, timing = json.loads(out.read_text()), json.loads(timing_path(out).read_text())
    got = scalars(tb)
    assert {tag: [s for s, _ in rows] for tag, rows in got.items()} == \
        {tag: [s for s, _ in rows] for tag, rows in expected_scalars(run, timing).items()}
    assert got["bytes/uplink"] == expected_scalars(run, timing)["bytes/uplink"]
    lines = round_lines(caplog)
    assert [int(m[1]) for m in lines] == [3, 4, 5]
    assert lines[0][4] == f"{run['history'][1]['eval']['personal']['test']['acc']:.4f}" and lines[0][7] == "2"


def test_command_line_writes_lines_and_events(part, tmp_path):
    """`fedmic train --progress --tensorboard DIR`, as the workflow's train rule runs it."""
    res = subprocess.run([sys.executable, "-m", "fedmic.cli", "train", "--config",
                          json.dumps(cfg(rounds=2).without_execution()), "--partition", str(part), "--root", str(DATA),
                          "--out", str(tmp_path / "run.json"), "--threads", "1", "--progress",
                          "--tensorboard", str(tmp_path / "tb")], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(re.findall(r"INFO fedmic\.engine: round \d/2: ", res.stderr)) == 2
    assert [s for s, _ in scalars(tmp_path / "tb")["bytes/uplink"]] == [1, 2]


@pytest.mark.parametrize("path", ["config/config.yaml", "config/demo.yaml", "config/compare.yaml", "config/tiny.yaml",
                                  ".test/config/config.yaml"])
def test_shipped_configs_show_the_round_lines(path):
    from fedmic import grid

    config = yaml.safe_load((REPO / path).read_text())
    keys = grid.all_runs(config)
    # a tuned arm's run takes its selection's lr and hyperparameters: its own settings stand in
    own = {"lr": None, "hp": {}}
    assert keys and all(grid.run_config(config, k, own if grid.tuned_from(config, k.arm) else None).progress
                        for k in keys)
