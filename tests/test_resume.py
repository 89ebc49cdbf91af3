"""Preemption-safe training: full-state checkpoints, atomic writes, deterministic data order, resume."""

import os
import signal
import time

import pytest
import torch
from conftest import NO_DEPLOY, compose_cfg, offline_runs, run_cli, start_cli

from fastgpu.job.launch import RunFailed, launch
from fastgpu.results.store import read_history, read_metrics
from fastgpu.train.checkpoint import resumable, save_checkpoint
from fastgpu.train.fingerprint import config_fingerprint
from fastgpu.zoo.data import EpochShuffle, ResumableSampler

# slow enough (a 10 ms sleep a step, 220 steps: no CPU spent on it) that a signal lands mid-training
JOB = [
    "trainer.sleep_ms=10",
    "trainer.epochs=10",
    "trainer.log_every_n_steps=10",
    "trainer.checkpoint_every_n_steps=50",
    "trainer.progress_bar=false",
    "trainer.monitor_interval_s=0",
    *NO_DEPLOY,
]


def test_epoch_order_depends_only_on_seed_and_epoch_and_skips_what_was_seen():
    a, b = ResumableSampler(EpochShuffle(100, seed=3)), ResumableSampler(EpochShuffle(100, seed=3))
    a.set_epoch(4)
    full = list(a)
    b.set_epoch(4, skip=30)
    assert list(b) == full[30:] and len(b) == 70
    a.set_epoch(5)
    assert list(a) != full and sorted(list(a)) == list(range(100))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1})

    def crash(obj, f, *a, **k):
        f.write(b"half a file")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"step": 1}


def _start(run_dir, env, *extra):
    return start_cli(*JOB, f"hydra.run.dir={run_dir}", *extra, env=env)


def _wait_for_step(run_dir, step, process, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        history = run_dir / "history.jsonl"
        if history.exists() and any(h.get("step", 0) >= step for h in read_history(run_dir) if "train/loss" in h):
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError("the run never reached the step")


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_result_and_wandb_run(tmp_path):
    """Started with +overwrite=true (the tryout's repro): the resume must not apply it again and restart at 0."""
    env = {"WANDB_MODE": "offline"}
    reference = run_cli(*JOB, f"hydra.run.dir={tmp_path / 'reference'}", env=env)
    assert reference.returncode == 0, reference.stderr
    expected = read_metrics(tmp_path / "reference")

    run_dir = tmp_path / "interrupted"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text('{"status": "ok"}\n')  # a finished run that +overwrite=true replaces
    process = _start(run_dir, env, "+overwrite=true")
    _wait_for_step(run_dir, 60, process)
    process.send_signal(signal.SIGTERM)  # a kill, or what Slurm sends at a time limit / preemption
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "stopped by SIGTERM at step" in stderr and f"+resume={run_dir}" in stderr
    assert "overwrite" not in (run_dir / "config.yaml").read_text()  # what the command asked is not a setting
    interrupted = read_metrics(run_dir)
    assert interrupted["status"] == "interrupted"
    stopped_at = torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"]
    assert 60 <= stopped_at < expected["steps"]

    resumed = run_cli(f"+resume={run_dir}", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run_dir} at step {stopped_at}" in resumed.stderr
    final = read_metrics(run_dir)
    assert final["status"] == "ok" and final["steps"] == expected["steps"]
    for key in ("accuracy", "val_loss", "precision", "recall", "f1", "best_accuracy"):
        assert final[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), key  # same data order, same RNG

    logged = [h["step"] for h in read_history(run_dir) if "train/loss" in h]
    assert logged == [h["step"] for h in read_history(tmp_path / "reference") if "train/loss" in h]  # no duplicates
    runs = offline_runs(run_dir)
    assert len(runs) == 2 and runs[0]["id"] == runs[1]["id"] == final["wandb_run_id"]
    in_wandb = {h["step"] for run in runs for h in run["history"] if "train/loss" in h}
    assert in_wandb == set(logged)  # the whole history, before and after the resume


def test_relaunch_in_the_same_dir_continues_an_unfinished_checkpoint(tmp_path, quiet_wandb):
    """What a requeued job does: the same config in the same dir picks up the saved state by itself."""
    import threading

    cfg = compose_cfg(*JOB)

    def preempt_at_step(step):
        deadline = time.time() + 120
        while time.time() < deadline:
            if (tmp_path / "history.jsonl").exists() and any(h.get("step", 0) >= step for h in read_history(tmp_path)):
                os.kill(os.getpid(), signal.SIGUSR1)
                return
            time.sleep(0.01)

    threading.Thread(target=preempt_at_step, args=(60,), daemon=True).start()
    with pytest.raises(RunFailed, match="stopped by SIGUSR1"):
        launch(cfg, tmp_path)
    assert read_metrics(tmp_path)["status"] == "interrupted"
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert not saved["complete"] and saved["step"] >= 60
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handed back
    other = compose_cfg(*JOB, "optimizer.lr=0.02")  # other settings never continue this state
    assert resumable(tmp_path / "checkpoint.pt", config_fingerprint(cfg))
    assert not resumable(tmp_path / "checkpoint.pt", config_fingerprint(other))

    metrics = launch(cfg, tmp_path)
    assert metrics["status"] == "ok" and metrics["steps"] == 220
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["complete"]


def test_resume_of_a_finished_run_is_refused(tmp_path):
    result = run_cli(f"+resume={tmp_path}")
    assert result.returncode == 2 and "no config.yaml and checkpoint.pt there" in result.stderr


def test_a_signal_during_a_log_step_still_saves_the_state(tmp_path, quiet_wandb, monkeypatch):
    """SIGUSR2 arriving while a log step writes its record: the run saves at that step before it stops."""
    import fastgpu.train.loop

    real_log = fastgpu.train.loop._log

    def log_then_signal(job, p, *args):
        real_log(job, p, *args)
        if p.step == 20:
            os.kill(os.getpid(), signal.SIGUSR2)  # handled at once: the flag is set inside the log step

    monkeypatch.setattr(fastgpu.train.loop, "_log", log_then_signal)
    cfg = compose_cfg("trainer.max_steps=60", "trainer.log_every_n_steps=10", "trainer.progress_bar=false")
    with pytest.raises(RunFailed, match="stopped by SIGUSR2 at step 20"):
        launch(cfg, tmp_path)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 20
