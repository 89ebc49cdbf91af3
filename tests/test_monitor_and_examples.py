"""Resource monitoring, the ImageNet ResNet-50 example on a generated ImageFolder, the GPU check's CPU fallback."""

import csv
import json
import os
import subprocess
import time

import numpy as np
import pytest
import torch
from conftest import REPO, compose_cfg, offline_runs
from PIL import Image

from fastgpu.job.launch import launch
from fastgpu.measure.monitor import ResourceMonitor
from fastgpu.results.store import read_history


def test_monitor_samples_cpu_and_rss_in_the_background():
    monitor = ResourceMonitor(torch.device("cpu"), interval_s=0.05)
    monitor.start()
    # keep a core busy until the sampler has taken 4 samples (0.2 s on an idle machine; a loaded one takes longer,
    # so the wait is for the samples, not for a fixed time)
    started = time.perf_counter()
    while len(monitor.samples) < 4 and time.perf_counter() - started < 30:
        sum(i * i for i in range(10_000))
    first = monitor.drain()
    summary = monitor.stop()
    assert len(first) >= 4 and monitor.drain() == monitor.samples[len(first) :]
    assert all(s["system/rss_mb"] > 10 for s in first)
    assert summary["mean_cpu_percent"] > 30  # the busy loop shows
    assert summary["monitor_samples"] == len(monitor.samples)
    assert "energy_j" not in summary  # no GPU counter on a CPU


def test_run_records_system_series_in_history_wandb_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_cfg("trainer.epochs=6", "trainer.monitor_interval_s=0.1", "trainer.progress_bar=false")
    metrics = launch(cfg, tmp_path)
    system = [h for h in read_history(tmp_path) if "system/cpu_percent" in h]
    assert len(system) >= 3 and metrics["monitor_samples"] >= len(system)
    assert metrics["mean_cpu_percent"] == pytest.approx(np.mean([h["system/cpu_percent"] for h in system]), rel=0.35)
    (run,) = offline_runs(tmp_path)
    assert sum("system/rss_mb" in h for h in run["history"]) == len(system)
    assert run["summary"]["mean_cpu_percent"] == pytest.approx(metrics["mean_cpu_percent"])


def test_monitor_off_switch(tmp_path, quiet_wandb):
    metrics = launch(
        compose_cfg("trainer.max_steps=30", "trainer.monitor_interval_s=0", "trainer.progress_bar=false"), tmp_path
    )
    assert "mean_cpu_percent" not in metrics
    assert not [h for h in read_history(tmp_path) if "system/cpu_percent" in h]


def _write_imagefolder(root, classes=3, per_class=4, size=48):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)
                pixels[..., c] = 255  # each class its own colour cast
                Image.fromarray(pixels).save(folder / f"img_{i}.jpg")


def test_imagenet_resnet50_example_on_a_tiny_generated_imagefolder(tmp_path, quiet_wandb):
    _write_imagefolder(tmp_path / "imagenet")
    cfg = compose_cfg(
        "+experiment=imagenet_resnet50",
        f"data.root={tmp_path / 'imagenet'}",
        "data.num_classes=3",
        "data.image_size=32",
        "data.batch_size=4",
        "data.eval_batch_size=4",
        "data.num_workers=1",
        "data.prefetch_factor=2",
        "trainer.epochs=2",
        "trainer.warmup_steps=1",
        "trainer.progress_bar=false",
        "inference.benchmark=false",  # training through the example's settings is what is checked here
        "export=[]",
    )
    assert (cfg.model.name, cfg.precision.name, cfg.channels_last, cfg.data.pin_memory) == (
        "resnet50",
        "bf16",
        True,
        True,
    )
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (0.01, 0.9, 1e-4)
    metrics = launch(cfg, tmp_path / "run")
    assert metrics["status"] == "ok" and metrics["steps"] == 2 * (12 // 4)
    for key in ("accuracy", "precision", "recall", "f1"):
        assert 0 <= metrics[key] <= 1


def test_imagefolder_class_count_mismatch_names_the_fix(tmp_path, quiet_wandb):
    _write_imagefolder(tmp_path / "imagenet", classes=2, per_class=2)
    from fastgpu.job.launch import RunFailed

    with pytest.raises(RunFailed, match="set data.num_classes=2"):
        launch(
            compose_cfg("+experiment=imagenet_resnet50", f"data.root={tmp_path / 'imagenet'}", "data.num_workers=0"),
            tmp_path / "run",
        )


@pytest.mark.slow
def test_gpu_check_script_cpu_fallback(tmp_path):
    env = {
        **os.environ,
        "DEVICE": "cpu",
        "RESULTS_DIR": str(tmp_path),
        "SKIP_OVERHEAD": "1",
        "STEPS": "8",
        "WANDB_MODE": "disabled",
    }
    result = subprocess.run(
        ["bash", str(REPO / "experiments" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert {r["name"] for r in rows} == {"small_cnn-fp32", "small_cnn-bf16-cl"}
    assert (tmp_path / "report.md").read_text().count("Recommendation") == 1
    assert (tmp_path / "throughput_vs_memory.png").stat().st_size > 10_000  # synthetic data: no accuracy plot
    verdict = json.loads((tmp_path / "verdict.json").read_text())  # the plain loop ran the same 2 settings
    # the plain loops ran the same settings: 2 image points and 1 GPT point (tokens/s)
    assert verdict["passed"] and len(verdict["rows"]) == 3 and all(r["plain"] > 0 for r in verdict["rows"])
    assert [r["setting"] for r in verdict["rows"]][-1] == "gpt:fp32"
    gpt = json.loads((tmp_path / "sweep_gpt" / "0" / "metrics.json").read_text())
    assert gpt["throughput_unit"] == "tokens" and gpt["status"] == "ok"
    assert {c["check"] for c in verdict["checks"] if not c["enforced"]} >= {"FastGPU / plain >= 0.97"}
    # the default sweep of a module that asks CUDA at import: 4 points (2 ddp), every one from a clean fork
    fork_check = next(c for c in verdict["checks"] if c["check"].startswith("default sweep, model module asks CUDA"))
    assert fork_check["passed"] and fork_check["enforced"], fork_check
    fork_points = [json.loads((tmp_path / "sweep_fork" / str(p) / "metrics.json").read_text()) for p in range(4)]
    assert [m["parallel_requested"] for m in fork_points].count("ddp") == 2
    assert all(m["bad_fork"] is False and m["device"] == "cpu" for m in fork_points)
