"""Measurement without per-step host-device syncs: step clocks, device-side loss sums, eval metrics, memory."""

import resource
import time

import torch
import torchmetrics
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassPrecision, MulticlassRecall


class StepClock:
    """Marks the end of every training step; durations are read only at `collect()`.

    CUDA kernels run asynchronously, so reading a host clock per step would need a sync. On CUDA each
    mark records an event into the stream (no sync); `collect()` waits for the last event once and
    returns the gaps between consecutive marks. On CPU work is synchronous and perf_counter is exact.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._pool: list = []
        self._marks: list = []

    def _mark(self):
        if not self.cuda:
            return time.perf_counter()
        if len(self._marks) >= len(self._pool):
            self._pool.append(torch.cuda.Event(enable_timing=True))
        event = self._pool[len(self._marks)]
        event.record()
        return event

    def start(self) -> None:
        self._marks = []
        self._marks.append(self._mark())

    def step(self) -> None:
        self._marks.append(self._mark())

    def collect(self) -> list:
        """Seconds per step since the last start/collect; the chain continues from the last mark."""
        marks = self._marks
        if len(marks) < 2:
            return []
        if self.cuda:
            marks[-1].synchronize()
            durations = [a.elapsed_time(b) / 1e3 for a, b in zip(marks, marks[1:])]
            last = len(marks) - 1  # the last event starts the next chain; move it to slot 0
            self._pool[0], self._pool[last] = self._pool[last], self._pool[0]
            self._marks = [self._pool[0]]
        else:
            durations = [b - a for a, b in zip(marks, marks[1:])]
            self._marks = [marks[-1]]
        return durations


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def eval_metrics(num_classes: int, device: torch.device) -> torchmetrics.MetricCollection:
    """Loss, top-1 accuracy and macro precision/recall/F1; synced across ranks at compute()."""
    kwargs = dict(num_classes=num_classes, average="macro")
    return torchmetrics.MetricCollection(
        {
            "accuracy": MulticlassAccuracy(num_classes=num_classes, average="micro"),
            "precision": MulticlassPrecision(**kwargs),
            "recall": MulticlassRecall(**kwargs),
            "f1": MulticlassF1Score(**kwargs),
        }
    ).to(device)


def percentile(values: list, q: float) -> float:
    if not values:
        return float("nan")
    return float(torch.tensor(values, dtype=torch.float64).quantile(q))


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    stats = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        stats["peak_mem_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        stats["peak_mem_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    return stats
