"""Where a run's time went before its first optimizer step, phase by phase, on the wall clock of this machine.

Marks, in order: the process started (a sweep point: its fork), FastGPU's command line was imported
(`python -m fastgpu`), Hydra composed the config, the job started (checks, run dir, W&B's logger started), the job
was built (data, model, optimizer, wrappers), and its first optimizer step was done (read at the first log step,
after a device synchronisation). A phase a process did not go through (a point forked from a warm fork server
imports nothing and composes nothing: the sweep's process did) reads 0.
"""

import os
import time

IMPORTED_ENV = "FASTGPU_IMPORTED_AT"  # set by fastgpu/__main__.py once its imports are done (time.time())
COMPOSED_ENV = "FASTGPU_COMPOSED_AT"  # set when Hydra calls its task function, the config composed
PHASES = ("imports", "composition", "setup", "build", "first_step")


STARTED_ENV = "FASTGPU_PROCESS_STARTED_AT"  # set by a process forked from a warm one (a sweep point) at its fork


def process_started() -> float:
    """This process's start on the time.time() clock. A forked point says when it was forked; otherwise Linux's
    start time in clock ticks since boot against the boot clock now (10 ms), as psutil's create_time rounds the boot
    time to whole seconds."""
    if os.environ.get(STARTED_ENV, "").startswith(f"{os.getpid()}:"):
        return float(os.environ[STARTED_ENV].split(":", 1)[1])
    try:
        with open(f"/proc/{os.getpid()}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        import psutil

        return psutil.Process().create_time()


class StartupClock:
    """Marks of one run's way to its first step; `figures()` gives `startup_<phase>_s` and `time_to_first_step_s`."""

    def __init__(self, now=time.time):
        self.now = now
        self.marks = {"job": now()}  # the job started (run()): the end of setup, the start of build

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, self.now())

    def figures(self, fresh_process: bool = True) -> dict:
        """`fresh_process`: the first run of its process (a later run of an in-process sweep starts from the state
        the earlier ones left: only its build and first step are its own)."""
        if "first_step" not in self.marks:
            return {}
        started = process_started()

        def env_mark(name: str, default: float) -> float:
            value = os.environ.get(name)
            return min(max(float(value), started), self.marks["job"]) if value else default

        imported = env_mark(IMPORTED_ENV, started)
        composed = max(env_mark(COMPOSED_ENV, imported), imported)
        edges = [started, imported, composed, self.marks["job"], self.marks.get("built"), self.marks["first_step"]]
        out = {}
        for phase, (a, b) in zip(PHASES, zip(edges, edges[1:])):
            if a is not None and b is not None:
                out[f"startup_{phase}_s"] = max(b - a, 0.0)
        if not fresh_process:
            for phase in ("imports", "composition", "setup"):
                out.pop(f"startup_{phase}_s", None)
            return out
        out["time_to_first_step_s"] = self.marks["first_step"] - started
        return out
