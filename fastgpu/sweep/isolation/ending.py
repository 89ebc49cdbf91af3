"""How a point that sent nothing back ended, as the record the report lists and `+resume=true` reruns.

A point killed by a signal sends nothing: SIGKILL from a person or another process, the kernel's out-of-memory
killer (also SIGKILL), a segfault in a compiled extension. The out-of-memory killer leaves no trace in the process
itself; it is named where the cgroup counted an OOM kill during the point, or where the point's peak resident memory
reached half of what the machine (or its cgroup) allows.
"""

import os
import signal
from pathlib import Path

from fastgpu.files import size_text

LIKELY_OOM_SHARE = 0.5
CAUSES = {
    signal.SIGSEGV: "a segmentation fault, often in a compiled extension or a CUDA library",
    signal.SIGBUS: "a bus error: memory that went away, often a full /dev/shm or a truncated memory-mapped file",
    signal.SIGABRT: "an abort, often a failed assertion in native code",
    signal.SIGFPE: "an arithmetic fault in native code",
    signal.SIGILL: "an illegal instruction: a build for another processor",
}
CGROUP = Path("/sys/fs/cgroup")


def ended_record(status: int, peak_rss: int, oom_killed: bool, batch_size) -> dict:
    """The failure record of a point's process that exited with wait status `status` without a result."""
    if os.WIFSIGNALED(status):
        return killed_record(os.WTERMSIG(status), peak_rss, memory_limit(), oom_killed, batch_size)
    code = os.waitstatus_to_exitcode(status)
    return {
        "status": "failed",
        "error_type": "NoResult",
        "error": f"its process exited with code {code} and no result (os._exit or exec in its code?); "
        "rerun it with the sweep's command and +resume=true",
    }


def killed_record(signum: int, peak_rss: int, limit: int, oom_killed: bool, batch_size) -> dict:
    name = signal.Signals(signum).name
    peak = f"peak {size_text(peak_rss)} of {size_text(limit)} memory"
    record = {"error_type": "Killed", "signal": name}
    if signum == signal.SIGKILL and (oom_killed or peak_rss >= LIKELY_OOM_SHARE * limit):
        cause = "the OS's out-of-memory killer" if oom_killed else "the OS"
        return {
            **record,
            "status": "oom",
            "error": f"killed by {cause} ({name}, {peak}), likely out of memory: lower data.batch_size "
            f"(now {batch_size})",
        }
    if signum == signal.SIGKILL:
        error = f"killed by {name} ({peak}: not out of memory, so a person or another process sent it)"
    else:
        error = f"killed by {name} ({CAUSES.get(signum) or signal.strsignal(signum)})"
    return {**record, "status": "killed", "error": f"{error}; rerun it with the sweep's command and +resume=true"}


def memory_limit() -> int:
    """The bytes this process tree may use: the machine's memory, or its cgroup's limit where that is lower."""
    import psutil

    limit = psutil.virtual_memory().total
    for path in (CGROUP / "memory.max", CGROUP / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limit = min(limit, int(text))
    return limit


def oom_kills():
    """How many processes the kernel's out-of-memory killer ended in this cgroup so far; None where unknown."""
    for path, key in ((CGROUP / "memory.events", "oom_kill"), (CGROUP / "memory" / "memory.oom_control", "oom_kill")):
        try:
            for line in path.read_text().splitlines():
                field, _, value = line.partition(" ")
                if field == key:
                    return int(value)
        except (OSError, ValueError):
            continue
    return None
