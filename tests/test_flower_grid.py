"""Every method through fedmic's Flower ServerApp and ClientApp, across process boundaries, gives
the engine's run bit for bit; lost messages, silent sites, divergence, a resumed server and a
site that lost its state are handled as the deployment must handle them.

This is the cheaper path of tests/flower_grid.py (sites as worker processes, Flower-serialised
messages, one fresh process per message, state on the sites' disks). FedAvg and FedMIC also run
through Flower's real deployment runtime in tests/test_flower_deploy.py."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed (pip install -e '.[flower]')")

from flower_grid import NODE0, K, ProcessGrid, make_partition_file, make_site, run_config, same_run  # noqa: E402

from fedmic.methods import METHODS  # noqa: E402
from fedmic.engine import Simulation  # noqa: E402
from fedmic.flower.server_app import Options, SiteFailure, flower_run  # noqa: E402
from fedmic.simulation.loop import DivergenceError, Run, dropped_clients, run_rounds, sample_clients  # noqa: E402
from conftest import DATA  # noqa: E402


@pytest.fixture(scope="module")
def part(tmp_path_factory) -> Path:
    return make_partition_file(DATA, tmp_path_factory.mktemp("part"))


@pytest.fixture(scope="module")
def sites(tmp_path_factory, part) -> list[dict]:
    root = tmp_path_factory.mktemp("sites")
    return [make_site(root, i, DATA, part) for i in range(K)]


@pytest.fixture(scope="module")
def site_workers(sites, tmp_path_factory):
    g = ProcessGrid(sites, tmp_path_factory.mktemp("logs"))
    yield g
    g.close()


@pytest.fixture
def grid(site_workers, request):
    """The sites, losing the messages a test names in its `grid` parameter (see ProcessGrid)."""
    site_workers.faults = set(getattr(request, "param", ()))
    yield site_workers
    site_workers.faults = set()


def flower(cfg, part, out: Path, grid, **opts) -> Run:
    """A run of fedmic's ServerApp logic over `grid` (polling fast: the sites answer in milliseconds)."""
    run = flower_run(cfg, Options(config="", partition=str(part), out=str(out), data_root=str(DATA), poll=0.01,
                                  retry_wait=0.05, **opts), grid)
    run_rounds(run, out)
    return run


def engine(cfg, part, out: Path) -> Path:
    Simulation(cfg, part, DATA).run(out)
    return out


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_equals_the_engine(method, part, grid, tmp_path):
    cfg, out = run_config(method), tmp_path / "f.json"
    run = flower(cfg, part, out, grid)
    transport = same_run(engine(cfg, part, tmp_path / "engine.json"), out)
    history = json.loads(out.read_text())["history"]
    assert [t["round"] for t in transport["rounds"]] == [1, 2]
    for h, t in zip(history, transport["rounds"]):
        # the messages carried the payloads, and more (settings, evaluation predictions)
        assert t["message_bytes"] > sum(h["uplink_bytes"]) + sum(h["downlink_bytes"])
        assert t["train"]["seconds"] > 0
    # each client that trained kept its state on its own site's disk
    trained = {c for h in history for c in h["sampled"]}
    for c in trained:
        folder = Path(grid.node_configs[c]["state-dir"]) / run.clients.known[c]["run"] / f"client{c}"
        last = max(h["round"] for h in history if c in h["sampled"])
        assert sorted(p.name for p in folder.iterdir())[-1] == f"round{last:05d}.pt"


def lost_client(cfg) -> int:
    """A client that trains in round 1 and whose upload would be aggregated."""
    sampled = sample_clients(cfg, 1)
    return min(set(sampled) - dropped_clients(cfg, 1, sampled))


@pytest.mark.parametrize("grid", [{("unavailable", "train", 1, 0), ("unavailable", "train", 1, 2),
                                   ("unavailable", "evaluate", 2, 1)}], indirect=True)
def test_messages_lost_to_an_unreachable_node_are_sent_again(part, grid, tmp_path):
    cfg = run_config("fedmic")
    flower(cfg, part, tmp_path / "f.json", grid)
    same_run(engine(cfg, part, tmp_path / "engine.json"), tmp_path / "f.json")
    assert not grid.faults  # every fault was met (and so every message sent twice)


def test_a_site_whose_reply_never_comes_is_timed_out(part, grid, tmp_path):
    cfg = run_config("fedavg", drop_rate=0.0)
    c = lost_client(cfg)
    grid.faults = {("lost", "train", 1, c)}
    flower(cfg, part, tmp_path / "f.json", grid, timeout=3)
    h1, h2 = json.loads((tmp_path / "f.json").read_text())["history"]
    i = h1["sampled"].index(c)
    assert h1["timed_out"] == [c] and h1["uplink_bytes"][i] == 0 and h1["downlink_bytes"][i] > 0
    assert h1["aggregated"] == len(h1["sampled"]) - 1 and "timed_out" not in h2
    ref = json.loads(engine(cfg, part, tmp_path / "engine.json").read_text())["history"][0]
    assert h1["aggregated"] == ref["aggregated"] - 1  # the engine aggregated the lost upload


@pytest.mark.parametrize("grid", [{("lost", "evaluate", 1, 2)}], indirect=True)
def test_evaluation_needs_every_site(part, grid, tmp_path):
    with pytest.raises(SiteFailure, match=r"evaluation of round 1: no predictions from clients \[2\]"):
        flower(run_config("ditto"), part, tmp_path / "f.json", grid, timeout=3)
    assert not (tmp_path / "f.json").exists()


@pytest.mark.parametrize("policy", ["skip", "error"])
def test_divergence_is_handled_as_in_the_engine(part, grid, tmp_path, policy):
    cfg = run_config("fedavg", lr=1e6, on_nonfinite=policy)
    if policy == "skip":
        flower(cfg, part, tmp_path / "f.json", grid)
        same_run(engine(cfg, part, tmp_path / "engine.json"), tmp_path / "f.json")
        assert json.loads((tmp_path / "f.json").read_text())["summary"]["skipped_total"] > 0
        return
    with pytest.raises(DivergenceError) as ref:
        engine(cfg, part, tmp_path / "engine.json")
    with pytest.raises(DivergenceError) as got:
        flower(cfg, part, tmp_path / "f.json", grid)
    assert str(got.value) == str(ref.value)


def test_a_resumed_server_continues_with_the_sites_states(part, grid, tmp_path):
    cfg = run_config("fedmic", keep_checkpoint=True)
    out = tmp_path / "f.json"
    flower(cfg, part, out, grid)
    first = json.loads(out.read_text())
    again = flower(cfg, part, out, grid)  # resumes from the round-1 checkpoint it kept
    assert again.start_round == 2
    resumed = json.loads(out.read_text())
    # all equal but what this process measured of the transport: round 2 only
    assert [t["round"] for t in resumed.pop("transport")["rounds"]] == [2]
    assert first.pop("transport") and resumed == first

    # a site whose state folder is gone cannot continue: the server stops instead of letting it
    # restart its teacher from scratch
    run = again.clients.known[0]["run"]
    victim = min(first["history"][0]["sampled"])
    shutil.rmtree(Path(grid.node_configs[victim]["state-dir"]) / run)
    with pytest.raises(SiteFailure, match=rf"client {victim} sent its update of round 1, but its state folder "
                                          rf".*{run}/client{victim} now holds no state: it lost rounds"):
        flower(cfg, part, out, grid)


# --- sites that crash ---------------------------------------------------------------------
# Every client trains every round and no checkpoint is kept: a site asked for a round it already
# stored must compute it again from the state before it (kept for that), not from a fresh one.
CRASH_CFG = dict(method="fedmic", join_ratio=1.0, checkpoint_every=0)


@pytest.fixture(scope="module")
def crash_engine(part, tmp_path_factory) -> Path:
    return engine(run_config(**CRASH_CFG), part, tmp_path_factory.mktemp("crash") / "engine.json")


@pytest.fixture
def crashing_grid(part, tmp_path, request):
    """Fresh sites (their own states) whose site 1 freezes at the point given as the parameter
    (FEDMIC_FLOWER_CRASH_AT); every worker is killed afterwards."""
    marker = tmp_path / "crashed"
    crash = {"FEDMIC_FLOWER_CRASH_AT": request.param, "FEDMIC_FLOWER_CRASH_MARKER": str(marker)}
    g = ProcessGrid([make_site(tmp_path, i, DATA, part) for i in range(K)], tmp_path / "logs", env={1: crash})
    g.marker = marker
    try:
        yield g
    finally:
        g.kill()


def restart_when_frozen(grid: ProcessGrid, new_id: bool, within: float = 120) -> dict:
    """In the background: once site 1 has frozen at its crash point, kill it and start it again."""
    done = {}

    def watch():
        deadline = time.monotonic() + within
        while not grid.marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if grid.marker.exists():
            done["node"] = grid.restart(1, new_id)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    done["thread"] = t
    return done


@pytest.mark.parametrize("crashing_grid, new_id", [("before-train@1", True), ("after-store@2", False),
                                                   ("after-reply@1", True)],
                         indirect=["crashing_grid"])
def test_a_site_crashed_at_any_point_and_restarted_changes_nothing(crashing_grid, new_id, part, crash_engine,
                                                                   tmp_path, caplog):
    """Site 1 stops dead at a point of a round (exactly there: its ClientApp freezes, then the
    site is killed) and comes back under the same node id (no error ever says its message is
    lost: the per-message deadline finds it) or a new one. The run ends as an uninterrupted one."""
    watcher = restart_when_frozen(crashing_grid, new_id)
    out = tmp_path / "f.json"
    flower(run_config(**CRASH_CFG), part, out, crashing_grid, timeout=60, message_timeout=3, site_timeout=60)
    watcher["thread"].join(5)
    assert crashing_grid.marker.exists() and "node" in watcher, "site 1 never reached its crash point"
    assert (watcher["node"] != NODE0 + 1) == new_id
    assert re.search(r"client 1: no reply within \d+ s \(message-timeout\); sending again", caplog.text)
    same_run(crash_engine, out)


@pytest.mark.parametrize("crashing_grid", ["after-store@1"], indirect=True)
def test_a_site_that_never_returns_stops_the_run(part, crashing_grid, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(SiteFailure, match=r"partition-id 1 is lost since its train message of round 1 \(\d+ s ago; "
                                          r"now in train round 1\), longer than site-timeout=4 s"):
        flower(run_config(**CRASH_CFG), part, tmp_path / "f.json", crashing_grid, timeout=60, message_timeout=2,
               site_timeout=4)
    assert crashing_grid.marker.exists() and not (tmp_path / "f.json").exists()
    print(f"a site lost in round 1 stopped the run after {time.monotonic() - t0:.1f} s")


def test_two_live_sites_with_one_partition_id_stop_the_run(part, tmp_path):
    """A second node claiming a partition-id is taken for the site restarted under a new node id
    only once the first is lost; while both answer, the run stops."""
    sites = [make_site(tmp_path, i, DATA, part) for i in range(K)]
    g = ProcessGrid(sites + [sites[1]], tmp_path / "logs")
    try:
        with pytest.raises(SiteFailure, match=r"SuperNodes \d+ and \d+ both say partition-id 1 and both answer; "
                                              r"give each site its own partition-id"):
            flower(run_config("fedavg", join_ratio=1.0), part, tmp_path / "f.json", g, timeout=60)
    finally:
        g.kill()


def test_the_waits_are_read_from_the_run_config():
    rc = {"config": "c.yaml", "partition": "p.json", "out": "o.json"}
    opts = Options.from_run_config({**rc, "message-timeout": 30, "site-timeout": 90.5})
    assert (opts.message_timeout, opts.site_timeout, opts.timeout) == (30.0, 90.5, Options.timeout)
    for bad in ("soon", 0, -5):
        with pytest.raises(ValueError, match=r"\['site-timeout'\] must be a number of seconds > 0"):
            Options.from_run_config({**rc, "site-timeout": bad})


def test_the_core_package_runs_without_flower(tmp_path):
    """fedmic (engine, CLI, `fedmic flower app`) imports no Flower module: it works without the extra."""
    code = ("import sys, importlib.abc\n"
            "class NoFlower(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] == 'flwr': raise ImportError('flwr is not installed')\n"
            "sys.meta_path.insert(0, NoFlower())\n"
            "import fedmic.engine, fedmic.cli, fedmic.flower.site\n"
            f"assert fedmic.cli.main(['flower', 'app', '--out', {str(tmp_path)!r}]) == 0\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'flwr']\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'serverapp = "fedmic.flower.server_app:app"' in (tmp_path / "pyproject.toml").read_text()


def test_the_flower_apps_import_no_command_line_code():
    """The ServerApp and ClientApp run in Flower's processes: they import the run's code
    (fedmic.simulation, fedmic.config), never a command line's (fedmic.cli, fedmic.flower.cli)."""
    code = ("import sys, fedmic.flower.server_app, fedmic.flower.client_app\n"
            "print(sorted(m for m in sys.modules if m.startswith('fedmic') and m.split('.')[-1] == 'cli'))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"
