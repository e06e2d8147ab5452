"""The one Flower ServerApp of every fedmic method: the round loop of `fedmic train`
(fedmic/simulation/loop.py: sampling, drops, the non-finite policy, aggregation, evaluation,
checkpoints, the run JSON) with its clients behind Flower messages (FlowerClients, an
implementation of the loop's Clients seam) instead of in this process.

Run config keys (`flwr run ... --run-config 'config="/abs/run.yaml" ...'`), paths on the coordinator
(absolute, or relative to the SuperLink's working directory, where the ServerApp runs):
    config       fedmic run config: a YAML/JSON file or an inline JSON object (as `fedmic train --config`)
    partition    the partition file; every site holds a copy of it under the same name
    out          the run JSON to write (its checkpoint sits beside it, as in the engine)
    data-root    MedMNIST folder of the coordinator (scores the global model on the official test split)
    timeout      seconds one exchange (a round's training, an evaluation) waits for the sites' replies;
                 a site still working then is left out of the round (training) or stops the run (evaluation)
    message-timeout  seconds a message may go unanswered before it is sent again (at least; the
                 deadline grows to 3 x the slowest reply of its kind so far); a SuperNode that crashed
                 after taking a message never answers it, and Flower may not say so
    site-timeout seconds a site may stay lost (its messages unanswered or undeliverable, counted from
                 the first loss) before the run stops with an error naming it
    join-timeout seconds to wait for every site to connect
    wire-counts  the counts file of the counting proxy in front of the SuperLink (fedmic/flower/proxy.py)
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.version import package_version as flwr_version

from ..comm import Payload
from ..config import RunConfig
from ..simulation.clients import ClientReply
from ..simulation.loop import Run, run_rounds
from .records import get_json, get_payload, put_json, put_payload
from .site import file_sha256, software

log = logging.getLogger("fedmic.flower")

app = ServerApp()

# A message lost to an unreachable or restarted SuperNode, or to a crashed ClientApp process: sent
# again (a site's round is a function of its seed and its stored state, so a repeat gives the same
# reply). Any other error is a site that cannot do the work, and stops the run. A message taken by
# a SuperNode that then crashed gets no error at all when the node is back (same node id) before
# the SuperLink noticed it was gone: the per-message deadline catches those.
RESEND = {ErrorCode.NODE_UNAVAILABLE, ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE,
          ErrorCode.CLIENT_APP_CRASHED}


class SiteFailure(RuntimeError):
    pass


@dataclass
class Options:
    config: str
    partition: str
    out: str
    data_root: str | None = None
    timeout: float = 3600.0
    join_timeout: float = 600.0
    wire_counts: str | None = None
    message_timeout: float = 120.0
    site_timeout: float = 1800.0
    poll: float = 0.2          # seconds between two pulls of replies
    retry_wait: float = 5.0    # seconds before a lost message is sent again

    @classmethod
    def from_run_config(cls, rc: dict) -> "Options":
        """From the Flower run config; an empty string is an unset value (Flower's config has no null)."""
        keys = {"config", "partition", "out", "data-root", "timeout", "join-timeout", "wire-counts", "message-timeout",
                "site-timeout"}
        unknown = sorted(set(rc) - keys)
        missing = [k for k in ("config", "partition", "out") if not rc.get(k)]
        if unknown or missing:
            raise ValueError(f"Flower run config: unknown keys {unknown}, missing {missing}; set them with "
                             "flwr run --run-config 'config=\"run.yaml\" partition=\"p.json\" out=\"run.json\"'")

        def text(key):
            return str(rc[key]) if rc.get(key) else None

        seconds = {}
        for key in ("timeout", "join-timeout", "message-timeout", "site-timeout"):
            if key in rc:
                try:
                    seconds[key.replace("-", "_")] = float(rc[key])
                except (TypeError, ValueError):
                    seconds[key.replace("-", "_")] = float("nan")
        if bad := [k for k, v in seconds.items() if not v > 0]:
            raise ValueError(f"Flower run config: {[k.replace('_', '-') for k in bad]} must be a number of seconds > 0")
        return cls(config=rc["config"], partition=rc["partition"], out=rc["out"], data_root=text("data-root"),
                   wire_counts=text("wire-counts"), **seconds)


def message_bytes(msg: Message) -> int:
    """The bytes of a message's objects as Flower serialises them (what a node pulls or pushes)."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(msg).values())


def wire_counts(path: str | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def flower_run(cfg: RunConfig, opts: Options, grid: Grid) -> Run:
    """The ServerApp's run: the round loop's state with its clients at the sites reached through
    `grid`, once every site has connected."""
    run = Run(cfg, opts.partition, opts.data_root, lambda cfg, algo, data: FlowerClients(cfg, opts, grid, data.device))
    run.clients.connect()
    return run


class FlowerClients:
    """The run's clients as sites reached through a Flower Grid (the loop's Clients seam,
    fedmic/simulation/clients.py): each round's training and each evaluation is one exchange of
    messages; the sites keep their states, the server only what it knows of each (`known`)."""

    def __init__(self, cfg: RunConfig, opts: Options, grid: Grid, device):
        self.cfg, self.opts, self.grid, self.device = cfg, opts, grid, device
        self.task = {"config": cfg.to_dict(), "partition": Path(opts.partition).name,
                     "partition_sha256": file_sha256(opts.partition)}
        self.nodes: dict[int, int] = {}       # client id -> Flower node id
        self.asked: dict[str, tuple[int, float]] = {}  # query message id -> the node it asks, when
        self.ask_after: dict[int, float] = {}  # node id -> when it may be asked (again) who it is
        self.lost: dict[int, tuple[float, str]] = {}  # client -> since when it is lost, and which message
        self.contested: dict[int, tuple[float, int]] = {}  # client -> when a second node claimed it while
        #                                                      the first lived, and that node
        self.slowest: dict[str, float] = {}   # message kind -> the slowest reply so far (seconds)
        self.transport: list[dict] = []
        self.sent = 0                     # bytes of the messages and replies of this round
        self.wire = wire_counts(opts.wire_counts)
        self.known: list[dict] = []

    def connect(self) -> None:
        """Wait until a site holds every partition-id (join-timeout)."""
        deadline = time.monotonic() + self.opts.join_timeout
        while len(self.nodes) < self.cfg.clients:
            if time.monotonic() > deadline:
                missing = sorted(set(range(self.cfg.clients)) - set(self.nodes))
                raise SiteFailure(f"after {self.opts.join_timeout:.0f} s, no SuperNode with partition-id {missing} "
                                  "has connected; start them (docs/deploy.md) or raise join-timeout")
            self.discover()
            time.sleep(self.opts.poll)
        log.info("all %d sites connected: %s", self.cfg.clients, self.nodes)

    # --- the Clients seam ---------------------------------------------------------------
    def init(self) -> None:
        # What the server knows of each client, checkpointed with the run and sent in every task:
        # the last round whose update it received (a site holding an older state has lost rounds),
        # and the run's name, under which the sites keep their states (a resumed run keeps it, a
        # new run of the same config starts from fresh states).
        run = f"{self.cfg.arm}-{self.cfg.fingerprint()}-{uuid.uuid4().hex[:8]}"
        self.known = [{"committed": 0, "run": run} for _ in range(self.cfg.clients)]

    def saved(self) -> list[dict]:
        return self.known

    def restore(self, saved: list[dict]) -> None:
        self.known = saved

    def train(self, rnd: int, sampled: list[int], downlink) -> dict[int, ClientReply]:
        self.round_start(rnd)
        got = self.exchange("train", rnd, {c: self.task_content(rnd, c, "down", downlink(c)) for c in sampled})
        replies = {}
        for c, content in got.items():
            result = get_json(content, "result")
            if result["problem"] is None:
                self.known[c]["committed"] = rnd
                replies[c] = ClientReply(get_payload(content, "up", self.device), result["info"])
            else:
                replies[c] = ClientReply(None, None, result["problem"])
        return replies

    def predict(self, rnd: int, shared: Payload) -> list[dict]:
        got = self.exchange("evaluate", rnd, {c: self.task_content(rnd, c, "shared", shared)
                                              for c in range(self.cfg.clients)})
        if missing := sorted(set(range(self.cfg.clients)) - set(got)):
            raise SiteFailure(f"evaluation of round {rnd}: no predictions from clients {missing}; every site is "
                              "scored: restart them, and the run resumes from its last checkpoint")
        return [{s: a.numpy() for s, a in got[c].array_records["pred"].items()} for c in range(self.cfg.clients)]

    def report(self) -> dict:
        self.round_start(0)
        return {"transport": {
            "runtime": "flower-deployment", "flwr": flwr_version, "rounds": self.transport,
            "wire": "bytes through the counting proxy in front of the SuperLink (up: SuperNodes to SuperLink), "
                    "TLS and HTTP included" if self.opts.wire_counts else None,
            "message_bytes": "bytes of the Flower messages and replies (records as serialised), evaluation "
                             "predictions and settings included"}}

    def message_deadline(self, kind: str) -> float:
        """Seconds a message of `kind` may go unanswered before it is sent again."""
        return max(self.opts.message_timeout, 3 * self.slowest.get(kind, 0.0))

    # --- who is who ---------------------------------------------------------------------
    def discover(self) -> None:
        """Ask nodes not asked yet which partition-id they hold; read the answers that arrived."""
        now = time.monotonic()
        online = set(self.grid.get_node_ids())
        new = [n for n in online if self.ask_after.get(n, 0.0) <= now]
        if new:
            msgs = []
            for n in new:
                content = RecordDict()
                put_json(content, "task", **self.task)
                msgs.append(Message(content, dst_node_id=n, message_type="query"))
            for n, mid in zip(new, self.grid.push_messages(msgs)):
                self.ask_after[n] = float("inf") if mid else now + self.opts.retry_wait
                if mid:
                    self.asked[mid] = (n, now)
        # a node that took the question and crashed may never answer it: ask again (an answer
        # to the earlier question counts as well)
        last_asked: dict[int, float] = {}
        for n, t in self.asked.values():
            last_asked[n] = max(t, last_asked.get(n, t))
        for n, t in last_asked.items():
            if now - t > self.message_deadline("query") and n in online:
                self.ask_after[n] = now
        if not self.asked:
            return
        for r in self.grid.pull_messages(list(self.asked)):
            node, sent_at = self.asked.pop(r.metadata.reply_to_message_id, (None, 0.0))
            if node is None:
                continue
            if not r.has_error():
                self.slowest["query"] = max(self.slowest.get("query", 0.0), time.monotonic() - sent_at)
                for mid in [m for m, (n, _) in self.asked.items() if n == node]:
                    del self.asked[mid]  # answered: earlier or later copies add nothing
            if r.has_error():
                if r.error.code in RESEND:  # ask again when it may be back
                    self.ask_after[node] = time.monotonic() + self.opts.retry_wait
                    continue
                raise SiteFailure(f"SuperNode {node} cannot join: {r.error.reason}")
            site = get_json(r.content, "site")
            for key, want in software().items():
                if site[key] != want:
                    raise SiteFailure(f"SuperNode {node} (partition-id {site['cid']}) runs {key} {site[key]}, the "
                                      f"server {want}: install the same everywhere (results would differ)")
            if site["partition_sha256"] != self.task["partition_sha256"]:
                raise SiteFailure(f"SuperNode {node} (partition-id {site['cid']}) has no copy of "
                                  f"{self.task['partition']} or a different one; copy the coordinator's file "
                                  "into its data-dir")
            cid = site["cid"]
            if not 0 <= cid < self.cfg.clients:
                raise SiteFailure(f"SuperNode {node} says partition-id {cid}, but the run has clients "
                                  f"0..{self.cfg.clients - 1}; fix its --node-config")
            old = self.nodes.get(cid)
            if old is not None and old != node:
                if old in online and cid not in self.lost:
                    # a site restarted under a new node id while its old node's heartbeat has not
                    # expired yet, or two sites with one partition-id: the old node's next reply
                    # tells (both answer), or its loss (the new node takes over)
                    self.contested.setdefault(cid, (time.monotonic(), node))
                    continue
                log.warning("partition-id %d is now SuperNode %d (was %d)", cid, node, old)
            self.contested.pop(cid, None)
            self.nodes[cid] = node

    def lose(self, c: int, kind: str, rnd: int, why: str) -> None:
        """Client c's message is lost: find its node again (it may come back under a new node id)
        and send the message again."""
        log.warning("%s round %d, client %d: %s; sending again", kind, rnd, c, why)
        self.lost.setdefault(c, (time.monotonic(), f"{kind} message of round {rnd}"))
        if (node := self.nodes.pop(c, None)) is not None:
            self.ask_after[node] = time.monotonic() + self.opts.retry_wait
        if c in self.contested:  # the node that claimed its partition-id meanwhile
            self.nodes[c] = self.contested.pop(c)[1]
            log.warning("partition-id %d is now SuperNode %d (was %s)", c, self.nodes[c], node)

    # --- one exchange of messages -------------------------------------------------------
    def exchange(self, kind: str, rnd: int, contents: dict[int, RecordDict]) -> dict[int, RecordDict]:
        """Send each client its message and collect the replies. A message lost to an unreachable
        node, or unanswered within its deadline, is sent again (a reply to an earlier copy is as
        good: a repeat gives the same reply); a client without a reply after `timeout` seconds is
        left out; a client lost for `site-timeout` seconds stops the run."""
        start = time.monotonic()
        deadline = start + self.opts.timeout
        due = dict.fromkeys(contents, 0.0)   # client -> when to (re)send its message
        waiting: dict[str, tuple[int, float]] = {}  # message id -> client, when sent (every copy)
        newest: dict[int, tuple[str, float]] = {}  # client -> its latest copy: id, when sent
        replies: dict[int, RecordDict] = {}
        while len(replies) < len(contents) and time.monotonic() < deadline:
            now = time.monotonic()
            for c in sorted(set(contents) - set(replies)):
                if c in self.lost and now - self.lost[c][0] > self.opts.site_timeout:
                    raise SiteFailure(
                        f"partition-id {c} is lost since its {self.lost[c][1]} ({now - self.lost[c][0]:.0f} s ago; "
                        f"now in {kind} round {rnd}), longer than site-timeout={self.opts.site_timeout:g} s: "
                        "restart its SuperNode and the run again (it resumes from its checkpoint), or raise site-timeout")
            if self.asked or any(c not in self.nodes for c in due):
                self.discover()  # also reads late answers: a restarted site, two sites claiming one id
            ready = [c for c, t in due.items() if t <= now and c in self.nodes]
            if ready:
                msgs = [Message(contents[c], dst_node_id=self.nodes[c], message_type=kind, group_id=str(rnd))
                        for c in ready]
                for c, m, mid in zip(ready, msgs, self.grid.push_messages(msgs)):
                    if mid:
                        waiting[mid] = (c, now)
                        newest[c] = (mid, now)
                        del due[c]
                        self.sent += message_bytes(m)
                    else:
                        due[c] = now + self.opts.retry_wait
            for r in self.grid.pull_messages(list(waiting)) if waiting else []:
                mid = r.metadata.reply_to_message_id
                c, sent_at = waiting.pop(mid, (None, 0.0))
                if c is None or c in replies:
                    continue
                if not r.has_error():
                    since, other = self.contested.get(c, (float("inf"), None))
                    if since < sent_at:
                        raise SiteFailure(f"SuperNodes {self.nodes.get(c)} and {other} both say partition-id {c} "
                                          "and both answer; give each site its own partition-id")
                    replies[c] = r.content
                    self.sent += message_bytes(r)
                    self.lost.pop(c, None)
                    self.slowest[kind] = max(self.slowest.get(kind, 0.0), time.monotonic() - sent_at)
                elif r.error.code not in RESEND:
                    raise SiteFailure(f"{kind} round {rnd}, client {c} (SuperNode {self.nodes.get(c)}): "
                                      f"{r.error.reason}")
                elif newest[c][0] == mid and c not in due:  # an earlier copy's loss changes nothing
                    self.lose(c, kind, rnd, r.error.reason)
                    due[c] = time.monotonic() + self.opts.retry_wait
            limit = self.message_deadline(kind)
            for c, (_, sent_at) in newest.items():
                if c not in replies and c not in due and time.monotonic() - sent_at > limit:
                    self.lose(c, kind, rnd, f"no reply within {limit:.0f} s (message-timeout)")
                    due[c] = time.monotonic()  # the earlier copy stays awaited: its reply is as good
            time.sleep(self.opts.poll)
        for c in sorted(set(contents) - set(replies)):
            log.warning("%s round %d: no reply from client %d within %.0f s", kind, rnd, c, self.opts.timeout)
        seconds = [get_json(r, "result").get("seconds", {}) for r in replies.values()]
        if self.transport:
            self.transport[-1][kind] = {
                "seconds": time.monotonic() - start,
                **{f"site_{k}_max": max((s[k] for s in seconds if s.get(k) is not None), default=None)
                   for k in ("process_start", "work")}}
        return replies

    def task_content(self, rnd: int, cid: int, name: str, payload: Payload) -> RecordDict:
        content = RecordDict()
        put_payload(content, name, payload)
        put_json(content, "task", **self.task, round=rnd, cid=cid, **self.known[cid])
        return content

    # --- what the transport moved ---------------------------------------------------------
    def round_start(self, rnd: int) -> None:
        """Close the previous round's transport record and open this one's."""
        wire = wire_counts(self.opts.wire_counts)
        if self.transport:
            last = self.transport[-1]
            last["message_bytes"] = self.sent
            if wire and self.wire:
                last["wire_bytes"] = {k: wire[k] - self.wire[k] for k in ("up", "down")}
        self.sent, self.wire = 0, wire
        if rnd:
            self.transport.append({"round": rnd})


@app.main()
def main(grid: Grid, context: Context) -> None:
    from ..config import load_run_config

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("fedmic").addHandler(handler)
    logging.getLogger("fedmic").setLevel(logging.INFO)
    opts = Options.from_run_config(dict(context.run_config))
    try:
        run_rounds(flower_run(load_run_config(opts.config, []), opts, grid), opts.out)
    except SiteFailure as e:
        log.error("%s", e)  # the one line to read in Flower's traceback below
        raise
