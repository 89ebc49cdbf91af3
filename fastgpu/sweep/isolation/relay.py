"""Signals to the sweep, passed on to the point that runs: each one exactly once.

A point runs in a process group of its own, so a terminal's Ctrl-C (sent to the foreground group) reaches the sweep
only; the sweep passes INT, TERM, HUP (a closed terminal or ssh session), QUIT, USR1 and USR2 (Slurm's) on to the
point, which saves its state and stops. A signal that arrives between points stops the sweep before the next."""

import os
import signal

RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


class SignalRelay:
    """`with SignalRelay() as relay:` ... `relay.attach(pid)` while a point runs, `relay.detach()` after it."""

    def __init__(self):
        self.received, self._sent, self._pid, self._previous = [], 0, None, {}

    def __enter__(self):
        for signum in RELAYED:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _handle(self, signum, frame) -> None:
        self.received.append(signum)
        self._forward()

    def _forward(self) -> None:
        while self._pid is not None and self._sent < len(self.received):
            signum = self.received[self._sent]
            self._sent += 1  # counted before it is sent: a signal handled meanwhile never sends it again
            try:
                os.kill(self._pid, signum)
            except ProcessLookupError:
                pass

    def attach(self, pid: int) -> None:
        """Signals go to `pid` from now on, with those that arrived since the point was asked for."""
        self._pid = pid
        self._forward()

    def detach(self) -> None:
        self._pid = None
        self._sent = len(self.received)

    @property
    def stop_requested(self) -> bool:
        return bool(self.received)

    @property
    def last(self):
        return signal.Signals(self.received[-1]).name if self.received else None
