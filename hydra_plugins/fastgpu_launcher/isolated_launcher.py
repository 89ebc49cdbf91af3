"""FastGPU's default sweep launcher: Hydra's basic launcher, but every point runs in a process of its own, forked
from the sweep's process before it trains anything.

In one process, a point inherits what the points before it left: allocator state and a grown heap, dynamo caches,
threads, deterministic flags, a lifetime peak RSS, W&B's service. Measured 2026-11: the second of two identical
points ran 24-32% slower. A fork starts each point from the same untouched state at a cost of milliseconds (the
sweep's process has imported torch but run nothing), where a fresh interpreter costs seconds of imports.
`hydra/launcher=basic` keeps every point in the sweep's own process; the report then flags the shared process.

Start-up stays cheap after the first point: each point reports the modules it imported (W&B, torch's
export and dynamo: ~3,000 on the default job, ~8 s), and the sweep's process imports them before the next fork, as
an in-process sweep would have them. Imports carry no training state.

Points run one at a time and the sweep waits for each; a signal to the sweep (Ctrl-C, kill, Slurm's) goes on to
the point, which saves and stops, and the sweep stops with the point's exit code. Import-light: Hydra scans
hydra_plugins on every start.
"""

import atexit
import importlib
import os
import pickle
import signal
import sys

from hydra._internal.core_plugins.basic_launcher import BasicLauncher

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class IsolatedLauncher(BasicLauncher):
    def __init__(self, in_process: bool = False) -> None:
        super().__init__()
        self.in_process = in_process  # +experiment=ab: every run in the sweep's process, on purpose

    def launch(self, job_overrides, initial_job_idx):
        if self.in_process:
            return BasicLauncher.launch(self, job_overrides, initial_job_idx)
        return [self._launch_forked(list(overrides), initial_job_idx + i) for i, overrides in enumerate(job_overrides)]

    def _launch_forked(self, overrides, idx):
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the point
            os.close(read_end)
            os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the sweep only, which passes it on exactly once
            self._run_point(overrides, idx, write_end)
        os.close(write_end)
        previous = {
            signum: signal.signal(signum, lambda signum, _: _forward(pid, signum)) for signum in FORWARDED_SIGNALS
        }
        try:
            with os.fdopen(read_end, "rb") as reader:
                payload = reader.read()  # until the point closes its end: it has finished
            _, status = os.waitpid(pid, 0)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        code = os.waitstatus_to_exitcode(status)
        kind, value, imported = pickle.loads(payload) if payload else ("exit", code or 1, [])
        _import_quietly(imported)
        if kind == "exit":  # the point ended the sweep (sys.exit: stopped by a signal, a refusal)
            sys.exit(value)
        if kind == "error":
            raise value
        return value

    def _run_point(self, overrides, idx, write_end) -> None:
        """In the forked process: run the point as the basic launcher would, send its JobReturn back, exit."""
        atexit._clear()  # the sweep's own exit work (releasing its dir lock) stays with the sweep
        before = set(sys.modules)
        code = 0
        try:
            (result,) = BasicLauncher.launch(self, [overrides], idx)
            payload = ("ok", result)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            payload = ("exit", code)
        except BaseException as exc:  # noqa: BLE001 - anything the point raised is the sweep's to report
            code, payload = 1, ("error", exc)
        imported = [name for name in sys.modules if name not in before]
        try:
            blob = pickle.dumps((*payload, imported))
        except Exception:  # a config node typed by a class defined in a function (a plugin's preset): plain configs
            try:
                blob = pickle.dumps((payload[0], _portable(payload[1]), imported))
            except Exception as exc:  # an unpicklable return value or exception: its text still reaches the sweep
                blob = pickle.dumps(("error", RuntimeError(f"sweep point {idx}: {payload[1]!r} ({exc})"), imported))
        with os.fdopen(write_end, "wb") as writer:
            writer.write(blob)
        try:
            atexit._run_exitfuncs()  # the point's own: W&B's teardown, its locks
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def _portable(result):
    """The JobReturn with its configs as plain containers (same keys and values, no structured types)."""
    from omegaconf import OmegaConf

    for attr in ("cfg", "hydra_cfg"):
        value = getattr(result, attr, None)
        if value is not None:
            setattr(result, attr, OmegaConf.create(OmegaConf.to_container(value, resolve=False)))
    return result


def _import_quietly(names: list) -> None:
    """Import what a point imported, in its order, so that the next point forks with it; a module that will not
    import on its own here is left to the points."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            if name in sys.modules or name.startswith(("__main__", "_pytest", "pytest")):
                continue
            try:
                importlib.import_module(name)
            except BaseException:  # noqa: BLE001 - ImportError, or a module with import-time conditions
                pass


def _forward(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
