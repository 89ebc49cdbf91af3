"""No orphans: a process that dies with its parent, and a parent that ends what its children left behind.

PR_SET_PDEATHSIG has the kernel signal a process when the thread that forked it ends, whatever ended it (SIGKILL
included); PR_SET_CHILD_SUBREAPER makes the orphans of a process's children its own children rather than init's, so
that a point's W&B service (its own session: out of reach of a kill of the point's group, and alive ~10 s after
its parent's SIGKILL) is still ours to end. Linux only; elsewhere both are no-ops.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, value, 0, 0, 0) == 0


def die_with_parent(signum: int, parent_pid: int) -> None:
    """The kernel sends `signum` to this process when its parent ends; a parent that ended before this call (between
    the fork and here) ends this process now."""
    _prctl(PR_SET_PDEATHSIG, int(signum))
    if os.getppid() != parent_pid:
        os._exit(1)


def adopt_orphans() -> None:
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def end_children(grace_s: float) -> None:
    """End every descendant of this process: SIGTERM, then SIGKILL after `grace_s` (at once for 0); all reaped."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        try:
            child.send_signal(signal.SIGTERM if grace_s > 0 else signal.SIGKILL)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace_s) if grace_s > 0 else ([], children)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=1)
    _reap()


def _reap() -> None:
    """Collect the exit status of any child that ended (an orphan adopted here is not waited for by anyone else)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
