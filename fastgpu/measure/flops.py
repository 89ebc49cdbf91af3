"""FLOPs per training sample and model FLOPs utilisation (MFU) against the GPU's dense peak.

FLOPs are counted once, by torch's FlopCounterMode, over one forward and backward of the bare model on the
meta device (no memory, no effect on the real model's weights or BatchNorm statistics). MFU is the FLOPs the
run's steady throughput implies over the dense peak of the GPUs it ran on, in the dtype its matmuls use (an fp8 run:
bf16's, as torchtitan counts it).
"""

import copy
from typing import Optional

import torch

# Dense (no 2:4 sparsity) peak tensor throughput in TFLOP/s, from NVIDIA's data sheets, by the dtype the
# precision mode's matmuls run in. fp32 without TF32 runs on the CUDA cores. Matched against
# torch.cuda.get_device_name in this order (more specific names first).
PEAK_TFLOPS = {
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0, "fp8": 1513.0},
    "H100 NVL": {"fp32": 60.0, "tf32": 418.0, "bf16": 835.0, "fp16": 835.0, "fp8": 1671.0},
    "H100": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4, "fp8": 1978.9},  # SXM
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4, "fp8": 1978.9},  # SXM
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "bf16": 362.1, "fp16": 362.1, "fp8": 733.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0, "fp8": 242.5},
}


def training_flops_per_sample(model: torch.nn.Module, example: torch.Tensor) -> float:
    """Forward + backward FLOPs of one sample (the `example` batch counted, divided by its length): the model's own
    FLOPs, as MFU counts them (PaLM's appendix B), so activation checkpointing's recomputation is left out."""
    from torch.utils.flop_counter import FlopCounterMode  # imports triton (0.3 s): after training, not at start

    from fastgpu.measure.quality import logits_of

    meta = _without_recomputation(copy.deepcopy(model).to("meta"))
    meta.train()
    x = torch.empty_like(example, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        logits_of(meta(x)).float().sum().backward()
    return counter.get_total_flops() / len(example)


def counted_flops_per_sample(model: torch.nn.Module, example: torch.Tensor) -> tuple:
    """(FLOPs per sample, None), or (None, why not) for a model that cannot run on the meta device or be counted:
    a secondary figure never fails the run."""
    try:
        return training_flops_per_sample(model, example), None
    except Exception as exc:  # a data-dependent op, a custom kernel without a meta implementation, ...
        from fastgpu.errors import described

        return None, f"FLOPs not counted: {described(exc, 160)}"


def counted_flops_of(model_cfg, example: torch.Tensor, units_per_sample: float = 1.0) -> tuple:
    """Training FLOPs per unit (sample, or token: `units_per_sample` of them in one of `example`'s samples) of the
    configured model, built afresh on the meta device (no memory, no copy of the trained model); (None, why not)
    where it cannot be built there."""
    from fastgpu.zoo.models import build_model

    try:
        with torch.device("meta"):
            model = build_model(model_cfg)
    except Exception as exc:
        from fastgpu.errors import described

        return None, f"FLOPs not counted: {described(exc, 160)}"
    flops, why = counted_flops_per_sample(model, example)
    return (flops / units_per_sample if flops is not None else None), why


def _without_recomputation(model: torch.nn.Module) -> torch.nn.Module:
    """The model with every activation-checkpointing wrapper replaced by the block it wraps."""
    from fastgpu.zoo.models import Checkpointed

    for name, child in list(model.named_children()):
        if isinstance(child, Checkpointed):
            setattr(model, name, _without_recomputation(child.block))
        else:
            _without_recomputation(child)
    return model


# MFU's peak by precision mode, where it is not the mode's own: an fp8 run's attention, norms and output layer still
# run in bf16, so its MFU is against the bf16 peak (torchtitan's convention), and fp8 and bf16 rows compare
MFU_PEAK_OF = {"fp8": "bf16"}


def peak_tflops(device_name: str, precision: str) -> tuple:
    """(peak TFLOP/s, None) for a known GPU, or (None, why not)."""
    for gpu, peaks in PEAK_TFLOPS.items():
        if gpu in device_name:
            if precision not in peaks:
                return None, f"{gpu} has no {precision} tensor cores in the peak table"
            return peaks[precision], None
    return None, f"no peak FLOP/s known for {device_name!r} (fastgpu/measure/flops.py PEAK_TFLOPS)"


def mfu_peak(device_name: str, precision: str) -> tuple:
    """(peak TFLOP/s MFU divides by, what it is in words) or (None, why not). fp8 must exist on the GPU, and its MFU
    is against the bf16 peak."""
    own, reason = peak_tflops(device_name, precision)
    if own is None:
        return None, reason
    against = MFU_PEAK_OF.get(precision, precision)
    peak, _ = peak_tflops(device_name, against)
    words = f"{against} dense peak, {peak:,.0f} TFLOP/s a GPU"
    if against != precision:
        words += f" ({precision} runs count against {against}'s, as torchtitan does)"
    return peak, words


def mfu_figures(
    flops_per_unit: Optional[float],
    unit: str,
    throughput: Optional[float],
    device_type: str,
    device_name: str,
    precision: str,
    world_size: int,
    flops_unavailable: Optional[str] = None,
) -> dict:
    """flops_per_sample (or _token: per `unit` of throughput), achieved_tflops (all ranks together) and mfu (or
    mfu_unavailable: why not)."""
    out = {f"flops_per_{unit.rstrip('s')}": flops_per_unit, "achieved_tflops": None, "mfu": None}
    if flops_per_unit is None or not throughput:
        out["mfu_unavailable"] = flops_unavailable or "no FLOP count or no steady throughput"
        return out
    out["achieved_tflops"] = flops_per_unit * throughput / 1e12
    if device_type != "cuda":
        out["mfu_unavailable"] = f"none on {device_type} (needs a GPU's peak)"
        return out
    peak, words = mfu_peak(device_name, precision)
    if peak is None:
        out["mfu_unavailable"] = words
    else:
        out["mfu"] = out["achieved_tflops"] / (peak * world_size)
        out["mfu_peak"] = words
    return out
