"""Registry of federated algorithms: one module per method, each a subclass of `Algorithm`.

What the methods are (names, classes, hyperparameters) is declared in fedmic/methods.py, which
needs no torch; a method's module is imported only when that method runs, so one broken method
cannot stop the others, and checking a config imports none of them.
"""
from __future__ import annotations

import importlib

from ..methods import METHODS, hp_defaults

# method name -> "module:Class"
ALGORITHMS = {name: m.impl for name, m in METHODS.items()}
_FROM_BASE = ("Algorithm", "ClientData", "Context")


def __getattr__(name: str):
    # `from fedmic.algorithms import Context` still works, importing torch only then
    if name in _FROM_BASE:
        from . import base
        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_algorithm(name: str):
    if name not in ALGORITHMS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(sorted(ALGORITHMS))}")
    module, cls = ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def algorithm_defaults(name: str) -> dict:
    return hp_defaults(name)


__all__ = ["ALGORITHMS", "Algorithm", "ClientData", "Context", "get_algorithm", "algorithm_defaults"]
