"""Figures combined across ranks: a few numbers at the end of a run, never per step."""

import torch
import torch.distributed as dist


def all_reduce_tensor(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """A tensor reduced across ranks (a copy on the backend's device; the tensor itself when not distributed)."""
    if not dist.is_initialized():
        return tensor
    reduced = tensor.to("cuda" if dist.get_backend() == "nccl" else "cpu", copy=True)
    dist.all_reduce(reduced, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return reduced


def all_reduce(values: list, op: str = "sum") -> list:
    """Reduce a few Python numbers across ranks (at the end of a run, never per step)."""
    if not dist.is_initialized():
        return values
    return all_reduce_tensor(torch.tensor(values, dtype=torch.float64), op).tolist()
