"""What a sweep costs beyond its training: launcher start-up, per-point set-up (process, W&B run,
data, model, checkpoint) and the report, for a 4-point sweep: the default launcher (each point forked by its fork
server), Hydra's basic one (every point in the sweep's process) and submitit_local (a fresh interpreter a point).

overhead = wall time of `python -m fastgpu -m ...` - sum over points of (train_time_s + eval_time_s)

    python experiments/sweep_overhead.py            # writes experiments/results/sweep_overhead.json
    python experiments/sweep_overhead.py --launchers isolated --against HEAD~1 --rounds 3 --no-deploy \\
        --out experiments/results/sweep_overhead_fork_server.json
`--against REV` also runs REV's default launcher (a git worktree of REV on PYTHONPATH, this environment's packages)
in the same call; rounds alternate the order of the sides, and the ratio is of the sides' medians.
Target: under 3 s of overhead per point with the default launcher.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SWEEP = ["precision=fp32,bf16", "channels_last=false,true", "trainer.epochs=3", "trainer.progress_bar=false"]
NO_DEPLOY = ["inference.benchmark=false", "export=[]"]
# one point at a time under both launchers, so that training time adds up to wall time
LAUNCHERS = {"isolated": [], "basic": ["hydra/launcher=basic"], "submitit_local": ["hydra/launcher=local"]}


def measure(launcher_args: list, code: Path = REPO) -> dict:
    """One sweep with the code at `code` (this checkout, or a worktree of another revision)."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    if code != REPO:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        sweep_dir = Path(tmp) / "sweep"
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "fastgpu", "-m", *SWEEP, *launcher_args, f"hydra.sweep.dir={sweep_dir}"],
            cwd=code,
            capture_output=True,
            text=True,
            env=env,
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


def worktree(rev: str, root: Path) -> Path:
    path = root / "against"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), rev], cwd=REPO, check=True)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--launchers", nargs="+", default=list(LAUNCHERS), choices=list(LAUNCHERS))
    parser.add_argument("--against", help="a git revision whose default launcher runs in the same call")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-deploy", action="store_true", help="no export and inference benchmark in the points")
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "sweep_overhead.json"))
    args = parser.parse_args(argv)
    extra = NO_DEPLOY if args.no_deploy else []
    with tempfile.TemporaryDirectory() as tmp:
        sides = {name: (LAUNCHERS[name] + extra, REPO) for name in args.launchers}
        if args.against:
            sides[f"isolated@{args.against}"] = (extra, worktree(args.against, Path(tmp)))
        runs = {name: [] for name in sides}
        try:
            for r in range(args.rounds):
                for name in list(sides) if r % 2 == 0 else list(sides)[::-1]:
                    runs[name].append(measure(*sides[name]))
        finally:
            if args.against:
                subprocess.run(["git", "worktree", "remove", "--force", str(Path(tmp) / "against")], cwd=REPO)
    results = {
        name: {
            "rounds": r,
            **{key: statistics.median(run[key] for run in r) for key in r[0] if key != "points"},
            "points": r[0]["points"],
        }
        for name, r in runs.items()
    }
    summary = {
        "command": "python experiments/sweep_overhead.py " + " ".join(argv or sys.argv[1:]),
        "sweep": SWEEP + extra,
    }
    if args.against:
        new, old = (
            results["isolated"]["overhead_per_point_s"],
            results[f"isolated@{args.against}"]["overhead_per_point_s"],
        )
        summary["per_point_overhead_ratio"] = new / old
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**summary, "launchers": results}, indent=2) + "\n")
    print("| launcher | points | wall s | training s | overhead s | per point s |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['points']} | {r['wall_s']:.1f} | {r['training_s']:.1f} | {r['overhead_s']:.1f} "
            f"| {r['overhead_per_point_s']:.2f} |"
        )
    if args.against:
        print(f"per-point overhead, this checkout over {args.against}: {summary['per_point_overhead_ratio']:.2f}x")


if __name__ == "__main__":
    main()
