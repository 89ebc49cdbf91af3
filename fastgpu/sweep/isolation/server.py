"""The fork server: forks each sweep point from a warm state that never touched CUDA or imported the user's code.

It is forked from the sweep's process where that process is clean (`forks.py`), else started as a fresh
interpreter (`python -m fastgpu.sweep.isolation.server READ_FD WRITE_FD SWEEP_PID`). It dies with the sweep
(PR_SET_PDEATHSIG) and then ends its point's whole tree at once; it adopts what a point leaves behind (a child
subreaper) and ends that too. Protocol, over two pipes: one init message (cloudpickled: Hydra's context, the task
function, sys.path, Hydra's singletons, how it started, which packages it may import), then per point a request
(cloudpickled sweep config, payload path, modules to import) answered by ('started', pid) and ('ended', wait status,
peak RSS bytes), or ('tainted', why) when its own imports made forks unsafe (it then exits).
"""

import atexit
import gc
import os
import signal
import sys
from multiprocessing.connection import Connection
from pathlib import Path

from fastgpu.sweep.isolation.forks import fork_is_clean
from fastgpu.sweep.isolation.lifeline import adopt_orphans, die_with_parent, end_children
from fastgpu.sweep.isolation.relay import RELAYED
from fastgpu.sweep.isolation.warm import import_warm

LEFTOVER_GRACE_S = 1.0  # what a finished point left running gets SIGTERM, then SIGKILL after this


def serve(requests: Connection, replies: Connection, sweep_pid: int):
    """Never returns."""
    try:
        die_with_parent(signal.SIGTERM, sweep_pid)
        adopt_orphans()
        os.setpgid(0, 0)  # out of the sweep's group: a terminal's signals reach the sweep, which relays them
        atexit._clear()  # the sweep's exit work (its dir lock) stays with the sweep
        import psutil  # noqa: F401 - imported before any signal handler needs it

        for signum in RELAYED:
            signal.signal(signum, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _sweep_ended)
        import pickle

        init = pickle.loads(requests.recv_bytes())
        sys.path[:] = init["sys_path"]
        from hydra.core.singleton import Singleton
        from hydra.core.utils import setup_globals

        Singleton.set_state(init["singletons"])
        setup_globals()
        import_warm(init.get("eager", ()), init["warm_packages"])  # W&B for the points' loggers, before point 0
        _serve_points(init, requests, replies)
    finally:
        end_children(0)
        os._exit(0)


def _serve_points(init: dict, requests: Connection, replies: Connection) -> None:
    import pickle

    while True:
        try:
            request = requests.recv()
        except (EOFError, OSError):  # the sweep is gone
            return
        if request is None:
            return
        config_blob, payload_path, warm = request
        import_warm(warm, init["warm_packages"])
        clean, why = fork_is_clean()
        if not clean:
            replies.send(("tainted", why))
            return
        sys.stdout.flush()
        sys.stderr.flush()
        gc.freeze()  # what the server holds stays out of the point's collections: its pages are not copied on write
        server_pid = os.getpid()  # before the fork: a point whose server died meanwhile must not run
        pid = os.fork()
        if pid == 0:
            requests.close()
            replies.close()
            from fastgpu.sweep.isolation.point import run_point

            run_point(init, pickle.loads(config_blob), Path(payload_path), server_pid)
        replies.send(("started", pid))
        _, status, usage = os.wait4(pid, 0)
        end_children(LEFTOVER_GRACE_S)
        replies.send(("ended", status, usage.ru_maxrss * 1024))


def _sweep_ended(signum, frame) -> None:
    """The sweep's process ended (its death signal) or someone ended this server: so do its points, at once."""
    end_children(0)
    os._exit(0)


if __name__ == "__main__":
    read_fd, write_fd, sweep_pid = (int(arg) for arg in sys.argv[1:4])
    serve(Connection(read_fd, writable=False), Connection(write_fd, readable=False), sweep_pid)
