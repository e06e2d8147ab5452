"""The federated algorithms: one file per method, each holding the method's declaration
(`METHOD = Method(...)`, fedmic/methods.py) beside the `Algorithm` subclass it names.

The registry (fedmic.methods.METHODS) is read from these files without importing them, so
checking a config needs no torch; a method's file is imported only when that method runs, so
one broken method cannot stop the others.
"""
from __future__ import annotations

import importlib

from ..methods import get_method

_FROM_BASE = ("Algorithm", "ClientData", "Context")


def __getattr__(name: str):
    # `from fedmic.algorithms import Context` still works, importing torch only then
    if name in _FROM_BASE:
        from . import base
        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_algorithm(name: str):
    """The class that implements method `name` (its declaration: fedmic.methods.get_method)."""
    method = get_method(name)
    module = importlib.import_module(f"{__name__}.{method.module}")
    cls = getattr(module, method.cls, None)
    if cls is None:
        raise ValueError(f"fedmic/algorithms/{method.module}.py declares method {name!r} with cls={method.cls!r}, "
                         f"but defines no class of that name; fix the declaration's cls")
    if cls.__dict__.get("method") is not getattr(module, "METHOD"):
        raise ValueError(f"fedmic/algorithms/{method.module}.py: class {method.cls} must set `method = METHOD` "
                         "(its own declaration), not inherit a neighbour's")
    return cls


__all__ = ["Algorithm", "ClientData", "Context", "get_algorithm"]
