"""`fedmic flower app | credentials | proxy`: what a Flower deployment needs besides Flower's own
commands (docs/deploy.md). Nothing here imports Flower, so `fedmic --help` works without it."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import __version__
from ..outputs import FLOWER_APP_HEAD  # how fedmic.outputs knows the file
from ..utils import atomic_write_text

# The Flower app is the installed fedmic package: its FAB holds only this file, so every site runs
# the fedmic it has installed (the ServerApp refuses a site whose version differs).
APP_TOML = FLOWER_APP_HEAD + """ (written by `fedmic flower app`): one ServerApp and one ClientApp for
# every method, imported from the installed fedmic package. Run it with
#   flwr run <this folder> <connection> --stream --run-config 'config="/abs/run.yaml" partition="/abs/p.json" out="/abs/run.json"'
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "fedmic-flower"
version = "{version}"
description = "fedmic on Flower's deployment runtime: every method, bit-identical to the engine"
license = "MIT"
dependencies = ["fedmic[flower]=={version}"]

[tool.flwr.app]
publisher = "fedmic"

[tool.flwr.app.components]
serverapp = "fedmic.flower.server_app:app"
clientapp = "fedmic.flower.client_app:app"

# Paths on the coordinator (fedmic/flower/server_app.py explains each key).
[tool.flwr.app.config]
config = ""
partition = ""
out = ""
data-root = ""
timeout = 3600.0
join-timeout = 600.0
message-timeout = 120.0
site-timeout = 1800.0
wire-counts = ""
"""


def write_app(folder: str | Path) -> Path:
    from ..outputs import FLOWER_APP, check_outputs
    path = Path(folder) / "pyproject.toml"
    check_outputs("flower app", {path: ("--out", FLOWER_APP)}, [])
    atomic_write_text(path, APP_TOML.format(version=__version__))
    return path.parent


def cmd_app(a) -> None:
    print(write_app(a.out))


def cmd_credentials(a) -> None:
    from .credentials import make_node_key, make_tls

    out = Path(a.out)
    for path in make_tls(out, tuple(a.host)).values():
        print(path)
    for i in range(a.nodes):
        for path in make_node_key(out, f"site{i}"):
            print(path)


def cmd_proxy(a) -> None:
    import asyncio

    from .proxy import CountingProxy, parse_address

    asyncio.run(CountingProxy(parse_address(a.listen), parse_address(a.target), a.counts).serve())


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    q = sub.add_parser("app", help="write the Flower app folder (its pyproject.toml) for `flwr run`")
    q.add_argument("--out", required=True, help="folder to write")
    q.set_defaults(func=cmd_app)
    q = sub.add_parser("credentials", help="test-grade TLS certificates and SuperNode keys (use your PKI for real sites)")
    q.add_argument("--out", required=True)
    q.add_argument("--nodes", type=int, default=2, help="SuperNode key pairs to make (site0, site1, ...)")
    q.add_argument("--host", nargs="+", default=["127.0.0.1", "localhost"],
                   help="addresses the SuperLink certificate is valid for (what SuperNodes dial)")
    q.set_defaults(func=cmd_credentials)
    q = sub.add_parser("proxy", help="count the bytes between SuperNodes and the SuperLink")
    q.add_argument("--listen", required=True, help="host:port the SuperNodes dial")
    q.add_argument("--target", required=True, help="host:port of the SuperLink")
    q.add_argument("--counts", required=True, help="JSON file the counts are written to")
    q.set_defaults(func=cmd_proxy)
