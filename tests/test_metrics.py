"""Evaluation metrics: per-class counts on the device, with torchmetrics' numbers, summed across real gloo ranks."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastgpu.measure.quality import ClassificationMetrics
from fastgpu.train.distributed import free_port

CLASSES = 7


def _batches(count=5, size=33):
    """Random logits and targets in which class 6 never occurs and class 5 is never a target."""
    generator = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(count):
        logits = torch.randn(size, CLASSES, generator=generator)
        logits[:, 6] = -10.0  # never predicted
        targets = torch.randint(0, 5, (size,), generator=generator)  # 5 and 6 never targets
        batches.append((logits, targets))
    return batches


def _computed(batches) -> dict:
    metrics = ClassificationMetrics(CLASSES, torch.device("cpu"))
    for logits, targets in batches:
        metrics.update(logits, targets)
    return {k: float(v) for k, v in metrics.compute().items()}


def test_a_hand_counted_confusion_matrix():
    # targets 0 0 1 2, predictions 0 1 1 1; class 3 is neither and is left out of the macro averages
    metrics = ClassificationMetrics(4, torch.device("cpu"))
    metrics.update(torch.eye(4)[[0, 1, 1, 1]], torch.tensor([0, 0, 1, 2]))
    got = {k: float(v) for k, v in metrics.compute().items()}
    assert got["accuracy"] == pytest.approx(2 / 4)
    assert got["precision"] == pytest.approx((1 / 1 + 1 / 3 + 0) / 3)
    assert got["recall"] == pytest.approx((1 / 2 + 1 / 1 + 0 / 1) / 3)
    assert got["f1"] == pytest.approx((2 / 3 + 2 / 4 + 0) / 3)
    metrics.reset()
    metrics.update(torch.eye(4)[[3]], torch.tensor([3]))
    got = metrics.compute()
    assert {k: got[k] for k in ("accuracy", "precision", "recall", "f1")} == {
        "accuracy": 1,
        "precision": 1,
        "recall": 1,
        "f1": 1,
    }


def test_the_numbers_are_torchmetrics_ones():
    torchmetrics = pytest.importorskip("torchmetrics")
    from torchmetrics.classification import (
        MulticlassAccuracy,
        MulticlassF1Score,
        MulticlassPrecision,
        MulticlassRecall,
    )

    macro = dict(num_classes=CLASSES, average="macro")
    reference = torchmetrics.MetricCollection(
        {
            "accuracy": MulticlassAccuracy(num_classes=CLASSES, average="micro"),
            "precision": MulticlassPrecision(**macro),
            "recall": MulticlassRecall(**macro),
            "f1": MulticlassF1Score(**macro),
        }
    )
    batches = _batches()
    for logits, targets in batches:
        reference.update(logits, targets)
    expected = {k: float(v) for k, v in reference.compute().items()}
    logits, targets = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    expected["loss"] = float(torch.nn.functional.cross_entropy(logits, targets))  # the mean over every sample
    assert _computed(batches) == pytest.approx(expected, rel=1e-6)


def _rank(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(_computed(_batches()[rank::world]), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_each_counting_half_report_the_whole(tmp_path):
    mp.spawn(_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    whole = _computed(_batches())
    for rank in range(2):
        assert torch.load(tmp_path / f"rank{rank}.pt") == pytest.approx(whole, rel=1e-12)
    assert _computed(_batches()[0::2]) != pytest.approx(whole)  # one rank's half alone differs
