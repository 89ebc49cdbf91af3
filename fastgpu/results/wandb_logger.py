"""Weights & Biases: one run per training job, online, offline (default) or disabled."""

import json
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

MODES = ("online", "offline", "disabled")
# online: how long wandb.init may try to reach the server before the run logs offline instead (W&B's default: 90 s)
INIT_TIMEOUT_S = 10
WANDB_UNREACHABLE = ".wandb_unreachable"  # in a sweep's dir: its W&B server did not answer (the first point tried)


def wandb_mode(cfg) -> str:
    """The W&B mode a run of `cfg` uses: WANDB_MODE where set (W&B's own variable wins), else the config's."""
    return os.environ.get("WANDB_MODE") or OmegaConf.select(cfg, "logger.wandb.mode", default="offline")


def open_run(mode: str, console: str = "off", unreachable_marker=None, **init_kwargs):
    """wandb.init in `mode`; online with no API key or no reachable server becomes offline, with one warning that
    names the `wandb sync` command to upload it later. `unreachable_marker`: a file (in the sweep's dir) that says the
    server was unreachable earlier in this sweep: then online goes offline at once, and the sweep waits for the
    server once in all.

    W&B's own system-metrics sampler is off: FastGPU's (fastgpu/measure/monitor.py) logs `system/*` into the same
    run, and a second sampler competes with training for the cores."""
    import wandb

    def settings(**extra):
        return wandb.Settings(quiet=True, console=console, x_disable_stats=True, **extra)

    if mode != "online":
        return wandb.init(mode=mode, settings=settings(), **init_kwargs)
    marker = Path(unreachable_marker) if unreachable_marker else None
    if marker is not None and marker.exists():
        run = wandb.init(mode="offline", settings=settings(), **init_kwargs)
        print(
            f"fastgpu: W&B logs offline: its server did not answer earlier in this sweep ({marker.read_text().strip()}"
            f"); upload it later with `wandb sync {run.settings.sync_dir}`",
            file=sys.stderr,
        )
        return run
    try:
        return wandb.init(mode="online", settings=settings(init_timeout=INIT_TIMEOUT_S), **init_kwargs)
    except Exception as exc:  # UsageError (no key), CommError (no network, a refused key), a timeout
        from fastgpu.errors import described

        if marker is not None:
            marker.write_text(described(exc, 160) + "\n")
        # under a new id: W&B's service still holds the id the failed online attempt registered ("run ID is in use")
        run = wandb.init(mode="offline", settings=settings(), **{**init_kwargs, "id": None, "resume": None})
        print(
            f"fastgpu: warning: W&B online failed ({described(exc, 160)}); logging offline instead: upload it later "
            f"with `wandb sync {run.settings.sync_dir}` (or set logger.wandb.mode=offline)",
            file=sys.stderr,
        )
        return run


def new_run_id() -> str:
    """A W&B run id, chosen by the run itself so that it is known before W&B starts (and kept for a resume)."""
    import secrets
    import string

    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class WandbLogger:
    """One training job's W&B run, logged by a process of its own (fastgpu/results/wandb_sidecar.py) that follows
    the run's history.jsonl: W&B's import, its service, a server that does not answer, its crash or its hang never
    hold up or slow training. The sidecar starts before the job builds (at a lower priority), so its start-up
    overlaps the build, not the timed steps. With W&B disabled nothing of W&B starts."""

    def __init__(self, cfg, out_dir: Path, resume_id=None, start_line: int = 0, unreachable_marker=None):
        import subprocess

        from fastgpu.errors import FastGPUError
        from fastgpu.files import atomic_write
        from fastgpu.results.wandb_sidecar import SPEC_FILE

        mode = wandb_mode(cfg)
        if mode not in MODES:
            raise FastGPUError(f"logger.wandb.mode={mode!r} is not known; use one of {', '.join(MODES)}")
        wcfg = cfg.logger.wandb
        self.out_dir, self.process = Path(out_dir), None
        self.id = None if mode == "disabled" else (resume_id or new_run_id())
        if mode == "disabled":
            return
        init = dict(
            project=wcfg.project,
            entity=wcfg.entity,
            group=wcfg.group,
            job_type=wcfg.job_type,
            name=wcfg.name,
            tags=list(wcfg.tags),
            notes=wcfg.notes,
            dir=str(out_dir),
            config=OmegaConf.to_container(cfg, resolve=True),
            id=self.id,
            resume="allow",
        )
        spec = {
            "mode": mode,
            "console": wcfg.get("console", "off"),  # absent from configs saved before the key existed
            "init": init,
            "start_line": start_line,
            "unreachable_marker": str(unreachable_marker) if unreachable_marker else None,
        }
        atomic_write(self.out_dir / SPEC_FILE, json.dumps(spec, default=str))
        if "wandb" in sys.modules:  # warm (a point of a fork server, which imports W&B first): fork the logger
            self.process = ForkedSidecar(self.out_dir)
        else:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fastgpu.results.wandb_sidecar", str(self.out_dir), str(os.getpid())],
                stdin=subprocess.PIPE,
            )

    def rename(self, name: str, tags: list) -> None:
        from fastgpu.files import atomic_write
        from fastgpu.results.wandb_sidecar import NAME_FILE

        if self.process is not None:
            atomic_write(self.out_dir / NAME_FILE, json.dumps({"name": name, "tags": list(tags)}))

    def close(self) -> None:
        """The run is done (metrics.json written, or it failed): W&B logs the rest and finishes; a W&B that does not
        finish within FINISH_TIMEOUT_S is ended, and the local record stands."""
        from fastgpu.results.wandb_sidecar import FINISH_TIMEOUT_S, finish_logger

        process, self.process = self.process, None
        if process is None:
            return
        code = finish_logger(process)
        if code != 0:
            why = f"it did not finish in {FINISH_TIMEOUT_S} s" if code == "hung" else f"it ended with {code}"
            print(
                f"fastgpu: warning: W&B's logger did not complete ({why}); history.jsonl and metrics.json hold the "
                f"run; an offline run can be uploaded with `wandb sync {self.out_dir / 'wandb'}`",
                file=sys.stderr,
            )


class ForkedSidecar:
    """fastgpu/results/wandb_sidecar.py in a child forked from this process (W&B already imported here): the same
    interface as the Popen of `python -m fastgpu.results.wandb_sidecar`, without the interpreter's start and imports."""

    def __init__(self, run_dir: Path):
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                os.close(write_end)
                from fastgpu.results.wandb_sidecar import run_sidecar

                code = run_sidecar(run_dir, read_end, parent)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(read_end)
        self.stdin = os.fdopen(write_end, "wb")
        self.returncode = None

    def wait(self, timeout: float):
        import subprocess
        import time

        deadline = time.monotonic() + timeout
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"W&B logger {self.pid}", timeout)
            else:
                time.sleep(0.02)
        return self.returncode

    def kill(self) -> None:
        import signal

        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        self.returncode = -signal.SIGKILL
