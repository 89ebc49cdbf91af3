"""Where every point of a sweep stands, from the files in the sweep dir (and Slurm's accounting if present).

    python -m fastgpu status outputs/multirun/DATE/TIME

One line per point: state (pending, running, ok, failed, oom, diverged, interrupted, requeued, cancelled), Slurm
job id, elapsed time, and the log to read.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from fastgpu.results.store import HISTORY_FILE, UNREADABLE, point_metrics
from fastgpu.sweep.slurm import JOBS_FILE

SLURM_STATES = {
    "PENDING": "pending",
    "RUNNING": "running",
    "REQUEUED": "requeued",
    "PREEMPTED": "requeued",
    "COMPLETED": "ok",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "TIMEOUT": "requeued",
    "OUT_OF_MEMORY": "oom",
    "NODE_FAIL": "failed",
}


def slurm_accounting(job_ids: list) -> dict:
    """{job id: (state, elapsed)} from sacct; empty where Slurm's accounting is not available."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    try:
        out = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "JobID,State,Elapsed", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    rows = [line.split("|") for line in out.splitlines() if line.count("|") == 2]
    return {job_id: (state.split()[0], elapsed) for job_id, state, elapsed in rows}


def point_states(sweep_dir: Path) -> list:
    jobs = json.loads((sweep_dir / JOBS_FILE).read_text()) if (sweep_dir / JOBS_FILE).exists() else {}
    numbers = sorted(
        {int(n) for n in jobs} | {int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()}
    )
    accounting = slurm_accounting([jobs[str(n)]["job_id"] for n in numbers if str(n) in jobs])
    states = []
    for num in numbers:
        point_dir = sweep_dir / str(num)
        job = jobs.get(str(num), {})
        metrics = point_metrics(point_dir)
        slurm_state, elapsed = accounting.get(job.get("job_id", ""), (None, None))
        if metrics.get("status") and metrics["status"] != "interrupted":
            state = metrics["status"]
        elif slurm_state:
            state = SLURM_STATES.get(slurm_state, slurm_state.lower())
        elif metrics.get("status") == "interrupted":
            state = "interrupted"
        else:
            state = "running" if (point_dir / HISTORY_FILE).exists() else "pending"
        if elapsed is None and metrics.get("train_time_s") is not None:
            elapsed = f"{metrics['train_time_s']:.0f}s training"
        states.append(
            {
                "point": num,
                "state": state,
                "job_id": job.get("job_id", "-"),
                "elapsed": elapsed or "-",
                "log": job.get("stderr", str(point_dir / "__main__.log")),
                "error": metrics.get("error", ""),
            }
        )
    return states


def main(argv=None, prog: str = "python -m fastgpu status") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir")
    args = parser.parse_args(argv)
    name = prog.removeprefix("python -m ")
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        print(f"{name}: error: {sweep_dir} is not a directory; pass a multirun dir", file=sys.stderr)
        return 2
    states = point_states(sweep_dir)
    if not states and not (sweep_dir / "multirun.yaml").exists():  # a run's dir, or any other
        print(
            f"{name}: error: {sweep_dir} holds no sweep (no multirun.yaml, no numbered point dirs); pass a multirun "
            "dir such as outputs/multirun/DATE/TIME",
            file=sys.stderr,
        )
        return 2
    slurm = any(s["job_id"] != "-" for s in states)  # a local sweep's points have no job to name
    job = (lambda s: f"{s['job_id']:<9} ") if slurm else (lambda s: "")
    if states:
        print(f"point  {'state':<11} " + (f"{'job':<9} " if slurm else "") + f"{'elapsed':<16} log (and error)")
    for s in states:
        error = f"  {s['error']}" if s["error"] and s["state"] != "ok" else ""
        print(f"{s['point']:>5}  {s['state']:<11} {job(s)}{s['elapsed']:<16} {s['log']}{error}")
    counts = {}
    for s in states:
        counts[s["state"]] = counts.get(s["state"], 0) + 1
    print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no points")
    for s in states:
        if s["state"] == UNREADABLE:
            print(f"{name}: {s['error']}", file=sys.stderr)
    return 1 if states and all(s["state"] == UNREADABLE for s in states) else 0


if __name__ == "__main__":
    sys.exit(main())
