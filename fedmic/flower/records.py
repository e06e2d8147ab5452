"""fedmic's Payload <-> Flower records, losslessly: every tensor as an Array (dtype and shape kept,
a factorised matrix's U, S and Vh included), the integer metadata (shapes, ranks, catch-up
versions) as int lists in a ConfigRecord. Dict order is kept, so a decoded payload is the sent one
key for key and bit for bit."""
from __future__ import annotations

import json

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from ..comm import Payload

ORDER = "order"  # the tensor names in send order (a ConfigRecord list): Flower does not promise it


def put_payload(content: RecordDict, name: str, p: Payload) -> None:
    content[name] = ArrayRecord({k: Array(_numpy(t)) for k, t in p.tensors.items()})
    content[f"{name}.meta"] = ConfigRecord({ORDER: list(p.tensors), **{k: [int(i) for i in v] for k, v in p.meta.items()}})


def get_payload(content: RecordDict, name: str, device: torch.device) -> Payload:
    arrays, meta = content.array_records[name], dict(content.config_records[f"{name}.meta"])
    order = meta.pop(ORDER)
    if sorted(order) != sorted(arrays):
        raise ValueError(f"record {name!r}: the tensors {sorted(arrays)} do not match the names sent {sorted(order)}")
    return Payload({k: tensor(arrays[k], device) for k in order}, {k: tuple(int(i) for i in v) for k, v in meta.items()})


def tensor(a: Array, device: torch.device) -> torch.Tensor:
    arr = a.numpy()
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy()).to(device)


def _numpy(t: torch.Tensor) -> np.ndarray:
    # contiguous: a channels-last weight travels as its values in logical order
    return t.detach().cpu().contiguous().numpy()


def put_json(content: RecordDict, name: str, **values) -> None:
    """Small structured values (settings, training info) as one JSON string: floats keep every bit
    (Python's repr round-trips), nested dicts and None need no flattening."""
    content[name] = ConfigRecord({"json": json.dumps(values)})


def get_json(content: RecordDict, name: str) -> dict:
    return json.loads(content.config_records[name]["json"])
