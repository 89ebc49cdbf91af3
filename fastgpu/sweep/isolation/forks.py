"""Can this process fork a point that may still use CUDA?

Once a process has asked CUDA anything (`torch.cuda.is_available()`, `device_count()`, or initialised it), torch
marks every process forked from it a "bad fork": `torch.cuda.init()` there raises "Cannot re-initialize CUDA in
forked subprocess", and `trainer.device=auto` quietly picks the CPU. The mark is set at fork time, so the only sure
test is a fork: a child that reports `torch.cuda._is_in_bad_fork()` (~20 ms).
"""

import os
import sys


def fork_is_clean() -> tuple:
    """(True, '') if a child forked now could use CUDA, else (False, why)."""
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "cuda"):
        return True, ""
    if torch.cuda.is_initialized():
        return False, "had initialised CUDA"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os._exit(1 if torch.cuda._is_in_bad_fork() else 0)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return False, "had asked CUDA for its devices (torch.cuda.is_available() or device_count())"
    return True, ""
