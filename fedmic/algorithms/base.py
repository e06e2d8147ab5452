"""The one interface every federated algorithm implements.

The engine owns the round loop (sampling, byte counting, faults, evaluation, checkpoints);
an algorithm only says what a client keeps, how it trains, what it uploads, how the server
aggregates and which model is scored. States are plain dicts of tensors (so the engine can
checkpoint them) and are never mutated in place: `local_update` returns a new client state,
which lets the engine discard a diverged update.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn
import torch.nn.functional as F
from torch.optim.sgd import sgd

from ..comm import Payload, Upload, dense_payload, unpack_dense, weighted_average
from ..methods import HyperParameters, Method, get_method
from ..models import SplitModel, build_model

State = dict[str, Any]


@dataclass
class ClientData:
    """A client's training images, already on the device, batched without any per-sample work."""

    x: torch.Tensor
    y: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(self.n, generator=generator).to(self.x.device)
        # One gather per epoch, then contiguous slices: the same batches as indexing per batch.
        x, y = self.x[perm], self.y[perm]
        for i in range(0, self.n, batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]


@dataclass
class Context:
    """What every algorithm needs to know about the run (built by the engine from the config)."""

    model: str
    in_channels: int
    n_classes: int
    image_size: int
    device: torch.device
    rounds: int
    local_epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    transport_dtype: torch.dtype = torch.float32
    memory_format: torch.memory_format = torch.contiguous_format

    def make_model(self, width: float = 1.0) -> SplitModel:
        model = build_model(self.model, self.in_channels, self.n_classes, width, self.image_size)
        # Every model comes from here, so the format of all weights (and through them, of all
        # activations) is set in this one place; load_state_dict keeps it.
        return model.to(self.device, memory_format=self.memory_format)

    def optimizer(self, params) -> "LocalSGD":
        return LocalSGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)


class LocalSGD:
    """torch's own functional SGD (`torch.optim.sgd.sgd`, the arithmetic of torch.optim.SGD,
    bit-identical, tested) driven without a `torch.optim.Optimizer` object: constructing the first
    Optimizer imports torch._dynamo, 1.9 s of CPU in every training process (measured with torch
    2.13 on this project's 2-core machine). A new optimiser is made for every local update, as FL
    methods reset it each round. The multi-tensor (foreach) kernels take one call per step for all
    parameters instead of one per tensor; the elementwise arithmetic is the same."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params = [p for p in params]
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        params = [self.params[i] for i in live]
        buffers = [self.buffers[i] for i in live]
        sgd(params, [p.grad for p in params], buffers, foreach=True, weight_decay=self.weight_decay,
            momentum=self.momentum, lr=self.lr, dampening=0.0, nesterov=False, maximize=False)
        if self.momentum:  # sgd fills the list with the buffers it created
            for i, b in zip(live, buffers):
                self.buffers[i] = b


def clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def is_bn_key(model: nn.Module, key: str) -> bool:
    """True for parameters and buffers that belong to a batch-norm layer."""
    module_name = key.rpartition(".")[0]
    mod = dict(model.named_modules()).get(module_name)
    return isinstance(mod, nn.modules.batchnorm._BatchNorm)


class Algorithm:
    """Base class. A subclass sets `method` to its file's declaration (`METHOD`, fedmic.methods:
    name, hyperparameters, personalised or not) and overrides the hooks.

    What each side may use is what a real deployment gives it: the server its own state and the
    uploads; a client its own state, its data, its seed and what the server sent it. Every party
    constructs the algorithm from the same run config under the same seed (the engine seeds torch
    before), so constants set in `__init__` (initial weights) are known to all. Nothing else may
    live on the object between calls: in a deployment each message may run in a fresh process."""

    method: Method  # the file's METHOD, as written (a variant's lists only what it adds)

    def __new__(cls, ctx: Context, hp: HyperParameters):
        # checked before any __init__ (FedMIC's reads hp before calling this class's): `hp` is
        # resolved once per run (fedmic.methods.resolve_hp), typed and frozen
        if not isinstance(hp, get_method(cls.method.name).hp_type):
            raise TypeError(f"{cls.__name__} takes resolve_hp({cls.method.name!r}, ...), got {type(hp).__name__}")
        return super().__new__(cls)

    def __init__(self, ctx: Context, hp: HyperParameters):
        # the registry's declaration, with what a variant inherits from its neighbour
        self.method = get_method(type(self).method.name)
        self.ctx = ctx
        self.hp = hp
        self.worker = ctx.make_model()

    @property
    def personalised(self) -> bool:
        return self.method.personalised

    # --- server side -------------------------------------------------------------------
    def init_server(self) -> State:
        return {"global": clone_state(self.worker)}

    def broadcast(self, server: State, rnd: int) -> Payload:
        """What the server sends for round `rnd` to a client that is up to date."""
        return dense_payload(server["global"], self.ctx.transport_dtype)

    def downlink(self, server: State, rnd: int, cid: int) -> Payload:
        """What client `cid` receives in round `rnd` (counted as its downlink): the broadcast,
        unless the method sends clients that missed rounds something else (a catch-up)."""
        return self.broadcast(server, rnd)

    def aggregate(self, server: State, uploads: list[Upload], rnd: int) -> State:
        states = [unpack_dense(u.payload) for u in uploads]
        return {**server, "global": {**server["global"], **weighted_average(states, [u.weight for u in uploads])}}

    def eval_broadcast(self, server: State) -> Payload:
        """What a client needs from the server to build its scored model (`personal_model`): the
        shared part of a partly personalised model, global prototypes, ... Nothing by default."""
        return Payload()

    # --- client side -------------------------------------------------------------------
    def init_client(self, cid: int, data: ClientData | None = None) -> State:
        """A client's state before it first trains, from what it knows alone: the run config,
        the seed the engine sets and its own training data (`data`; None where no client's data
        exists, e.g. a server counting the parameters of a client's state)."""
        return {}

    def local_update(self, cid: int, state: State, received: Payload, data: ClientData, rnd: int,
                     gen: torch.Generator) -> tuple[State, Payload, dict]:
        raise NotImplementedError

    # --- evaluation --------------------------------------------------------------------
    def global_model(self, server: State) -> nn.Module | None:
        """The shared model, scored on the full official test split (None: there is none)."""
        self.worker.load_state_dict(server["global"])
        return self.worker

    def personal_model(self, cid: int, state: State, shared: Payload) -> nn.Module:
        """The model scored on client `cid`'s local test set (only for personalised methods),
        built from the client's state and `shared`, what `eval_broadcast` sent."""
        raise NotImplementedError

    # --- shared training helpers -------------------------------------------------------
    def load_received(self, model: nn.Module, received: Payload) -> None:
        model.load_state_dict({**model.state_dict(), **unpack_dense(received)})

    def train_supervised(self, model: nn.Module, data: ClientData, gen: torch.Generator,
                         extra_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                         params=None, epochs: int | None = None, frozen: nn.Module | None = None) -> float:
        """Plain local SGD on cross-entropy (+ an optional extra term). Returns the mean loss.
        `frozen`: a submodule held fixed for this call (no gradients, eval mode so its
        batch-norm statistics do not move either); by default the rest of the model trains."""
        model.train()
        held = []
        if frozen is not None:
            frozen.eval()
            held = [p for p in frozen.parameters() if p.requires_grad]
            for p in held:
                p.requires_grad_(False)
        try:
            opt = self.ctx.optimizer(params if params is not None else [p for p in model.parameters() if p.requires_grad])
            total, steps = torch.zeros((), device=self.ctx.device), 0
            for _ in range(self.ctx.local_epochs if epochs is None else epochs):
                for x, y in data.batches(self.ctx.batch_size, gen):
                    r, logits = model.forward_rep(x)
                    loss = F.cross_entropy(logits, y)
                    if extra_loss is not None:
                        loss = loss + extra_loss(model, x, y, r)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.detach()
                    steps += 1
        finally:
            for p in held:
                p.requires_grad_(True)
        return float(total / max(steps, 1))

    def train_joint(self, params, data: ClientData, gen: torch.Generator,
                    step: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                    epochs: int | None = None) -> torch.Tensor:
        """Local SGD where each step trains several models at once (mutual learning): `step(x, y)`
        returns (the loss to minimise, a 1-D tensor of values to log). Returns the mean of the
        logged values over the steps. The caller sets its models' train/eval modes."""
        opt = self.ctx.optimizer(params)
        total, steps = None, 0
        for _ in range(self.ctx.local_epochs if epochs is None else epochs):
            for x, y in data.batches(self.ctx.batch_size, gen):
                loss, logged = step(x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total = logged.detach() if total is None else total + logged.detach()
                steps += 1
        if total is None:
            raise ValueError("train_joint: the client has no training batch")
        return total / steps
