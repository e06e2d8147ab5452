"""Registry of federated algorithms: one module per method, each a subclass of `Algorithm`."""
from __future__ import annotations

import importlib

from .base import Algorithm, ClientData, Context

# method name -> module:class; modules are imported on demand so one broken method
# cannot stop the others from running.
ALGORITHMS = {
    "local": "local:Local",
    "fedavg": "fedavg:FedAvg",
    "fedprox": "fedprox:FedProx",
    "fedbn": "fedbn:FedBN",
    "fedper": "fedper:FedPer",
    "fedrep": "fedrep:FedRep",
    "ditto": "ditto:Ditto",
    "moon": "moon:MOON",
    "fml": "fml:FML",
    "fedkd": "fedkd:FedKD",
    "fedproto": "fedproto:FedProto",
    "fedmic": "fedmic:FedMIC",
}


def get_algorithm(name: str) -> type[Algorithm]:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(sorted(ALGORITHMS))}")
    module, cls = ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def algorithm_defaults(name: str) -> dict:
    return dict(get_algorithm(name).defaults)


__all__ = ["ALGORITHMS", "Algorithm", "ClientData", "Context", "get_algorithm", "algorithm_defaults"]
