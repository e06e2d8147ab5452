"""The cheaper path to Flower for the tests: fedmic's ServerApp logic (FlowerClients) drives a stand-in
for Flower's Grid whose sites are separate worker processes running fedmic's ClientApp. Messages
cross the process boundary as Flower serialises them (every object deflated, then inflated on
the other side), each message is handled in a freshly forked process (as Flower starts one per
message), and each site keeps its state on its own disk. What it leaves out is Flower's runtime:
SuperLink, SuperNodes, TLS, authentication, polling (tests/test_flower_deploy.py covers those).

`faults` makes the grid lose messages the way a deployment can: ("unavailable", kind, round, cid)
answers that message once with Flower's NODE_UNAVAILABLE error (the site never saw it); ("lost",
kind, round, cid) lets the site do the work but loses every reply to it. `restart` kills a site's
worker (with the message it held) and starts it again, under the same node id or a new one: the
lost message gets no error, as on a SuperLink that a crashed node rejoined in time."""
from __future__ import annotations

import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from pathlib import Path

from flwr.app import Error, Message
from flwr.common.constant import ErrorCode
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.task_identity import TaskIdentity

WORKER = Path(__file__).with_name("flower_site_worker.py")
REPO = Path(__file__).resolve().parents[1]


def with_this_fedmic(env: dict) -> dict:
    """`env` for a process that must import this checkout's fedmic (the site compares a hash of
    its code with the server's), whichever fedmic the environment has installed."""
    return {**env, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])}
NODE0 = 7001  # Flower-like node ids, unrelated to the partition ids


def pack(msg: Message) -> tuple[str, dict[str, bytes]]:
    return msg.object_id, {oid: obj.deflate() for oid, obj in get_all_nested_objects(msg).items()}


def unpack(msg_id: str, contents: dict[str, bytes]) -> Message:
    msg = inflate_object_from_contents(msg_id, contents)
    msg.metadata.__dict__["_message_id"] = msg_id
    return msg


def send_frame(stream, obj) -> None:
    data = pickle.dumps(obj)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def read_frame(stream):
    """The next frame, or None at the end of the stream, also where a killed site left its last
    frame cut short (the crash tests kill sites mid-reply: that reply never arrived)."""
    head = stream.read(8)
    if len(head) < 8:
        return None
    size = struct.unpack("<Q", head)[0]
    body = stream.read(size)
    return pickle.loads(body) if len(body) == size else None


class ProcessGrid:
    def __init__(self, node_configs: list[dict], logs: Path, faults: set | None = None, env: dict | None = None):
        self.node_configs, self.faults, self.logs = node_configs, set(faults or ()), logs
        self.env = env or {}  # site -> extra environment variables of its worker
        # this process plays the ServerApp's task (Flower sets these in the process it starts)
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        self.replies: dict[str, Message] = {}
        self.cid: dict[str, int] = {}  # message id -> the client it went to
        self.lock = threading.Lock()
        self.workers: dict[int, subprocess.Popen] = {}
        self.outbox: dict[int, queue.Queue] = {}  # node id -> frames its writer thread sends
        self.site: dict[int, int] = {}  # node id -> site
        logs.mkdir(parents=True, exist_ok=True)
        for i in range(len(node_configs)):
            self._start(i, NODE0 + i)

    def _start(self, i: int, node_id: int) -> None:
        proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=(self.logs / f"worker{i}.log").open("a"), env=with_this_fedmic({**os.environ, **self.env.get(i, {})}))
        outbox = queue.Queue()
        outbox.put((node_id, self.node_configs[i]))
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()
        threading.Thread(target=self._write, args=(proc, outbox), daemon=True).start()
        with self.lock:
            self.workers[node_id], self.outbox[node_id], self.site[node_id] = proc, outbox, i

    @staticmethod
    def _write(proc: subprocess.Popen, outbox: queue.Queue) -> None:
        # a thread per worker: a frozen site stops reading, and must not stop the server
        while (frame := outbox.get()) is not None:
            try:
                send_frame(proc.stdin, frame)
            except OSError:  # killed: what it was sent is lost
                return
        proc.stdin.close()

    def restart(self, i: int, new_id: bool) -> int:
        """Kill site i's worker and the message handler it runs, start it again; its node id."""
        from flower_deploy import kill_tree

        with self.lock:
            old = next(n for n, s in self.site.items() if s == i and n in self.workers)
            proc = self.workers.pop(old)
            self.outbox.pop(old).put(None)
        kill_tree(proc)
        node_id = max(self.site) + 1 if new_id else old
        self._start(i, node_id)
        return node_id

    def _read(self, proc: subprocess.Popen) -> None:
        while (frame := read_frame(proc.stdout)) is not None:
            reply = unpack(*frame)
            with self.lock:
                if ("lost", *self._key(reply)) not in self.faults:
                    self.replies[reply.metadata.reply_to_message_id] = reply

    def _key(self, msg: Message) -> tuple:
        """(kind, round, client) of a message or of the message a reply answers."""
        m = msg.metadata
        return m.message_type, int(m.group_id or 0), self.cid.get(m.reply_to_message_id or m.message_id)

    # --- what FlowerClients uses of Flower's Grid -----------------------------------------------
    def get_node_ids(self) -> list[int]:
        with self.lock:
            return list(self.workers)

    def push_messages(self, messages) -> list[str]:
        ids = []
        for msg in messages:
            msg_id = msg.object_id
            msg.metadata.__dict__["_message_id"] = msg_id
            self.cid[msg_id] = self.site[msg.metadata.dst_node_id]
            key = ("unavailable", *self._key(msg))
            with self.lock:
                outbox = self.outbox.get(msg.metadata.dst_node_id)  # None: replaced by a new node id
                if key in self.faults or outbox is None:
                    self.faults.discard(key)  # once: the resend goes through
                    self.replies[msg_id] = Message(Error(ErrorCode.NODE_UNAVAILABLE, "test: node unavailable"),
                                                   reply_to=msg)
                else:
                    outbox.put(pack(msg))
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids) -> list[Message]:
        with self.lock:
            return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

    def kill(self) -> None:
        """Stop every worker and what it runs (a frozen site never reads the end of its input)."""
        from flower_deploy import kill_tree

        for proc in self.workers.values():
            kill_tree(proc)

    def close(self) -> None:
        for outbox in self.outbox.values():
            outbox.put(None)
        for proc in self.workers.values():
            proc.wait(30)
        assert all(p.returncode == 0 for p in self.workers.values()), [p.returncode for p in self.workers.values()]



# --- what the Flower tests share ------------------------------------------------------------
FLAG, K = "breastmnist", 3
# small models keep the runs short (FedMIC and FedKD at reduced widths, FedBN needs batch norm)
HP = {"fedmic": {"teacher_width": 0.25, "student_width": 0.25}, "fedkd": {"mentor_width": 0.5, "mentee_width": 0.25}}


def run_config(method: str, **kw):
    """The tiny config of the equivalence tests: 3 clients, 2 of them sampled per round and 1 of
    those dropped (join_ratio 0.67, drop_rate 0.5), every client evaluated, a checkpoint per round."""
    from fedmic.config import RunConfig

    base = dict(dataset=FLAG, method=method, clients=K, rounds=2, lam=0.5, min_size=5, join_ratio=0.67,
                drop_rate=0.5, checkpoint_every=1, progress=False, threads=1, hp=HP.get(method, {}),
                model="cnn_bn" if method == "fedbn" else "cnn")
    return RunConfig(**{**base, **kw})


def make_partition_file(data: Path, folder: Path) -> Path:
    from fedmic.data.medmnist import load_dataset
    from fedmic.data.partition import make_partition, save_partition

    d = load_dataset(FLAG, data)
    labels = {s: d.split(s)[1].numpy() for s in ("train", "val", "test")}
    part = make_partition("dirichlet_label", labels, K, 0.5, 0, 5, n_classes=d.n_classes, dataset=FLAG,
                          dataset_md5=d.info.md5(28))
    return save_partition(part, folder / f"{FLAG}_lam0.5_K{K}.json")


def make_site(root: Path, i: int, data: Path, partition: Path) -> dict:
    """Site i's folders: data-dir with the dataset file and the coordinator's partition file, an
    empty state-dir. Returns its node config."""
    import shutil

    site_data, state = root / f"site{i}" / "data", root / f"site{i}" / "state"
    if not site_data.exists():
        site_data.mkdir(parents=True)
        (site_data / f"{FLAG}.npz").symlink_to(data / f"{FLAG}.npz")
        shutil.copy(partition, site_data / partition.name)
    return {"partition-id": i, "data-dir": str(site_data), "state-dir": str(state), "threads": 1}


def same_run(engine_json: Path, flower_json: Path) -> dict:
    """Assert the two run JSONs are equal but for the deployment's transport record; return it."""
    import json

    a, b = json.loads(engine_json.read_text()), json.loads(flower_json.read_text())
    transport = b.pop("transport")
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    assert not differ, f"engine and Flower runs differ in {differ}"
    return transport
