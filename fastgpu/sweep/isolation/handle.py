"""The sweep's side of the fork server: start it (forked, or a fresh interpreter), run a point on it, stop it."""

import os
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Optional

from fastgpu.sweep.isolation.forks import fork_is_clean
from fastgpu.sweep.isolation.warm import ALLOWED


@dataclass
class Ended:
    """How a point's process ended: its wait status (None: the server died under it) and its peak RSS."""

    status: Optional[int]
    peak_rss: int = 0
    pid: Optional[int] = None
    server_death: str = ""


class Tainted(Exception):
    """The server's warm imports made its forks unsafe: start a cold one."""


class PointServer:
    def __init__(self, init: dict, cold_because: str = "", extra_packages: tuple = ()):
        clean, why = fork_is_clean()
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        if cold_because:
            started = f"fork server, cold ({cold_because})"
        elif clean:
            started = "fork server (forked from the sweep's process)"
        else:
            started = f"fork server in a fresh interpreter (the sweep's process {why})"
        init = {**init, "started": started, "warm_packages": () if cold_because else ALLOWED + tuple(extra_packages)}
        sweep_pid = os.getpid()  # before the fork: a server whose sweep died meanwhile must not run
        if clean:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                os.close(requests_write)
                os.close(replies_read)
                from fastgpu.sweep.isolation.server import serve

                serve(Connection(requests_read, writable=False), Connection(replies_write, readable=False), sweep_pid)
            self.process = None
        else:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fastgpu.sweep.isolation.server"]
                + [str(requests_read), str(replies_write), str(sweep_pid)],
                pass_fds=(requests_read, replies_write),
            )
            pid = self.process.pid
        os.close(requests_read)
        os.close(replies_write)
        self.pid, self.started = pid, started
        self.requests = Connection(requests_write, readable=False)
        self.replies = Connection(replies_read, writable=False)
        import cloudpickle

        self.requests.send_bytes(cloudpickle.dumps(init))

    def run(self, config_blob: bytes, payload_path, warm: list, relay) -> Ended:
        """Run one point; signals reach it through `relay` while it runs. Raises Tainted."""
        pid = None
        try:
            self.requests.send((config_blob, str(payload_path), warm))
            reply = self.replies.recv()
            if reply[0] == "tainted":
                self.stop()
                raise Tainted(reply[1])
            pid = reply[1]
            relay.attach(pid)
            _, status, peak_rss = self.replies.recv()
            return Ended(status, peak_rss, pid)
        except (EOFError, OSError):  # the server died (killed): its point died with it
            return Ended(None, 0, pid, server_death=self._reap())
        finally:
            relay.detach()

    def alive(self) -> bool:
        return not self.requests.closed

    def stop(self) -> None:
        if self.requests.closed:
            return
        try:
            self.requests.send(None)
        except OSError:
            pass
        self.requests.close()
        self.replies.close()
        self._reap()

    def _reap(self) -> str:
        """Wait for the server's process; how it ended, in words."""
        if not self.requests.closed:
            self.requests.close()
            self.replies.close()
        try:
            if self.process is not None:
                status = self.process.wait()
                code = status
            else:
                _, wait_status = os.waitpid(self.pid, 0)
                code = os.waitstatus_to_exitcode(wait_status)
        except ChildProcessError:
            return "ended"
        if code < 0:
            import signal

            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"
