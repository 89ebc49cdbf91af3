"""A short fine-tune after one-shot pruning or for QAT, through the training step."""

import contextlib

import torch
import torch.nn.functional as F

from fastgpu.train.step import train_step


def finetune(model, loader, epochs: int, lr: float, device, precision, memory_format, loss_fn=F.cross_entropy) -> None:
    """A short fine-tune after one-shot pruning or for QAT: plain SGD, the run's precision (GradScaler
    included) and memory format where it runs on the training device."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    same_device = device.type == precision.device_type
    scaler = torch.amp.GradScaler(device.type, enabled=same_device and precision.scaler.is_enabled())
    autocast = precision.autocast if same_device else contextlib.nullcontext
    optimizer.zero_grad(set_to_none=True)
    for _ in range(epochs):
        for x, y in loader:
            x = x.to(device, non_blocking=True, memory_format=memory_format)
            train_step(model, x, y.to(device, non_blocking=True), optimizer, scaler, autocast, loss_fn=loss_fn)
