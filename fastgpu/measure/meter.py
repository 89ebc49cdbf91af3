"""What one rank measures while it trains, each figure over a defined window.

Windows (the same on every device):
- step time, throughput, data share: the steps after the first `warmup_steps` loader batches, and after the first
  `warmup_steps` again where a run resumed in a new process (recompilation, autotuning): the *steady* steps;
- energy, mean power and utilisation: the wall time those steady steps ran in (from the end of warm-up,
  or an epoch's start, to the epoch's end; evaluation and warm-up/compilation excluded), read after a
  device synchronisation; warm-up's own energy is `warmup_energy_j`;
- data share: the part of each steady step between the previous step's end (or the end of the loop's work after
  it: a log step, a checkpoint, gradual pruning) and the moment its batch is on the device, on the device's own
  timeline (CUDA events; host clock on CPU). Resident data reads ~0, a loader the device waits for reads high;

Nothing here reads the device per step: on CUDA each step records two events into the stream, and the
events are read at log steps and epoch ends (`collect`), where the loop reads the loss too.
"""

import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

from fastgpu.errors import FastGPUError
from fastgpu.measure.clock import StepClock, synchronize
from fastgpu.results.stats import WITHIN_RUN, Run, cv, intervals, median_ci, stall_ratio, throughput_ci

SYNC_DEBUG_MODES = ("off", "warn", "error")


@dataclass
class MeterState:
    """Everything measured so far; saved in the checkpoint so a resumed run continues its figures."""

    step_times: list = field(default_factory=list)
    step_samples: list = field(default_factory=list)  # samples each step trained (a last partial batch counts less)
    data_times: list = field(default_factory=list)
    epoch_times: list = field(default_factory=list)
    eval_time: float = 0.0
    warmup_energy: Optional[float] = None
    steady_energy: Optional[float] = None
    steady_wall: float = 0.0
    # [start, end] in this process's monitor clock (seconds); a resumed run starts a new list (a new clock)
    steady_windows: list = field(default_factory=list)
    warmup_ranges: list = field(default_factory=list)  # [first, last) step indices excluded as warm-up


class RunMeter:
    """Step clock, data share, warm-up, energy/utilisation windows and the rank reduction of one run.

    The loop calls: `batches(loader, prepare)` per epoch (yields device batches, marks each ready),
    `step_end()` per step, `collect()` at log steps, `epoch_end()`, `evaluating()` around evaluation,
    and `summary(reduce)` once at the end. `monitor` supplies `energy_j()`, `samples` and `t0`.
    """

    def __init__(
        self,
        device,
        warmup_steps: int,
        monitor,
        sync_debug: str = "off",
        now=time.perf_counter,
        profiler=None,
        batches_per_step: int = 1,
    ):
        """`warmup_steps` counts loader batches, as the meter does; `batches_per_step` (gradient accumulation) is how
        many make one optimizer step, so that log intervals hold whole optimizer steps."""
        self.device, self.warmup_steps, self.monitor, self.now = device, warmup_steps, monitor, now
        self.batches_per_step = batches_per_step
        self.profiler = profiler  # trainer.profile: stepped with the clock; its steps are inside warm-up
        self.clock = StepClock(device, now)
        self.state = MeterState()
        self.steps_done = 0
        self._warm_until = warmup_steps
        self.state.warmup_ranges.append([0, warmup_steps])
        if sync_debug not in SYNC_DEBUG_MODES:
            raise FastGPUError(
                f"trainer.sync_debug={sync_debug!r} is not known; use one of {', '.join(SYNC_DEBUG_MODES)}"
            )
        self.sync_debug = sync_debug if device.type == "cuda" else "off"
        self._armed = False
        self._open = None  # (kind, energy, wall) of the window being measured: "warmup" or "steady"

    # --- the device timeline ------------------------------------------------------------------------
    def batches(self, loader, prepare, units=len):
        """Iterate `loader`, moving each batch with `prepare` and marking when it is on the device; `units(target)`
        is what a batch counts in throughput (samples, or tokens), from its shape."""
        with self.sync_allowed():
            self._epoch_start()
            iterator = iter(loader)
        clock, samples = self.clock, self.state.step_samples
        for batch in iterator:
            batch = prepare(batch)
            clock.ready()
            samples.append(units(batch[-1]))  # the batch's shape: no device read
            yield batch

    def step_end(self) -> None:
        self.clock.step()
        self.steps_done += 1
        if self.profiler is not None:
            self.profiler.step()
        if self.steps_done == self._warm_until:
            self._warmup_done()

    def loader_wait(self) -> None:
        """The loop's own work between steps is done: from here the next step waits for its batch."""
        self.clock.loader_wait()

    def collect(self) -> list:
        """Read the step clock (a sync on CUDA; call at log steps). Returns the new step durations."""
        with self.sync_allowed():
            steps, data = self.clock.collect()
        self.state.step_times += steps
        self.state.data_times += data
        return steps

    def epoch_end(self) -> Optional[float]:
        """Close the epoch: time and energy (for the history), the steady window's part of it."""
        with self.sync_allowed():
            self.collect()
            synchronize(self.device)
            self.state.epoch_times.append(self.now() - self._epoch_started)
            self._close_window()
            energy = self._energy()
        return None if energy is None or self._epoch_energy is None else energy - self._epoch_energy

    @contextlib.contextmanager
    def evaluating(self):
        with self.sync_allowed():
            start = self.now()
            yield
            self.state.eval_time += self.now() - start

    def train_time(self) -> float:
        return sum(self.state.step_times)

    # --- windows --------------------------------------------------------------------------------------
    def _energy(self) -> Optional[float]:
        return self.monitor.energy_j() if self.monitor is not None else None

    def _epoch_start(self) -> None:
        synchronize(self.device)
        self._epoch_started = self.now()
        self._epoch_energy = self._energy()
        steady = self.steps_done >= self._warm_until
        self._open_window("steady" if steady else "warmup")
        self.clock.start()
        if steady:  # no warm-up left (warmup_steps=0): check from the first step
            self._arm()

    def _warmup_done(self) -> None:
        with self.sync_allowed():
            synchronize(self.device)  # once per run: the window edge must be where the GPU is
            self._close_window()
            self._open_window("steady")
        self._arm()

    def _open_window(self, kind: str) -> None:
        self._open = (kind, self._energy(), self.now())

    def _close_window(self) -> None:
        if self._open is None:
            return
        kind, energy_start, wall_start = self._open
        energy_end, wall_end = self._energy(), self.now()
        self._open = None
        s = self.state
        energy = None if energy_start is None or energy_end is None else energy_end - energy_start
        if kind == "warmup":
            if energy is not None:
                s.warmup_energy = (s.warmup_energy or 0.0) + energy
            return
        if energy is not None:
            s.steady_energy = (s.steady_energy or 0.0) + energy
        s.steady_wall += wall_end - wall_start
        t0 = getattr(self.monitor, "t0", 0.0) or 0.0
        s.steady_windows.append([wall_start - t0, wall_end - t0])

    # --- synchronisation checks (trainer.sync_debug) ----------------------------------------------
    def _arm(self) -> None:
        if self.sync_debug != "off":
            torch.cuda.set_sync_debug_mode(self.sync_debug)
            self._armed = True

    @contextlib.contextmanager
    def sync_allowed(self):
        """Where the loop reads the device on purpose (log steps, epoch ends, GradScaler's step)."""
        if not self._armed:
            yield
            return
        torch.cuda.set_sync_debug_mode(0)
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(self.sync_debug)

    def close(self) -> None:
        if self._armed:
            torch.cuda.set_sync_debug_mode(0)
            self._armed = False

    # --- results --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return asdict(self.state)

    def load_state_dict(self, state: dict) -> None:
        """Continue a saved run's figures in this new process: its first `warmup_steps` are warm-up again (the
        compile, autotuning and caches of the old process are gone), and only this process's windows are matched
        against this process's resource samples."""
        self.state = MeterState(**{"warmup_ranges": [[0, self.warmup_steps]], **state})
        self.steps_done = len(self.state.step_times)
        self._warm_until = self.steps_done + self.warmup_steps
        self.state.warmup_ranges.append([self.steps_done, self._warm_until])
        self.state.steady_windows = []

    def _is_warmup(self, index: int) -> bool:
        return any(first <= index < last for first, last in self.state.warmup_ranges)

    def summary(self, world_size: int, reduce, samples: list, log_every: int) -> dict:
        """The run's figures, reduced over ranks with `reduce(values, op)` (sum/max; a collective).

        The steady steps fall into log intervals of `log_every` optimizer steps; in each, all ranks' samples over the
        slowest rank's time. Throughput is the work of the whole timed window over its time: the intervals' samples
        over their seconds, so a stall costs what it cost training. Beside it: its within-run 95% interval, the
        median interval's rate (the typical interval, stalls left out) with its interval, the stall figure (median
        rate over the slowest interval's) and the rates' CV."""
        self.close()
        s = self.state
        warm = [self._is_warmup(i) for i in range(len(s.step_times))]
        if all(warm) and warm:  # a run shorter than its warm-up: its last step is timed, so there is a figure
            warm[-1] = False
        steady = [t for t, w in zip(s.step_times, warm) if not w]
        steady_data = [t for t, w in zip(s.data_times, warm) if not w]
        steady_samples = [n for n, w in zip(s.step_samples, warm) if not w]
        warmup = sum(warm)
        seconds = sum(steady)
        interval_samples, interval_seconds = intervals(steady, steady_samples, log_every * self.batches_per_step)
        interval_samples = reduce(interval_samples, "sum")
        interval_seconds = reduce(interval_seconds, "max")
        timed = [(n, t) for n, t in zip(interval_samples, interval_seconds) if t > 0]
        run = Run.of([n / t for n, t in timed], [t for _, t in timed])
        rates = list(run.rates)
        throughput, low, high = throughput_ci(run)
        median_rate, median_low, median_high = median_ci(rates)
        window = window_means(samples, s.steady_windows)
        has_energy, has_util = float(s.steady_energy is not None), float("gpu_util_percent" in window)
        energy, energy_ranks, util_sum, util_ranks, warmup_energy = reduce(
            [s.steady_energy or 0.0, has_energy, window.get("gpu_util_percent", 0.0), has_util, s.warmup_energy or 0.0],
            "sum",
        )
        (steady_wall,) = reduce([s.steady_wall], "max")
        total_samples = sum(interval_samples)
        out = {
            "throughput": throughput,
            "throughput_ci_low": low,
            "throughput_ci_high": high,
            "throughput_ci_covers": WITHIN_RUN,
            "median_interval_rate": median_rate,
            "median_interval_rate_ci_low": median_low,
            "median_interval_rate_ci_high": median_high,
            "stall_ratio": stall_ratio(rates),
            "throughput_cv": cv(rates),
            "throughput_intervals": rates,
            "throughput_interval_seconds": list(run.seconds),
            "timed_samples": total_samples,
            "step_time_p50_ms": 1e3 * percentile(steady, 0.5),
            "step_time_p90_ms": 1e3 * percentile(steady, 0.9),
            "data_time_share": sum(steady_data) / seconds if seconds > 0 else None,
            "warmup_steps": warmup,
            "warmup_time_s": sum(t for t, w in zip(s.step_times, warm) if w),
            "train_time_s": sum(s.step_times),
            "epoch_time_s": percentile(s.epoch_times, 0.5),
            "eval_time_s": s.eval_time,
            "timed_steps": len(steady),
        }
        for key in ("cpu_percent", "gpu_sm_clock_mhz"):
            if key in window:
                out[f"mean_{key}"] = window[key]
        if util_ranks == world_size:
            out["mean_gpu_util_percent"] = util_sum / world_size  # averaged over ranks
        if energy_ranks == world_size and total_samples:
            out["energy_j"] = energy  # summed over ranks' GPUs
            out["energy_per_sample_j"] = energy / total_samples
            out["warmup_energy_j"] = warmup_energy
            if steady_wall > 0:
                out["mean_gpu_power_w"] = energy / world_size / steady_wall  # per GPU
        elif "gpu_power_w" in window:
            out["mean_gpu_power_w"] = window["gpu_power_w"]
        return out


def window_means(samples: list, windows: list) -> dict:
    """Means of the sampler's series over the samples taken inside the steady windows."""
    inside = [s for s in samples if any(a <= s.get("system/time_s", -1) <= b for a, b in windows)]
    out = {}
    for key in ("cpu_percent", "gpu_util_percent", "gpu_power_w", "gpu_sm_clock_mhz"):
        values = [s[f"system/{key}"] for s in inside if f"system/{key}" in s]
        if values:
            out[key] = sum(values) / len(values)
    return out


def percentile(values: list, q: float) -> float:
    if not values:
        return float("nan")
    return float(torch.tensor(values, dtype=torch.float64).quantile(q))
