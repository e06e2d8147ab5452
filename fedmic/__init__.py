"""fedmic: reproducible pipeline for FedMIC, personalised federated distillation for medical images."""
import os

# OpenMP threads that spin while they wait for work take the cores from the threads doing it: on
# busy cores a 2-thread run trained 10-57x fewer images/s than with threads that sleep
# (docs/performance.md, "Threads"). libgomp reads this once, when torch loads it, so it is set on
# importing fedmic, before any fedmic module imports torch (the command line, the workflow's
# rules and the benchmarks import fedmic first); a value set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The one source of the version: pyproject.toml reads it, workflow/envs/fedmic.yaml pins it,
# CITATION.cff and CHANGELOG.md name it (tests/test_packaging.py checks all four agree).
__version__ = "0.2.0"
