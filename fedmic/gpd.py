"""How a shared model travels when it is factorised (global parameter decomposition,
docs/method.md "GPD"): the student of FedMIC and of FedKD (the paper's mentee) goes through
this one channel.

Each direction carries either the model's *update* or its *parameters*:
- uplink "update": the client sends trained - start, factorised by SVD with the energy rule.
- downlink "update": the server averages the rebuilt updates, factorises that average once more
  and sends it; every party adds the same decoded update to the same global model, so what the
  server scores is bit for bit what each client rebuilds. The server keeps the recent updates
  and knows which version each client held when it last uploaded: a client that missed rounds
  gets the factorised updates it missed, or the dense global model when that is no larger
  (always on its first participation). Both are counted as that client's downlink.
- "params": the weights themselves are factorised. Trained and freshly initialised weights need
  most of their rank for 95 % energy, so this sends them nearly dense or truncates them every
  round (a rank loss that compounds); kept as the documented comparison.
With `factorise=False` the weights travel dense both ways (FedAvg's traffic).

The channel holds no state between calls: the server's part lives in the server state, the
client's copy of the global model in the client state.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .comm import (META_INT_BYTES, Payload, SpectralReference, Upload, apply_delta, dense_payload, state_delta,
                   svd_decode, svd_encode, weighted_average)

MODES = ("update", "params")


class CatchUpError(RuntimeError):
    """A client cannot rebuild the global model from what it received (a protocol fault)."""


def _dense_bytes(state: dict[str, torch.Tensor]) -> int:
    # float tensors travel as float32 in a catch-up (exactness under float16 transport too)
    return sum(v.numel() * (4 if v.is_floating_point() else v.element_size()) for v in state.values()) + META_INT_BYTES


def _prefixed(p: Payload, prefix: str) -> Payload:
    return Payload({f"{prefix}{k}": v for k, v in p.tensors.items()}, {f"{prefix}{k}": v for k, v in p.meta.items()})


def _unprefixed(p: Payload, prefix: str) -> Payload:
    n = len(prefix)
    return Payload({k[n:]: v for k, v in p.tensors.items() if k.startswith(prefix)},
                   {k[n:]: v for k, v in p.meta.items() if k.startswith(prefix)})


class SharedModelChannel:
    def __init__(self, uplink: str, downlink: str, factorise: bool, energy: Callable[[int], float],
                 rounds: int, dtype: torch.dtype = torch.float32, rank: int | None = None):
        if uplink not in MODES or downlink not in MODES:
            raise ValueError(f"uplink and downlink must each be one of {MODES}, got {uplink!r}, {downlink!r}")
        if uplink == "params" and downlink == "update":
            raise ValueError("a parameter uplink cannot feed an update downlink: use uplink 'update'")
        if not factorise and (uplink, downlink) != ("params", "params"):
            raise ValueError("without factorisation the shared model travels as parameters both ways")
        self.uplink, self.downlink_mode, self.factorise = uplink, downlink, factorise
        self.energy, self.rounds, self.dtype, self.rank = energy, rounds, dtype, rank

    def encode(self, state: dict, energy: float, reference: SpectralReference | None = None) -> Payload:
        if not self.factorise:
            return dense_payload(state, self.dtype)
        return svd_encode(state, energy, self.dtype, rank=self.rank, reference=reference)

    # --- server ------------------------------------------------------------------------
    def init_server(self, initial: dict[str, torch.Tensor]) -> dict:
        if self.downlink_mode == "update":
            return {"global": {k: v.clone() for k, v in initial.items()}, "version": 0, "updates": {}, "confirmed": {}}
        down = self.encode(initial, self.energy(1))
        return {"global": svd_decode(down), "down": down}

    def broadcast(self, server: dict) -> Payload:
        """What a client that is up to date receives (the latest update, or the parameters)."""
        if self.downlink_mode == "params":
            return server["down"]
        v = server["version"]
        return server["updates"].get(v - 1, Payload()) if v else Payload()

    def downlink(self, server: dict, cid: int) -> Payload:
        if self.downlink_mode == "params":
            return server["down"]
        v, held = server["version"], server["confirmed"].get(cid)
        if held is not None and all(j in server["updates"] for j in range(held, v)):
            missed = Payload(meta={"catch_up": (held, v)})
            for j in range(held, v):
                part = _prefixed(server["updates"][j], f"{j}:")
                missed.tensors.update(part.tensors)
                missed.meta.update(part.meta)
            if missed.nbytes < _dense_bytes(server["global"]):
                return missed
        dense = _prefixed(dense_payload(server["global"], torch.float32), "global:")
        dense.meta["global"] = (v,)
        return dense

    def aggregate(self, server: dict, uploads: Sequence[Upload], rnd: int) -> dict:
        avg = weighted_average([svd_decode(u.payload) for u in uploads], [u.weight for u in uploads])
        if self.downlink_mode == "update":
            update = self.encode(avg, self.energy(rnd))
            v = server["version"]
            updates = {**server["updates"], v: update}
            glob = apply_delta(server["global"], svd_decode(update))
            # Keep only the updates some catch-up could still use: older ones add up to more than
            # the dense model, which is then sent instead.
            keep, total = {}, 0
            for j in range(v, -1, -1):
                if j not in updates:
                    break
                total += updates[j].nbytes
                if total >= _dense_bytes(glob):
                    break
                keep[j] = updates[j]
            # Each uploader trained from version v, so that is what it holds now.
            return {"global": glob, "version": v + 1, "updates": keep,
                    "confirmed": {**server["confirmed"], **{u.cid: v for u in uploads}}}
        new = apply_delta(server["global"], avg) if self.uplink == "update" else avg
        # The next round's broadcast uses the next round's energy; what clients rebuild from it
        # is the global model, also the one scored.
        down = self.encode(new, self.energy(min(rnd + 1, self.rounds)), SpectralReference(server["global"]))
        return {"global": svd_decode(down), "down": down}

    # --- client ------------------------------------------------------------------------
    def rebuild(self, held: dict | None, received: Payload) -> tuple[dict, dict]:
        """(the global model the client trains from, what it keeps to rebuild the next one).
        `held`: what the previous call returned as the second item (None before any)."""
        if self.downlink_mode == "params":
            return svd_decode(received), {}
        if "global" in received.meta:
            (v,) = received.meta["global"]
            glob = {k: t.clone() for k, t in _unprefixed(received, "global:").tensors.items()}
            return glob, {"global": glob, "version": v}
        if "catch_up" not in received.meta:
            raise CatchUpError("the broadcast holds neither the global model nor updates to it")
        first, stop = received.meta["catch_up"]
        version = None if held is None else held["version"]
        if version is None or not first <= version <= stop:
            raise CatchUpError(f"the client holds global version {version} but the catch-up covers versions "
                               f"{first}..{stop}: it cannot rebuild the global model exactly")
        glob = held["global"]
        for j in range(version, stop):  # updates it already applied (an upload lost on the way) are skipped
            glob = apply_delta(glob, svd_decode(_unprefixed(received, f"{j}:")))
        return glob, {"global": glob, "version": stop}

    def upload(self, trained: dict, start: dict, rnd: int) -> Payload:
        if self.uplink == "update":
            return self.encode(state_delta(trained, start), self.energy(rnd))
        # Trained weights stay close to the broadcast they started from, which lets the codec prove
        # most matrices dense without an eigendecomposition each (comm.SpectralReference).
        return self.encode(trained, self.energy(rnd), SpectralReference(start) if self.factorise else None)
