"""Model quality: evaluation metrics (a confusion matrix on the device) and the evaluation pass over a loader."""

import torch
import torch.nn.functional as F

from fastgpu.measure.reduce import all_reduce, all_reduce_tensor


class ClassificationMetrics:
    """Top-1 accuracy and macro precision/recall/F1 from a confusion matrix counted on the device and summed across
    ranks at compute(). The numbers are torchmetrics' Multiclass* ones (a macro average leaves out a class that is
    neither a target nor a prediction; 0/0 counts as 0), checked against torchmetrics in tests/test_metrics.py.
    Not torchmetrics itself: importing it costs every process ~4.5 s of CPU (it loads torchvision, torch._dynamo and
    scipy.signal), paid by each sweep point, DDP rank and Slurm task, for four ratios of one matrix."""

    def __init__(self, num_classes: int, device: torch.device):
        self.num_classes = num_classes
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)  # target x prediction

    def reset(self) -> None:
        self.counts.zero_()

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        # one-hot products rather than bincount, which reads its input's maximum back to the host on CUDA; 0/1
        # inputs and float32 sums are exact for any batch below 2**24
        predicted = F.one_hot(logits.argmax(dim=1), self.num_classes).float()
        actual = F.one_hot(target, self.num_classes).float()
        self.counts += (actual.T @ predicted).long()

    def compute(self) -> dict:
        confusion = all_reduce_tensor(self.counts).double()
        hits, predicted, actual = confusion.diagonal(), confusion.sum(0), confusion.sum(1)
        present = (predicted + actual) > 0

        def macro(numerator, denominator):  # numerator <= denominator, so an empty class gives 0 / 1
            return (numerator / denominator.clamp(min=1))[present].sum() / present.sum().clamp(min=1)

        return {
            "accuracy": hits.sum() / confusion.sum().clamp(min=1),
            "precision": macro(hits, predicted),
            "recall": macro(hits, actual),
            "f1": macro(2 * hits, predicted + actual),
        }


def eval_metrics(num_classes: int, device: torch.device) -> ClassificationMetrics:
    return ClassificationMetrics(num_classes, device)


_window_start_rss_mb = 0.0


@torch.no_grad()
def evaluate(model, loader, autocast, device, memory_format, collection) -> dict:
    """Loss and metrics over `loader` (synchronised across ranks); leaves the model in eval mode."""
    try:
        model.eval()
    except NotImplementedError:  # an exported (quantised) program is in eval mode already
        pass
    collection.reset()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    for x, y in loader:
        x = x.to(device, non_blocking=True, memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        with autocast():
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        count += y.numel()
        collection.update(logits, y)
    results = {k: float(v) for k, v in collection.compute().items()}
    loss_total, n = all_reduce([float(loss_sum), float(count)])
    results["loss"] = loss_total / max(n, 1)
    return results
