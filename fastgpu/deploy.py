"""The last step of a run: export the deploy model (torch.export program, ONNX where the exporter
handles it), measure its serialized size and its inference latency on the device it is meant for.

Load an exported model without FastGPU:

    import torch
    import torchao.quantization.pt2e  # only for int8 models: registers their quantize/dequantize ops
    program = torch.export.load("outputs/.../model.pt2")
    logits = program.module()(images)
"""

import io
import statistics
import time
from pathlib import Path

import torch

from fastgpu.errors import described

MODEL_FILE = "model.pt2"
ONNX_FILE = "model.onnx"


def export_program(model, example: torch.Tensor):
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def serialized_bytes(program) -> int:
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return len(buffer.getvalue())


def export_model(model, example: torch.Tensor, out_dir: Path, formats) -> dict:
    """Write the requested formats into out_dir; returns sizes and what could not be exported (one line each)."""
    facts = {}
    program = export_program(model, example)
    if "torch_export" in formats:
        torch.export.save(program, Path(out_dir) / MODEL_FILE)
        facts["export_file"] = MODEL_FILE
    facts["serialized_bytes"] = serialized_bytes(program)
    if "onnx" in formats:
        try:
            torch.onnx.export(
                model,
                (example,),
                str(Path(out_dir) / ONNX_FILE),
                dynamo=True,
                verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            )
            facts["onnx_file"] = ONNX_FILE
        except Exception as exc:  # the exporter does not handle every model (int8 graphs, missing onnxscript)
            facts["onnx_error"] = described(exc)
    return facts


@torch.no_grad()
def inference_latency(model, batch: torch.Tensor, device, autocast, repeats: int, warmup: int) -> dict:
    """Median latency at batch 1 and at the training batch size (warm-up excluded, device synchronised)."""
    results = {}
    for label, x in (("b1", batch[:1]), ("batch", batch)):
        x = x.to(device)
        times = []
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            with autocast():
                model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
        results[f"latency_{label}_ms"] = 1e3 * statistics.median(times)
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
