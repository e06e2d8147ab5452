"""The cheaper path to Flower for the tests: fedmic's ServerApp logic (FlowerRun) drives a stand-in
for Flower's Grid whose sites are separate worker processes running fedmic's ClientApp. Messages
cross the process boundary as Flower serialises them (every object deflated, then inflated on
the other side), each message is handled in a freshly forked process (as Flower starts one per
message), and each site keeps its state on its own disk. What it leaves out is Flower's runtime:
SuperLink, SuperNodes, TLS, authentication, polling (tests/test_flower_deploy.py covers those).

`faults` makes the grid lose messages the way a deployment can: ("unavailable", kind, round, cid)
answers that message once with Flower's NODE_UNAVAILABLE error (the site never saw it); ("lost",
kind, round, cid) lets the site do the work but loses every reply to it."""
from __future__ import annotations

import pickle
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
    head = stream.read(8)
    if len(head) < 8:
        return None
    return pickle.loads(stream.read(struct.unpack("<Q", head)[0]))


class ProcessGrid:
    def __init__(self, node_configs: list[dict], logs: Path, faults: set | None = None):
        self.node_configs, self.faults = node_configs, set(faults or ())
        # this process plays the ServerApp's task (Flower sets these in the process it starts)
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        self.replies: dict[str, Message] = {}
        self.cid: dict[str, int] = {}  # message id -> the client it went to
        self.lock = threading.Lock()
        self.workers = {}
        logs.mkdir(parents=True, exist_ok=True)
        for i, nc in enumerate(node_configs):
            proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=(logs / f"worker{i}.log").open("w"))
            send_frame(proc.stdin, (NODE0 + i, nc))
            threading.Thread(target=self._read, args=(proc,), daemon=True).start()
            self.workers[NODE0 + i] = proc

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

    # --- what FlowerRun uses of Flower's Grid -----------------------------------------------
    def get_node_ids(self) -> list[int]:
        return list(self.workers)

    def push_messages(self, messages) -> list[str]:
        ids = []
        for msg in messages:
            msg_id = msg.object_id
            msg.metadata.__dict__["_message_id"] = msg_id
            self.cid[msg_id] = msg.metadata.dst_node_id - NODE0
            key = ("unavailable", *self._key(msg))
            if key in self.faults:
                self.faults.discard(key)  # once: the resend goes through
                with self.lock:
                    self.replies[msg_id] = Message(Error(ErrorCode.NODE_UNAVAILABLE, "test: node unavailable"),
                                                   reply_to=msg)
            else:
                send_frame(self.workers[msg.metadata.dst_node_id].stdin, pack(msg))
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids) -> list[Message]:
        with self.lock:
            return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

    def close(self) -> None:
        for proc in self.workers.values():
            proc.stdin.close()
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
