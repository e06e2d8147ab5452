"""A run in this process, as `fedmic train` runs it: the round loop (fedmic/simulation/loop.py)
with every client in this process (InProcessClients). The run's code is this module's import
closure (fedmic/grid.py retrains the runs whose code changed)."""
from __future__ import annotations

from pathlib import Path

from .config import RunConfig
from .simulation.clients import InProcessClients
from .simulation.loop import Run, run_rounds


class Simulation(Run):
    """One run: a config, a partition, a method, its clients here. `run()` writes the run JSON
    atomically."""

    def __init__(self, cfg: RunConfig, partition_path: str | Path, data_root: str | None = None):
        super().__init__(cfg, partition_path, data_root, InProcessClients)

    def run(self, out: str | Path, tensorboard: str | Path | None = None,
            replace_stale_checkpoint: bool = False) -> dict:
        return run_rounds(self, out, tensorboard, replace_stale_checkpoint)
