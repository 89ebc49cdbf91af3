"""What runs in a point's process, forked from the fork server: Hydra's run_job, then the result sent back."""

import atexit
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from fastgpu.errors import first_line
from fastgpu.measure.startup import STARTED_ENV
from fastgpu.results.rundirs import POINT_START_ENV
from fastgpu.sweep.isolation.lifeline import die_with_parent
from fastgpu.sweep.isolation.payload import write_payload
from fastgpu.sweep.isolation.relay import RELAYED


def run_point(init: dict, config, payload_path: Path, server_pid: int):
    """Never returns: the process ends with the point's exit code once its result is written."""
    os.environ[STARTED_ENV] = f"{os.getpid()}:{time.time()!r}"  # the point's start-up phases count from its fork
    die_with_parent(signal.SIGKILL, server_pid)  # a server that dies takes its point along (and ends its tree first)
    os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the sweep only, which passes it on exactly once
    for signum in RELAYED:  # the server ignores these; a point handles them as any run does
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ[POINT_START_ENV] = init["started"]
    from hydra.core.utils import JobStatus, run_job

    before = set(sys.modules)
    code = 0
    try:
        ret = run_job(
            hydra_context=init["hydra_context"],
            task_function=init["task_function"],
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        if ret.status == JobStatus.FAILED:
            code, kind, value = 1, "error", crashed(ret._return_value)
        else:
            kind, value = "ok", ret
    except SystemExit as exc:  # the point ended the sweep (stopped by a signal)
        code = exc.code if isinstance(exc.code, int) else 1
        kind, value = "exit", code
    except BaseException as exc:  # noqa: BLE001 - anything the point raised is the sweep's to report
        code, kind, value = 1, "error", crashed(exc)
    imported = [name for name in sys.modules if name not in before]
    try:
        write_payload(payload_path, kind, value, imported)
        atexit._run_exitfuncs()  # the point's own: W&B's teardown, its locks
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def crashed(exc: BaseException) -> dict:
    """A bug, not a setting: its traceback on the point's stderr (never hidden), a failure record for the sweep."""
    traceback.print_exception(type(exc), exc, exc.__traceback__)
    return {"status": "failed", "error_type": type(exc).__name__, "error": first_line(exc)}
