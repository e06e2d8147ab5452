"""A Flower deployment on 127.0.0.1 for the tests: one SuperLink with TLS and SuperNode
authentication, a byte-counting proxy in front of it, and SuperNodes as separate processes, each
with its own data folder, state folder, key and FLWR_HOME. Every process is started here and
stopped by pid (with the processes it started), and every port is checked free afterwards."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from flower_grid import make_site, with_this_fedmic

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (from /proc, before anything is killed: orphans are
    re-parented and could no longer be found)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def kill_tree(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> list[int]:
    pids = descendants(proc.pid)
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    proc.wait(30)
    return pids


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Deployment:
    """`crashes`: site -> where its ClientApp stops dead (FEDMIC_FLOWER_CRASH_AT, "after-store@2"),
    once armed (`arm`): every SuperNode of such a site starts with it, its marker file present."""

    def __init__(self, root: Path, data: Path, partition: Path, nodes: int, crashes: dict[int, str] | None = None):
        from fedmic.flower.cli import write_app
        from fedmic.flower.credentials import make_node_key, make_tls

        self.root, self.data, self.partition = root, data, partition
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.certs = make_tls(root / "certs")
        self.keys = [make_node_key(root / "keys", f"site{i}") for i in range(nodes)]
        self.app = write_app(root / "fedmic-flower")
        self.link_port, self.proxy_port = free_port(), free_port()
        self.counts = root / "wire.json"
        self.procs: dict[str, subprocess.Popen] = {}
        self.node_ports = [free_port() for _ in range(nodes)]
        self.crashes = crashes or {}
        for i in self.crashes:
            self.crash_marker(i).touch()
        self.cli_home = root / "home-cli"
        self.cli_home.mkdir()
        # the CLI's connection to the SuperLink: its Control API, with TLS
        (self.cli_home / "config.toml").write_text(
            f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{self.link_port}"\n'
            f'root-certificates = "{self.certs["ca"]}"\n')

    def env(self, home: Path) -> dict:
        home.mkdir(parents=True, exist_ok=True)
        # Flower starts its helpers (flower-superexec, flwr-clientapp, ...) by name: the venv first
        return with_this_fedmic({**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                                 "FLWR_HOME": str(home), "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
                                 "PYTHONUNBUFFERED": "1"})

    def spawn(self, name: str, cmd: list[str], home: Path, env: dict | None = None) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("a")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**self.env(home), **(env or {})},
                                cwd=self.root)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def wait_port(self, port: int, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not port_open(port):
            proc = self.procs[name]
            assert proc.poll() is None, f"{name} exited ({proc.returncode}):\n{self.log(name)[-3000:]}"
            assert time.monotonic() < deadline, f"{name} not listening on {port}:\n{self.log(name)[-3000:]}"
            time.sleep(0.1)

    def start(self) -> "Deployment":
        c = self.certs
        cmd = [str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(c["ca"]), "--ssl-certfile", str(c["cert"]),
               "--ssl-keyfile", str(c["key"]), "--enable-supernode-auth", "--disable-runtime-dependency-installation",
               "--host", "127.0.0.1", "--port", str(self.link_port)]
        self.spawn("superlink", cmd, self.root / "home-link")
        self.spawn("proxy", [str(BIN / "fedmic"), "flower", "proxy", "--listen", f"127.0.0.1:{self.proxy_port}",
                             "--target", f"127.0.0.1:{self.link_port}", "--counts", str(self.counts)],
                   self.root / "home-proxy")
        self.wait_port(self.link_port, "superlink")
        self.wait_port(self.proxy_port, "proxy")
        for _, public in self.keys:
            self.flwr("supernode", "register", str(public), "test")
        for i in range(len(self.keys)):
            self.start_node(i)
        return self

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        res = subprocess.run([str(BIN / "flwr"), *args], capture_output=True, text=True, timeout=timeout,
                             env=self.env(self.cli_home), cwd=self.root)
        assert res.returncode == 0, f"flwr {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        return res

    def cli(self, cmd: list[str], log: Path) -> subprocess.Popen:
        """A Flower CLI command in the background (the coordinator's shell), stopped with the rest."""
        proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=self.env(self.cli_home),
                                cwd=self.root)
        self.procs[f"cli-{proc.pid}"] = proc
        return proc

    def node_cmd(self, i: int, key: Path | None = None, insecure: bool = False, port: int | None = None) -> list[str]:
        nc = make_site(self.root, i, self.data, self.partition)
        cmd = [str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{self.proxy_port}",
               "--node-config", " ".join(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in nc.items()),
               "--port", str(port or self.node_ports[i])]
        if insecure:
            return cmd + ["--insecure"]
        return cmd + ["--root-certificates", str(self.certs["ca"]), "--auth-supernode-private-key",
                      str(key or self.keys[i][0])]

    def spare_port(self) -> int:
        self.node_ports.append(free_port())
        return self.node_ports[-1]

    def start_node(self, i: int, key: Path | None = None) -> subprocess.Popen:
        """Site i's SuperNode (its own key, or `key`)."""
        env = {"FEDMIC_FLOWER_CRASH_AT": self.crashes[i], "FEDMIC_FLOWER_CRASH_MARKER": str(self.crash_marker(i))} \
            if i in self.crashes else None
        return self.spawn(f"site{i}", self.node_cmd(i, key=key), self.root / f"home-site{i}", env)

    def crash_marker(self, i: int) -> Path:
        return self.root / f"crashed-site{i}"

    def arm(self, i: int) -> None:
        """Site i stops dead at its crash point when it gets there (once: that writes the marker)."""
        self.crash_marker(i).unlink()

    def connected(self, name: str) -> bool:
        return "SuperNode ID:" in self.log(name)

    def run_cmd(self, run_config: dict) -> list[str]:
        """`flwr run --stream` of fedmic's app: it returns when the ServerApp has finished."""
        rc = " ".join(f'{k}="{v}"' if isinstance(v, (str, Path)) else f"{k}={v}" for k, v in run_config.items())
        return [str(BIN / "flwr"), "run", str(self.app), "test", "--stream", "--run-config", rc]

    def stop(self) -> None:
        pids: list[int] = []
        for proc in self.procs.values():
            if proc.poll() is None:
                pids += kill_tree(proc, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p in pids if alive(p)]
        ports = [p for p in [self.link_port, self.proxy_port, *self.node_ports] if port_open(p)]
        assert not left and not ports, f"left running: pids {left}, ports {ports}"
