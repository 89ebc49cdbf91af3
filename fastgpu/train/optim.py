"""The optimizer (with the kernel that updates the weights) and learning-rate schedules, each called by the
train loop as schedule(optimizer, total_steps=N)."""

import math

import torch

# optimizer.impl -> the keyword torch's optimizers take for it: one fused kernel for all parameters, a few
# multi-tensor (foreach) kernels, or a Python loop over parameters; auto leaves torch to choose (foreach on CUDA)
IMPLS = {"auto": {}, "fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}


def build_optimizer(cfg, params) -> torch.optim.Optimizer:
    """The optimizer config's `_target_` (`_partial_: true`), with `impl` turned into torch's fused/foreach keyword."""
    from fastgpu.components import build
    from fastgpu.errors import choose

    impl = choose(IMPLS, "optimizer.impl", cfg.get("impl", "auto"))
    return build(cfg, "optimizer", own_keys=("impl",), **impl)(params)


def build_scheduler(cfg, optimizer, total_steps: int):
    """The scheduler config's `_target_` (`_partial_: true`) called as schedule(optimizer, total_steps=N); None for a
    constant learning rate."""
    from fastgpu.components import build

    return build(cfg, "scheduler")(optimizer, total_steps=total_steps)


def optimizer_impl(optimizer: torch.optim.Optimizer) -> str:
    """What the optimizer really runs: fused, foreach or loop (auto's choice resolved the way torch does)."""
    defaults = optimizer.defaults
    if defaults.get("fused"):
        return "fused"
    if defaults.get("foreach") is None:  # torch's default: foreach where every parameter is on CUDA
        params = [p for group in optimizer.param_groups for p in group["params"]]
        return "foreach" if params and all(p.is_cuda for p in params) else "loop"
    return "foreach" if defaults["foreach"] else "loop"


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
