"""A background sampler of resources during training: process CPU and RSS (psutil) on every device;
GPU utilisation, memory, power, SM clock and the energy counter (NVML) on CUDA.

It runs in its own thread at `interval_s` and never touches the training loop: the loop drains the
collected samples at its log steps, and reads the summary once at the end.
"""

import threading
import time
from typing import Optional

import psutil
import torch


class _Nvml:
    """NVML handle of one CUDA device; every reading is optional (some boards lack a counter)."""

    def __init__(self, device: torch.device):
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(_physical_index(index))

    def _read(self, fn, *args):
        try:
            return fn(self.handle, *args)
        except self.nvml.NVMLError:
            return None

    def energy_mj(self) -> Optional[int]:
        return self._read(self.nvml.nvmlDeviceGetTotalEnergyConsumption)

    def sample(self) -> dict:
        n = self.nvml
        out = {}
        util = self._read(n.nvmlDeviceGetUtilizationRates)
        if util is not None:
            out["system/gpu_util_percent"] = util.gpu
        memory = self._read(n.nvmlDeviceGetMemoryInfo)
        if memory is not None:
            out["system/gpu_mem_used_mb"] = memory.used / 2**20
        power = self._read(n.nvmlDeviceGetPowerUsage)
        if power is not None:
            out["system/gpu_power_w"] = power / 1e3
        clock = self._read(n.nvmlDeviceGetClockInfo, n.NVML_CLOCK_SM)
        if clock is not None:
            out["system/gpu_sm_clock_mhz"] = clock
        return out

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass


def _physical_index(index: int) -> int:
    """NVML numbers GPUs physically; torch numbers them after CUDA_VISIBLE_DEVICES."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if index < len(ids) and ids[index].isdigit():
            return int(ids[index])
    return index


class ResourceMonitor:
    def __init__(self, device: torch.device, interval_s: float):
        self.interval_s = interval_s
        self.enabled = interval_s > 0
        self.process = psutil.Process()
        self.samples: list = []
        self._drained = 0
        self._stop = threading.Event()
        self._thread = None
        self._nvml = None
        self._energy_start = None
        self.t0 = 0.0  # perf_counter at start(): samples' system/time_s count from here
        if self.enabled and device.type == "cuda":
            try:
                self._nvml = _Nvml(device)
            except Exception:  # no NVML library or driver: CPU-side sampling still runs
                self._nvml = None

    def start(self) -> None:
        if not self.enabled:
            return
        self.process.cpu_percent()  # the first call only sets the reference point
        self.t0 = time.perf_counter()
        if self._nvml is not None:
            self._energy_start = self._nvml.energy_mj()
        self._thread = threading.Thread(target=self._run, name="fastgpu-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(self._sample())

    def _sample(self) -> dict:
        sample = {
            "system/time_s": time.perf_counter() - self.t0,
            "system/cpu_percent": self.process.cpu_percent(),
            "system/rss_mb": self.process.memory_info().rss / 2**20,
        }
        if self._nvml is not None:
            sample.update(self._nvml.sample())
        return sample

    def energy_j(self) -> Optional[float]:
        """GPU energy since start() from NVML's total-energy counter (None without one)."""
        if self._nvml is None or self._energy_start is None:
            return None
        now = self._nvml.energy_mj()
        return None if now is None else (now - self._energy_start) / 1e3

    def drain(self) -> list:
        """Samples collected since the last drain (called at log steps, never per training step)."""
        new = self.samples[self._drained :]
        self._drained += len(new)
        return new

    def stop(self) -> dict:
        """Stop sampling; return the run's summary: means, peaks and energy."""
        if not self.enabled or self._thread is None:
            return {}
        energy = self.energy_j()
        self._stop.set()
        self._thread.join()
        if not self.samples:
            self.samples.append(self._sample())
        summary = {"monitor_samples": len(self.samples)}
        for key, reduce in [
            ("system/cpu_percent", "mean"),
            ("system/gpu_util_percent", "mean"),
            ("system/gpu_power_w", "mean"),
            ("system/gpu_mem_used_mb", "max"),
            ("system/gpu_sm_clock_mhz", "mean"),
        ]:
            values = [s[key] for s in self.samples if key in s]
            if values:
                name = key.split("/", 1)[1]
                summary[f"{reduce}_{name}"] = sum(values) / len(values) if reduce == "mean" else max(values)
        if energy is not None:
            summary["energy_j"] = energy
        if self._nvml is not None:
            self._nvml.close()
        return summary
