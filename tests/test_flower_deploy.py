"""fedmic on Flower's deployment runtime (no simulation engine, no Ray): a SuperLink and three
SuperNodes as separate processes on 127.0.0.1, TLS with certificates made here, SuperNode
authentication on, a byte-counting proxy in front of the SuperLink. FedAvg and FedMIC give the
engine's run JSON bit for bit (every method does through tests/test_flower_grid.py); a SuperNode
with an unregistered key and one without TLS are refused; a SuperNode killed mid-run and started
again continues with its teacher and the run ends exactly as an uninterrupted one."""
from __future__ import annotations

import importlib.util
import json
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

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def part(tmp_path_factory) -> Path:
    return make_partition_file(DATA, tmp_path_factory.mktemp("part"))


@pytest.fixture(scope="module")
def dep(tmp_path_factory, part):
    d = Deployment(tmp_path_factory.mktemp("deploy"), DATA, part, K)
    try:
        yield d.start()
    finally:
        d.stop()  # asserts that no process and no port is left


def start_run(dep: Deployment, cfg, part: Path, out: Path) -> subprocess.Popen:
    """The coordinator's `flwr run` of `cfg` (fedmic's run config as a file beside `out`)."""
    spec = out.with_suffix(".config.json")
    spec.write_text(json.dumps(cfg.to_dict()))
    rc = {"config": spec, "partition": part, "out": out, "data-root": DATA, "wire-counts": dep.counts}
    return dep.cli(dep.run_cmd(rc), out.with_suffix(".log"))


def log_of(out: Path) -> str:
    return out.with_suffix(".log").read_text(errors="replace")[-4000:]


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


def test_a_supernode_killed_mid_run_resumes_with_its_teacher(dep, part, tmp_path):
    """SIGKILL (a crash: no goodbye to the SuperLink) of site 1, its SuperExec and its ClientApp as
    soon as it has stored its state of round 2, then a restart of the same command. The run waits
    for it, sends again what the crash lost, and writes the uninterrupted run's JSON: the restarted
    site went on from the teacher the killed one had stored after round 1 (or 2). A site starting
    again from a fresh teacher would change every later accuracy, and a site whose stored rounds
    are gone refuses to go on (tests/test_flower_grid.py)."""
    cfg = run_config("fedmic", rounds=3, join_ratio=1.0)
    out = tmp_path / "flower.json"
    runner = start_run(dep, cfg, part, out)  # stopped with the deployment if the test fails
    try:
        state = Path(dep.root / "site1" / "state")
        deadline = time.monotonic() + 300
        while not list(state.glob(f"{cfg.arm}-{cfg.fingerprint()}-*/client1/round00002.pt")):
            assert runner.poll() is None, log_of(out)
            assert time.monotonic() < deadline, "site 1 stored no state of round 2 within 300 s"
            time.sleep(0.05)
        killed = kill_tree(dep.procs["site1"], signal.SIGKILL)
        assert len(killed) >= 2  # the SuperNode and the SuperExec it started (and a ClientApp, if one ran)
        # The SuperLink refuses the same key until the crashed node's heartbeat expires (Flower:
        # 2 x 30 s); a site restarts its SuperNode until it is let in (docs/deploy.md).
        deadline = time.monotonic() + 180
        while True:
            proc = dep.start_node(1)
            while proc.poll() is None and dep.log("site1").count("SuperNode ID:") < 2:
                time.sleep(0.2)
            if proc.poll() is None:
                break
            assert time.monotonic() < deadline, dep.log("site1")[-3000:]
            time.sleep(3)
        runner.wait(600)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run did not end within 600 s after the restart:\n{log_of(out)}")
    assert out.exists(), log_of(out)
    assert dep.log("site1").count("SuperNode ID:") == 2  # the first start, and the restart that got in
    Simulation(cfg, part, DATA).run(tmp_path / "engine.json")
    same_run(tmp_path / "engine.json", out)
    timing = json.loads(out.with_suffix(".timing.json").read_text())["rounds"]
    print(f"killed site 1 after its round-2 state was stored; messages sent again: "
          f"{log_of(out).count('sending again')}; seconds per round: "
          f"{[round(r['train_s'] + r['eval_s'], 1) for r in timing]}")
