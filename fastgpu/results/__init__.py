"""Run records on disk and everything read from them: metrics files, the report, figures, plots and W&B.

Never imports torch (an import-linter contract in pyproject.toml)."""
