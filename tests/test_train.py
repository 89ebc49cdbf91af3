"""One measured training run: accuracy, precision modes, DDP, compile, recorded numbers, W&B offline."""

import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import NO_DEPLOY, compose_cfg, offline_runs, run_cli

import fastgpu
from fastgpu.job.launch import RunFailed, launch
from fastgpu.results.store import read_history, read_metrics

PACKAGE = Path(fastgpu.__file__).resolve().parent  # FastGPU's own modules, wherever the checkout is


@pytest.mark.slow
def test_default_job_reaches_95_percent_and_records_everything(tmp_path):
    result = run_cli(f"hydra.run.dir={tmp_path}", "trainer.progress_bar=false")
    assert result.returncode == 0, result.stderr
    metrics = read_metrics(tmp_path)
    assert metrics["status"] == "ok"
    assert metrics["accuracy"] >= 0.95
    for key in [
        "throughput",
        "step_time_p50_ms",
        "step_time_p90_ms",
        "data_time_share",
        "epoch_time_s",
        "time_to_target_s",
        "val_loss",
        "precision",
        "recall",
        "f1",
        "peak_rss_mb",
        "params",
        "model_size_mb",
    ]:
        assert metrics[key] is not None and metrics[key] >= 0, key
    assert metrics["step_time_p90_ms"] >= metrics["step_time_p50_ms"] > 0
    assert 0 <= metrics["data_time_share"] < 1
    assert metrics["time_to_target_s"] <= metrics["train_time_s"]
    assert metrics["steps"] == 20 * (1437 // 64)  # 20 epochs of the 80% training split
    assert (tmp_path / ".hydra" / "config.yaml").exists()
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == metrics["steps"] and "stem.0.weight" in checkpoint["model"]

    history = read_history(tmp_path)
    evals = [h for h in history if "val/accuracy" in h]
    assert len(evals) == 20 and evals[-1]["val/accuracy"] == metrics["accuracy"]
    train_losses = [h["train/loss"] for h in history if "train/loss" in h]
    assert train_losses[-1] < train_losses[0] / 5  # it learns

    assert "val accuracy" in result.stdout and "throughput (samples/s)" in result.stdout  # the summary table
    # the way to the first step, phase by phase; nothing deployed unless asked (deploy=auto, no compression)
    phases = [metrics[f"startup_{p}_s"] for p in ("imports", "composition", "setup", "build", "first_step")]
    assert all(t >= 0 for t in phases) and sum(phases) == pytest.approx(metrics["time_to_first_step_s"], abs=0.02)
    assert metrics["startup_imports_s"] > 0.2  # torch and FastGPU, in this fresh process
    assert "deploy=true" in metrics["deploy_note"] and not (tmp_path / "model.pt2").exists()
    assert "latency_batch_ms_after" not in metrics and "export_s" not in metrics

    # W&B offline: a real run directory whose summary holds the same numbers as metrics.json
    (run,) = offline_runs(tmp_path)
    assert run["name"] == "small_cnn-fp32" and run["job_type"] == "train" and run["project"] == "fastgpu"
    assert run["config"]["precision"] == {"name": "fp32", "fallback": None}
    for key, value in metrics.items():
        if value is not None:
            assert run["summary"][key] == pytest.approx(value), key
    assert run["summary"]["val/accuracy"]["max"] == pytest.approx(metrics["best_accuracy"])
    assert len([h for h in run["history"] if "train/loss" in h]) == len(train_losses)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cpu_precisions_train(tmp_path, quiet_wandb, precision):
    cfg = compose_cfg(
        f"precision={precision}",
        "trainer.epochs=3",
        "trainer.progress_bar=false",
        "trainer.checkpoint=false",
        *NO_DEPLOY,
    )
    metrics = launch(cfg, tmp_path)
    assert metrics["precision_mode"] == precision
    assert metrics["accuracy"] >= 0.90


@pytest.mark.slow
def test_fp16_fallback_is_explicit_and_recorded(tmp_path, quiet_wandb):
    if torch.cuda.is_available():
        pytest.skip("fp16 runs natively on CUDA")
    cfg = compose_cfg(
        "precision=fp16", "precision.fallback=bf16", "trainer.max_steps=10", "trainer.progress_bar=false", *NO_DEPLOY
    )
    metrics = launch(cfg, tmp_path)
    assert metrics["precision_mode"] == "bf16"


def test_nan_loss_fails_the_run_as_diverged(tmp_path, quiet_wandb):
    cfg = compose_cfg(
        "optimizer.lr=1e12",
        "trainer.max_steps=60",
        "trainer.log_every_n_steps=10",
        "trainer.progress_bar=false",
        *NO_DEPLOY,
    )
    with pytest.raises(RunFailed) as failure:
        launch(cfg, tmp_path)
    record = read_metrics(tmp_path)
    assert record["status"] == "diverged" == failure.value.record["status"]
    assert "lower optimizer.lr" in record["error"]


def test_the_running_loss_sum_keeps_a_steps_loss_after_a_million_steps():
    from fastgpu.train.loop import running_loss_sum

    total = running_loss_sum(2.3456 * 10**6, torch.device("cpu"))  # 10^6 steps of loss ~2.35 so far
    before = float(total)
    total += torch.tensor(2.3456, dtype=torch.float32)  # one step's loss, as backward_step returns it
    assert float(total) - before == pytest.approx(2.3456, abs=1e-6)
    as_float32 = torch.tensor(2.3456 * 10**6) + torch.tensor(2.3456)
    assert abs(float(as_float32) - float(torch.tensor(2.3456 * 10**6)) - 2.3456) > 0.01  # what float32 kept


def test_values_leave_the_device_only_at_log_steps(tmp_path, quiet_wandb, monkeypatch):
    """The hot loop never reads a tensor per step: count FastGPU's own tensor->Python reads during a run."""
    reads = []
    for name in ("item", "__float__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counting(self, *a, _original=original, **k):
            caller = sys._getframe(1).f_code.co_filename
            # the sampler's one tolist() per epoch (fastgpu/zoo/data.py) is what any DataLoader shuffle does
            if PACKAGE in Path(caller).resolve().parents and Path(caller).name != "data.py":
                reads.append(caller)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counting)
    steps, every = 200, 50
    cfg = compose_cfg(
        f"trainer.max_steps={steps}",
        f"trainer.log_every_n_steps={every}",
        "trainer.eval_every_n_epochs=100",
        "trainer.progress_bar=false",
        "trainer.checkpoint=false",
        *NO_DEPLOY,
    )
    launch(cfg, tmp_path)
    log_points = steps // every + 1
    # one read per log step, ~6 for the final evaluation, 3 for end-of-run percentiles; never one per step
    assert 0 < len(reads) <= log_points + 12, reads


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path):
    result = run_cli(
        "parallel=ddp",
        "parallel.nproc_per_node=2",
        f"hydra.run.dir={tmp_path}",
        "trainer.progress_bar=false",
        *NO_DEPLOY,
    )
    assert result.returncode == 0, result.stderr
    metrics = read_metrics(tmp_path)
    assert metrics["world_size"] == 2 and metrics["global_batch_size"] == 128
    assert metrics["parallel"] == "ddp" and metrics["rank_param_max_diff"] == 0  # really wrapped, replicas equal
    assert metrics["steps"] == 20 * ((1437 // 2) // 64)  # each rank saw half the data
    assert metrics["accuracy"] >= 0.95  # the single-process band
    assert len(list(tmp_path.rglob("metrics.json"))) == 1
    assert len(offline_runs(tmp_path)) == 1


@pytest.mark.slow
def test_fsdp_trains(tmp_path, quiet_wandb):
    cfg = compose_cfg(
        "parallel=fsdp", "parallel.nproc_per_node=2", "trainer.epochs=5", "trainer.progress_bar=false", *NO_DEPLOY
    )
    metrics = launch(cfg, tmp_path)
    assert metrics["world_size"] == 2 and metrics["parallel"] == "fsdp" and metrics["accuracy"] >= 0.9
    assert "stem.0.weight" in torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]


@pytest.mark.slow
def test_compile_first_step_loss_equals_eager(tmp_path, quiet_wandb):
    losses = {}
    for compiled in (False, True):
        cfg = compose_cfg(
            f"compile={str(compiled).lower()}",
            "trainer.max_steps=3",
            "trainer.progress_bar=false",
            "trainer.checkpoint=false",
            *NO_DEPLOY,
        )
        out = tmp_path / str(compiled)
        metrics = launch(cfg, out)
        assert metrics["compile"] is compiled
        losses[compiled] = read_history(out)[0]["train/loss"]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    assert math.isfinite(losses[True])


@pytest.mark.slow
def test_synthetic_imagenet_shapes_and_channels_last(tmp_path, quiet_wandb):
    cfg = compose_cfg(
        "data=synthetic",
        "data.image_size=64",
        "data.train_samples=64",
        "data.val_samples=32",
        "data.batch_size=16",
        "data.num_classes=5",
        "model=resnet18",
        "channels_last=true",
        "trainer.epochs=1",
        "trainer.warmup_steps=1",
        "trainer.progress_bar=false",
        *NO_DEPLOY,  # export and latency of resnet18 are tested elsewhere; shapes here
    )
    metrics = launch(cfg, tmp_path)
    assert metrics["steps"] == 4 and metrics["timed_steps"] == 3 and metrics["channels_last"] is True
    assert 0 <= metrics["accuracy"] <= 1
