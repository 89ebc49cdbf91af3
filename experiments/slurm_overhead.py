"""The Slurm launcher's own cost on the local one-node cluster (scripts/slurm/start.sh):

1. an 8-point sweep, one job at a time: submission-to-start latency of each job (sacct Submit -> Start;
   queueing behind the previous point included), and per-point overhead = job run time (Start -> End)
   - the point's training + evaluation time (Python/torch start-up, W&B, export, teardown);
2. preemption to resumed training: `scontrol requeue` of a running job -> the requeued job's first new
   training step (Slurm's requeue delay, process start-up, checkpoint load).

    sudo bash scripts/slurm/start.sh && python experiments/slurm_overhead.py
writes experiments/results/slurm_overhead.json.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fastgpu.results.store import read_history  # noqa: E402

SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "trainer.progress_bar=false",
    "inference.repeats=3",
]
ENV = {**os.environ, "WANDB_MODE": "offline"}


def sacct_times(job_ids: list) -> dict:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,Submit,Start,End", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    parse = datetime.fromisoformat
    return {j: (parse(s), parse(st), parse(e)) for j, s, st, e in (line.split("|") for line in out.splitlines())}


def sweep_of_8(tmp: Path) -> dict:
    sweep_dir = tmp / "sweep8"
    start = time.perf_counter()
    # one job at a time: on a 2-core node, concurrent jobs would measure CPU contention, not the launcher
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fastgpu",
            "-m",
            *SLURM,
            "hydra.launcher.array_parallelism=1",
            "precision=fp32,bf16",
            "channels_last=false,true",
            "optimizer.lr=0.01,0.02",
            "trainer.epochs=2",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=REPO,
        env=ENV,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - start
    jobs = json.loads((sweep_dir / "jobs.json").read_text())
    times = sacct_times([j["job_id"] for j in jobs.values()])
    latency, overhead = [], []
    for num, job in jobs.items():
        submit, begin, end = times[job["job_id"]]
        metrics = json.loads((sweep_dir / num / "metrics.json").read_text())
        latency.append((begin - submit).total_seconds())
        overhead.append((end - begin).total_seconds() - metrics["train_time_s"] - metrics["eval_time_s"])
    first = min(times[j["job_id"]][1] for j in jobs.values()) - min(times[j["job_id"]][0] for j in jobs.values())
    return {
        "points": len(jobs),
        "wall_s": wall,
        "first_submit_to_start_s": first.total_seconds(),
        "submit_to_start_s_median": statistics.median(latency),
        "submit_to_start_s": latency,
        "per_point_overhead_s_median": statistics.median(overhead),
        "per_point_overhead_s": overhead,
    }


def preemption_to_resume(tmp: Path) -> dict:
    sweep_dir = tmp / "requeue"
    args = [
        *SLURM,
        "model.width=64",
        "trainer.epochs=20",
        "trainer.log_every_n_steps=10",
        "trainer.checkpoint_every_n_steps=50",
        "trainer.monitor_interval_s=0",
        "inference.benchmark=false",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    sweep = subprocess.Popen(
        [sys.executable, "-m", "fastgpu", "-m", *args],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    point = sweep_dir / "0"
    while not ((point / "history.jsonl").exists() and any(h.get("step", 0) >= 120 for h in read_history(point))):
        time.sleep(0.05)
    job_id = json.loads((sweep_dir / "jobs.json").read_text())["0"]["job_id"]
    requeued_at = time.perf_counter()
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    log = Path(json.loads((sweep_dir / "jobs.json").read_text())["0"]["stderr"])
    while "resuming" not in log.read_text():  # printed once the history is cut back to the checkpoint
        time.sleep(0.05)
    import torch

    saved_step = torch.load(point / "checkpoint.pt", map_location="cpu", weights_only=False)["step"]
    while not any(h.get("step", 0) > saved_step for h in read_history(point) if "train/loss" in h):
        time.sleep(0.05)
    first_step = time.perf_counter() - requeued_at
    sweep.wait(timeout=600)
    return {"requeue_to_first_resumed_step_s": first_step, "resumed_from_step": saved_step}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = {"sweep_8_points": sweep_of_8(Path(tmp)), "preemption": preemption_to_resume(Path(tmp))}
    results["command"] = "python experiments/slurm_overhead.py"
    out = REPO / "experiments" / "results" / "slurm_overhead.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    s, p = results["sweep_8_points"], results["preemption"]
    print(
        f"8-point sweep: {s['wall_s']:.0f} s wall; "
        f"first job's submission -> start {s['first_submit_to_start_s']:.1f} s; "
        f"per-point overhead median {s['per_point_overhead_s_median']:.1f} s"
    )
    print(
        f"scontrol requeue -> first resumed training step: {p['requeue_to_first_resumed_step_s']:.1f} s "
        f"(resumed from step {p['resumed_from_step']})"
    )


if __name__ == "__main__":
    main()
