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
    site, task = open_site(msg, context)
    content, result = work(site, task)
    put_json(content, "result", **result, seconds={"process_start": started, "work": time.perf_counter() - t0})
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    def work(site: Site, task: dict):
        reply = site.train_round(task["round"], get_payload(msg.content, "down", site.device), task["committed"])
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
