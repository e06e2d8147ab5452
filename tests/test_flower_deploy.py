"""fedmic on Flower's deployment runtime (no simulation engine, no Ray): a SuperLink and three
SuperNodes as separate processes on 127.0.0.1, TLS with certificates made here, SuperNode
authentication on, a byte-counting proxy in front of the SuperLink. FedAvg and FedMIC give the
engine's run JSON bit for bit (every method does through tests/test_flower_grid.py); a SuperNode
with an unregistered key and one without TLS are refused; sites that crash at each point of a
round (before training, after storing their state, after replying) and come back, under the same
node id or a new one, continue with their teachers and the run ends exactly as an uninterrupted
one."""
from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed (pip install -e '.[flower]')")

from flower_deploy import Deployment, kill_tree  # noqa: E402
from flower_grid import K, make_partition_file, run_config, same_run  # noqa: E402

from fedmic.engine import Simulation  # noqa: E402
from conftest import DATA  # noqa: E402

# where each site stops dead in the crash test (fedmic/flower/client_app.py: crash_here), and
# which sites come back under a new node id (the others under their own)
CRASHES = {0: "before-train@2", 1: "after-store@2", 2: "after-reply@1"}
NEW_NODE_ID = {0, 2}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def part(tmp_path_factory) -> Path:
    return make_partition_file(DATA, tmp_path_factory.mktemp("part"))


@pytest.fixture(scope="module")
def dep(tmp_path_factory, part):
    d = Deployment(tmp_path_factory.mktemp("deploy"), DATA, part, K, crashes=CRASHES)
    try:
        yield d.start()
    finally:
        d.stop()  # asserts that no process and no port is left


def start_run(dep: Deployment, cfg, part: Path, out: Path, **settings) -> subprocess.Popen:
    """The coordinator's `flwr run` of `cfg` (fedmic's run config as a file beside `out`)."""
    spec = out.with_suffix(".config.json")
    spec.write_text(json.dumps(cfg.to_dict()))
    rc = {"config": spec, "partition": part, "out": out, "data-root": DATA, "wire-counts": dep.counts, **settings}
    return dep.cli(dep.run_cmd(rc), out.with_suffix(".log"))


def log_of(out: Path, tail: int = 4000) -> str:
    return out.with_suffix(".log").read_text(errors="replace")[-tail:]


def test_the_deployment_runtime_needs_no_ray():
    """Ray is what Flower's simulation runtime needs; these tests run the deployment runtime in an
    environment without it."""
    assert importlib.util.find_spec("ray") is None, "ray is installed here: the tests below cannot show that " \
        "the deployment runtime runs without it"


@pytest.mark.parametrize("method", ["fedavg", "fedmic"])
def test_deployment_equals_the_engine(dep, part, tmp_path, method):
    cfg = run_config(method)
    out = tmp_path / "flower.json"
    start_run(dep, cfg, part, out).wait(600)
    assert out.exists(), f"the ServerApp wrote no run JSON:\n{log_of(out)}"
    Simulation(cfg, part, DATA).run(tmp_path / "engine.json")
    transport = same_run(tmp_path / "engine.json", out)
    history = json.loads(out.read_text())["history"]
    timing = json.loads(out.with_suffix(".timing.json").read_text())["rounds"]
    assert transport["runtime"] == "flower-deployment" and len(transport["rounds"]) == len(history)
    for h, t, s in zip(history, transport["rounds"], timing):
        payload = sum(h["uplink_bytes"]) + sum(h["downlink_bytes"])
        wire = t["wire_bytes"]["up"] + t["wire_bytes"]["down"]
        # what the proxy saw holds the messages, which hold the payloads
        assert wire > t["message_bytes"] > payload > 0
        print(f"{method} round {h['round']}: {s['train_s'] + s['eval_s']:.1f} s, payload {payload} B, "
              f"messages {t['message_bytes']} B, wire {wire} B (+{100 * (wire / payload - 1):.1f} % over payload)")


def start_and_wait(dep: Deployment, name: str, cmd: list[str], timeout: float = 60) -> subprocess.Popen:
    proc = dep.spawn(name, cmd, dep.root / f"home-{name}")
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        pytest.fail(f"{name} was not refused within {timeout} s:\n{dep.log(name)[-3000:]}")
    return proc


def test_a_supernode_with_an_unregistered_key_is_refused(dep):
    from fedmic.flower.credentials import make_node_key

    key, _ = make_node_key(dep.root / "keys", "intruder")
    proc = start_and_wait(dep, "intruder", dep.node_cmd(0, key=key, port=dep.spare_port()) + ["--max-retries", "1"])
    assert proc.returncode != 0 and not dep.connected("intruder")
    assert "Failed to activate SuperNode" in dep.log("intruder")


def test_a_supernode_without_tls_is_refused(dep):
    proc = start_and_wait(dep, "plaintext", dep.node_cmd(1, insecure=True, port=dep.spare_port()) +
                          ["--max-retries", "1"])
    assert proc.returncode != 0 and not dep.connected("plaintext")


def node_ids(dep: Deployment, i: int) -> list[int]:
    """The node ids site i's SuperNodes got from the SuperLink, in order."""
    return [int(n) for n in re.findall(r"SuperNode ID: (\d+)", dep.log(f"site{i}"))]


def test_sites_crashed_at_each_point_come_back_and_change_nothing(dep, part, tmp_path):
    """Each site stops dead at its own point (CRASHES: its ClientApp freezes exactly there, then
    the test SIGKILLs the site's SuperNode, SuperExec and ClientApp: a crash, no goodbye to the
    SuperLink) and is started again: site 1 under the same node id once the SuperLink lets it in
    (the crash of the CI failure: state of round 2 stored, reply lost, and no Flower error when
    the node is back), sites 0 and 2 under a new node id (a new registered key) at once. The
    per-message deadline finds the lost messages, the sites answer them from their stored states,
    and the run writes the uninterrupted run's JSON. Every wait is bounded."""
    from fedmic.flower.credentials import make_node_key

    cfg = run_config("fedmic", join_ratio=1.0)
    out = tmp_path / "flower.json"
    new_key = {}
    for i in NEW_NODE_ID:
        key, public = make_node_key(tmp_path, f"site{i}-again")
        dep.flwr("supernode", "register", str(public), "test")
        new_key[i] = key
    first_ids = {i: node_ids(dep, i) for i in CRASHES}
    t0 = time.monotonic()
    try:
        for i in CRASHES:
            dep.arm(i)
        runner = start_run(dep, cfg, part, out, **{"message-timeout": 45, "site-timeout": 600, "timeout": 900})
        deadline = time.monotonic() + 480
        frozen, admitted, retry_at = set(), set(), {}  # sites killed; back in; when to start one again
        while len(admitted) < len(CRASHES):
            assert runner.poll() is None, f"the run ended before every site came back:\n{log_of(out)}"
            assert time.monotonic() < deadline, (f"after 480 s, sites {sorted(set(CRASHES) - frozen)} never reached "
                                                 f"their crash points, sites {sorted(frozen - admitted)} never got back "
                                                 f"in:\n{log_of(out)}")
            for i in sorted(set(CRASHES) - frozen):
                if dep.crash_marker(i).exists():
                    assert len(kill_tree(dep.procs[f"site{i}"], signal.SIGKILL)) >= 3  # SuperNode, SuperExec, ClientApp
                    frozen.add(i)
                    retry_at[i] = time.monotonic()
            for i in sorted(frozen - admitted):
                proc = dep.procs[f"site{i}"]
                if len(node_ids(dep, i)) > len(first_ids[i]):
                    admitted.add(i)
                elif proc.poll() is not None and time.monotonic() >= retry_at[i]:
                    # the SuperLink refuses the same key until the crashed node's heartbeat has
                    # expired (Flower: 2 x 30 s): a site restarts its SuperNode until it is let in
                    dep.start_node(i, key=new_key.get(i))
                    retry_at[i] = time.monotonic() + 3
            time.sleep(0.05)
        runner.wait(max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run did not end within 480 s:\n{log_of(out)}")
    finally:
        for i in CRASHES:
            dep.crash_marker(i).touch()  # disarmed, whatever happened
    assert out.exists(), log_of(out)
    for i in CRASHES:
        again = node_ids(dep, i)[-1]
        assert (again != first_ids[i][-1]) == (i in NEW_NODE_ID), (i, first_ids[i], node_ids(dep, i))
    Simulation(cfg, part, DATA).run(tmp_path / "engine.json")
    same_run(tmp_path / "engine.json", out)
    resent = re.findall(r"(\w+) round (\d+), client (\d+): no reply within \d+ s \(message-timeout\); sending again",
                        log_of(out, 100_000))
    timing = json.loads(out.with_suffix(".timing.json").read_text())["rounds"]
    print(f"crashes {CRASHES}, back under a new node id: {sorted(NEW_NODE_ID)}; messages sent again after "
          f"their deadline: {resent}; seconds per round: {[round(r['train_s'] + r['eval_s'], 1) for r in timing]}; "
          f"test {time.monotonic() - t0:.0f} s")
