import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# One CPU thread per process, set before torch loads (it reads OMP_NUM_THREADS once) and inherited by every run the
# tests start: three xdist workers on two cores, each run with torch's default two threads spinning, made three
# concurrent default jobs take 171 s instead of 43 s (2026-11-27) and reordered planted step times.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from fastgpu.config import register_schema  # noqa: E402
from fastgpu.sweep.registry import register_sweep_configs  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONF = str(REPO / "fastgpu" / "conf")
IN_CI = os.environ.get("CI") == "true"

register_schema()
register_sweep_configs()


# The files by their time in CI (2026-11-30, pytest --durations), longest first: one file per worker (pyproject's
# `--dist loadfile --no-loadscope-reorder`) then makes the workers finish close together. The Slurm tests lead: their
# waiting on the cluster overlaps the others' work. (Not `--dist loadgroup`: with pytest 9.2 it silently stops
# grouping, pytest-xdist#1386, and the Slurm module's cluster fixture would run on several workers at once.)
LONGEST_FIRST = (
    "test_slurm.py",
    "test_search.py",
    "test_compression.py",
    "test_train.py",
    "test_faults.py",
    "test_isolation.py",
    "test_comparison.py",
    "test_your_model.py",
    "test_search_tools.py",
    "test_sweep.py",
    "test_monitor_and_examples.py",
    "test_parallel.py",
    "test_resume.py",
    "test_layout.py",
    "test_config.py",
    "test_stats.py",
)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: LONGEST_FIRST.index(item.path.name) if item.path.name in LONGEST_FIRST else 99)


# for runs whose test reads neither the exported model nor inference latency: both cost a small run more than training
NO_DEPLOY = ("inference.benchmark=false", "export=[]")

# a run whose memory grows with the batch (3x128x128 inputs) but whose steps are quick: for memory-limit tests
WIDE_MLP = (
    "model=mlp",
    "model.hidden_dims=[64]",
    "data=synthetic",
    "data.image_size=128",
    "data.train_samples=2048",
    "data.val_samples=64",
)


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
def cli_in_process(monkeypatch, capsys):
    """`python -m fastgpu ARGS` run in this process: the same entry point (`fastgpu.__main__.cli`), its exit code,
    stdout and stderr, without an interpreter's start-up (~4 s of CPU for torch and the rest, each). For what a
    command refuses or prints, where the process boundary is not what a test is about."""
    import logging

    from fastgpu.__main__ import cli

    def run(*args, cwd=None, env=None):
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["fastgpu", *args])
        handlers, level = logging.root.handlers[:], logging.root.level
        capsys.readouterr()
        code = 0
        try:
            cli()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:  # Hydra configures logging for each run: leave the test process's as it was
            logging.root.handlers[:] = handlers
            logging.root.setLevel(level)
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(["fastgpu", *args], code, captured.out, captured.err)

    return run


def start_cli(*args, env=None, stderr=subprocess.PIPE):
    """`python -m fastgpu ARGS` started in the background (to watch or signal it); returns the Popen."""
    return subprocess.Popen(
        [sys.executable, "-m", "fastgpu", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


@pytest.fixture
def quiet_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")


def _leet(*args) -> str:
    """`wandb leet inspect ARGS` (wandb's own reader of the .wandb transaction log)."""
    wandb = shutil.which("wandb") or str(Path(sys.executable).with_name("wandb"))
    return subprocess.run([wandb, "leet", "inspect", *args], capture_output=True, text=True, check=True).stdout


def read_offline_run(run_dir) -> dict:
    """{'id', 'name', 'group', 'job_type', 'tags', 'project', 'config', 'summary', 'history'} of one offline run,
    read with wandb's own `wandb leet inspect --json`."""
    state = json.loads(_leet("--summary", "--json", str(run_dir)))
    records = [json.loads(line) for line in _leet("--json", str(run_dir)).splitlines() if line.strip()]
    info = next(r["run"] for r in records if r["type"] == "run")
    history = [
        {k: v for k, v in r["history"]["item"].items() if not k.startswith("_")}
        for r in records
        if r["type"] == "history"
    ]
    return {
        "id": state["run_id"],
        "name": state["name"],
        "group": info.get("run_group", ""),
        "job_type": info.get("job_type", ""),
        "tags": state["tags"],
        "project": state["project"],
        "config": state["config"],
        "summary": state["summary"],
        "history": history,
    }


def offline_runs(root) -> list:
    """Every offline run under `root` (a run dir or a sweep dir), read back."""
    return [read_offline_run(d) for d in sorted(Path(root).rglob("offline-run-*")) if d.is_dir()]
