"""Device-timeline clocks: marks recorded into the CUDA stream without waiting, read later in one sync."""

import time

import torch


class StepClock:
    """Two marks per step, batch-ready and step-end, read only at `collect()`.

    On CUDA a mark is an event recorded into the current stream (no sync); `collect()` waits for the
    last one and returns, per step, (end_i - end_{i-1}, ready_i - end_{i-1}). On CPU the work is
    synchronous and the host clock is exact. Events are reused, so a step allocates nothing.
    """

    def __init__(self, device: torch.device, now=time.perf_counter):
        self.cuda = device.type == "cuda"
        self.now = now
        self._free: list = []
        self._last = None
        self._ready = None
        self._pending: list = []

    def _mark(self):
        if not self.cuda:
            return self.now()
        event = self._free.pop() if self._free else torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _seconds(self, a, b) -> float:
        return a.elapsed_time(b) / 1e3 if self.cuda else b - a

    def start(self) -> None:
        self._release([self._last] if self._last is not None else [])
        self._release([m for pair in self._pending for m in pair])
        self._last, self._ready, self._pending = self._mark(), None, []

    def ready(self) -> None:
        self._ready = self._mark()

    def step(self) -> None:
        ready, self._ready = self._ready, None
        self._pending.append((ready, self._mark()))

    def collect(self) -> tuple:
        """(step seconds, data seconds) of the steps since the last start/collect."""
        if not self._pending:
            return [], []
        if self.cuda:
            self._pending[-1][1].synchronize()
        steps, data, previous = [], [], self._last
        for ready, end in self._pending:
            steps.append(self._seconds(previous, end))
            data.append(self._seconds(previous, ready) if ready is not None else 0.0)
            previous = end
        self._release([self._last] + [m for pair in self._pending[:-1] for m in pair] + [self._pending[-1][0]])
        self._last, self._pending = previous, []
        return steps, data

    def _release(self, marks: list) -> None:
        if self.cuda:
            self._free.extend(m for m in marks if m is not None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
