"""Evaluation metrics (torchmetrics, on the device) and peak memory (training start to the last evaluation)."""

import contextlib
import resource

import psutil
import torch
import torchmetrics
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassPrecision, MulticlassRecall


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


@contextlib.contextmanager
def memory_limit(limit_mb, device: torch.device):
    """Cap what the run may allocate while training (trainer.memory_limit_mb), so a too-large setting fails with
    a real out-of-memory error: on CUDA the caching allocator's per-process fraction of the GPU, on CPU the
    address space beyond what is mapped when training starts (RLIMIT_AS; thread arenas count too)."""
    if limit_mb is None:
        yield
        return
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, limit_mb * 2**20 / total), device)
        try:
            yield
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, device)
        return
    before = resource.getrlimit(resource.RLIMIT_AS)
    mapped = psutil.Process().memory_info().vms
    resource.setrlimit(resource.RLIMIT_AS, (mapped + int(limit_mb * 2**20), before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, before)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    stats = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        stats["peak_mem_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        stats["peak_mem_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    return stats
