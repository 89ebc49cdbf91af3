"""Errors a user can fix. Their message is one line that names the problem and the fix."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (or its type, if it has none): for one-line records."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def described(exc: BaseException, limit: int = 300) -> str:
    """'Type: first line of the message', at most `limit` characters."""
    return f"{type(exc).__name__}: {first_line(exc)}"[:limit]


class FastGPUError(Exception):
    """A configuration or environment problem; printed as one line, no traceback."""

    status = "failed"


class DivergedError(FastGPUError):
    status = "diverged"
