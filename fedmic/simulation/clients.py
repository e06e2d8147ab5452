"""The seam between the round loop and the clients (`Clients`), the work of one client (shared
by the clients in this process and a deployed site: fedmic/flower/site.py), and the clients of a
run in this process (`InProcessClients`)."""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable, NamedTuple, Protocol

import numpy as np
import torch

from ..algorithms import ClientData
from ..comm import NonFiniteError, Payload, all_finite
from ..config import RunConfig
from ..utils import derive_seed
from .evaluation import predict
from .setup import RunData


class ClientReply(NamedTuple):
    """A client's answer to a round: its upload and training info, or the problem that made it
    keep its previous state (non-finite weights or loss)."""

    upload: Payload | None
    info: dict | None
    problem: str | None = None


class Clients(Protocol):
    """What the round loop (fedmic/simulation/loop.py) asks of a run's clients, wherever they
    are: InProcessClients here, FlowerClients (fedmic/flower/server_app.py) at Flower sites."""

    def init(self) -> None:
        """Every client as before its first round (a new run; a resumed one then restores)."""

    def saved(self) -> object:
        """What the run's checkpoint keeps of the clients; `restore` takes it back."""

    def restore(self, saved: object) -> None:
        ...

    def train(self, rnd: int, sampled: list[int], downlink: Callable[[int], Payload]) -> dict[int, ClientReply]:
        """Each sampled client's reply to round `rnd`; `downlink(cid)` is what client `cid`
        receives (called once per client: the loop counts its bytes). A client absent from the
        result never replied (a deployment's timed-out site): its upload is lost."""

    def predict(self, rnd: int, shared: Payload) -> list[dict[str, np.ndarray]]:
        """Every client's predictions on its local val and test sets after round `rnd`, from its
        personal model built with `shared` (the algorithm's eval_broadcast)."""

    def report(self) -> dict:
        """What these clients add to the run JSON, after its other keys (a deployment: what the
        transport moved); called once, when the rounds are done."""


def first_nonfinite(obj) -> str | None:
    for name, t in tensors(obj):
        if t.is_floating_point() and not all_finite(t):
            return name
    return None


def tensors(obj, prefix=""):
    """(dotted name, tensor) of every tensor in nested dicts (a client's state)."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors(v, f"{prefix}.{k}" if prefix else str(k))


def init_client_state(algo, cfg: RunConfig, cid: int, data: ClientData) -> dict:
    torch.manual_seed(derive_seed(cfg.seed, "init", cid))
    return algo.init_client(cid, data)


def client_update(algo, cfg: RunConfig, cid: int, state: dict, received: Payload, data: ClientData, rnd: int,
                  device: torch.device) -> tuple[dict | None, ClientReply]:
    """One client's local update for round `rnd`: (its new state, its reply); the state is None
    when the reply reports a problem. In this process and at a deployed site alike."""
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "batches", rnd, cid))
    # Any use of torch's global RNG by an algorithm is then a function of (seed, round,
    # client) too, so a resumed run needs no saved generator state.
    torch.manual_seed(derive_seed(cfg.seed, "torch", rnd, cid))
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cfg.amp and device.type == "cuda" else nullcontext()
    problem = None
    try:
        with amp:
            state, up, info = algo.local_update(cid, state, received, data, rnd, gen)
    except NonFiniteError as e:  # a codec (SVD) refusing diverged weights: same handling
        problem = str(e)
    else:
        if (name := up.first_nonfinite() or first_nonfinite(state)) is not None:
            problem = f"tensor {name!r} has non-finite values"
        if not math.isfinite(info["loss"]):
            problem = f"{problem}; training loss is {info['loss']}" if problem else f"training loss is {info['loss']}"
    if problem:
        return None, ClientReply(None, None, problem)
    return state, ClientReply(up, info)


def personal_predictions(algo, cid: int, state: dict, shared: Payload, x: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Client `cid`'s personal model's predictions on each of its local sets `x` (split -> images)."""
    model = algo.personal_model(cid, state, shared)
    return {s: predict(model, xs) for s, xs in x.items()}


class InProcessClients:
    """Every client of the run in this process, trained one after another; their states
    (`states`, client id -> state) live in memory and in the run's checkpoint."""

    def __init__(self, cfg: RunConfig, algo, data: RunData):
        self.cfg, self.algo, self.data = cfg, algo, data
        self.states: list[dict] = []

    def init(self) -> None:
        self.states = [init_client_state(self.algo, self.cfg, cid, self.data.train[cid])
                       for cid in range(self.cfg.clients)]

    def saved(self) -> list[dict]:
        return self.states

    def restore(self, saved: list[dict]) -> None:
        self.states = saved

    def train(self, rnd: int, sampled: list[int], downlink: Callable[[int], Payload]) -> dict[int, ClientReply]:
        replies = {}
        for cid in sampled:
            state, replies[cid] = client_update(self.algo, self.cfg, cid, self.states[cid], downlink(cid),
                                                self.data.train[cid], rnd, self.data.device)
            if replies[cid].problem is None:
                self.states[cid] = state
        return replies

    def predict(self, rnd: int, shared: Payload) -> list[dict[str, np.ndarray]]:
        return [personal_predictions(self.algo, cid, self.states[cid], shared, self.data.eval_sets(cid))
                for cid in range(self.cfg.clients)]

    def report(self) -> dict:
        return {}
