"""Precision modes: which autocast dtype, whether a GradScaler, TF32 flags; and what a device can do."""

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

from fastgpu.errors import FastGPUError, choose

MODES = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # name -> autocast dtype


@dataclass
class Precision:
    name: str
    requested: str
    autocast_dtype: Optional[torch.dtype]
    scaler: torch.amp.GradScaler  # enabled for fp16 only
    device_type: str

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)


def unsupported_reason(name: str, device: torch.device) -> Optional[str]:
    """Why `device` cannot run precision `name` usefully, or None if it can."""
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        if name == "tf32" and major < 8:
            return f"precision=tf32 needs an Ampere-or-newer GPU ({torch.cuda.get_device_name(device)} is sm_{major}x)"
        if name == "bf16" and not torch.cuda.is_bf16_supported():
            return f"precision=bf16 is not supported on {torch.cuda.get_device_name(device)}"
        return None
    if name == "tf32":
        return f"precision=tf32 is a CUDA tensor-core mode; device {device.type} has no TF32"
    if name == "fp16":
        return f"precision=fp16 needs a CUDA GPU; fp16 autocast on {device.type} is ~25x slower than fp32"
    return None


def build_precision(cfg, device: torch.device) -> Precision:
    name = cfg.name
    choose(MODES, "precision", name)
    reason = unsupported_reason(name, device)
    if reason:
        if cfg.fallback is None:
            raise FastGPUError(f"{reason}: use precision=fp32 or bf16, or set precision.fallback=<mode> to fall back")
        if cfg.fallback not in MODES or unsupported_reason(cfg.fallback, device):
            raise FastGPUError(f"{reason}, and precision.fallback={cfg.fallback} cannot run here either")
        name = cfg.fallback

    if device.type == "cuda":
        tf32 = name == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    dtype = MODES[name]
    scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")
    return Precision(name, cfg.name, dtype, scaler, device.type)
