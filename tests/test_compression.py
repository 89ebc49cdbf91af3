"""Compression options, export and re-load, before/after numbers, the compression sweep report."""

import csv
import subprocess
import sys

import pytest
import torch
from conftest import compose_cfg, run_cli

from fastgpu.compress.evaluate import evaluate_run
from fastgpu.job.launch import RunFailed, launch
from fastgpu.results.store import read_metrics
from fastgpu.zoo.data import build_data
from fastgpu.zoo.models import build_model

BASE = ["trainer.epochs=6", "trainer.progress_bar=false", "inference.repeats=5"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run per option, shared by the tests below (WANDB off)."""
    import os

    os.environ["WANDB_MODE"] = "disabled"
    out = {}
    root = tmp_path_factory.mktemp("compression")
    for option in ["none", "prune", "quantize_dynamic", "quantize_static", "qat", "prune_structured"]:
        launch(compose_cfg(f"compression={option}", "deploy=true", *BASE), root / option)  # none: the reference
        out[option] = (root / option, read_metrics(root / option))
    os.environ.pop("WANDB_MODE")
    return out


def test_prune_half_keeps_accuracy_and_reaches_the_sparsity(runs):
    _, none = runs["none"]
    _, pruned = runs["prune"]
    assert abs(pruned["sparsity"] - 0.5) <= 0.01
    assert pruned["accuracy"] >= none["accuracy"] - 0.02
    assert pruned["nonzero_params_after"] < 0.6 * pruned["nonzero_params_before"]


@pytest.mark.parametrize("option", ["quantize_dynamic", "quantize_static", "qat"])
def test_int8_weights_are_smaller_accuracy_holds_and_reload_reproduces_it(runs, option):
    run_dir, metrics = runs[option]
    assert metrics["compressed_device"] == "cpu"
    assert metrics["quantized_weight_ratio"] >= 3.5
    assert metrics["accuracy"] >= metrics["accuracy_before"] - 0.02
    assert evaluate_run(run_dir)["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)
    for key in ("latency_b1_ms_before", "latency_b1_ms_after", "latency_batch_ms_after", "serialized_bytes_after"):
        assert metrics[key] > 0


def test_static_int8_export_is_smaller_than_fp32(runs):
    _, metrics = runs["quantize_static"]
    assert metrics["serialized_bytes_after"] < 0.6 * metrics["serialized_bytes_before"]


def test_structured_pruning_removes_channels_physically(runs):
    _, metrics = runs["prune_structured"]
    assert metrics["structured_speedup"] == "physical"
    assert metrics["params_after"] < 0.7 * metrics["params_before"]
    assert metrics["serialized_bytes_after"] < metrics["serialized_bytes_before"]
    assert metrics["accuracy"] >= 0.9


def test_compression_none_measures_once(runs):
    _, metrics = runs["none"]
    assert metrics["accuracy_after"] == metrics["accuracy_before"] == metrics["accuracy"]
    assert metrics["latency_ratio"] == 1.0 and metrics["inference_throughput_after"] > 0


@pytest.mark.parametrize("option", ["none", "prune"])
def test_exported_model_loads_without_fastgpu_and_predicts_like_the_model(runs, tmp_path, option):
    run_dir, _ = runs[option]
    cfg = compose_cfg(*BASE)
    batch = next(iter(build_data(cfg.data, 0).val))[0][:32]
    torch.save(batch, tmp_path / "batch.pt")
    script = (
        "import sys, torch\n"
        f"program = torch.export.load({str(run_dir / 'model.pt2')!r})\n"
        f"logits = program.module()(torch.load({str(tmp_path / 'batch.pt')!r}))\n"
        f"torch.save(logits, {str(tmp_path / 'logits.pt')!r})\n"
        "assert 'fastgpu' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    model = build_model(cfg.model)
    model.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"])
    if option == "prune":  # the checkpoint is the trained model; the export is the pruned, fine-tuned one
        exported_logits = torch.load(tmp_path / "logits.pt")
        assert exported_logits.shape == (32, 10) and torch.isfinite(exported_logits).all()
        return
    with torch.no_grad():
        expected = model.eval()(batch)
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, rtol=1e-4, atol=1e-5)


def test_gradual_pruning_reaches_the_target_during_training(tmp_path, quiet_wandb):
    cfg = compose_cfg(
        "compression=prune", "compression.schedule=gradual", "compression.amount=0.6", "compression.frequency=5", *BASE
    )
    metrics = launch(cfg, tmp_path)
    assert abs(metrics["sparsity"] - 0.6) <= 0.01 and metrics["accuracy"] >= 0.9


def test_sparse24_on_cpu_is_one_clear_error(tmp_path, quiet_wandb):
    if torch.cuda.is_available():
        pytest.skip("runs on CUDA")
    with pytest.raises(RunFailed, match="needs a CUDA GPU"):
        launch(compose_cfg("compression=sparse24", "trainer.max_steps=5", "trainer.progress_bar=false"), tmp_path)
    metrics = read_metrics(tmp_path)
    assert metrics["status"] == "failed" and metrics["throughput"] > 0  # the training results were kept


def test_compression_sweep_report_has_before_after_columns(tmp_path):
    sweep_dir = tmp_path / "s"
    result = run_cli(
        "-m",
        "compression=none,prune,quantize_dynamic,quantize_static",
        "trainer.epochs=3",
        "trainer.progress_bar=false",
        "inference.repeats=3",
        f"hydra.sweep.dir={sweep_dir}",
        env={"WANDB_MODE": "disabled"},
    )
    assert result.returncode == 0, result.stderr
    with open(sweep_dir / "results.csv") as f:
        rows = {r["compression"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"none", "prune", "quantize_dynamic", "quantize_static"}
    for name, row in rows.items():
        for key in (
            "accuracy_before",
            "accuracy_after",
            "serialized_bytes_before",
            "serialized_bytes_after",
            "latency_batch_ms_before",
            "latency_batch_ms_after",
        ):
            assert float(row[key]) > 0, (name, key)
    assert rows["none"]["baseline"] == "True"
    assert float(rows["quantize_static"]["quantized_weight_ratio"]) >= 3.5
    report = (sweep_dir / "report.md").read_text()
    assert "acc before" in report and "size ratio" in report and "latency ratio" in report
    assert "latency ms" in report and " samples/s " not in report  # compression changes inference, not training


def test_unsharing_activations_keeps_the_function():
    import torchvision

    from fastgpu.compress.quantize import unshare_activations
    from fastgpu.zoo.models import SmallCNN

    for model in (SmallCNN(1, 10), torchvision.models.resnet18(num_classes=10)):
        x = torch.randn(2, *((1, 8, 8) if isinstance(model, SmallCNN) else (3, 32, 32)))
        expected = model.eval()(x)
        torch.testing.assert_close(unshare_activations(model)(x), expected)


def test_onnx_export_runs_like_the_model(tmp_path, quiet_wandb):
    import numpy as np
    import onnx
    from onnx.reference import ReferenceEvaluator

    metrics = launch(
        compose_cfg(
            "deploy=true",
            "export=[torch_export,onnx]",
            "trainer.epochs=2",
            "trainer.progress_bar=false",
            "inference.benchmark=false",
        ),
        tmp_path,
    )
    assert metrics["onnx_file"] == "model.onnx" and "onnx_error" not in metrics
    onnx.checker.check_model(str(tmp_path / "model.onnx"))
    cfg = compose_cfg()
    batch = next(iter(build_data(cfg.data, 0).val))[0][:3]
    (logits,) = ReferenceEvaluator(str(tmp_path / "model.onnx")).run(None, {"x": batch.numpy()})
    expected = torch.export.load(str(tmp_path / "model.pt2")).module()(batch).detach().numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-3, atol=1e-4)
