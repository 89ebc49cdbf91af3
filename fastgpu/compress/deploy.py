"""The last step of a run: export the deploy model (torch.export program, ONNX where the exporter
handles it), measure its serialized size and its inference latency on the device it is meant for.

Load an exported model without FastGPU:

    import torch
    import torchao.quantization.pt2e  # only for int8 models: registers their quantize/dequantize ops
    program = torch.export.load("outputs/.../model.pt2")
    logits = program.module()(images)
"""

import io
import logging
import statistics
from pathlib import Path

import torch

from fastgpu.errors import described

MODEL_FILE = "model.pt2"
ONNX_FILE = "model.onnx"


# cuDNN's batch norm adds the guard `batch <= 65535` to a CUDA graph: an unbounded batch dimension then
# fails export ("Constraints violated (batch)"), so every export declares this bound.
MAX_EXPORT_BATCH = 65535


def batch_dim():
    return torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)


def export_program(model, example: torch.Tensor):
    """The one torch.export call of FastGPU: the batch dimension dynamic within [1, MAX_EXPORT_BATCH]."""
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch_dim()},))


def serialized_bytes(program) -> int:
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return len(buffer.getvalue())


def _try_export(model, example: torch.Tensor) -> tuple:
    """(program, {}) or (None, {"export_error": one line}): the exporter cannot trace every model."""
    try:
        return export_program(model, example), {}
    except Exception as exc:
        return None, {"export_error": described(exc)}


def exported_size(model, example: torch.Tensor) -> dict:
    """The serialized size of the model's export program, or why it could not be exported."""
    program, facts = _try_export(model, example)
    if program is not None:
        facts["serialized_bytes"] = serialized_bytes(program)
    return facts


def export_model(model, example: torch.Tensor, out_dir, formats) -> dict:
    """Write the requested formats into out_dir. Returns the exported size and, in place of what could
    not be exported, `export_error` / `onnx_error` (one line each): a failed export never fails the run."""
    if not formats:
        return {}
    program, facts = _try_export(model, example)
    if program is not None:
        facts["serialized_bytes"] = serialized_bytes(program)
        if "torch_export" in formats:
            torch.export.save(program, Path(out_dir) / MODEL_FILE)
            facts["export_file"] = MODEL_FILE
    if "onnx" in formats:
        try:
            path = str(Path(out_dir) / ONNX_FILE)
            torch.onnx.export(model, (example,), path, dynamo=True, verbose=False, dynamic_shapes=({0: batch_dim()},))
            facts["onnx_file"] = ONNX_FILE
        except Exception as exc:  # int8 graphs, missing onnxscript
            facts["onnx_error"] = described(exc)
    return facts


@torch.no_grad()
def inference_latency(model, batch: torch.Tensor, device, autocast, repeats: int, warmup: int) -> dict:
    """Latency at batch 1 and at the training batch size with torch.utils.benchmark (device synchronised,
    warm-up excluded): the median of at least `repeats` timed blocks, their interquartile range, and the
    batch's block times (for the report's intervals)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime" on a CPU: expected
    from torch.utils import benchmark

    results = {}
    for label, x in (("b1", batch[:1]), ("batch", batch)):
        x = x.to(device)
        for _ in range(warmup):
            with autocast():
                model(x)
        timer = benchmark.Timer(
            "with autocast():\n    model(x)", globals={"model": model, "x": x, "autocast": autocast}
        )
        measured = timer.blocked_autorange(min_run_time=0.1)
        times = list(measured.times)
        while len(times) < repeats:
            times.append(timer.timeit(measured.number_per_run).median)
        ms = sorted(1e3 * s for s in times)
        results[f"latency_{label}_ms"] = statistics.median(ms)
        results[f"latency_{label}_ms_iqr"] = ms[(3 * len(ms)) // 4] - ms[len(ms) // 4]
    results["latency_batch_ms_times"] = ms
    results["inference_throughput"] = len(batch) / (results["latency_batch_ms"] / 1e3)
    return results


def inference_batch(loader, size: int) -> torch.Tensor:
    """A batch of exactly `size` validation inputs (repeating the set if it is smaller)."""
    chunks, have = [], 0
    while have < size:
        for x, _ in loader:
            chunks.append(x)
            have += len(x)
            if have >= size:
                break
    return torch.cat(chunks)[:size]
