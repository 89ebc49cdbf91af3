"""One training step: forward, backward and the optimizer update (the training loop and the fine-tuning after
compression both come here; the evaluation pass is fastgpu/measure/quality.py's).

As in nanoGPT, the GradScaler is always there and `enabled` only for fp16, so the step has no branch.
"""

import contextlib

import torch.nn.functional as F


def forward_loss(model, x, y, autocast, loss_fn=F.cross_entropy):
    """The task's loss (fastgpu/train/task.py) of the model's output, under the precision's autocast."""
    with autocast():
        return loss_fn(model(x), y)


def train_step(model, x, y, optimizer, scaler, autocast, scaler_sync=contextlib.nullcontext, loss_fn=F.cross_entropy):
    """Forward, backward and update of one batch; returns the loss, still on the device."""
    loss = backward_step(model, x, y, scaler, autocast, loss_fn=loss_fn)
    optimizer_step(optimizer, scaler, scaler_sync)
    return loss


def backward_step(model, x, y, scaler, autocast, accumulate: int = 1, loss_fn=F.cross_entropy):
    """Forward and backward of one (micro-)batch, its gradients added to those already there; returns its share
    of the step's loss (loss / accumulate), still on the device."""
    loss = forward_loss(model, x, y, autocast, loss_fn)
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
