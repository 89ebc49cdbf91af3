"""Pruning: L1-magnitude unstructured (one-shot or gradual during training) and structured, with whole
inner channels of residual blocks removed physically so the model really gets smaller and faster."""

import math

import torch
from torch import nn
from torch.nn.utils import prune

from fastgpu.errors import FastGPUError


def prunable(model: nn.Module) -> list:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def apply_magnitude_pruning(model: nn.Module, amount: float, scope: str) -> None:
    """L1 unstructured pruning to `amount` of the conv/linear weights (global ranking or per layer)."""
    targets = prunable(model)
    if scope == "global":
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    elif scope == "layer":
        for module, name in targets:
            prune.l1_unstructured(module, name, amount=amount)
    else:
        raise FastGPUError(f"compression.scope={scope!r} is not known; use global or layer")


def make_permanent(model: nn.Module) -> None:
    """Fold pruning masks into the weights, so the saved model is a plain one."""
    for module in model.modules():
        for name in list(getattr(module, "_forward_pre_hooks", {}).values()):
            if isinstance(name, prune.BasePruningMethod):
                prune.remove(module, name._tensor_name)


class GradualPruner:
    """Raises sparsity from 0 to `amount` between two fractions of the run on a cubic schedule
    (Zhu & Gupta, 2017), every `frequency` steps. The train loop calls it only when step >= next_step."""

    def __init__(self, cfg, model: nn.Module, total_steps: int):
        self.model, self.cfg = model, cfg
        self.start = int(cfg.start_fraction * total_steps)
        self.end = max(self.start + 1, int(cfg.end_fraction * total_steps))
        self.next_step = self.start

    def target(self, step: int) -> float:
        progress = min(1.0, max(0.0, (step - self.start) / (self.end - self.start)))
        return self.cfg.amount * (1 - (1 - progress) ** 3)

    def __call__(self, step: int) -> None:
        make_permanent(self.model)  # re-rank from the current weights each time
        apply_magnitude_pruning(self.model, self.target(step), self.cfg.scope)
        self.next_step = step + self.cfg.frequency if step < self.end else math.inf

    def finish(self) -> None:
        make_permanent(self.model)


def training_hook(cfg, model: nn.Module, total_steps: int):
    if cfg.name == "prune" and cfg.schedule == "gradual":
        return GradualPruner(cfg, model, total_steps)
    return None


# --- structured pruning: whole output channels by L2 norm ---------------------------------------------


def _inner_chains(model: nn.Module) -> list:
    """(conv_a, bn_a, conv_b) chains whose middle channels can be removed physically: the inner convs
    of residual blocks (torchvision BasicBlock / Bottleneck, FastGPU's ResidualBlock)."""
    chains = []
    for block in model.modules():
        for a, b in (("1", "2"), ("2", "3")):
            conv_a, bn_a, conv_b = (getattr(block, n, None) for n in (f"conv{a}", f"bn{a}", f"conv{b}"))
            if (
                isinstance(conv_a, nn.Conv2d)
                and isinstance(bn_a, nn.BatchNorm2d)
                and isinstance(conv_b, nn.Conv2d)
                and conv_a.groups == 1 == conv_b.groups
            ):
                chains.append((block, f"conv{a}", f"bn{a}", f"conv{b}"))
    return chains


def _shrink(block, conv_a_name, bn_name, conv_b_name, keep: torch.Tensor) -> None:
    conv_a, bn, conv_b = getattr(block, conv_a_name), getattr(block, bn_name), getattr(block, conv_b_name)
    new_a = nn.Conv2d(
        conv_a.in_channels,
        len(keep),
        conv_a.kernel_size,
        conv_a.stride,
        conv_a.padding,
        conv_a.dilation,
        bias=conv_a.bias is not None,
    )
    new_a.weight.data = conv_a.weight.data[keep].clone()
    if conv_a.bias is not None:
        new_a.bias.data = conv_a.bias.data[keep].clone()
    new_bn = nn.BatchNorm2d(len(keep), bn.eps, bn.momentum)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new_bn, name).data = getattr(bn, name).data[keep].clone()
    new_b = nn.Conv2d(
        len(keep),
        conv_b.out_channels,
        conv_b.kernel_size,
        conv_b.stride,
        conv_b.padding,
        conv_b.dilation,
        bias=conv_b.bias is not None,
    )
    new_b.weight.data = conv_b.weight.data[:, keep].clone()
    if conv_b.bias is not None:
        new_b.bias.data = conv_b.bias.data.clone()
    setattr(block, conv_a_name, new_a)
    setattr(block, bn_name, new_bn)
    setattr(block, conv_b_name, new_b)


def structured_prune(model: nn.Module, amount: float) -> str:
    """Remove `amount` of the inner channels of residual blocks by L2 norm; returns 'physical' when
    layers really shrank, else 'mask' (no removable chain: channels zeroed by mask instead)."""
    chains = _inner_chains(model)
    for block, conv_a, bn, conv_b in chains:
        weight = getattr(block, conv_a).weight.data
        keep_count = max(1, round(weight.shape[0] * (1 - amount)))
        keep = weight.flatten(1).norm(dim=1).topk(keep_count).indices.sort().values
        _shrink(block, conv_a, bn, conv_b, keep)
    if chains:
        return "physical"
    for module, name in prunable(model):
        if isinstance(module, nn.Conv2d):
            prune.ln_structured(module, name, amount=amount, n=2, dim=0)
    make_permanent(model)
    return "mask"
