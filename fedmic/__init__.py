"""fedmic: reproducible pipeline for FedMIC, personalised federated distillation for medical images."""
__version__ = "0.1.0"
