"""What a run learns. A task owns the loss, the evaluation metrics, which part of a batch is the model's input and
which its target, and the unit its throughput counts: samples (classification) or tokens (language modelling).
The `task` config group's `_target_` builds one, so a user's own task fits the same slot."""

import torch
import torch.nn.functional as F

from fastgpu.errors import FastGPUError
from fastgpu.measure.quality import ClassificationMetrics, LanguageModelMetrics, logits_of


class Task:
    """A batch may be a tuple/list (input, target, ...), a dict (`input_key`, `target_key`) or, for a task that
    derives its target from its input (`split_tensor`), one tensor."""

    unit = "samples"

    def __init__(self, input_key: str = "input", target_key: str = "target"):
        self.input_key, self.target_key = input_key, target_key

    def split(self, batch) -> tuple:
        """(input, target) of one batch as the loader yields it."""
        if isinstance(batch, dict):
            missing = [k for k in (self.input_key, self.target_key) if k not in batch]
            if missing:
                raise FastGPUError(
                    f"a batch is a dict with keys {sorted(batch)} but has no {missing[0]!r}; set "
                    f"task.input_key / task.target_key to the keys of the input and the target"
                )
            return batch[self.input_key], batch[self.target_key]
        if isinstance(batch, (tuple, list)) and len(batch) >= 2:
            return batch[0], batch[1]
        if isinstance(batch, torch.Tensor):
            return self.split_tensor(batch)
        raise FastGPUError(
            f"a batch is a {type(batch).__name__}; yield (input, target), a dict with task.input_key/target_key, "
            "or (language_model) one tensor of token ids"
        )

    def split_tensor(self, batch: torch.Tensor) -> tuple:
        raise FastGPUError(
            f"task={self.name} needs an input and a target, but a batch is one tensor; yield (input, target) or a dict"
        )

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    def units(self, target: torch.Tensor) -> int:
        """How many units (samples or tokens) a batch with this target trains: its shape only, no device read."""
        return len(target)

    def loss(self, output, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, device: torch.device):
        raise NotImplementedError


class Classification(Task):
    """Cross-entropy over `num_classes`; accuracy and macro precision/recall/F1."""

    name = "classification"

    def __init__(self, num_classes: int, input_key: str = "input", target_key: str = "target"):
        super().__init__(input_key, target_key)
        self.num_classes = num_classes

    def loss(self, output, target):
        return F.cross_entropy(logits_of(output), target)

    def metrics(self, device):
        return ClassificationMetrics(self.num_classes, device)


class LanguageModel(Task):
    """Next-token prediction: the model maps token ids (batch, time) to logits (batch, time, vocab). A batch that is
    one tensor of ids (batch, time + 1) is split into input [:, :-1] and target [:, 1:]; so is a dict batch whose
    labels are its input ids (Hugging Face's convention, where the model shifts), by `shift_labels`: auto (decided
    once, on the first batch: labels equal to input_ids wherever they are not ignore_index), true or false (the
    labels are the next tokens already, as FastGPU's data=text yields them). Throughput counts target tokens
    (batch x time), as nanoGPT and torchtitan do."""

    name = "language_model"
    unit = "tokens"

    def __init__(
        self, input_key: str = "input_ids", target_key: str = "labels", ignore_index: int = -100, shift_labels="auto"
    ):
        super().__init__(input_key, target_key)
        if shift_labels not in ("auto", True, False):
            raise FastGPUError(f"task.shift_labels={shift_labels!r} is not known; use one of auto, true, false")
        self.ignore_index, self.shift_labels = ignore_index, shift_labels

    def split(self, batch) -> tuple:
        x, y = super().split(batch)
        if isinstance(batch, dict) and self._shifts(x, y):
            return x[:, :-1], y[:, 1:]
        return x, y

    def _shifts(self, x, y) -> bool:
        if self.shift_labels == "auto":  # decided on the first batch: no comparison in the steps after it
            self.shift_labels = bool(x.shape == y.shape and torch.equal(torch.where(y == self.ignore_index, x, y), x))
        return self.shift_labels

    def split_tensor(self, batch):
        return batch[:, :-1], batch[:, 1:]

    def units(self, target):
        return target.numel()

    def loss(self, output, target):
        logits = logits_of(output)
        return F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=self.ignore_index)

    def metrics(self, device):
        return LanguageModelMetrics(device, self.ignore_index)


class TaskBatches:
    """A loader whose batches come out as (input, target) by the task's split; its length is the loader's."""

    def __init__(self, loader, split):
        self.loader, self.split = loader, split

    def __iter__(self):
        return map(self.split, self.loader)

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):  # sampler, batch_size, dataset: the loader's
        return getattr(self.loader, name)


def batches_for(task: Task, data):
    """The data bundle with loaders that yield (input, target): the loaders themselves where their batches are a
    pair already (FastGPU's tensor datasets), wrapped in the task's split otherwise."""
    if not getattr(data, "pairs", False):
        data.train, data.val = TaskBatches(data.train, task.split), TaskBatches(data.val, task.split)
    return data


def build_task(cfg) -> Task:
    from fastgpu.components import build

    task = build(cfg, "task", own_keys=("name",))
    if not isinstance(task, Task):
        raise FastGPUError(
            f"task._target_={cfg._target_} built a {type(task).__name__}, not a fastgpu.train.task.Task; subclass it"
        )
    return task
