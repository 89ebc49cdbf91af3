"""Sweeps: Hydra callbacks, search sweepers (halving, max_batch, Optuna), Slurm submission and sweep status.

Never imports torch (an import-linter contract in pyproject.toml)."""
