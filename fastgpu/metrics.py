"""Evaluation metrics (a confusion matrix on the device) and peak memory (training start to the last evaluation)."""

import contextlib
import resource

import psutil
import torch
import torch.nn.functional as F

from fastgpu.parallel import all_reduce_tensor


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


_window_start_rss_mb = 0.0


def reset_peak_memory(device: torch.device) -> None:
    """Start the peak-memory window: CUDA's peak statistics, and the process's peak RSS (Linux resets VmHWM on
    writing 5 to clear_refs), so a point's peak is its own even after earlier points in the same process."""
    global _window_start_rss_mb
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:  # not Linux, or not permitted: peak_rss_mb falls back to the process's lifetime maximum
        pass
    _window_start_rss_mb = psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    """Peak resident memory since reset_peak_memory (VmHWM), else the process's lifetime maximum (ru_maxrss)."""
    try:
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(device: torch.device) -> dict:
    """Peak memory since reset_peak_memory: RSS, and on CUDA the caching allocator's allocated and reserved bytes."""
    peak_rss = _peak_rss_mb()
    # what training added to the process (trainer.memory_limit_mb caps this on CPU): comparable across launchers
    stats = {"peak_rss_mb": peak_rss, "rss_growth_mb": max(peak_rss - _window_start_rss_mb, 0.0)}
    if device.type == "cuda":
        stats["peak_mem_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        stats["peak_mem_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    return stats
