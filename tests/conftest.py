import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from fastgpu.config import register_schema

REPO = Path(__file__).resolve().parent.parent
CONF = str(REPO / "conf")
IN_CI = os.environ.get("CI") == "true"

register_schema()


def compose_cfg(*overrides):
    with initialize_config_dir(CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def run_cli(*args, cwd=None, env=None, timeout=600):
    """`python -m fastgpu ARGS` as a user runs it; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "fastgpu", *args],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def quiet_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
