"""trainer.profile=true: a torch.profiler trace of a few steady steps, and the ops that took the time.

The profiler waits out the run's warm-up, warms itself up for one step, records `profile_steps` steps, then
writes `profile/trace.json` (Chrome trace: chrome://tracing, Perfetto or TensorBoard) into the run dir and
keeps the top ops by device time (CUDA kernels' time on a GPU, CPU time otherwise). The meter treats those
steps as warm-up too, so the profiler's own overhead never reaches the throughput figures.
"""

from pathlib import Path

import torch

TRACE_FILE = "profile/trace.json"
TOP_OPS = 10


class StepProfiler:
    """`step()` once per training step (rank 0 only; other ranks get a no-op); `top_ops` after the window."""

    def __init__(self, out_dir: Path, device: torch.device, warmup_steps: int, active_steps: int):
        activities = [torch.profiler.ProfilerActivity.CPU]
        self.cuda = device.type == "cuda"
        if self.cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.path = Path(out_dir) / TRACE_FILE
        self.top_ops: list = []
        self._profiler = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=warmup_steps, warmup=1, active=active_steps, repeat=1),
            on_trace_ready=self._ready,
            record_shapes=False,
        )
        self._profiler.start()
        self._open = True

    @staticmethod
    def steps_taken(warmup_steps: int, active_steps: int) -> int:
        """Steps from the start until the trace is done: the meter's warm-up when profiling."""
        return warmup_steps + 1 + active_steps

    def step(self) -> None:
        if self._open:
            self._profiler.step()

    def _ready(self, profiler) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        profiler.export_chrome_trace(str(self.path))
        self.top_ops = top_ops(profiler.key_averages(), self.cuda)
        self._open = False

    def close(self) -> None:
        if self._open:  # the run ended before the window did: keep what was recorded
            self._profiler.stop()
            self._open = False


def top_ops(averages, cuda: bool, n: int = TOP_OPS) -> list:
    """The ops with the most self time (device time on CUDA), with their share of the profiled time."""
    attribute = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in averages if getattr(e, attribute) > 0 and not e.key.startswith("ProfilerStep")]
    total = sum(getattr(e, attribute) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, attribute), reverse=True)
    return [
        {"op": e.key, "time_ms": getattr(e, attribute) / 1e3, "share": getattr(e, attribute) / total, "calls": e.count}
        for e in events[:n]
    ]
