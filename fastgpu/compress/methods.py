"""Compression after (or, for gradual pruning, during) training. Every method turns the trained model into
a *deploy model* that the run evaluates, exports and benchmarks on the device it deploys to; `none` deploys
the trained model as it is. A method is the `_target_` of compression.method (`_partial_: true`), called as
method(cfg, model, io) -> (deploy model, its device, facts); a user's own function fits the same slot.
"""

from dataclasses import dataclass

import torch
from torch import nn

from fastgpu.components import build
from fastgpu.compress import pruning, quantize
from fastgpu.compress.finetune import finetune
from fastgpu.errors import FastGPUError

INT8_CPU = ("quantize_dynamic", "quantize_static", "qat")  # x86 int8 kernels: deployed and measured on CPU


@dataclass
class Inputs:
    """What a method may need besides the model: data, devices, the run's precision and memory format."""

    data: object
    device: torch.device
    precision: object
    memory_format: torch.memory_format
    example: torch.Tensor
    loss: object  # the task's loss(output, target), for fine-tuning

    @property
    def training(self) -> tuple:
        """finetune's arguments after the epochs and the learning rate."""
        return self.device, self.precision, self.memory_format, self.loss


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    from torch.sparse import SparseSemiStructuredTensor

    if isinstance(tensor, SparseSemiStructuredTensor):
        return tensor.to_dense()
    return tensor.qdata if hasattr(tensor, "qdata") else tensor  # torchao Int8Tensor: its int8 data


def deploy_device(name: str, device: torch.device) -> torch.device:
    """Where the compressed model runs: x86 int8 kernels on the CPU, everything else where it trained."""
    return torch.device("cpu") if name in INT8_CPU else device


def sparsity(model: nn.Module) -> dict:
    """Zero fraction of the conv/linear weights; parameter and non-zero counts (int8 weights included)."""
    weights = [_plain(m.weight) for m, _ in pruning.prunable(model)]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    tensors = [_plain(p) for p in model.parameters()] + [b for b in model.buffers() if b.dtype == torch.int8]
    params = sum(t.numel() for t in tensors)
    nonzero = sum(int((t != 0).sum()) for t in tensors)
    out = {"params": params, "nonzero_params": nonzero}
    if total:
        out["sparsity"] = zeros / total
    return out


def sparse24_plan(model: nn.Module, example: torch.Tensor) -> dict:
    """Which layers 2:4 kernels can take (nn.Linear, in_features % 64 == 0, out_features % 32 == 0) and
    their share of the model's forward FLOPs (torch.utils.flop_counter, one pass over `example`)."""
    from torch.utils.flop_counter import FlopCounterMode

    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    eligible = [(name, m) for name, m in linears if m.in_features % 64 == 0 and m.out_features % 32 == 0]
    rows = {}
    hooks = [
        m.register_forward_hook(
            lambda mod, inputs, out, name=name: rows.__setitem__(name, inputs[0].numel() // mod.in_features)
        )
        for name, m in eligible
    ]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    total = counter.get_total_flops()
    flops = sum(2 * rows.get(name, 0) * m.in_features * m.out_features for name, m in eligible)
    return {
        "layers": [name for name, _ in eligible],
        "linear_layers": [f"{name} ({m.in_features}->{m.out_features})" for name, m in linears],
        "flops_share": flops / total if total else 0.0,
    }


def sparse24(model: nn.Module, device, precision, example: torch.Tensor) -> tuple:
    """2:4 semi-structured sparsity on the eligible linear layers, in the run's half precision (the other
    layers untouched). Returns (model, facts: layers converted, their FLOPs share)."""
    if device.type != "cuda":
        raise FastGPUError(
            "compression=sparse24 (2:4 semi-structured sparsity) needs a CUDA GPU (sm_80+); "
            "use compression=prune on this device"
        )
    if precision.autocast_dtype not in (torch.float16, torch.bfloat16):
        raise FastGPUError(
            f"compression=sparse24 runs half-precision 2:4 kernels; this run is precision={precision.name}: "
            "use precision=bf16 or fp16"
        )
    plan = sparse24_plan(model, example)
    if not plan["layers"]:
        raise FastGPUError(
            "compression=sparse24 found no layer it can convert: 2:4 kernels need nn.Linear with in_features % 64 == 0 "
            f"and out_features % 32 == 0 (this model's: {', '.join(plan['linear_layers']) or 'none'}); "
            "use compression=prune, or a model with such layers (model=mlp)"
        )
    from torch.sparse import to_sparse_semi_structured

    for name in plan["layers"]:
        module = model.get_submodule(name)
        weight = module.weight.data.to(precision.autocast_dtype)
        groups = weight.view(-1, 4)
        smallest = groups.abs().topk(2, dim=1, largest=False).indices
        mask = torch.ones_like(groups, dtype=torch.bool).scatter_(1, smallest, False).view_as(weight)
        module.weight = nn.Parameter(to_sparse_semi_structured(weight * mask), requires_grad=False)
    facts = {"sparse24_layers": len(plan["layers"]), "sparse24_flops_share": plan["flops_share"]}
    return model, facts


def training_hook(cfg, model: nn.Module, total_steps: int):
    """A pruner the training loop calls during training (gradual pruning), else None."""
    if cfg.name == "prune" and cfg.schedule == "gradual":
        return pruning.GradualPruner(cfg, model, total_steps)
    return None


def none(cfg, model, io):
    return model.eval(), io.device, {}


def prune(cfg, model, io):
    if cfg.schedule == "oneshot":
        pruning.apply_magnitude_pruning(model, cfg.amount, cfg.scope)
        finetune(model.train(), io.data.train, cfg.finetune_epochs, cfg.finetune_lr, *io.training)
        pruning.make_permanent(model)
    return model.eval(), io.device, {}


def prune_structured(cfg, model, io):
    facts = {"structured_speedup": pruning.structured_prune(model, cfg.amount)}
    finetune(
        model.train(),
        io.data.train,
        cfg.finetune_epochs,
        cfg.finetune_lr,
        io.device,
        io.precision,
        io.memory_format,
        io.loss,
    )
    return model.eval(), io.device, facts


def semi_structured(cfg, model, io):
    model, facts = sparse24(model.eval(), io.device, io.precision, io.example.to(io.device))
    return model, io.device, facts


def _on_cpu(converted):
    """x86 int8 kernels: the model converts and deploys on the CPU."""
    return converted, torch.device("cpu"), {"compressed_device": "cpu"}


def quantize_dynamic(cfg, model, io):
    return _on_cpu(quantize.quantize_dynamic(model.cpu()))


def quantize_static(cfg, model, io):
    return _on_cpu(quantize.quantize_static(model.cpu(), io.data.train, cfg.calibration_batches, io.example.cpu()))


def qat(cfg, model, io):
    converted = quantize.quantize_aware_train(
        model.cpu(), io.data.train, cfg.qat_epochs, cfg.finetune_lr, io.example.cpu(), io.precision, io.loss
    )
    return _on_cpu(converted)


def compress(cfg, model: nn.Module, data, device, precision, memory_format, loss) -> tuple:
    """Return (deploy model, its device, facts about what was done) by the compression config's `method` target."""
    method = build(cfg.method, "compression.method")
    example = next(iter(data.val))[0][:2]
    return method(cfg, model, Inputs(data, device, precision, memory_format, example, loss))
