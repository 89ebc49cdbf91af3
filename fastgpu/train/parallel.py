"""Model wrapping for data parallelism (DDP, FSDP2) and what it needs: gradient sync off, replica agreement."""

import contextlib

import torch
import torch.distributed as dist
from torch import nn

from fastgpu.components import build


def ddp(model: nn.Module, device: torch.device) -> nn.Module:
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def fsdp(model: nn.Module, device: torch.device) -> nn.Module:
    """FSDP2: each trainable child sharded on its own (its parameters gathered only while it runs), then the root."""
    from torch.distributed.fsdp import fully_shard

    for child in model.children():
        if any(p.requires_grad for p in child.parameters()):
            fully_shard(child)
    return fully_shard(model)


def wrap_model(model: nn.Module, parallel, device: torch.device) -> tuple:
    """(model, what it was really wrapped in) by the parallel config's `wrap` target: 'none' when there is no process
    group to wrap over (a one-process ddp/fsdp request trains the bare model, and is recorded as such)."""
    if parallel.wrap is None or not dist.is_initialized():
        return model, "none"
    return build(parallel.wrap, "parallel.wrap")(model, device), parallel.strategy


def no_gradient_sync(model):
    """A context in which backward leaves gradients local (the inner steps of gradient accumulation): DDP's
    no_sync, FSDP2's set_requires_gradient_sync(False); a bare model has nothing to sync."""
    if hasattr(model, "no_sync"):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        return _fsdp_without_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_without_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


@torch.no_grad()
def rank_param_max_diff(model: nn.Module) -> float:
    """Largest |parameter - rank 0's parameter| over all ranks: 0 when data parallelism kept replicas equal."""
    flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)
