"""Device-timeline clocks: marks recorded into the CUDA stream without waiting, read later in one sync."""

import time

import torch


class StepClock:
    """Two marks per step, batch-ready and step-end, read only at `collect()`.

    On CUDA a mark is an event recorded into the current stream (no sync); `collect()` waits for the
    last one and returns, per step, (end_i - end_{i-1}, ready_i - wait_i), where the wait for the batch starts at
    the previous step's end, or later where the loop did other work in between (`loader_wait()`: a log step, a
    checkpoint), which is the step's time but not time spent waiting for data. On CPU the work is synchronous
    and the host clock is exact. Events are reused, so a step allocates nothing.
    """

    def __init__(self, device: torch.device, now=time.perf_counter):
        self.cuda = device.type == "cuda"
        self.now = now
        self._free: list = []
        self._last = None
        self._ready = None
        self._wait = None  # where waiting for the next batch began, when not at the previous step's end
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
        self._release([self._last, self._wait] + [m for marks in self._pending for m in marks])
        self._last, self._ready, self._wait, self._pending = self._mark(), None, None, []

    def loader_wait(self) -> None:
        """The next batch is waited for from here: what the loop did since the step's end was not data time."""
        self._release([self._wait])
        self._wait = self._mark()

    def ready(self) -> None:
        self._ready = self._mark()

    def step(self) -> None:
        wait, ready, self._wait, self._ready = self._wait, self._ready, None, None
        self._pending.append((wait, ready, self._mark()))

    def collect(self) -> tuple:
        """(step seconds, data seconds) of the steps since the last start/collect."""
        if not self._pending:
            return [], []
        if self.cuda:
            self._pending[-1][2].synchronize()
        steps, data, previous = [], [], self._last
        for wait, ready, end in self._pending:
            steps.append(self._seconds(previous, end))
            data.append(self._seconds(wait or previous, ready) if ready is not None else 0.0)
            previous = end
        done = [self._last] + [m for wait, ready, end in self._pending for m in (wait, ready, end)]
        self._release(done[:-1])  # the last step's end is where the next step starts
        self._last, self._pending = previous, []
        return steps, data

    def _release(self, marks: list) -> None:
        if self.cuda:
            self._free.extend(m for m in marks if m is not None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
