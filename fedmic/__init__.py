"""fedmic: reproducible pipeline for FedMIC, personalised federated distillation for medical images."""
# The one source of the version: pyproject.toml reads it, workflow/envs/fedmic.yaml pins it,
# CITATION.cff and CHANGELOG.md name it (tests/test_packaging.py checks all four agree).
__version__ = "0.2.0"
