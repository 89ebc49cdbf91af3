"""Preemption signals (Slurm's pre-timeout and preemption signals, a kill, Ctrl-C, a closed terminal) as a flag the
loop reads."""

import signal

# SIGHUP: the terminal or ssh session closed; SIGQUIT: Ctrl-\. Both would end the run without its state otherwise.
PREEMPTION_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


class PreemptionWatch:
    """`with PreemptionWatch() as watch:` turns SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGHUP and SIGQUIT (Slurm's
    pre-timeout and preemption signals, a kill, Ctrl-C, a closed terminal, Ctrl-backslash) into a flag the train loop
    reads once per step. On leaving the block the previous handlers are back; after the run saved its state,
    `hand_on()` calls the one that handled the received signal before (submitit requeues the job there)."""

    def __init__(self, on_signal=None):
        self.signum = None
        self._previous = {}
        self._on_signal = on_signal

    def __enter__(self):
        for signum in PREEMPTION_SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: no signal handling here
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        if self._on_signal is not None:
            self._on_signal(signum)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def hand_on(self) -> bool:
        """Call the previous handler of the received signal; True if there was one to call."""
        previous = self._previous.get(self.signum)
        if callable(previous) and previous is not signal.default_int_handler:  # Ctrl-C: the run has stopped already
            previous(self.signum, None)
            return True
        return False
