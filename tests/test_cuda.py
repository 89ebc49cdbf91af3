"""CUDA paths, run where a GPU exists (experiments/gpu_check.sh runs them); skipped with the reason elsewhere."""

import time

import pytest
import torch
from conftest import compose_cfg

from fastgpu.launch import launch
from fastgpu.metrics import StepClock
from fastgpu.precision import build_precision

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="no CUDA GPU on this machine: CUDA paths are checked by experiments/gpu_check.sh",
    ),
]
TINY = ["trainer.max_steps=30", "trainer.warmup_steps=5", "trainer.progress_bar=false", "trainer.device=cuda"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")


def test_fp16_grad_scaler_skips_an_inf_step_and_lowers_the_scale():
    precision = build_precision(compose_cfg("precision=fp16").precision, torch.device("cuda"))
    scaler = precision.scaler
    model = torch.nn.Linear(8, 2).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    scale = scaler.get_scale()
    with precision.autocast():
        out = model(torch.randn(4, 8, device="cuda"))
        assert out.dtype == torch.float16
        loss = out.float().sum() * float("inf")
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() < scale
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the step was skipped


def test_bf16_autocast_and_tf32_flags():
    device = torch.device("cuda")
    bf16 = build_precision(compose_cfg("precision=bf16").precision, device)
    with bf16.autocast():
        assert (torch.randn(4, 4, device="cuda") @ torch.randn(4, 4, device="cuda")).dtype == torch.bfloat16
    build_precision(compose_cfg("precision=tf32").precision, device)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    build_precision(compose_cfg("precision=fp32").precision, device)
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_step_clock_synchronises_before_reading():
    clock = StepClock(torch.device("cuda"))
    clock.start()
    host_start = time.perf_counter()
    torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU work, enqueued asynchronously
    clock.step()
    host_enqueue = time.perf_counter() - host_start
    (gpu_seconds,) = clock.collect()
    assert gpu_seconds > 0.02 and gpu_seconds > 5 * host_enqueue


@pytest.mark.parametrize(
    "overrides", [["precision=fp16"], ["precision=bf16", "channels_last=true"], ["precision=bf16", "compile=true"]]
)
def test_training_on_cuda_records_device_memory(tmp_path, overrides):
    cfg = compose_cfg(
        "data=synthetic",
        "data.device_resident=true",
        "model=resnet18",
        "trainer.monitor_interval_s=0.2",
        *TINY,
        *overrides,
    )
    metrics = launch(cfg, tmp_path)
    assert metrics["status"] == "ok" and metrics["device"] == "cuda"
    assert 0 < metrics["peak_mem_allocated_mb"] <= metrics["peak_mem_reserved_mb"]
    assert metrics["throughput"] > 0 and metrics["mean_gpu_util_percent"] is not None
    if metrics.get("energy_j") is not None:
        assert metrics["energy_per_sample_j"] > 0


def test_channels_last_weights_stay_channels_last(tmp_path):
    cfg = compose_cfg("data=synthetic", "model=small_cnn", "channels_last=true", *TINY)
    launch(cfg, tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]
    assert state["stem.0.weight"].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP with NCCL needs 2 GPUs")
def test_ddp_nccl_on_all_gpus(tmp_path):
    n = torch.cuda.device_count()
    cfg = compose_cfg("parallel=ddp", f"parallel.nproc_per_node={n}", "data=synthetic", *TINY)
    metrics = launch(cfg, tmp_path)
    assert metrics["world_size"] == n
