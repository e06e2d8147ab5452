"""The experiment grid read from a config: which runs a table needs and how each is configured."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from fedmic import grid, paper

REPO = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())


def config(**t3):
    cfg = copy.deepcopy(TINY)
    cfg["train"].update(rounds=30, eval_every=2, join_ratio=1.0, clients=10)
    cfg["tables"]["t3"] = {"lams": [0.1], "join_ratios": [0.1, 0.2, 0.5, 1.0], "arms": ["fedmic"], **t3}
    return cfg


def test_t3_runs_take_their_clients_and_join_ratios_from_the_config():
    keys = paper.runs(config(clients=20), "t3")
    assert sorted({k.join_ratio for k in keys}) == [0.1, 0.2, 0.5, 1.0]
    assert {k.clients for k in keys} == {20} and {k.arm for k in keys} == {"fedmic"} and {k.lam for k in keys} == {0.1}
    # without its own count T3 uses the main runs' clients
    assert {k.clients for k in paper.runs(config(), "t3")} == {10}


def test_t3_rounds_are_scaled_so_a_client_trains_as_often_as_in_the_main_runs():
    cfg = config(clients=20)
    by_jr = {k.join_ratio: grid.run_config(cfg, k) for k in paper.runs(cfg, "t3")}
    assert {j: (rc.rounds, rc.eval_every) for j, rc in by_jr.items()} == {
        0.1: (300, 20), 0.2: (150, 10), 0.5: (60, 4), 1.0: (30, 2)}
    for j, rc in by_jr.items():  # expected rounds a client trains, and evaluations: as at full participation
        assert rc.rounds * j == 30 and rc.rounds // rc.eval_every == 15
    # the main runs are not touched, and scale_rounds: false keeps the configured schedule
    main = grid.run_config(cfg, paper.runs(cfg, "t2")[0])
    assert (main.rounds, main.eval_every) == (30, 2)
    plain = config(clients=20, scale_rounds=False)
    assert {grid.run_config(plain, k).rounds for k in paper.runs(plain, "t3")} == {30}


def test_t3_scales_against_the_main_runs_join_ratio():
    cfg = config()
    cfg["train"].update(join_ratio=0.5, rounds=10, eval_every=1)
    got = {k.join_ratio: grid.run_config(cfg, k).rounds for k in paper.runs(cfg, "t3")}
    assert got == {0.1: 50, 0.2: 25, 0.5: 10, 1.0: 5}


def test_the_schema_knows_t3s_keys():
    from fedmic import schema
    s = schema.load_schema(schema.SCHEMA_FILE)
    assert schema.config_problem(config(clients=20, scale_rounds=False), s) is None
    assert "scale_round" in schema.config_problem(config(scale_round=False), s)
