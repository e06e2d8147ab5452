"""One site of a deployed run: its own data, the algorithm, and its persistent state on its own disk.

Flower may run every message in a fresh process, so nothing survives a message in memory: each
one rebuilds the algorithm from the run config under the run's seed
(fedmic.simulation.setup.make_algorithm) and reads the site's state from its state folder.
After a round the new state is written atomically (fedmic.utils.atomic_open) as one snapshot
per round, so a SuperNode killed at any moment and started again continues from its last
committed round. The round's work is a function of (seed, round, client) and of the state it
starts from, so a message delivered twice gives the same reply twice. No Flower import here:
the bridge is fedmic/flower/client_app.py.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import torch

from ..algorithms import ClientData
from ..comm import Payload
from ..config import RunConfig
from ..simulation.checkpoint import FORMAT
from ..simulation.clients import ClientReply, client_update, init_client_state, personal_predictions
from ..simulation.setup import load_partitioned, make_algorithm, make_context, resolve_device
from ..utils import atomic_open

SNAPSHOT = re.compile(r"round(\d{5})\.pt")


class SiteError(RuntimeError):
    """A site cannot take part as asked (its data, its state or its settings do not match)."""


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def software() -> dict[str, str]:
    """What must be the same at every party for the same numbers: fedmic's code (a hash of its
    sources, so a local edit counts), and the PyTorch and Flower releases (a CUDA build of the same
    release is the same release)."""
    from importlib.metadata import version

    package = Path(__file__).resolve().parents[1]
    code = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        code.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return {"fedmic code": code.hexdigest()[:16], "torch": torch.__version__.split("+")[0], "flwr": version("flwr")}


def checkpoint_floor(cfg: RunConfig, rnd: int) -> int | None:
    """The last round the server may have checkpointed before round `rnd` (0: none yet), i.e. the
    oldest round a resumed server can go back to; None when the run never checkpoints."""
    return cfg.checkpoint_every * ((rnd - 1) // cfg.checkpoint_every) if cfg.checkpoint_every else None


class StateStore:
    """A client's state after each round it trained in, as round00007.pt files in `folder`. It
    keeps what a resume can still need: the newest snapshot, and the newest one at or before the
    server's last checkpoint, and the one before the newest (a round asked again after a crash
    is computed again from it)."""

    def __init__(self, folder: Path, cid: int, fingerprint: str):
        self.folder, self.cid, self.fingerprint = Path(folder), cid, fingerprint

    def rounds(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := SNAPSHOT.fullmatch(p.name)))

    def path(self, rnd: int) -> Path:
        return self.folder / f"round{rnd:05d}.pt"

    def latest(self, through: int) -> int:
        """The newest snapshot at or before round `through` (0: none, the initial state)."""
        return max((r for r in self.rounds() if r <= through), default=0)

    def load(self, rnd: int, device: torch.device) -> dict:
        path = self.path(rnd)
        try:
            ck = torch.load(path, map_location=device, weights_only=True)
        except Exception as e:
            raise SiteError(f"client {self.cid}: state file {path} is unreadable ({e}); restore it from a backup, "
                            "or delete the state folder and restart the run from round 1") from e
        if ck.get("format") != FORMAT:
            raise SiteError(f"state file {path} was written by an older fedmic (format {ck.get('format', 1)}, this one "
                            f"reads {FORMAT}); delete the state folder and restart the run from round 1")
        if ck.get("fingerprint") != self.fingerprint or ck.get("cid") != self.cid:
            raise SiteError(f"state file {path} belongs to client {ck.get('cid')} of run {ck.get('fingerprint')}, "
                            f"not to client {self.cid} of run {self.fingerprint}; give each site its own state-dir")
        return ck["state"]

    def commit(self, rnd: int, state: dict, floor: int | None) -> None:
        with atomic_open(self.path(rnd)) as f:
            torch.save({"format": FORMAT, "fingerprint": self.fingerprint, "cid": self.cid, "round": rnd,
                        "state": state}, f)
        keep = {rnd} if floor is None else {self.latest(floor)} | {r for r in self.rounds() if r > floor}
        # and the state this round started from: a site that crashed before its reply left is
        # asked for this round again, and must compute the same reply
        keep.add(self.latest(rnd - 1))
        for r in self.rounds():
            # later rounds are from a run that went back to a checkpoint: this one replaces them
            if r not in keep or r > rnd:
                self.path(r).unlink(missing_ok=True)


class Site:
    """Client `cid` of the run `cfg` named `run` by the server, with the dataset and partition file
    in `data_dir` and its state in `state_dir`/`run`."""

    def __init__(self, cfg: RunConfig, cid: int, data_dir: str | Path, state_dir: str | Path, run: str,
                 partition: str, partition_sha256: str | None = None):
        if not 0 <= cid < cfg.clients:
            raise SiteError(f"partition-id {cid} is outside the run's {cfg.clients} clients (0..{cfg.clients - 1}); "
                            "fix the SuperNode's --node-config")
        path = Path(data_dir) / partition
        if not path.is_file():
            raise SiteError(f"client {cid}: partition file {path} is missing; copy the coordinator's {partition} "
                            "into the site's data-dir")
        if partition_sha256 is not None and file_sha256(path) != partition_sha256:
            raise SiteError(f"client {cid}: {path} differs from the coordinator's partition file; "
                            "copy the coordinator's file again")
        self.cfg, self.cid = cfg, cid
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        data, part, split = load_partitioned(cfg, path, str(data_dir))
        # the same gathers as a run in one process (fedmic.simulation.setup.place_data), so the
        # site trains and predicts on identical tensors
        x = {s: split[s][0].to(self.device) for s in split}
        y = {s: split[s][1].to(self.device) for s in split}
        idx = {s: torch.as_tensor(np.asarray(part.indices[s][cid], dtype=np.int64), device=self.device) for s in split}
        self.train = ClientData(x["train"][idx["train"]], y["train"][idx["train"]])
        self.eval_x = {s: x[s][idx[s]] for s in ("val", "test")}
        self.algo = make_algorithm(cfg, make_context(cfg, data, self.device))
        if not run or Path(run).name != run:
            raise SiteError(f"client {cid}: the server named the run {run!r}, which is not a folder name")
        self.store = StateStore(Path(state_dir) / run / f"client{cid}", cid, cfg.fingerprint())

    def state(self, through: int, committed: int) -> dict:
        """The newest state at or before round `through`; `committed` is the last round whose
        update the server received from this site: an older state means the site lost rounds."""
        rnd = self.store.latest(through)
        if rnd < committed:
            raise SiteError(f"client {self.cid} sent its update of round {committed}, but its state folder "
                            f"{self.store.folder} now holds {f'round {rnd} at most' if rnd else 'no state'}: it lost "
                            "rounds (restore the folder, or restart the run)")
        if rnd == 0:
            return init_client_state(self.algo, self.cfg, self.cid, self.train)
        return self.store.load(rnd, self.device)

    def train_round(self, rnd: int, received: Payload, committed: int) -> ClientReply:
        new, reply = client_update(self.algo, self.cfg, self.cid, self.state(rnd - 1, committed), received,
                                   self.train, rnd, self.device)
        if reply.problem is None:
            self.store.commit(rnd, new, checkpoint_floor(self.cfg, rnd))
        return reply

    def predictions(self, rnd: int, shared: Payload, committed: int) -> dict[str, np.ndarray]:
        """The personal model's predictions on the local val and test sets after round `rnd`."""
        return personal_predictions(self.algo, self.cid, self.state(rnd, committed), shared, self.eval_x)

