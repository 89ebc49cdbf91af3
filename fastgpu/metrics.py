"""Evaluation metrics (torchmetrics, on the device) and peak memory (training start to the last evaluation)."""

import resource

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


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    stats = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        stats["peak_mem_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        stats["peak_mem_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    return stats
