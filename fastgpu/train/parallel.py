"""Model wrapping for data parallelism (DDP, FSDP2) and what it needs: gradient sync off, replica agreement."""

import contextlib

import torch
import torch.distributed as dist
from torch import nn

from fastgpu.components import build


def ddp(model: nn.Module, device: torch.device) -> nn.Module:
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def fsdp(model: nn.Module, device: torch.device, per: str = "auto") -> nn.Module:
    """FSDP2: each trainable unit sharded on its own (its parameters gathered only while it runs), then the root.
    Units: each of the model's repeated blocks (`per=block`: transformer layers, residual blocks; torchtitan's
    choice), the rest (embeddings, a tied output layer) with the root; or its direct children (`per=children`);
    `auto`: blocks where the model has them."""
    from torch.distributed.fsdp import fully_shard

    from fastgpu.errors import FastGPUError
    from fastgpu.zoo.models import repeated_blocks

    if per == "auto":
        per = "block" if repeated_blocks(model) else "children"
    if per == "block":
        units = [container[index] for container, index in repeated_blocks(model)]
        if not units:
            raise FastGPUError(f"parallel.wrap.per=block: {type(model).__name__} has no repeated blocks; use children")
    elif per == "children":
        units = list(model.children())
    else:
        raise FastGPUError(f"parallel.wrap.per={per!r} is not known; use auto, block or children")
    for unit in _without_shared_parameters(units):
        if any(p.requires_grad for p in unit.parameters()):
            fully_shard(unit)
    return fully_shard(model)


def _without_shared_parameters(units: list) -> list:
    """The units that share no parameter with another unit: a tied embedding and output layer stay with the root, one
    unit (sharded twice, the tied weight would become two parameters)."""
    owners = {}
    for unit in units:
        for p in unit.parameters():
            owners.setdefault(id(p), set()).add(id(unit))
    return [u for u in units if all(len(owners[id(p)]) == 1 for p in u.parameters())]


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
