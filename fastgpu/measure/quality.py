"""Model quality: evaluation metrics counted on the device (classification, language modelling) and the evaluation
pass over a loader. Every metric object takes the model's raw output (logits, a tuple, or an object with `.logits`
such as a Hugging Face model's) and the target, and reads the device only in compute()."""

import math

import torch
import torch.nn.functional as F

from fastgpu.measure.reduce import all_reduce_tensor


def logits_of(output) -> torch.Tensor:
    """The logits in a model's output: the tensor itself, a tuple's first element, a dict's 'logits', or `.logits`
    (Hugging Face's ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, dict):
        if "logits" in output:
            return output["logits"]
        raise TypeError(
            f"the model returned a dict with keys {sorted(map(str, output))} and no 'logits'; return logits, a tuple "
            "starting with them, or a dict with 'logits'"
        )
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        f"the model returned a {type(output).__name__}; return logits, a tuple starting with them, or a dict with "
        "'logits'"
    )


class ClassificationMetrics:
    """Loss, top-1 accuracy and macro precision/recall/F1 from three per-class counts (hits, predictions, targets)
    kept on the device and summed across ranks at compute(): memory grows with the class count, not its square.
    The numbers are torchmetrics' Multiclass* ones (a macro average leaves out a class that is neither a target nor a
    prediction; 0/0 counts as 0), checked against torchmetrics in tests/test_metrics.py. Not torchmetrics itself:
    importing it costs every process ~4.5 s of CPU (it loads torchvision, torch._dynamo and scipy.signal)."""

    def __init__(self, num_classes: int, device: torch.device):
        self.num_classes = num_classes
        self.counts = torch.zeros(3, num_classes, dtype=torch.int64, device=device)  # hits, predicted, actual
        self.loss = torch.zeros(2, dtype=torch.float64, device=device)  # summed loss, samples

    def reset(self) -> None:
        self.counts.zero_()
        self.loss.zero_()

    def update(self, output, target: torch.Tensor) -> None:
        logits = logits_of(output).float()
        predicted = logits.argmax(dim=1)
        # index_add_ rather than bincount, which reads its input's maximum back to the host on CUDA
        ones = torch.ones_like(target)
        self.counts[0].index_add_(0, target, (predicted == target).long())
        self.counts[1].index_add_(0, predicted, ones)
        self.counts[2].index_add_(0, target, ones)
        self.loss[0] += F.cross_entropy(logits, target, reduction="sum")
        self.loss[1] += target.numel()

    def compute(self) -> dict:
        hits, predicted, actual = all_reduce_tensor(self.counts).double()
        loss_sum, n = all_reduce_tensor(self.loss).tolist()
        present = (predicted + actual) > 0

        def macro(numerator, denominator):  # numerator <= denominator, so an empty class gives 0 / 1
            return float((numerator / denominator.clamp(min=1))[present].sum() / present.sum().clamp(min=1))

        return {
            "accuracy": float(hits.sum() / actual.sum().clamp(min=1)),
            "precision": macro(hits, predicted),
            "recall": macro(hits, actual),
            "f1": macro(2 * hits, predicted + actual),
            "loss": loss_sum / max(n, 1),
        }


class LanguageModelMetrics:
    """Next-token loss (mean over target tokens), perplexity exp(loss) and next-token accuracy; targets equal to
    `ignore_index` (padding) are left out."""

    def __init__(self, device: torch.device, ignore_index: int = -100):
        self.ignore_index = ignore_index
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # summed loss, tokens, correct tokens

    def reset(self) -> None:
        self.sums.zero_()

    def update(self, output, target: torch.Tensor) -> None:
        logits = logits_of(output).float().flatten(0, -2)
        target = target.flatten()
        counted = target != self.ignore_index
        self.sums[0] += F.cross_entropy(logits, target, reduction="sum", ignore_index=self.ignore_index)
        self.sums[1] += counted.sum()
        self.sums[2] += ((logits.argmax(dim=-1) == target) & counted).sum()

    def compute(self) -> dict:
        loss_sum, tokens, correct = all_reduce_tensor(self.sums).tolist()
        loss = loss_sum / max(tokens, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "accuracy": correct / max(tokens, 1)}


@torch.no_grad()
def evaluate(model, loader, autocast, device, memory_format, collection) -> dict:
    """The metrics of `collection` over `loader` (synchronised across ranks); leaves the model in eval mode."""
    try:
        model.eval()
    except NotImplementedError:  # an exported (quantised) program is in eval mode already
        pass
    collection.reset()
    for x, y in loader:
        x = x.to(device, non_blocking=True, memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        with autocast():
            output = model(x)
        collection.update(output, y)
    return collection.compute()
