"""Who may write a run or sweep dir: one writer at a time (a lock file naming it), a finished run is never
replaced unless asked (`+overwrite=true`), and an interrupted run is continued only with its own settings.

Torch-free, so Hydra's callbacks can refuse a sweep dir before Hydra writes into it; a run dir's check against an
interrupted run's checkpoint is fastgpu/job/preflight.py's (check_run_dir).
"""

import atexit
import json
import os
import socket
import sys
import time
from pathlib import Path

from fastgpu.errors import FastGPUError
from fastgpu.results.store import point_metrics

LOCK_FILE = ".fastgpu.lock"
SWEEP_FILE = "multirun.yaml"  # Hydra writes it when a sweep starts: its presence means a sweep was here
POINT_START_ENV = "FASTGPU_POINT_START"  # how a sweep point's process started, set by the launcher that started it


def _holder() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _alive(holder: dict) -> bool:
    """Whether the lock's writer may still be writing. A lock of this very Slurm job is its own earlier
    attempt (requeued, maybe onto another node): never alive. On another host we cannot tell: assume alive."""
    job = os.environ.get("SLURM_JOB_ID")
    if job and holder.get("slurm_job_id") == job:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError):
        return True
    return True


def read_holder(directory: Path):
    """The live writer holding `directory`'s lock, or None (no lock, or a stale one of a dead process)."""
    try:
        holder = json.loads((Path(directory) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return holder if _alive(holder) else None


def remove_lock_of(directory: Path, pid) -> None:
    """Remove `directory`'s lock if the process `pid` (which has ended) held it."""
    try:
        holder = json.loads((Path(directory) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return
    if pid is not None and holder.get("pid") == pid and holder.get("host") == socket.gethostname():
        (Path(directory) / LOCK_FILE).unlink(missing_ok=True)


def finished_point(point_dir):
    """On +resume=true: a point's metrics if it finished (status ok), saying that it is skipped; None if it runs
    again (an unreadable record is not a finished point)."""
    done = point_metrics(point_dir)
    if done.get("status") != "ok":
        return None
    print(f"fastgpu: resume: {point_dir} is done (status ok), skipping", file=sys.stderr)
    return done


def sweep_resume_hint(point_dir, sweep_dir) -> str:
    return (
        f"fastgpu: the sweep stopped at {point_dir}; continue it with the same command and "
        f"hydra.sweep.dir={sweep_dir} +resume=true"
    )


def in_use_error(directory: Path, holder: dict, key: str) -> FastGPUError:
    return FastGPUError(
        f"{directory} is in use by pid {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')}); "
        f"wait for it to finish, or choose another {key}"
    )


class DirLock:
    """`lock = DirLock(dir, key).acquire()` ... `lock.release()`: created atomically (O_EXCL); a stale lock of a
    dead writer is taken over; released at exit too, so an error path leaves no lock behind."""

    def __init__(self, directory: Path, key: str):
        self.path = Path(directory) / LOCK_FILE
        self.key = key
        self.held = False

    def acquire(self) -> "DirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_holder(self.path.parent)
                if holder is not None:
                    raise in_use_error(self.path.parent, holder, self.key) from None
                self.path.unlink(missing_ok=True)  # a dead writer's lock
                continue
            try:
                with os.fdopen(fd, "w") as file:
                    json.dump(_holder(), file)
            except OSError:  # a full disk: no half-written lock stays behind
                self.path.unlink(missing_ok=True)
                raise
            self.held = True
            atexit.register(self.release)
            return self
        raise in_use_error(self.path.parent, read_holder(self.path.parent) or {}, self.key)

    def release(self) -> None:
        if self.held:
            self.held = False
            self.path.unlink(missing_ok=True)


COMMAND_KEYS = ("resume", "overwrite")  # what the command asks of its dir: never a setting of the run


def pop_command_keys(cfg) -> dict:
    """Take `+resume` and `+overwrite` out of `cfg` (a composed config, or one a run saved before this rule) and
    return them: they act on the command that carries them and are never saved with the run, fingerprinted or
    applied again by a `+resume=<dir>` or a requeued attempt."""
    from omegaconf import open_dict

    with open_dict(cfg):
        return {key: cfg.pop(key, None) for key in COMMAND_KEYS}


def requeued_attempt() -> bool:
    """A Slurm job's second or later attempt (requeued after preemption or a time limit): the command that started
    it already acted on its dir, so `+overwrite` must not remove the checkpoint the attempt continues from."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


HYDRA_FILES = {".hydra", "__main__.log"}  # what Hydra writes into a run dir before the task starts


def discard_unused_run_dir(out_dir: Path) -> None:
    """A command refused after Hydra made its run dir leaves nothing behind: remove the dir (and an emptied parent,
    outputs/DATE) when it holds only Hydra's own files, all written by this process."""
    import shutil

    import psutil

    out_dir = Path(out_dir)
    try:
        started = psutil.Process().create_time()
        entries = list(out_dir.iterdir())
        if {p.name for p in entries} - HYDRA_FILES or not all(
            p.stat().st_mtime >= started for p in [*entries, *out_dir.glob(".hydra/*")]
        ):
            return
        shutil.rmtree(out_dir)
        out_dir.parent.rmdir()  # only if empty
    except OSError:
        pass


def check_sweep_dir(sweep_dir: Path, cfg) -> None:
    """A sweep dir that already holds a sweep is continued (+resume=true) or replaced (+overwrite=true), never
    mixed into."""
    sweep_dir = Path(sweep_dir)
    holder = read_holder(sweep_dir)
    if holder is not None:
        raise in_use_error(sweep_dir, holder, "hydra.sweep.dir")
    if (sweep_dir / SWEEP_FILE).exists() and cfg.get("resume") is not True and cfg.get("overwrite") is not True:
        raise FastGPUError(
            f"{sweep_dir} already holds a sweep; continue it with +resume=true, choose another hydra.sweep.dir, "
            "or pass +overwrite=true to replace its points"
        )


def run_status(out_dir: Path):
    return point_metrics(out_dir).get("status")  # "unreadable" for a damaged file, None where there is none
