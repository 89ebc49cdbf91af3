"""What a sweep costs beyond its training: launcher start-up, per-point set-up (process, W&B run,
data, model, checkpoint) and the report, for a 4-point sweep: the default launcher (each point forked into its own
process), Hydra's basic one (every point in the sweep's process) and submitit_local (a fresh interpreter a point).

overhead = wall time of `python -m fastgpu -m ...` - sum over points of (train_time_s + eval_time_s)

    python experiments/sweep_overhead.py            # writes experiments/results/sweep_overhead.json
Target: under 3 s of overhead per point with the default launcher.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SWEEP = ["precision=fp32,bf16", "channels_last=false,true", "trainer.epochs=3", "trainer.progress_bar=false"]
# one point at a time under both launchers, so that training time adds up to wall time
LAUNCHERS = {"isolated": [], "basic": ["hydra/launcher=basic"], "submitit_local": ["hydra/launcher=local"]}


def measure(launcher_args: list) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        sweep_dir = Path(tmp) / "sweep"
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "fastgpu", "-m", *SWEEP, *launcher_args, f"hydra.sweep.dir={sweep_dir}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={**os.environ, "WANDB_MODE": "offline"},
        )
        wall = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(result.stderr[-2000:])
        points = [json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")]
        training = sum(p["train_time_s"] + p["eval_time_s"] for p in points)
    return {
        "points": len(points),
        "wall_s": wall,
        "training_s": training,
        "overhead_s": wall - training,
        "overhead_per_point_s": (wall - training) / len(points),
    }


def main() -> None:
    results = {name: measure(args) for name, args in LAUNCHERS.items()}
    out = REPO / "experiments" / "results" / "sweep_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"command": "python experiments/sweep_overhead.py", "sweep": SWEEP, "launchers": results}, indent=2)
        + "\n"
    )
    print("| launcher | points | wall s | training s | overhead s | per point s |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['points']} | {r['wall_s']:.1f} | {r['training_s']:.1f} | {r['overhead_s']:.1f} "
            f"| {r['overhead_per_point_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
