"""Errors a user can fix. Their message is one line that names the problem and the fix."""


class FastGPUError(Exception):
    """A configuration or environment problem; printed as one line, no traceback."""

    status = "failed"


class DivergedError(FastGPUError):
    status = "diverged"
