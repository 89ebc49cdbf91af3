"""Start one run: in this process, as N local worker processes (DDP/FSDP), or as one rank of torchrun/srun.

Whatever happens, the run dir ends with a metrics.json: the results on success, or
`status` (failed / oom / diverged), `error_type` and a one-line `error` on failure.
"""

import errno
import os
import sys
from multiprocessing.connection import wait
from pathlib import Path

import torch
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from fastgpu.errors import FastGPUError, first_line
from fastgpu.files import disk_of, size_text
from fastgpu.job.preflight import check_run_dir
from fastgpu.results.rundirs import DirLock
from fastgpu.results.store import CONFIG_FILE, METRICS_FILE, add_failure, read_metrics
from fastgpu.train.distributed import DistEnv, external_launcher_env, free_port
from fastgpu.train.signals import PreemptionWatch


def _run_rank(cfg, out_dir: Path, env: DistEnv) -> dict:
    from fastgpu.job.run import run

    return run(cfg, out_dir, env)


def _spawned_worker(local_rank: int, cfg, out_dir: Path, nproc: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank), WORLD_SIZE=str(nproc))
    os.environ.update(LOCAL_RANK=str(local_rank), LOCAL_WORLD_SIZE=str(nproc))  # as torchrun sets them
    _run_rank(cfg, out_dir, DistEnv(local_rank, local_rank, nproc))


def failure_record(exc: BaseException, cfg) -> dict:
    """status, error_type and a one-line error message for a failed run."""
    if isinstance(exc, mp.ProcessRaisedException):
        # The worker's traceback arrives as text; its last line is "module.Type: message".
        last = [line for line in str(exc).strip().splitlines() if line.strip()][-1]
        type_name, _, message = last.partition(": ")
        type_name = type_name.rsplit(".", 1)[-1]
        if "can't allocate memory" in message:  # the CPU allocator's out-of-memory
            type_name = "OutOfMemoryError"
        status = {"DivergedError": "diverged", "OutOfMemoryError": "oom", "Interrupted": "interrupted"}.get(
            type_name, "failed"
        )
        if status == "oom":
            message = _oom_message(cfg)
        return {"status": status, "error_type": type_name, "error": message}
    if is_out_of_memory(exc):
        return {"status": "oom", "error_type": "OutOfMemoryError", "error": _oom_message(cfg)}
    if isinstance(exc, KeyboardInterrupt):  # Ctrl-C outside the training loop (which saves and stops on it)
        return {
            "status": "interrupted",
            "error_type": "KeyboardInterrupt",
            "error": "stopped by Ctrl-C outside training (nothing to resume from); run it again",
        }
    status = exc.status if isinstance(exc, FastGPUError) else "failed"
    message = first_line(exc)
    return {"status": status, "error_type": type(exc).__name__, "error": message}


def _oom_message(cfg) -> str:
    return (
        f"out of memory at data.batch_size={cfg.data.batch_size}; lower data.batch_size, "
        "or use precision=bf16 / parallel=fsdp to save memory"
    )


STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}


def storage_error(exc: OSError, out_dir: Path) -> FastGPUError:
    """A write the disk refused (full, read-only, not permitted, failing) as one line naming the file, the disk, the
    space the write needs where that is known, and the fix."""
    where = exc.filename or out_dir
    try:
        mount, free = disk_of(where)
        room = f" (the disk at {mount} has {size_text(free)} free"
    except OSError:  # a failing disk may not even say how full it is
        room = " (the disk's free space is unknown"
    needed = getattr(exc, "needed_bytes", None)
    room += f" and this write needs about {size_text(needed)})" if needed else ")"
    return FastGPUError(
        f"cannot write {where}: {exc.strerror or exc}{room}; free disk space or make {out_dir} writable "
        "(what was written before is intact), then run again"
    )


def launch(cfg, out_dir: Path, overwrite: bool = False) -> dict:
    """Run the job described by `cfg` with results in `out_dir`; return its metrics.json content. `overwrite` (the
    command's +overwrite=true) replaces a finished run there.

    The launching process owns `out_dir` while the run writes (fastgpu/results/rundirs.py)."""
    out_dir = Path(out_dir)
    nproc = cfg.parallel.nproc_per_node if cfg.parallel.strategy != "none" else 1
    external = external_launcher_env()
    main = external is None or external.is_main
    lock = None
    if main:
        try:
            check_run_dir(out_dir, cfg, overwrite=overwrite)
            lock = DirLock(out_dir, "hydra.run.dir").acquire()
            (out_dir / METRICS_FILE).unlink(missing_ok=True)  # a re-run (resume of a failed point) starts clean
            OmegaConf.save(cfg, out_dir / CONFIG_FILE, resolve=True)  # the run describes itself, also from Python
        except OSError as exc:
            if exc.errno not in STORAGE_ERRNOS:
                raise
            raise storage_error(exc, out_dir) from None
    try:
        _run(cfg, out_dir, external, nproc)
    except (Exception, KeyboardInterrupt) as exc:
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            exc = storage_error(exc, out_dir)
        record = failure_record(exc, cfg)
        if main:
            _record_failure(out_dir, cfg, record)
        watch = getattr(exc, "watch", None)
        if watch is not None:  # preempted after saving its state: let the previous handler (submitit) requeue
            watch.hand_on()
            if "SLURM_JOB_ID" in os.environ:
                # a Slurm job being requeued or cancelled: leave no result behind, the requeued run resumes
                sys.exit(-1)
        raise RunFailed(record) from exc
    finally:
        if lock is not None:
            lock.release()
    if not (out_dir / METRICS_FILE).exists():  # a non-zero rank under torchrun/srun
        return {}
    return read_metrics(out_dir)


def _run(cfg, out_dir: Path, external, nproc: int) -> None:
    if external is None and nproc > 1:
        port = cfg.parallel.master_port or free_port()
        workers = mp.spawn(_spawned_worker, args=(cfg, out_dir, nproc, port), nprocs=nproc, join=False)

        def forward(signum):  # a signal to this process (Ctrl-C, kill) goes on to every worker: they stop together
            for process in workers.processes:
                if process.is_alive():
                    os.kill(process.pid, signum)

        with PreemptionWatch(on_signal=forward) as watch:
            # after a signal the workers save and stop together: wait for all of them. Otherwise the first one to
            # fail ends the wait, and join() stops the others and raises its error.
            while any(process.is_alive() for process in workers.processes):
                if not watch.requested and any(process.exitcode for process in workers.processes):
                    break
                wait([process.sentinel for process in workers.processes], timeout=1)
            workers.join()
    else:
        _run_rank(cfg, out_dir, external or DistEnv())


def _record_failure(out_dir: Path, cfg, record: dict) -> None:
    """Add the failure to metrics.json, keeping what the run recorded before it failed (e.g. training results
    when compression failed). Where the disk refuses even that, the one-line error on stderr is the record."""
    try:
        add_failure(out_dir, {**record, "name": cfg.logger.wandb.name, "batch_size": cfg.data.batch_size})
    except OSError:
        pass


class RunFailed(Exception):
    def __init__(self, record: dict):
        super().__init__(record["error"])
        self.record = record


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's refusal (a RuntimeError of its own)."""
    return isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in str(exc)
