"""After training (rank 0, process group closed): compress, evaluate, export and benchmark the model.

Returns the before/after numbers for metrics.json. "Before" is the trained model, "after" the deploy
model; for compression=none they are the same model, measured once. The headline accuracy,
precision, recall and F1 of the run are the deploy model's.
"""

import contextlib
from pathlib import Path

import torch

from fastgpu import compression as C
from fastgpu import deploy
from fastgpu.data import build_data
from fastgpu.errors import described
from fastgpu.metrics import eval_metrics
from fastgpu.models import build_model

QUALITY = ("accuracy", "precision", "recall", "f1")


def _measure(model, batch, device, autocast, cfg, compile_model: bool) -> dict:
    if not cfg.inference.benchmark:
        return {}
    if not compile_model:
        return deploy.inference_latency(model, batch, device, autocast, cfg.inference.repeats, cfg.inference.warmup)
    # freezing folds the weights into the compiled graph: what selects x86 int8 kernels (and prepacked fp32 ones)
    try:
        with torch._inductor.config.patch(freezing=True):
            return deploy.inference_latency(
                torch.compile(model), batch, device, autocast, cfg.inference.repeats, cfg.inference.warmup
            )
    except Exception as exc:  # inductor cannot compile every graph (seen: int8 convs at 8x8); measure eager instead
        torch._dynamo.reset()
        measured = deploy.inference_latency(model, batch, device, autocast, cfg.inference.repeats, cfg.inference.warmup)
        measured["inference_compile_error"] = described(exc, 200)
        return measured


def _suffixed(values: dict, suffix: str) -> dict:
    return {f"{k}_{suffix}": v for k, v in values.items()}


def compress_and_deploy(cfg, model_state: dict, device, precision, val_before: dict, out_dir: Path) -> dict:
    from fastgpu.train import evaluate

    data = build_data(cfg.data, cfg.trainer.seed, 0, 1, device)
    model = build_model(cfg.model, cfg.data)
    model.load_state_dict(model_state)
    memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
    model = model.to(device, memory_format=memory_format) if cfg.channels_last else model.to(device)
    model.eval()
    batch = deploy.inference_batch(data.val, cfg.data.batch_size)
    example = batch[:2].to(device)
    ccfg = cfg.compression

    before = {**C.sparsity(model), **{k: val_before.get(k) for k in QUALITY}}
    before.update(_measure(model, batch, device, precision.autocast, cfg, ccfg.compile_inference))
    if ccfg.name != "none":
        before["serialized_bytes"] = deploy.serialized_bytes(deploy.export_program(model, example))

    deployed, deploy_device, facts = C.compress(ccfg, model, data, device, precision)
    autocast = precision.autocast if deploy_device == device else contextlib.nullcontext
    result = {"compression": ccfg.name, **facts}
    try:
        result.update(deploy.export_model(deployed, example.to(deploy_device), out_dir, cfg.export))
    except Exception as exc:  # a model the exporter cannot trace still gets evaluated and benchmarked
        result["export_error"] = described(exc)

    if ccfg.name == "none":
        after = dict(before)
    else:
        collection = eval_metrics(cfg.data.num_classes, deploy_device)
        val_after = evaluate(
            deployed,
            data.val,
            precision if deploy_device == device else None,
            deploy_device,
            memory_format if deploy_device == device else torch.preserve_format,
            collection,
        )
        after = {**C.sparsity(deployed), **{k: val_after[k] for k in QUALITY}, "val_loss": val_after["loss"]}
        after.update(_measure(deployed, batch, deploy_device, autocast, cfg, ccfg.compile_inference))
        if ccfg.name in C.INT8_CPU:
            result.update(C.quantized_weight_bytes(deployed))
            if result["quantized_weight_bytes_after"]:
                result["quantized_weight_ratio"] = (
                    result["quantized_weight_bytes_before"] / result["quantized_weight_bytes_after"]
                )
    after["serialized_bytes"] = result.get("serialized_bytes")
    before.setdefault("serialized_bytes", after["serialized_bytes"])

    result.update(_suffixed(before, "before"))
    result.update(_suffixed(after, "after"))
    result.update({k: after[k] for k in (*QUALITY, "sparsity", "nonzero_params") if k in after})
    if "val_loss" in after:
        result["val_loss"] = after["val_loss"]
    if result.get("serialized_bytes_before") and result.get("serialized_bytes_after"):
        result["size_ratio"] = result["serialized_bytes_before"] / result["serialized_bytes_after"]
    if result.get("latency_batch_ms_before") and result.get("latency_batch_ms_after"):
        result["latency_ratio"] = result["latency_batch_ms_before"] / result["latency_batch_ms_after"]
    result.pop("serialized_bytes", None)
    return result
