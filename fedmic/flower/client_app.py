"""The one Flower ClientApp of every fedmic method: a thin bridge from Flower messages to a Site.

A SuperNode says who it is through its node config (`flower-supernode --node-config`):
    partition-id=3            which client of the partition this site is (its identity in the run)
    data-dir="/site/data"     the MedMNIST file and the coordinator's partition file
    state-dir="/site/state"   where the site keeps its state between rounds (default: data-dir/fedmic-state)
    threads=4 device="cuda"   optional: how this site computes (execution settings, not the method)
Flower's own node ids are never used as identities: they change when a node is registered again.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from ..config import RunConfig
from .records import get_json, get_payload, put_json, put_payload
from .site import Site, SiteError, file_sha256, software

app = ClientApp()

NODE_KEYS = ("partition-id", "data-dir", "state-dir", "threads", "device")


def process_age() -> float | None:
    """Seconds since this process started (Linux), to tell Flower's per-message process start from
    the site's own work in the run JSON's transport record; None elsewhere."""
    try:
        start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        return float(Path("/proc/uptime").read_text().split()[0]) - start
    except (OSError, ValueError, IndexError):
        return None


def identity(context: Context) -> int:
    nc = context.node_config
    unknown = sorted(set(nc) - set(NODE_KEYS))
    if unknown:
        raise SiteError(f"unknown --node-config key(s) {unknown}; fedmic reads {list(NODE_KEYS)}")
    if not isinstance(nc.get("partition-id"), int) or isinstance(nc.get("partition-id"), bool):
        raise SiteError("the SuperNode has no integer partition-id: start it with --node-config 'partition-id=N "
                        "data-dir=\"...\"'")
    if "data-dir" not in nc:
        raise SiteError("the SuperNode has no data-dir: add data-dir=\"/path\" to its --node-config")
    return int(nc["partition-id"])


CRASH_POINTS = ("before-train", "after-store", "after-reply")


def crash_here(point: str, kind: str, rnd: int) -> None:
    """Stop this site dead at a named point of a round, once, for the crash tests
    (tests/test_flower_deploy.py, tests/test_flower_grid.py): FEDMIC_FLOWER_CRASH_AT="after-store@2"
    freezes the ClientApp process where round 2's training has stored its state but not yet
    returned its reply; the test then kills the site's processes, as a machine losing power.
    before-train: as round r's training message arrives; after-reply: as the next message after
    the reply to round r's training arrives (a ClientApp cannot act once it has returned, and the
    next message proves the reply reached the server). The file FEDMIC_FLOWER_CRASH_MARKER is
    created first: the test waits for it, and a site restarted with it present goes on."""
    spec = os.environ.get("FEDMIC_FLOWER_CRASH_AT")
    if not spec:
        return
    want, _, at = spec.partition("@")
    marker = os.environ.get("FEDMIC_FLOWER_CRASH_MARKER")
    if want not in CRASH_POINTS or not at.isdigit() or not marker:
        raise SiteError(f"FEDMIC_FLOWER_CRASH_AT={spec!r}: want POINT@ROUND with POINT one of {list(CRASH_POINTS)}, "
                        "and FEDMIC_FLOWER_CRASH_MARKER set")
    at = int(at)
    hit = {"before-train": point == "start" and kind == "train" and rnd == at,
           "after-store": point == "after-store" and rnd == at,
           "after-reply": point == "start" and (rnd > at or (kind == "evaluate" and rnd == at))}[want]
    if not hit:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGSTOP)


def open_site(msg: Message, context: Context) -> tuple[Site, dict]:
    task = get_json(msg.content, "task")
    cid = identity(context)
    if task["cid"] != cid:
        raise SiteError(f"this SuperNode is partition-id {cid} but received client {task['cid']}'s message")
    nc = context.node_config
    cfg = RunConfig.from_dict(task["config"])
    if "threads" in nc:
        cfg.threads = int(nc["threads"])
    if "device" in nc:
        cfg.device = str(nc["device"])
    data_dir = Path(str(nc["data-dir"])).expanduser()
    state_dir = Path(str(nc.get("state-dir", data_dir / "fedmic-state"))).expanduser()
    return Site(cfg, cid, data_dir, state_dir, task["run"], task["partition"], task["partition_sha256"]), task


@app.query()
def hello(msg: Message, context: Context) -> Message:
    """Who this site is and what it runs, so the server can map clients to nodes and refuse a site
    whose software or partition file differs from its own."""
    task = get_json(msg.content, "task")
    cid = identity(context)
    path = Path(str(context.node_config["data-dir"])).expanduser() / task["partition"]
    reply = RecordDict()
    put_json(reply, "site", cid=cid, **software(), partition_sha256=file_sha256(path) if path.is_file() else None)
    return Message(reply, reply_to=msg)


def answer(msg: Message, context: Context, work) -> Message:
    """The reply to `msg`: `work(site, task)` returns its content and results; the reply adds how
    long Flower took to start this process and how long the work took."""
    started, t0 = process_age(), time.perf_counter()
    task = get_json(msg.content, "task")
    crash_here("start", msg.metadata.message_type, task["round"])
    site, task = open_site(msg, context)
    content, result = work(site, task)
    put_json(content, "result", **result, seconds={"process_start": started, "work": time.perf_counter() - t0})
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    def work(site: Site, task: dict):
        reply = site.train_round(task["round"], get_payload(msg.content, "down", site.device), task["committed"])
        crash_here("after-store", "train", task["round"])
        content = RecordDict()
        if reply.upload is not None:
            put_payload(content, "up", reply.upload)
        return content, {"info": reply.info, "problem": reply.problem}
    return answer(msg, context, work)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    def work(site: Site, task: dict):
        preds = site.predictions(task["round"], get_payload(msg.content, "shared", site.device), task["committed"])
        return RecordDict({"pred": ArrayRecord({s: Array(p) for s, p in preds.items()})}), {}
    return answer(msg, context, work)
