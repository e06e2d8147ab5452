"""Where the MedMNIST files live when no folder is named: the one rule the command line, the
workflow, the Makefile and the tests share. Imports nothing heavy (the workflow reads it
while it parses, the Makefile runs it with the system Python): `python -m fedmic.dataroot`
prints the folder."""

from __future__ import annotations

import os
from pathlib import Path

ENV_ROOT = "FEDMIC_MEDMNIST_ROOT"
HOME_ROOT = "~/.medmnist"
# beside a checkout: one copy of the files for every clone on a machine
SHARED_ROOT = Path("shared", "data", "medmnist")


def source_checkout() -> Path | None:
    """The source tree this fedmic is imported from; None for an installed package."""
    top = Path(__file__).resolve().parent.parent
    return top if (top / "pyproject.toml").is_file() else None


def default_root(checkout: str | os.PathLike | None = None) -> Path:
    """$FEDMIC_MEDMNIST_ROOT when set; else ../shared/data/medmnist beside `checkout` (default:
    fedmic's own source tree) when that folder exists; else ~/.medmnist, where missing files
    are downloaded."""
    if env := os.environ.get(ENV_ROOT):
        return Path(env).expanduser()
    top = Path(checkout) if checkout is not None else source_checkout()
    if top is not None and (shared := top.resolve().parent / SHARED_ROOT).is_dir():
        return shared
    return Path(HOME_ROOT).expanduser()


def shown(path: Path) -> str:
    """`path` as a message names it: ~/.medmnist rather than the home folder spelled out."""
    return HOME_ROOT if path == Path(HOME_ROOT).expanduser() else str(path)


if __name__ == "__main__":
    print(default_root())
