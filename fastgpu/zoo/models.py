"""Built-in models, each a `_target_` of a model config; input channels, image size and class count come from the
data config by interpolation."""

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from fastgpu.components import build
from fastgpu.errors import FastGPUError


class ResidualBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallCNN(nn.Module):
    """Stem + two residual stages (width, 2*width; the second halves the resolution) + linear head."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.stage1 = ResidualBlock(width, width, 1)
        self.stage2 = ResidualBlock(width, 2 * width, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.stage2(self.stage1(self.stem(x)))
        return self.head(torch.flatten(self.pool(x), 1))


def mlp(in_channels: int, image_size: int, num_classes: int, hidden_dims=(256, 256), dropout: float = 0.0):
    """Flatten -> (Linear, ReLU[, Dropout]) per hidden layer -> Linear."""
    layers, width = [nn.Flatten()], in_channels * image_size * image_size
    for hidden in hidden_dims:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def resnet(arch: str, in_channels: int, image_size: int, num_classes: int, stem: str = "auto") -> nn.Module:
    """torchvision's `arch` (resnet18, resnet50, ...), random init; a CIFAR-style stem (3x3, no max-pool) for inputs
    <= 64 px unless `stem` says otherwise."""
    from torchvision import models as tv_models  # here: importing torchvision costs ~3 s of CPU (it loads dynamo)

    model = getattr(tv_models, arch)(weights=None, num_classes=num_classes)
    stem = stem if stem != "auto" else ("cifar" if image_size <= 64 else "imagenet")
    if stem not in ("cifar", "imagenet"):
        raise FastGPUError(f"model.stem={stem!r} is not known; use auto, cifar or imagenet")
    if stem == "cifar":
        model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return model


# what FastGPU reads itself from the model node; every other key is the target's argument
MODEL_KEYS = ("name", "activation_checkpointing")


def build_model(cfg) -> nn.Module:
    """The model node's `_target_`, called with its other keys (data facts come in by interpolation)."""
    model = build(cfg, "model", own_keys=MODEL_KEYS)
    if not isinstance(model, nn.Module):
        raise FastGPUError(
            f"model._target_={cfg._target_} built a {type(model).__name__}, not a torch.nn.Module; point it at a "
            "class or function that returns one"
        )
    if cfg.get("activation_checkpointing", False):  # absent from configs saved before the key existed
        checkpoint_blocks(model)
    return model


class Checkpointed(nn.Module):
    """Runs `block` without keeping its inner activations for backward: backward recomputes them (torch's
    non-reentrant checkpoint). Only the block's input is kept. In training mode BatchNorm's running statistics
    see the recomputation too, as with every activation-checkpointing wrapper."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, *args, **kwargs):
        if not torch.is_grad_enabled():
            return self.block(*args, **kwargs)
        return checkpoint(self.block, *args, use_reentrant=False, **kwargs)


def _unwrapped(module: nn.Module) -> nn.Module:
    return module.block if isinstance(module, Checkpointed) else module


def repeated_blocks(model: nn.Module) -> list:
    """(container, index) of each of the model's blocks, as activation checkpointing and FSDP's `per=block` wrap them.

    A model names its blocks itself with a `block_stack()` method returning their ModuleList (torchtitan's way: GPT
    does). Otherwise they are guessed: every residual block of a ResNet's four stages, or the largest stack of like
    blocks (a ModuleList or Sequential of one block class with children of its own: a ViT's encoder layers, Hugging
    Face's `h`). Blocks already wrapped in `Checkpointed` count as the blocks they wrap."""
    named = getattr(model, "block_stack", None)
    if callable(named):
        stack = named()
        return [(stack, i) for i in range(len(stack))]
    if hasattr(model, "layer4"):
        return [
            (layer, i) for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for i in range(len(layer))
        ]
    best = []
    for container in model.modules():
        if not isinstance(container, (nn.ModuleList, nn.Sequential)) or len(container) < 2:
            continue
        kinds = {type(_unwrapped(child)) for child in container}
        child = _unwrapped(container[0])
        if len(kinds) == 1 and len(list(child.children())) > 1 and len(container) > len(best):
            best = [(container, i) for i in range(len(container))]
    return best


def checkpoint_blocks(model: nn.Module) -> None:
    """Wrap every block (transformer layers, residual blocks; small_cnn: its two stages) in `Checkpointed`; a
    Hugging Face model by its own gradient_checkpointing_enable()."""
    if hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return
    if isinstance(model, SmallCNN):
        model.stage1, model.stage2 = Checkpointed(model.stage1), Checkpointed(model.stage2)
        return
    blocks = repeated_blocks(model)
    if not blocks:  # an mlp keeps little besides each layer's input, which a checkpoint keeps too
        raise FastGPUError(
            f"model.activation_checkpointing=true wraps repeated blocks (transformer layers, residual blocks), and "
            f"this {type(model).__name__} has none (an mlp saves nothing by it); set it to false"
        )
    for container, index in blocks:
        container[index] = Checkpointed(container[index])


def model_stats(model: nn.Module) -> dict:
    params = sum(p.numel() for p in model.parameters())
    size_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return {"params": params, "model_size_mb": size_bytes / 2**20}
