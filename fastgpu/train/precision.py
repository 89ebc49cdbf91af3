"""Precision modes: which autocast dtype, whether a GradScaler, TF32 flags; and what a device can do."""

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

from fastgpu.errors import FastGPUError, choose

# name -> autocast dtype; fp8 runs torchao's float8 Linear layers inside bf16 autocast
MODES = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.bfloat16}


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
    if name == "fp8":
        return _fp8_unsupported(device)
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


def _fp8_unsupported(device: torch.device) -> Optional[str]:
    if device.type != "cuda":
        return f"precision=fp8 needs an sm_89+ GPU (L4, L40S, H100, H200); device {device.type} has no float8 matmul"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        name = torch.cuda.get_device_name(device)
        return f"precision=fp8 needs an sm_89+ GPU (L4, L40S, H100, H200); {name} is sm_{major}{minor}"
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        return "precision=fp8 needs torchao (pip install torchao)"
    return None


def fp8_eligible(module, fqn: str = "") -> bool:
    """torchao's float8 matmuls need both Linear dimensions divisible by 16; a language model's output layer (often
    tied to its embedding) stays in bf16, as torchtitan leaves it."""
    if fqn.split(".")[-1] in ("lm_head", "output"):
        return False
    return isinstance(module, torch.nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0


def convert_for_precision(precision: "Precision", model: torch.nn.Module) -> torch.nn.Module:
    """fp8: swap the eligible Linear layers for torchao's Float8Linear (dynamic scaling); other modes: as is."""
    if precision.name != "fp8":
        return model
    from torchao.float8 import convert_to_float8_training

    if not any(fp8_eligible(m) for m in model.modules()):
        raise FastGPUError(
            "precision=fp8 converts Linear layers with sizes divisible by 16, and this model has none "
            "(convolutions stay in bf16); use precision=bf16"
        )
    return convert_to_float8_training(model, module_filter_fn=fp8_eligible)


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
