"""Models of the well-known zoos by name, always with random weights (FastGPU never downloads): every torchvision
classification model, timm's models (extra `.[timm]`), and Hugging Face causal language models built from a local
config class (extra `.[hf]`), never from the hub."""

from torch import nn

from fastgpu.errors import FastGPUError


def torchvision_model(arch: str, in_channels: int, num_classes: int, image_size: int, **kwargs) -> nn.Module:
    """torchvision.models.get_model(arch) with random init; ViTs get the data's image size."""
    from torchvision import models

    known = models.list_models(module=models)  # the classification models
    if arch not in known:
        from difflib import get_close_matches

        near = get_close_matches(arch, known, n=3)
        hint = f"did you mean {', '.join(near)}?" if near else f"{len(known)} names: torchvision.models.list_models()"
        raise FastGPUError(f"model.name={arch} is not a torchvision classification model; {hint}")
    if in_channels != 3:
        raise FastGPUError(
            f"model=torchvision takes 3-channel images and data.channels={in_channels}; timm's models take any: "
            f"{timm_equivalent(arch, image_size)}"
        )
    if arch.startswith("vit_"):  # the other models adapt to any input size by their pooling
        kwargs.setdefault("image_size", image_size)
    return models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)


def timm_equivalent(arch: str, image_size: int) -> str:
    """A timm command that trains on the same data: a ViT with a patch size that divides the data's images."""
    if arch.startswith("vit_"):
        patch = next((p for p in (16, 8, 4, 2) if image_size % p == 0 and image_size // p >= 2), 1)
        return f"model=timm model.name=vit_tiny_patch16_224 +model.patch_size={patch}"
    return f"model=timm model.name={arch}"


def timm_model(arch: str, in_channels: int, num_classes: int, image_size=None, **kwargs) -> nn.Module:
    """timm.create_model(arch, pretrained=False) for the data's channels and classes; a model built for one input
    size (a ViT) gets the data's image size."""
    timm = _extra("timm", "timm")
    if not timm.is_model(arch):
        raise FastGPUError(f"model.name={arch} is not a timm model; list them with timm.list_models('{arch[:4]}*')")
    pretrained = timm.models.get_pretrained_cfg(arch, allow_unregistered=True)
    if image_size is not None and getattr(pretrained, "fixed_input_size", False):
        kwargs.setdefault("img_size", image_size)
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)


def hf_causal_lm(config: str, vocab_size: int, **overrides) -> nn.Module:
    """A Hugging Face causal LM from its local config class (`config`: a model type such as gpt2, llama, qwen2),
    random init; `overrides` are the config's own keys (n_layer, hidden_size, ...)."""
    transformers = _extra("transformers", "hf")
    try:
        model_config = transformers.AutoConfig.for_model(config, vocab_size=vocab_size, **overrides)
    except ValueError as exc:
        raise FastGPUError(
            f"model.config={config} is not a Hugging Face model type ({exc}); e.g. gpt2, llama"
        ) from None
    return transformers.AutoModelForCausalLM.from_config(model_config)


def _extra(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise FastGPUError(f"this model needs {module}: pip install 'fastgpu[{extra}]'") from None
