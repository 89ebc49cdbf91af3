"""One training step and one evaluation pass: the only places a model is run forward (training loop,
evaluation, fine-tuning after compression all come here).

As in nanoGPT, the GradScaler is always there and `enabled` only for fp16, so the step has no branch.
"""

import contextlib

import torch
import torch.nn.functional as F

from fastgpu.parallel import all_reduce


def forward_loss(model, x, y, autocast):
    with autocast():
        return F.cross_entropy(model(x), y)


def train_step(model, x, y, optimizer, scaler, autocast, scaler_sync=contextlib.nullcontext):
    """Forward, backward and update of one batch; returns the loss, still on the device."""
    loss = backward_step(model, x, y, scaler, autocast)
    optimizer_step(optimizer, scaler, scaler_sync)
    return loss


def backward_step(model, x, y, scaler, autocast, accumulate: int = 1):
    """Forward and backward of one (micro-)batch, its gradients added to those already there; returns its share
    of the step's loss (loss / accumulate), still on the device."""
    loss = forward_loss(model, x, y, autocast)
    if accumulate > 1:
        loss = loss / accumulate
    scaler.scale(loss).backward()
    return loss.detach()


def optimizer_step(optimizer, scaler, scaler_sync=contextlib.nullcontext) -> None:
    """Update from the accumulated gradients, then clear them (nanoGPT's order).

    `scaler_sync` wraps GradScaler.step, the one call that reads the device every step under fp16 (it
    skips the update when a gradient overflowed); the meter allows that sync there and nowhere else.
    """
    with scaler_sync():
        scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def finetune(model, loader, epochs: int, lr: float, device, precision, memory_format) -> None:
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
            train_step(model, x, y.to(device, non_blocking=True), optimizer, scaler, autocast)


@torch.no_grad()
def evaluate(model, loader, autocast, device, memory_format, collection) -> dict:
    """Loss and metrics over `loader` (synchronised across ranks); leaves the model in eval mode."""
    try:
        model.eval()
    except NotImplementedError:  # an exported (quantised) program is in eval mode already
        pass
    collection.reset()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    for x, y in loader:
        x = x.to(device, non_blocking=True, memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        with autocast():
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        count += y.numel()
        collection.update(logits, y)
    results = {k: float(v) for k, v in collection.compute().items()}
    loss_total, n = all_reduce([float(loss_sum), float(count)])
    results["loss"] = loss_total / max(n, 1)
    return results
