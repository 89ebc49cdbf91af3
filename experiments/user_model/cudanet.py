"""A user's model module as many are written: it asks CUDA for its devices at import. A process forked after that is
a "bad fork" that cannot use CUDA, so every sweep point must start from a process that never imported it.
experiments/gpu_check.sh and tests/test_isolation.py sweep it (on PYTHONPATH) with `model=custom data=custom`.
With FORK_LOG set, each build of the model appends "<pid> <torch.cuda._is_in_bad_fork()>" there: what the user's own
code sees in the point's process."""

import os

import torch
from torch import nn
from torch.utils.data import TensorDataset

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the common line: it asks CUDA at import


def net(features: int, num_classes: int, width: int = 32) -> nn.Module:
    if "FORK_LOG" in os.environ:
        with open(os.environ["FORK_LOG"], "a") as log:
            log.write(f"{os.getpid()} {torch.cuda._is_in_bad_fork()}\n")
    return nn.Sequential(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, num_classes))


def blobs(num_classes: int, features: int = 16, n: int = 1024, seed: int = 0):
    """Gaussian blobs: (train, val) of 3/4 and 1/4 of n samples."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = 2 * torch.randn(num_classes, features, generator=g)[y] + torch.randn(n, features, generator=g)
    split = n * 3 // 4
    return TensorDataset(x[:split], y[:split]), TensorDataset(x[split:], y[split:])
