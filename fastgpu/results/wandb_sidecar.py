"""The W&B logger of one run, in a process of its own: it never holds up training, and nothing W&B does (its import,
its service, a server that does not answer, a crash or a hang) can stop or slow it.

    python -m fastgpu.results.wandb_sidecar RUN_DIR RUN_PID   # started by the run (fastgpu/results/wandb_logger.py)

(or forked from the run where W&B is already imported: a sweep point forked from a warm fork server).

It opens the run the spec file in RUN_DIR names (id, mode, project, config...), logs every line the run appends to
history.jsonl, and when the run is done (a byte on its stdin pipe; the pipe closing or the run's process gone, however
it ended) logs the rest,
the summary from metrics.json, a profiler trace, and finishes the run: exit code 0 when metrics.json says ok. It runs
at a lower priority (nice 10), so on a machine with few cores training comes first.
"""

import json
import os
import sys
import threading
from pathlib import Path

SPEC_FILE = "wandb_sidecar.json"  # what the run asks: mode, console, wandb.init's arguments, first history line
NAME_FILE = "wandb_name.json"  # the run's name and tags by what ran (written once the job is built)
POLL_S = 0.5
FINISH_TIMEOUT_S = 60  # how long a run or sweep waits, at its end, for its W&B process to log the rest


def finish_logger(process):
    """Tell a W&B process (this module's, or fastgpu/results/wandb_report.py's) that its run or sweep is done, and
    wait for it: its exit code, or "hung" where it did not end within FINISH_TIMEOUT_S (it is then killed)."""
    import subprocess

    try:
        process.stdin.write(b"x")  # done: log the rest and finish
        process.stdin.close()
    except OSError:  # it is gone already
        pass
    try:
        return process.wait(timeout=FINISH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=FINISH_TIMEOUT_S)
        return "hung"


class HistoryTail:
    """The complete lines appended to a file since the last read, from line `start` on."""

    def __init__(self, path: Path, start: int):
        self.path, self.skip, self.offset, self.partial = path, start, 0, b""

    def read(self) -> list:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        records = []
        for line in lines:
            if self.skip:
                self.skip -= 1
            elif line.strip():
                records.append(json.loads(line))
        return records


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def follow(run_dir: Path, spec: dict, trainer_done: threading.Event) -> int:
    from fastgpu.results.figures import wandb_summaries
    from fastgpu.results.wandb_logger import open_run

    run = open_run(spec["mode"], spec.get("console", "off"), spec.get("unreachable_marker"), **spec["init"])
    for key, summary in wandb_summaries().items():  # best accuracy in the runs table, not the last one
        run.define_metric(key, summary=summary, step_metric="step")
    run.define_metric("step", hidden=True)
    tail, named = HistoryTail(run_dir / "history.jsonl", spec.get("start_line", 0)), None
    while True:
        done = trainer_done.is_set()  # read before the history: every line written before the end is logged
        for record in tail.read():
            run.log(record)
        name = _read_json(run_dir / NAME_FILE)
        if name and name != named:
            run.name, run.tags, named = name["name"], tuple(name["tags"]), name
        if done:
            break
        trainer_done.wait(POLL_S)
    metrics = _read_json(run_dir / "metrics.json") or {}
    ok = metrics.get("status") == "ok"
    run.summary.update({k: v for k, v in metrics.items() if v is not None})
    if ok and metrics.get("profile_trace") and (run_dir / metrics["profile_trace"]).exists():
        import wandb

        artifact = wandb.Artifact(f"profile-{run.id}", type="profile")
        artifact.add_file(str(run_dir / metrics["profile_trace"]), name="trace.json")
        run.log_artifact(artifact)
    run.finish(exit_code=0 if ok else 1)
    return 0


def in_the_background() -> None:
    """Lower priority (training comes first on few cores), and the signals meant for the run or sweep left to it."""
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)
    try:
        os.nice(10)
    except OSError:
        pass


def watch_the_run(done_fd: int, done: threading.Event, parent: int, parent_gone=None) -> None:
    """Set `done` when the run says so (a byte on the pipe), or its end of the pipe closes, or it is gone (this
    process's parent is no longer `parent`, the pid the run gave before starting it: read here, it could already be
    the reaper's; `parent_gone` is called then, from the watching thread). Not EOF alone: a process the run forked
    (a data-loader worker) may hold the pipe's write end open after the run is done."""

    def read_pipe():
        os.read(done_fd, 1)
        done.set()

    def watch_parent():
        while not done.wait(POLL_S):
            if os.getppid() != parent:
                if parent_gone is not None:
                    parent_gone()
                done.set()

    threading.Thread(target=read_pipe, daemon=True).start()
    threading.Thread(target=watch_parent, daemon=True).start()


def run_sidecar(run_dir: Path, done_fd: int, parent: int) -> int:
    """Follow the run in `run_dir` until it is done (watch_the_run). Signals meant for the run (Ctrl-C in its
    terminal, Slurm's SIGTERM to every process of a job) are left to it: this process ends when the run does, after
    logging what it recorded."""
    in_the_background()
    spec = json.loads((Path(run_dir) / SPEC_FILE).read_text())
    trainer_done = threading.Event()

    watch_the_run(done_fd, trainer_done, parent)
    try:
        return follow(Path(run_dir), spec, trainer_done)
    except Exception as exc:
        from fastgpu.errors import described

        print(f"fastgpu: warning: W&B stopped logging ({described(exc)}); the local record goes on", file=sys.stderr)
        return 1


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv  # RUN_DIR RUN_PID
    return run_sidecar(Path(argv[0]), sys.stdin.fileno(), int(argv[1]))


if __name__ == "__main__":
    sys.exit(main())
