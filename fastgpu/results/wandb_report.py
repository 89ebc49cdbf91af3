"""The sweep's W&B report run (job_type sweep-report: the results table, the plots, the recommendation), logged by a
process the sweep starts when it starts: W&B's import and its service overlap the sweep's points, and at the end only
the run itself is left to log.

    python -m fastgpu.results.wandb_report SWEEP_DIR SWEEP_PID   # started by fastgpu/sweep/callbacks.py

It opens the run at once, waits for the sweep's word on its stdin (or for the sweep to be gone), then logs what the
sweep wrote into SWEEP_DIR/wandb_report.json (a stopped sweep's run ends as failed), at a lower priority (nice 10).
"""

import json
import os
import sys
from pathlib import Path

START_FILE = "wandb_report_run.json"  # the run to open: written when the sweep starts
SPEC_FILE = "wandb_report.json"  # what to log in it: written when the sweep's report is built
SEARCH_KEYS = ("sweep_cost_saved", "device_hours_spent", "device_hours_full_grid", "steps_spent", "steps_full_grid")


class ReportLogger:
    """The sweep's side: start the process (it opens the run at once), hand it the report, wait for it
    (wandb_sidecar.FINISH_TIMEOUT_S at most)."""

    def __init__(self, cfg, sweep_dir: Path, group: str):
        import subprocess

        from fastgpu.files import atomic_write
        from fastgpu.results.wandb_logger import WANDB_UNREACHABLE, wandb_mode

        self.sweep_dir = Path(sweep_dir)
        (self.sweep_dir / SPEC_FILE).unlink(missing_ok=True)  # a resumed sweep's: this sweep writes its own
        wcfg = cfg.logger.wandb
        start = {
            "mode": wandb_mode(cfg),
            "unreachable_marker": str(self.sweep_dir / WANDB_UNREACHABLE),
            "init": {
                "project": wcfg.project,
                "entity": wcfg.entity,
                "group": group,
                "job_type": "sweep-report",
                "name": f"report-{group}",
                "dir": str(self.sweep_dir),
                "config": {"sweep_dir": str(self.sweep_dir)},
            },
        }
        atomic_write(self.sweep_dir / START_FILE, json.dumps(start, default=str))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fastgpu.results.wandb_report", str(sweep_dir), str(os.getpid())],
            stdin=subprocess.PIPE,
        )

    def log(self, report: dict) -> None:
        from fastgpu.files import atomic_write
        from fastgpu.results.report import COLUMNS

        columns = COLUMNS + ["baseline"]
        spec = {
            "columns": columns,
            "rows": [[row.get(c) for c in columns] for row in report["rows"]],
            "plots": [str(p) for p in report["plots"]],
            "summary": {
                "recommendation": report["recommendation"],
                "failed_points": len(report["failed"]),
                **{k: v for k, v in (report.get("halving") or {}).items() if k in SEARCH_KEYS and v is not None},
            },
        }
        atomic_write(self.sweep_dir / SPEC_FILE, json.dumps(spec, default=str))
        self.close()

    def close(self) -> None:
        from fastgpu.results.wandb_sidecar import FINISH_TIMEOUT_S, finish_logger

        process, self.process = self.process, None
        if process is not None and finish_logger(process) == "hung":
            print(f"fastgpu: warning: W&B's sweep report did not finish in {FINISH_TIMEOUT_S} s", file=sys.stderr)


def end_own_children() -> None:
    """SIGKILL this process's children (W&B's service runs in a session of its own and outlives its parent)."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv  # SWEEP_DIR SWEEP_PID
    sweep_dir, sweep_pid = Path(argv[0]), int(argv[1])
    import threading

    from fastgpu.results.wandb_logger import open_run
    from fastgpu.results.wandb_sidecar import in_the_background, watch_the_run

    in_the_background()

    def sweep_killed():  # nobody waits for its report: end at once, whatever W&B is doing, and leave nothing behind
        end_own_children()
        os._exit(1)

    done = threading.Event()
    watch_the_run(
        sys.stdin.fileno(), done, sweep_pid, sweep_killed
    )  # a byte from the sweep at its end (or the sweep gone)
    try:
        start = json.loads((sweep_dir / START_FILE).read_text())
        run = None
        if start["mode"] != "online":  # opened while the points run; online waits for them to learn the server's
            run = open_run(start["mode"], "off", **start["init"])  # state, so that a dead one is tried once
        done.wait()
        if run is None:
            run = open_run(start["mode"], "off", start["unreachable_marker"], **start["init"])
        path = sweep_dir / SPEC_FILE
        if not path.exists():  # the sweep ended without a report (stopped)
            run.finish(exit_code=1)
            return 0
        import wandb

        spec = json.loads(path.read_text())
        table = wandb.Table(columns=spec["columns"], data=spec["rows"])
        run.log({"results": table, **{f"plots/{Path(p).stem}": wandb.Image(p) for p in spec["plots"]}})
        run.summary.update(spec["summary"])
        run.finish()
    except Exception as exc:
        from fastgpu.errors import described

        print(f"fastgpu: warning: W&B's sweep report was not logged ({described(exc)})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
