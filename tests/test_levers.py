"""The expert speed levers (issue 14): each changes what it says it changes, and MFU/profiler report true things."""

import contextlib
import json
import sys

import pytest
import torch
from conftest import WIDE_MLP, _leet, compose_cfg, run_cli
from omegaconf import OmegaConf

from fastgpu.errors import FastGPUError
from fastgpu.job.launch import launch
from fastgpu.job.run import cudnn_benchmark
from fastgpu.measure.flops import mfu_figures, peak_tflops, training_flops_per_sample
from fastgpu.results.store import read_metrics
from fastgpu.train.optim import build_optimizer, optimizer_impl
from fastgpu.train.precision import build_precision
from fastgpu.train.step import backward_step, optimizer_step
from fastgpu.zoo.models import Checkpointed, build_model

QUICK = ("trainer.progress_bar=false", "logger.wandb.mode=disabled", "inference.benchmark=false", "export=[]")


def _ops_of_one_step(optimizer, model) -> set:
    model(torch.randn(4, 8)).sum().backward()
    with torch.profiler.profile() as prof:
        optimizer.step()
    return {event.key for event in prof.key_averages()}


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_optimizer_impl_runs_the_kernel_it_names(name):
    cfg = compose_cfg(f"optimizer={name}").optimizer
    fused_op = {"sgd": "aten::_fused_sgd_", "adamw": "aten::_fused_adamw_"}[name]
    for impl in ("fused", "foreach", "loop"):
        model = torch.nn.Linear(8, 8)
        cfg.impl = impl
        optimizer = build_optimizer(cfg, model.parameters())
        ops = _ops_of_one_step(optimizer, model)
        assert (fused_op in ops) == (impl == "fused"), (impl, ops)
        assert any(op.startswith("aten::_foreach_") for op in ops) == (
            impl == "foreach" or name == "adamw" and impl == "fused"
        ), (impl, ops)
        assert optimizer_impl(optimizer) == impl
    cfg.impl = "auto"
    assert optimizer_impl(build_optimizer(cfg, torch.nn.Linear(8, 8).parameters())) == "loop"  # torch's CPU default
    cfg.impl = "fast"
    with pytest.raises(FastGPUError, match="optimizer.impl='fast' is not known; use one of auto, foreach, fused"):
        build_optimizer(cfg, torch.nn.Linear(8, 8).parameters())


def _mlp_grads(batches, accumulate):
    torch.manual_seed(0)
    model = build_model(compose_cfg("model=mlp").model)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for x, y in batches:
        backward_step(model, x, y, scaler, contextlib.nullcontext, accumulate)
    return [p.grad.clone() for p in model.parameters()], model


def test_accumulated_gradients_equal_the_big_batch():
    torch.manual_seed(1)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    big, _ = _mlp_grads([(x, y)], accumulate=1)
    accumulated, model = _mlp_grads([(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)], accumulate=4)
    for a, b in zip(big, accumulated):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert max(float(g.abs().max()) for g in big) > 1e-3  # the comparison is of real gradients
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer_step(optimizer, torch.amp.GradScaler("cpu", enabled=False))
    assert all(p.grad is None for p in model.parameters())  # cleared for the next accumulation


def test_accumulation_counts_optimizer_steps_and_every_sample(tmp_path):
    overrides = ("trainer.max_steps=8", "trainer.warmup_steps=2", "trainer.log_every_n_steps=4", "data.batch_size=32")
    cfg = compose_cfg("trainer.accumulate_grad_batches=3", *overrides, *QUICK)
    metrics = launch(cfg, tmp_path / "acc3")
    assert metrics["status"] == "ok" and metrics["steps"] == 8
    assert metrics["accumulate_grad_batches"] == 3 and metrics["global_batch_size"] == 96
    # warm-up counts optimizer steps, like max_steps: 2 of them are 6 loader batches
    assert metrics["timed_steps"] == 8 * 3 - 2 * 3 and metrics["warmup_steps"] == 2 * 3
    assert metrics["timed_samples"] == (8 * 3 - 2 * 3) * 32
    # each epoch of 1,437 digits is 44 batches of 32: 14 updates of 3, the last 2 batches left out
    cfg = compose_cfg("trainer.accumulate_grad_batches=3", "trainer.epochs=2", "data.batch_size=32", *QUICK)
    long = launch(cfg, tmp_path / "epochs")
    assert long["steps"] == 2 * 14 and long["epochs"] == 2


def test_accumulation_larger_than_the_data_is_one_line(tmp_path):
    cfg = compose_cfg("trainer.accumulate_grad_batches=100", "data.batch_size=64", *QUICK)
    with pytest.raises(Exception, match="accumulate_grad_batches=100 is larger than the training set"):
        launch(cfg, tmp_path)


def _saved_bytes(model, x) -> int:
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum().backward()
    return sum(saved)


def test_activation_checkpointing_keeps_less_for_backward_and_the_same_gradients():
    data = ("data=synthetic", "data.image_size=32", "data.channels=3")
    grads, saved = {}, {}
    for on in (False, True):
        torch.manual_seed(0)
        model = build_model(compose_cfg("model=resnet18", f"model.activation_checkpointing={on}", *data).model)
        assert any(isinstance(m, Checkpointed) for m in model.modules()) == on
        torch.manual_seed(1)
        saved[on] = _saved_bytes(model, torch.randn(8, 3, 32, 32))
        grads[on] = [p.grad for p in model.parameters()]
    assert saved[True] < saved[False] / 3, saved  # only the blocks' inputs are kept
    for a, b in zip(grads[False], grads[True]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(
        FastGPUError, match="activation_checkpointing=true wraps repeated blocks .* this Sequential has none"
    ):
        build_model(compose_cfg("model=mlp", "model.activation_checkpointing=true", *data).model)


def test_repeated_blocks_see_through_checkpointing_and_a_tied_weight_stays_with_the_root():
    from fastgpu.train.parallel import _without_shared_parameters
    from fastgpu.zoo.models import checkpoint_blocks, repeated_blocks

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

    stack = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ModuleList(Layer() for _ in range(3)))
    before = [index for _, index in repeated_blocks(stack)]
    checkpoint_blocks(stack)
    assert before == [index for _, index in repeated_blocks(stack)] == [0, 1, 2]  # the same 3 layers, now wrapped
    assert all(isinstance(container[i], Checkpointed) for container, i in repeated_blocks(stack))
    gpt = build_model(compose_cfg("model=gpt", "data=text", "task=language_model", "model.n_layer=3").model)
    assert [c[i] for c, i in repeated_blocks(gpt)] == list(gpt.blocks)  # named by the model (block_stack)
    checkpoint_blocks(gpt)
    assert [c[i].block for c, i in repeated_blocks(gpt)] == [b.block for b in gpt.blocks]
    units = _without_shared_parameters(list(gpt.children()))  # FSDP per=children: each child its own unit
    assert gpt.wte not in units and gpt.lm_head not in units and gpt.blocks in units  # the tied pair: the root's


LLM_TINY = (
    "model.n_layer=2",
    "model.n_embd=32",
    "model.n_head=2",
    "data.block_size=32",
    "trainer.max_steps=3",
    "trainer.warmup_steps=1",
    "trainer.checkpoint=false",
    *QUICK,
)


@pytest.mark.slow
def test_every_llm_speedups_point_trains_on_this_machine_or_is_one_line(tmp_path):
    """The 24 points of +experiment=llm_speedups at a tiny size: those this CPU can run train 3 steps (activation
    checkpointing with compile included); a lever it lacks (fp8, cuDNN attention) is one line naming the fix."""
    from itertools import product

    from fastgpu.job.launch import RunFailed

    if torch.cuda.is_available():
        pytest.skip("which of these levers run depends on the GPU: experiments/gpu_check.sh runs them there")
    trained, refused = [], []
    for i, (precision, compiled, attention, ac) in enumerate(
        product(("bf16", "fp8"), (False, True), ("auto", "flash", "cudnn"), (False, True))
    ):
        point = (
            f"precision={precision}",
            f"compile={compiled}",
            f"model.attention={attention}",
            f"model.activation_checkpointing={ac}",
        )
        cfg = compose_cfg("+experiment=llm_speedups", *LLM_TINY, *point)
        try:
            launch(cfg, tmp_path / str(i))
        except RunFailed as exc:
            assert "\n" not in str(exc) and "use " in str(exc), exc
            refused.append((point, str(exc)))
            continue
        metrics = read_metrics(tmp_path / str(i))
        assert metrics["status"] == "ok" and metrics["activation_checkpointing"] == ac, point
        trained.append(point)
    assert len(trained) == 8 and all("precision=bf16" in p and "model.attention=cudnn" not in p for p in trained)
    assert all("fp8" in e or "attention=cudnn" in e for _, e in refused) and len(refused) == 16


def test_flop_count_of_a_known_mlp_equals_the_hand_count():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    forward = 2 * (64 * 256 + 256 * 10)
    weight_grads = forward
    input_grads = 2 * 256 * 10  # the first layer's input needs no gradient
    assert training_flops_per_sample(model, torch.empty(2, 1, 8, 8)) == forward + weight_grads + input_grads
    assert model[1].weight.device.type == "cpu" and model[1].weight.grad is None  # counted on a meta copy


def test_flops_leave_out_recomputation_and_a_model_that_cannot_be_counted_costs_only_the_figure():
    from fastgpu.measure.flops import counted_flops_per_sample
    from fastgpu.zoo.models import build_model

    plain = build_model(compose_cfg().model)
    checkpointed = build_model(compose_cfg("model.activation_checkpointing=true").model)
    assert training_flops_per_sample(checkpointed, torch.empty(2, 1, 8, 8)) == training_flops_per_sample(
        plain, torch.empty(2, 1, 8, 8)
    )

    class DataDependent(torch.nn.Module):  # .item() has no meaning on the meta device
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(64, 10)

        def forward(self, x):
            return self.linear(x.flatten(1)) * x.abs().max().item()

    flops, why = counted_flops_per_sample(DataDependent(), torch.empty(2, 1, 8, 8))
    assert flops is None and why.startswith("FLOPs not counted: ")
    out = mfu_figures(flops, "samples", 100.0, "cuda", "NVIDIA H100 80GB HBM3", "bf16", 1, why)
    assert out["mfu"] is None and out["mfu_unavailable"] == why


def test_mfu_against_the_peak_table():
    flops, throughput = 24.3e9, 7000.0
    h100 = mfu_figures(flops, "samples", throughput, "cuda", "NVIDIA H100 80GB HBM3", "bf16", world_size=1)
    assert h100["achieved_tflops"] == pytest.approx(flops * throughput / 1e12)
    assert h100["mfu"] == pytest.approx(flops * throughput / 989.4e12)
    two = mfu_figures(flops, "samples", 2 * throughput, "cuda", "NVIDIA H100 80GB HBM3", "bf16", world_size=2)
    assert two["mfu"] == pytest.approx(h100["mfu"])  # twice the samples on twice the GPUs
    assert peak_tflops("NVIDIA L40S", "bf16")[0] == 362.1 and peak_tflops("NVIDIA L4", "bf16")[0] == 121.0
    assert peak_tflops("NVIDIA H100 PCIe", "fp8")[0] == 1513.0 and peak_tflops("NVIDIA H200", "fp32")[0] == 66.9
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "fp8") == (None, "A100 has no fp8 tensor cores in the peak table")
    fp8 = mfu_figures(flops, "samples", throughput, "cuda", "NVIDIA H100 80GB HBM3", "fp8", world_size=1)
    assert fp8["mfu"] == pytest.approx(h100["mfu"])  # against bf16's 989.4, not fp8's 1978.9: the rows compare
    assert fp8["mfu_peak"] == "bf16 dense peak, 989 TFLOP/s a GPU (fp8 runs count against bf16's, as torchtitan does)"
    assert h100["mfu_peak"] == "bf16 dense peak, 989 TFLOP/s a GPU"
    a100 = mfu_figures(flops, "samples", throughput, "cuda", "NVIDIA A100-SXM4-80GB", "fp8", world_size=1)
    assert a100["mfu"] is None and "no fp8" in a100["mfu_unavailable"]
    from fastgpu.results.summary import format_summary

    assert "MFU is against" in format_summary({**fp8, "status": "ok"}) and "as torchtitan does" in format_summary(fp8)
    unknown = mfu_figures(flops, "samples", throughput, "cuda", "NVIDIA GeForce GTX 1080", "fp32", world_size=1)
    assert unknown["mfu"] is None and "no peak FLOP/s known for 'NVIDIA GeForce GTX 1080'" in unknown["mfu_unavailable"]
    cpu = mfu_figures(flops, "samples", throughput, "cpu", "x86_64", "fp32", world_size=1)
    assert cpu["mfu"] is None and cpu["achieved_tflops"] > 0


def test_a_profiled_run_writes_a_trace_names_its_ops_and_times_no_profiled_step(tmp_path):
    cfg = compose_cfg(
        "trainer.profile=true",
        "trainer.profile_steps=3",
        "trainer.max_steps=20",
        "trainer.warmup_steps=4",
        "trainer.log_every_n_steps=4",
        "optimizer.impl=fused",
        *QUICK,
        "logger.wandb.mode=offline",  # the trace travels as a W&B artifact
    )
    metrics = launch(cfg, tmp_path)
    trace = json.loads((tmp_path / "profile" / "trace.json").read_text())
    names = {event.get("name") for event in trace["traceEvents"]}
    assert "aten::convolution_backward" in names and "aten::_fused_sgd_" in names
    top = [op["op"] for op in metrics["profile_top_ops"]]
    assert "aten::convolution_backward" in top[:3], top
    assert sum(op["share"] for op in metrics["profile_top_ops"]) <= 1.0 + 1e-9
    assert metrics["warmup_steps"] == 4 + 1 + 3 and metrics["timed_steps"] == 20 - 8
    assert metrics["profile_trace"] == "profile/trace.json" and metrics["mfu_unavailable"].startswith("none on cpu")
    assert metrics["flops_per_sample"] > 0 and metrics["optimizer_impl"] == "fused"
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    records = [json.loads(line) for line in _leet("--json", str(run)).splitlines() if line.strip()]
    (artifact,) = [r["artifact"] for r in records if r["type"] == "artifact"]
    assert artifact["type"] == "profile" and artifact["name"] == f"profile-{metrics['wandb_run_id']}"
    assert [entry["path"] for entry in artifact["manifest"]["contents"]] == ["trace.json"]


def test_cudnn_benchmark_is_on_unless_deterministic(tmp_path):
    trainer = compose_cfg().trainer
    assert cudnn_benchmark(trainer) is True
    assert cudnn_benchmark(OmegaConf.merge(trainer, {"deterministic": True})) is False
    assert cudnn_benchmark(OmegaConf.merge(trainer, {"deterministic": True, "cudnn_benchmark": True})) is True
    metrics = launch(compose_cfg("trainer.cudnn_benchmark=false", "trainer.max_steps=3", *QUICK), tmp_path)
    assert metrics["cudnn_benchmark"] is False and torch.backends.cudnn.benchmark is False


def test_fp8_off_an_sm89_gpu_is_one_line():
    cfg = compose_cfg("precision=fp8").precision
    with pytest.raises(FastGPUError, match=r"precision=fp8 needs an sm_89\+ GPU \(L4, L40S, H100, H200\); device cpu"):
        build_precision(cfg, torch.device("cpu"))
    cfg.fallback = "bf16"
    assert build_precision(cfg, torch.device("cpu")).name == "bf16"


def test_a_setting_that_does_not_fit_the_memory_limit_is_an_oom_point(tmp_path):
    result = run_cli(
        f"hydra.run.dir={tmp_path}",
        *WIDE_MLP,
        "data.batch_size=2048",
        "trainer.memory_limit_mb=300",
        "trainer.max_steps=2",
        *QUICK,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "fastgpu: error: out of memory at data.batch_size=2048; lower data.batch_size, "
        "or use precision=bf16 / parallel=fsdp to save memory"
    )
    assert read_metrics(tmp_path)["status"] == "oom"


def test_the_dali_cpu_pipeline_reads_the_folder_as_torch_does_and_trains(tmp_path):
    from test_monitor_and_examples import _write_imagefolder

    from fastgpu.zoo.data import build_data

    _write_imagefolder(tmp_path / "images", classes=3, per_class=8)
    base = [
        "data=imagefolder",
        f"data.root={tmp_path / 'images'}",
        "data.num_classes=3",
        "data.image_size=32",
        "data.batch_size=4",
    ]
    dali = build_data(compose_cfg(*base, "data.loader=dali").data, 0, 0, 1, torch.device("cpu"))
    torch_data = build_data(compose_cfg(*base).data, 0, 0, 1, torch.device("cpu"))
    assert len(dali.train) == len(torch_data.train) == 6 and sum(1 for _ in dali.train) == 6
    for i, _ in enumerate(dali.train):  # an epoch the loop leaves early (max_steps, accumulation)...
        if i == 1:
            break
    assert sum(1 for _ in dali.train) == 6  # ...does not shorten the next one to its leftover batches
    x, y = torch.cat([b[0] for b in dali.val]), torch.cat([b[1] for b in dali.val])
    x_ref, y_ref = torch.cat([b[0] for b in torch_data.val]), torch.cat([b[1] for b in torch_data.val])
    assert x.shape == x_ref.shape == (24, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(y, y_ref)  # the same classes, in the same (sorted) order
    torch.testing.assert_close(x.mean((0, 2, 3)), x_ref.mean((0, 2, 3)), atol=0.02, rtol=0)  # same normalisation
    train_labels = torch.cat([b[1] for b in dali.train])
    assert sorted(train_labels.tolist()) == sorted(y_ref.tolist()) and train_labels.tolist() != y_ref.tolist()

    metrics = launch(compose_cfg(*base, "data.loader=dali", "trainer.max_steps=8", *QUICK), tmp_path / "run")
    assert metrics["status"] == "ok" and metrics["data_loader"] == "dali" and metrics["steps"] == 8
    with pytest.raises(FastGPUError, match="data.loader=dali decodes image folders; use it with data=imagefolder"):
        build_data(compose_cfg("data.loader=dali").data, 0)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
