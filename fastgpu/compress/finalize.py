"""After training (rank 0, process group closed): compress, evaluate, export and benchmark the model.

Returns the before/after numbers for metrics.json. "Before" is the trained model, "after" the deploy
model; for compression=none they are the same model, measured once. The headline accuracy,
precision, recall and F1 of the run are the deploy model's.
"""

import contextlib
import copy
import time
from pathlib import Path

import torch

from fastgpu.compress import deploy, quantize
from fastgpu.compress import methods as C
from fastgpu.errors import described
from fastgpu.measure.quality import evaluate
from fastgpu.results.stats import within_run_ratio_ci
from fastgpu.train.task import batches_for, build_task
from fastgpu.zoo.data import build_data
from fastgpu.zoo.models import build_model

QUALITY = ("accuracy", "precision", "recall", "f1")


def _measure(model, batch, device, autocast, cfg, compile_model: bool) -> dict:
    """Inference latency (inference.benchmark); a failure is recorded as `inference_error`, never raised."""
    if not cfg.inference.benchmark:
        return {}
    repeats, warmup = cfg.inference.repeats, cfg.inference.warmup
    try:
        if not compile_model:
            return deploy.inference_latency(model, batch, device, autocast, repeats, warmup)
    except Exception as exc:
        return {"inference_error": described(exc, 200)}
    # freezing folds the weights into the compiled graph: what selects x86 int8 kernels (and prepacked fp32 ones)
    try:
        with torch._inductor.config.patch(freezing=True):
            return deploy.inference_latency(torch.compile(model), batch, device, autocast, repeats, warmup)
    except Exception as exc:  # inductor cannot compile every graph (seen: int8 convs at 8x8); measure eager instead
        torch._dynamo.reset()
        measured = _measure(model, batch, device, autocast, cfg, compile_model=False)
        measured["inference_compile_error"] = described(exc, 200)
        return measured


def _suffixed(values: dict, suffix: str) -> dict:
    return {f"{k}_{suffix}": v for k, v in values.items()}


def compress_and_deploy(cfg, model_state: dict, device, precision, val_before: dict, out_dir: Path) -> dict:
    """Before/after numbers of the deploy model. Both sides are measured on the device the compressed
    model is deployed to (`deploy_device`: the CPU for x86 int8), so their ratios compare like with like."""
    task = build_task(cfg.task)
    data = batches_for(task, build_data(cfg.data, cfg.trainer.seed, 0, 1, device))
    model = build_model(cfg.model)
    model.load_state_dict(model_state)
    memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
    model = model.to(device, memory_format=memory_format) if cfg.channels_last else model.to(device)
    model.eval()
    batch = deploy.inference_batch(data.val, cfg.data.batch_size)
    example = batch[:2].to(device)
    ccfg = cfg.compression
    target = C.deploy_device(ccfg.name, device)
    on_target = target == device
    autocast = precision.autocast if on_target else contextlib.nullcontext
    target_format = memory_format if on_target else torch.preserve_format

    result = {"compression": ccfg.name, "deploy_device": target.type}
    before = {**C.sparsity(model), **{k: val_before.get(k) for k in QUALITY}}
    reference = model if on_target else copy.deepcopy(model).to(target)
    benchmark_started = time.perf_counter()
    before.update(_measure(reference, batch, target, autocast, cfg, ccfg.compile_inference))
    benchmark_s = time.perf_counter() - benchmark_started  # the inference benchmark's wall time, both sides
    if ccfg.name != "none":
        before.update(deploy.exported_size(reference, example.to(target)))
    del reference

    deployed, target, facts = C.compress(ccfg, model, data, device, precision, memory_format, task.loss)
    result.update(facts)
    started = time.perf_counter()
    result.update(deploy.export_model(deployed, example.to(target), out_dir, cfg.export))
    result["export_s"] = time.perf_counter() - started

    if ccfg.name == "none":
        after = dict(before)
    else:
        collection = task.metrics(target)
        val_after = evaluate(deployed, data.val, autocast, target, target_format, collection)
        after = {**C.sparsity(deployed), **{k: val_after.get(k) for k in QUALITY}, "val_loss": val_after["loss"]}
        after.update({k: val_after[k] for k in ("perplexity",) if k in val_after})
        benchmark_started = time.perf_counter()
        after.update(_measure(deployed, batch, target, autocast, cfg, ccfg.compile_inference))
        benchmark_s += time.perf_counter() - benchmark_started
        if ccfg.name in C.INT8_CPU:
            result.update(quantize.quantized_weight_bytes(deployed))
            if result["quantized_weight_bytes_after"]:
                before_bytes, after_bytes = (
                    result["quantized_weight_bytes_before"],
                    result["quantized_weight_bytes_after"],
                )
                result["quantized_weight_ratio"] = before_bytes / after_bytes
    after["serialized_bytes"] = result.get("serialized_bytes")
    before.setdefault("serialized_bytes", after["serialized_bytes"])

    if cfg.inference.benchmark:
        result["inference_benchmark_s"] = benchmark_s
    result.update(_suffixed(before, "before"))
    result.update(_suffixed(after, "after"))
    result.update({k: after[k] for k in (*QUALITY, "perplexity", "sparsity", "nonzero_params") if k in after})
    if "val_loss" in after:
        result["val_loss"] = after["val_loss"]
    if result.get("serialized_bytes_before") and result.get("serialized_bytes_after"):
        result["size_ratio"] = result["serialized_bytes_before"] / result["serialized_bytes_after"]
    if result.get("latency_batch_ms_times_before") and result.get("latency_batch_ms_times_after"):
        # speed-up of the deploy model over the uncompressed one, both timed on the deploy device
        ratio = within_run_ratio_ci(result["latency_batch_ms_times_before"], result["latency_batch_ms_times_after"])
        result["latency_ratio"], result["latency_ratio_low"], result["latency_ratio_high"] = ratio
    result.pop("serialized_bytes", None)
    return result
