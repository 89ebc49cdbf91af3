"""Learning-rate schedules, each called by the train loop as schedule(optimizer, total_steps=N)."""

import math

import torch


def constant(optimizer, total_steps: int):
    """No schedule: the train loop then skips the per-step scheduler call altogether."""
    return None


def cosine(optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0):
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def onecycle(optimizer, total_steps: int, max_lr_factor: float = 10.0, pct_start: float = 0.3):
    max_lr = [group["lr"] * max_lr_factor for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start)
