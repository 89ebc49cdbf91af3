"""Errors a user can fix. Their message is one line that names the problem and the fix."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (or its type, if it has none): for one-line records.
    An error re-raised from a DataLoader worker ("Caught X in DataLoader worker ...") gives the original's."""
    text = str(exc).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        return text.splitlines()[-1].split(": ", 1)[-1]
    return text.splitlines()[0] if text else type(exc).__name__


def described(exc: BaseException, limit: int = 300) -> str:
    """'Type: first line of the message', at most `limit` characters."""
    return f"{type(exc).__name__}: {first_line(exc)}"[:limit]


def choose(table: dict, key: str, name: str):
    """`table[name]`: a setting picked by name from a fixed table (precision modes, optimizer.impl); components are
    built from their `_target_` instead (fastgpu/components.py). An unknown name is one line listing the known ones."""
    if name not in table:
        raise FastGPUError(f"{key}={name!r} is not known; use one of {', '.join(sorted(table))}")
    return table[name]


class FastGPUError(Exception):
    """A configuration or environment problem; printed as one line, no traceback."""

    status = "failed"


class BatchLargerThanData(FastGPUError):
    """data.batch_size (x accumulation) holds more samples than a rank's training set: the max-batch search's bound."""


class DivergedError(FastGPUError):
    status = "diverged"


class Interrupted(FastGPUError):
    """Training stopped on a preemption/kill signal after saving its full state."""

    status = "interrupted"

    def __init__(self, watch, step: int, checkpoint_path):
        import signal

        name = signal.Signals(watch.signum).name
        run_dir = checkpoint_path.parent
        super().__init__(
            f"stopped by {name} at step {step}; state saved in {checkpoint_path}; "
            f"continue with: python -m fastgpu +resume={run_dir}"
        )
        self.watch = watch


def refuse_or_exit(check, *args):
    """Run a check from a Hydra callback: Hydra turns a callback's exception into a warning and goes on, so a
    refusal exits here, in one line."""
    import sys

    try:
        return check(*args)
    except FastGPUError as exc:
        print(f"fastgpu: error: {exc}", file=sys.stderr)
        sys.exit(2)
