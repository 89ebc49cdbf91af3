"""Compression after (or, for gradual pruning, during) training: pruning, structured pruning with
physical channel removal, int8 quantisation (torchao: dynamic `quantize_`, static and QAT through PT2E).

Every option turns the trained fp32 model into a *deploy model* that the run evaluates, exports and
benchmarks; `none` deploys the trained model as it is.
"""

import contextlib
import logging
import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from fastgpu.errors import FastGPUError

# torchao's import logs a torch-internal deprecation notice about one of its enums; it is not ours to fix
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

OPTIONS = ("none", "prune", "prune_structured", "quantize_dynamic", "quantize_static", "qat", "sparse24")
INT8_CPU = ("quantize_dynamic", "quantize_static", "qat")  # x86 int8 kernels: deployed and measured on CPU


def prunable(model: nn.Module) -> list:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


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
    weights = [_plain(m.weight) for m, _ in prunable(model)]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    tensors = [_plain(p) for p in model.parameters()] + [b for b in model.buffers() if b.dtype == torch.int8]
    params = sum(t.numel() for t in tensors)
    nonzero = sum(int((t != 0).sum()) for t in tensors)
    out = {"params": params, "nonzero_params": nonzero}
    if total:
        out["sparsity"] = zeros / total
    return out


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


def finetune(model: nn.Module, loader, epochs: int, lr: float, device, precision, memory_format) -> None:
    """A short fine-tune after one-shot pruning or for QAT: plain SGD, the run's precision (GradScaler
    included) and memory format where it runs on the training device."""
    from fastgpu.step import train_step

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    same_device = device.type == precision.device_type
    scaler = torch.amp.GradScaler(device.type, enabled=same_device and precision.scaler.is_enabled())
    autocast = precision.autocast if same_device else contextlib.nullcontext
    for _ in range(epochs):
        for x, y in loader:
            x = x.to(device, non_blocking=True, memory_format=memory_format)
            train_step(model, x, y.to(device, non_blocking=True), optimizer, scaler, autocast)


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


# --- quantisation -------------------------------------------------------------------------------------


def unshare_activations(model: nn.Module) -> nn.Module:
    """Replace ReLU modules by the function. torchvision's blocks call one `self.relu` twice; the x86
    quantizer's pattern matching then sees one partition with two outputs and gives up."""
    for module in list(model.modules()):
        if isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            continue  # containers call each child once, and only their registered children
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                delattr(module, name)
                setattr(module, name, F.relu)
    return model


def _export(model: nn.Module, example: torch.Tensor):
    from fastgpu.deploy import export_program

    return export_program(unshare_activations(model), example)


def drop_unused_attributes(graph_module) -> None:
    """A converted PT2E module keeps the fp32 weights beside the int8 ones; drop what the graph never reads."""
    used = {node.target for node in graph_module.graph.nodes if node.op == "get_attr"}
    for name, _ in list(graph_module.named_parameters()) + list(graph_module.named_buffers()):
        if name not in used:
            owner_path, _, attr = name.rpartition(".")
            delattr(graph_module.get_submodule(owner_path) if owner_path else graph_module, attr)


def _x86_quantizer(is_qat: bool):
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config(is_qat=is_qat))
    return quantizer


def quantize_static(model: nn.Module, loader, batches: int, example: torch.Tensor):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    with warnings.catch_warnings():  # "input of maxpool2d is not quantized": expected for the stem
        warnings.simplefilter("ignore", UserWarning)
        prepared = prepare_pt2e(_export(model.eval(), example).module(), _x86_quantizer(is_qat=False))
    with torch.no_grad():
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            prepared(x.cpu())
    converted = convert_pt2e(prepared)
    drop_unused_attributes(converted)
    return converted


def quantize_aware_train(model: nn.Module, loader, epochs: int, lr: float, example: torch.Tensor, precision):
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        prepared = prepare_qat_pt2e(_export(model.train(), example).module(), _x86_quantizer(is_qat=True))
    finetune(prepared, loader, epochs, lr, torch.device("cpu"), precision, torch.preserve_format)
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared)
    drop_unused_attributes(converted)
    return converted


def quantize_dynamic(model: nn.Module) -> nn.Module:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantize_(model.eval(), Int8DynamicActivationInt8WeightConfig())  # nn.Linear layers
    return model


def quantized_weight_bytes(deployed: nn.Module) -> dict:
    """Bytes of the quantised layers' weights before (fp32) and after (int8 data + scales/zero points)."""
    after, quantized_numel = 0, 0
    for tensor in deployed.state_dict().values():
        if hasattr(tensor, "qdata"):  # torchao Int8Tensor
            after += sum(t.numel() * t.element_size() for t in (tensor.qdata, tensor.scale))
            quantized_numel += tensor.qdata.numel()
    for name, tensor in deployed.state_dict().items():
        if not hasattr(tensor, "qdata") and (
            tensor.dtype == torch.int8 or name.startswith(("_scale_", "_zero_point_"))
        ):
            after += tensor.numel() * tensor.element_size()
            quantized_numel += tensor.numel() if tensor.dtype == torch.int8 else 0
    return {"quantized_weight_bytes_before": 4 * quantized_numel, "quantized_weight_bytes_after": after}


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


def compress(cfg, model: nn.Module, data, device, precision, memory_format) -> tuple:
    """Return (deploy model, its device, facts about what was done) for compression option cfg.name."""
    if cfg.name not in OPTIONS:
        raise FastGPUError(f"compression={cfg.name!r} is not known; use one of {', '.join(OPTIONS)}")
    facts = {}
    example = next(iter(data.val))[0][:2]
    if cfg.name == "none":
        return model.eval(), device, facts
    if cfg.name == "prune":
        if cfg.schedule == "oneshot":
            apply_magnitude_pruning(model, cfg.amount, cfg.scope)
            finetune(model.train(), data.train, cfg.finetune_epochs, cfg.finetune_lr, device, precision, memory_format)
            make_permanent(model)
        return model.eval(), device, facts
    if cfg.name == "prune_structured":
        facts["structured_speedup"] = structured_prune(model, cfg.amount)
        finetune(model.train(), data.train, cfg.finetune_epochs, cfg.finetune_lr, device, precision, memory_format)
        return model.eval(), device, facts
    if cfg.name == "sparse24":
        model, facts = sparse24(model.eval(), device, precision, example.to(device))
        return model, device, facts
    cpu = deploy_device(cfg.name, device)
    model = model.to(cpu)
    facts["compressed_device"] = "cpu"
    if cfg.name == "quantize_dynamic":
        return quantize_dynamic(model), cpu, facts
    if cfg.name == "quantize_static":
        return quantize_static(model, data.train, cfg.calibration_batches, example.cpu()), cpu, facts
    return (
        quantize_aware_train(model, data.train, cfg.qat_epochs, cfg.finetune_lr, example.cpu(), precision),
        cpu,
        facts,
    )
