"""int8 quantisation with torchao: dynamic `quantize_` (linear layers), static and QAT through PT2E with
the x86 inductor quantizer. The int8 kernels are x86 CPU kernels: these models deploy to the CPU."""

import logging
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from fastgpu.compress.finetune import finetune

# torchao's import logs a torch-internal deprecation notice about one of its enums; it is not ours to fix
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


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
    from fastgpu.compress.deploy import export_program

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


def quantize_aware_train(model: nn.Module, loader, epochs: int, lr: float, example: torch.Tensor, precision, loss_fn):
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        prepared = prepare_qat_pt2e(_export(model.train(), example).module(), _x86_quantizer(is_qat=True))
    finetune(prepared, loader, epochs, lr, torch.device("cpu"), precision, torch.preserve_format, loss_fn)
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
