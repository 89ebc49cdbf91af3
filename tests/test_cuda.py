"""CUDA paths, run where a GPU exists (experiments/gpu_check.sh runs them); skipped with the reason elsewhere."""

import time

import pytest
import torch
from conftest import compose_cfg

from fastgpu.job.launch import launch
from fastgpu.measure.clock import StepClock
from fastgpu.train.precision import build_precision

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
    torch.cuda._sleep(100_000_000)  # GPU work before the batch is ready: counts as data time
    clock.ready()
    torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU work, enqueued asynchronously
    clock.step()
    host_enqueue = time.perf_counter() - host_start
    (gpu_seconds,), (data_seconds,) = clock.collect()
    assert gpu_seconds > 0.02 and gpu_seconds > 5 * host_enqueue
    assert 0.2 < data_seconds / gpu_seconds < 0.45  # a third of the step was before the ready mark


RESIDENT = ["data=synthetic", "data.device_resident=true", "data.batch_size=256", "model=resnet18"]


@pytest.mark.parametrize(
    "overrides", [["precision=fp16"], ["precision=bf16", "channels_last=true"], ["precision=bf16", "compile=true"]]
)
def test_training_on_cuda_records_device_memory_and_steady_windows(tmp_path, overrides):
    cfg = compose_cfg(
        *RESIDENT, "trainer.monitor_interval_s=0.05", *TINY, "trainer.max_steps=150", "deploy=true", *overrides
    )
    metrics = launch(cfg, tmp_path)
    assert metrics["status"] == "ok" and metrics["device"] == "cuda"
    assert 0 < metrics["peak_mem_allocated_mb"] <= metrics["peak_mem_reserved_mb"]
    assert metrics["throughput"] > 0
    # the steady window holds only training steps: the GPU is busy there (compilation is in warm-up)
    assert metrics["mean_gpu_util_percent"] >= 50
    assert metrics["data_time_share"] < 0.05  # the data is on the GPU
    if metrics.get("energy_j") is not None:
        assert 0 < metrics["energy_per_sample_j"] and metrics["warmup_energy_j"] > 0
    assert "export_error" not in metrics and (tmp_path / "model.pt2").exists()  # batch norm exports on CUDA


@pytest.mark.parametrize(
    "overrides", [["precision=fp32"], ["precision=bf16", "channels_last=true"], ["precision=fp16"]]
)
def test_the_hot_loop_never_waits_for_the_gpu(tmp_path, overrides):
    """torch.cuda.set_sync_debug_mode("error") over the steady steps (log steps and fp16's GradScaler
    step excepted): any host-device sync in the loop, the loader or the step raises."""
    cfg = compose_cfg(*RESIDENT, "trainer.sync_debug=error", "trainer.log_every_n_steps=20", *TINY, *overrides)
    metrics = launch(cfg, tmp_path)
    assert metrics["status"] == "ok" and metrics["timed_steps"] == 25


def test_a_slow_loader_reads_as_data_time_on_the_gpu_timeline(tmp_path, monkeypatch):
    import fastgpu.zoo.data

    real = fastgpu.zoo.data.DATASETS["synthetic"]

    class Slow(torch.utils.data.Dataset):
        def __init__(self, tensors):
            self.tensors = tensors

        def __len__(self):
            return len(self.tensors[1])

        def __getitem__(self, i):
            time.sleep(0.001)
            return self.tensors[0][i], self.tensors[1][i]

    monkeypatch.setitem(
        fastgpu.zoo.data.DATASETS, "synthetic", lambda cfg, seed: tuple(Slow(d.tensors) for d in real(cfg, seed))
    )
    cfg = compose_cfg("data=synthetic", "data.batch_size=64", "model=small_cnn", *TINY)
    metrics = launch(cfg, tmp_path)
    assert metrics["data_time_share"] > 0.5  # 64 ms of loading per batch against a ~1 ms GPU step


def test_sparse24_converts_the_eligible_layers_in_the_runs_precision(tmp_path):
    cfg = compose_cfg("model=mlp", "compression=sparse24", "precision=bf16", *TINY)
    metrics = launch(cfg, tmp_path)
    assert metrics["sparse24_layers"] == 2 and metrics["sparse24_flops_share"] > 0.9
    assert metrics["precision_mode"] == "bf16" and metrics["latency_batch_ms_after"] > 0
    assert metrics["sparsity"] == pytest.approx(0.5 * metrics["sparse24_flops_share"], abs=0.1)


def test_int8_before_and_after_are_measured_on_the_cpu_it_deploys_to(tmp_path):
    metrics = launch(compose_cfg("compression=quantize_static", *TINY), tmp_path)
    assert metrics["device"] == "cuda" and metrics["deploy_device"] == "cpu"
    assert metrics["latency_batch_ms_before"] > 0 and metrics["latency_batch_ms_after"] > 0


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
    assert metrics["world_size"] == n and metrics["parallel"] == "ddp"
    assert metrics["rank_param_max_diff"] == 0


def test_the_levers_on_cuda_fused_accumulation_and_checkpointing_stay_sync_free_and_mfu_is_measured(tmp_path):
    levers = [
        "optimizer.impl=fused",
        "trainer.accumulate_grad_batches=2",
        "model=resnet18",
        "model.activation_checkpointing=true",
        "data=synthetic",
        "data.device_resident=true",
        "trainer.sync_debug=error",
        "precision=bf16",
        "channels_last=true",
    ]
    metrics = launch(compose_cfg(*TINY, *levers), tmp_path)
    assert metrics["status"] == "ok" and metrics["optimizer_impl"] == "fused" and metrics["cudnn_benchmark"] is True
    assert metrics["flops_per_sample"] > 0 and metrics["achieved_tflops"] > 0
    name = torch.cuda.get_device_name()
    if any(gpu in name for gpu in ("H100", "H200", "A100", "L40S", "L4")):
        assert 0 < metrics["mfu"] < 1
    else:
        assert metrics["mfu"] is None and name in metrics["mfu_unavailable"]


def test_a_cuda_profile_names_kernels_by_device_time(tmp_path):
    metrics = launch(
        compose_cfg(
            *TINY,
            "trainer.profile=true",
            "trainer.profile_steps=3",
            "model=resnet18",
            "data=synthetic",
            "data.device_resident=true",
        ),
        tmp_path,
    )
    assert (tmp_path / "profile" / "trace.json").stat().st_size > 0
    assert metrics["profile_top_ops"] and all(op["time_ms"] > 0 for op in metrics["profile_top_ops"])


def test_the_memory_limit_makes_a_large_batch_an_oom_point(tmp_path):
    from fastgpu.job.launch import RunFailed

    overrides = [
        "model=resnet50",
        "data=synthetic",
        "data.image_size=224",
        "data.device_resident=true",
        "data.batch_size=256",
        "data.train_samples=512",
        "trainer.memory_limit_mb=2000",
    ]
    with pytest.raises(RunFailed) as failed:
        launch(compose_cfg(*TINY, *overrides), tmp_path)
    assert failed.value.record["status"] == "oom"


def test_fp8_trains_where_the_gpu_has_float8_and_is_one_line_where_not(tmp_path):
    from fastgpu.errors import FastGPUError

    major, minor = torch.cuda.get_device_capability()
    cfg = compose_cfg(
        *TINY,
        "precision=fp8",
        "model=mlp",
        "model.hidden_dims=[256,256]",
        "data=synthetic",
        "data.image_size=16",
        "data.num_classes=16",
        "data.device_resident=true",
    )
    if (major, minor) < (8, 9):
        with pytest.raises(FastGPUError, match="precision=fp8 needs an sm_89"):
            build_precision(cfg.precision, torch.device("cuda"))
        return
    metrics = launch(cfg, tmp_path)
    assert metrics["status"] == "ok" and metrics["precision_mode"] == "fp8"
