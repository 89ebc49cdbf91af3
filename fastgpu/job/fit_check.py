"""Your model and data, checked on one batch before anything is written (Lightning's sanity check, torchtitan's and
the Hugging Face Trainer's failure before the first step): the data's first two training samples through the model
and the task's loss, on the CPU. A misfit is one line naming the shapes and the keys to change, before a run dir or a
W&B run exists. `trainer.preflight_batch=false` skips it."""

import re
import sys

import torch
from torch.utils.data import DataLoader, IterableDataset, default_collate

from fastgpu.components import build, component_name
from fastgpu.errors import FastGPUError, first_line
from fastgpu.measure.quality import logits_of
from fastgpu.train.task import build_task
from fastgpu.zoo.data import LOADER_KEYS
from fastgpu.zoo.models import build_model

SAMPLES = 2
MAX_SHARE_OF_MEMORY = 0.25  # a model whose parameters take more than this share of memory is not built twice


def check_one_batch(cfg) -> None:
    if not cfg.trainer.get("preflight_batch", True) or cfg.data.get("loader") == "dali":
        return
    task = build_task(cfg.task)
    x, y = task.split(first_batch(cfg.data))
    if too_large_to_build_twice(cfg.model):
        return
    model = build_model(cfg.model).eval()
    model_name, data_name = described_component(cfg, "model"), described_component(cfg, "data")
    with torch.no_grad():
        try:
            output = model(x)
        except Exception as exc:  # noqa: BLE001 - whatever the user's forward raises is the misfit to name
            raise FastGPUError(
                f"{model_name} does not fit {data_name}: its forward failed on an input of shape {shape(x)} "
                f"({first_line(exc)[:200]}){suspects(cfg.model, str(exc), x)}"
            ) from None
        try:
            logits = logits_of(output)
        except TypeError as exc:
            raise FastGPUError(f"{model_name}: {exc}") from None
        check_logits(task, logits, x, model_name)
        try:
            task.loss(output, y)
        except Exception as exc:  # noqa: BLE001
            raise FastGPUError(
                f"task={task.name} cannot score {model_name}: its loss failed on logits {shape(logits)} and targets "
                f"{shape(y)} of {y.dtype if isinstance(y, torch.Tensor) else type(y).__name__} "
                f"({first_line(exc)[:160]}); check task.target_key and what the data yields"
            ) from None


def first_batch(data_cfg):
    """The data's first SAMPLES training samples as one batch, without FastGPU's loaders (no worker processes)."""
    train, _ = build(data_cfg, "data", own_keys=LOADER_KEYS)
    if isinstance(train, DataLoader) or not hasattr(train, "__getitem__"):
        first = next(iter(train))
        if isinstance(train, IterableDataset):  # one sample at a time
            samples = [first] + [s for _, s in zip(range(SAMPLES - 1), iter(train))]
            return default_collate(samples)
        return _head(first)  # a ready loader's batch
    return default_collate([train[i] for i in range(min(SAMPLES, len(train)))])


def _head(batch):
    if isinstance(batch, torch.Tensor):
        return batch[:SAMPLES]
    if isinstance(batch, dict):
        return {k: _head(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_head(v) for v in batch)
    return batch


def too_large_to_build_twice(model_cfg) -> bool:
    """Built on the meta device (no memory), a model whose parameters would take too much memory skips the check."""
    import psutil

    try:
        with torch.device("meta"):
            meta = build_model(model_cfg)
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta: the CPU build below says what is wrong
        return False
    size = sum(p.numel() * p.element_size() for p in meta.parameters())
    if size <= MAX_SHARE_OF_MEMORY * psutil.virtual_memory().available:
        return False
    print(
        f"fastgpu: note: the one-batch check is skipped: the model's {size / 2**30:.1f} GB of parameters are too large "
        "to build twice here (trainer.preflight_batch=false skips it without this note)",
        file=sys.stderr,
    )
    return True


def check_logits(task, logits: torch.Tensor, x, model_name: str) -> None:
    if task.unit == "tokens":
        if logits.dim() != 3 or (isinstance(x, torch.Tensor) and logits.shape[:2] != x.shape[:2]):
            raise FastGPUError(
                f"task=language_model needs logits of shape (batch, time, vocabulary) from token ids (batch, time); "
                f"{model_name} returned {shape(logits)} on an input of shape {shape(x)}: use a language model "
                "(model=gpt data=text) or task=classification"
            )
        return
    if logits.dim() != 2:
        hint = "; for a language model use task=language_model" if logits.dim() == 3 else ""
        raise FastGPUError(
            f"task={task.name} needs logits of shape (batch, classes); {model_name} returned {shape(logits)} on an "
            f"input of shape {shape(x)}{hint}"
        )
    classes = getattr(task, "num_classes", None)
    if classes is not None and logits.shape[1] != classes:
        raise FastGPUError(
            f"{model_name} returns {logits.shape[1]} classes but data.num_classes={classes}; give the model "
            "num_classes=${data.num_classes} (e.g. '+model.num_classes=${data.num_classes}')"
        )


def suspects(model_cfg, message: str, x) -> str:
    """'; check model.features=20 (the input's sizes are 2, 16)': the model's whole-number keys whose value the
    error names and the input does not have."""
    from omegaconf import OmegaConf

    numbers = {int(n) for n in re.findall(r"\d+", message)}
    sizes = set(x.shape) if isinstance(x, torch.Tensor) else set()
    keys = [
        f"model.{k}={v}"
        for k, v in OmegaConf.to_container(model_cfg, resolve=True).items()
        if isinstance(v, int) and not isinstance(v, bool) and v in numbers and v not in sizes
    ]
    sizes_text = ", ".join(map(str, x.shape)) if isinstance(x, torch.Tensor) else "?"
    if keys:
        return f"; check {', '.join(keys)} against the data (its input's sizes are {sizes_text})"
    return f"; check the model's keys against the data (its input's sizes are {sizes_text})"


def described_component(cfg, group: str) -> str:
    """'model=small_cnn', or for your own component its target: 'model._target_=mypkg.net'."""
    node = cfg[group]
    if node.get("name") in (None, "custom"):
        return f"{group}._target_={node._target_}"
    return f"{group}={component_name(node)}"


def shape(value) -> str:
    if isinstance(value, torch.Tensor):
        return str(list(value.shape))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {shape(v)}" for k, v in value.items()) + "}"
    return type(value).__name__
