"""Memory: a cap on what a run may allocate, and the peak it used (device and host)."""

import contextlib
import resource

import psutil
import torch


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
    # what training added to the resident memory, comparable across launchers. On CPU trainer.memory_limit_mb caps
    # new address space, not this: reusing pages mapped but not resident at the start grows it without new mappings
    stats = {"peak_rss_mb": peak_rss, "rss_growth_mb": max(peak_rss - _window_start_rss_mb, 0.0)}
    if device.type == "cuda":
        stats["peak_mem_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        stats["peak_mem_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    return stats
