"""Is a sweep point measured as if it ran alone? Five identical points in one sweep, under the default launcher (each
point forked into its own process) and under Hydra's basic launcher (all points in the sweep's process), beside five
separate `python -m fastgpu` runs of the same setting; then `optimizer.impl=foreach,loop` in both orders.

    python experiments/isolation.py [--points 5] [--rounds 2] [--pairs 6] [--out experiments/results/isolation.json]

Per set: throughput by position (steady samples/s, warm-up excluded), its spread ((max - min) / median), its trend
(least-squares slope per position / mean, in % per point) and peak RSS by position. For the two orders: the speed-up
of `loop` over `foreach` with its 95% interval, from the report. Position bias on its own: `--pairs` rounds of a
two-point sweep of one setting under each launcher, alternating, and the second point's throughput over the first's
(1.0: no bias; the held-out tryout saw 0.68-0.76 in one process). One machine, one call; each round runs every set
once, so drift over the minutes lands on all sets alike. Throughput varies ±30% on a shared 2-core machine: compare
the sets' spreads and trends within a round, not the absolute rates.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
JOB = [
    "trainer.epochs=8",  # 176 steps, a log interval every 10: enough intervals for the report's 95% interval
    "trainer.log_every_n_steps=10",
    "trainer.progress_bar=false",
    "inference.benchmark=false",
    "export=[]",
]
ENV = {**os.environ, "WANDB_MODE": "disabled"}


def fastgpu(*args) -> None:
    result = subprocess.run([sys.executable, "-m", "fastgpu", *args], cwd=REPO, env=ENV, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])


def metrics_of(point_dir: Path) -> dict:
    return json.loads((point_dir / "metrics.json").read_text())


def sweep(tmp: Path, name: str, *args) -> list:
    sweep_dir = tmp / name
    fastgpu("-m", *args, *JOB, f"hydra.sweep.dir={sweep_dir}")
    dirs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [metrics_of(p) for p in dirs]


def separate(tmp: Path, n: int) -> list:
    runs = []
    for i in range(n):
        fastgpu(*JOB, f"hydra.run.dir={tmp / f'alone{i}'}")
        runs.append(metrics_of(tmp / f"alone{i}"))
    return runs


def describe(runs: list) -> dict:
    rates = [m["throughput"] for m in runs]
    mean = statistics.fmean(rates)
    positions = range(len(rates))
    slope = statistics.linear_regression(list(positions), rates).slope if len(rates) > 1 else 0.0
    return {
        "throughput_by_position": [round(r, 1) for r in rates],
        "spread": (max(rates) - min(rates)) / statistics.median(rates),
        "trend_pct_per_point": 100 * slope / mean,
        "last_over_first": rates[-1] / rates[0],
        "peak_rss_mb_by_position": [round(m["peak_rss_mb"]) for m in runs],
        "runs_before_in_process": [m.get("runs_before_in_process") for m in runs],
    }


def position_bias(tmp: Path, rounds: int) -> dict:
    """Second / first throughput of two identical points, per round, under each launcher (alternating)."""
    ratios = {"isolated": [], "basic": []}
    for r in range(rounds):
        for launcher in ("isolated", "basic") if r % 2 == 0 else ("basic", "isolated"):
            first, second = sweep(tmp, f"pair{r}{launcher}", "logger.wandb.notes=a,b", f"hydra/launcher={launcher}")
            ratios[launcher].append(second["throughput"] / first["throughput"])
    return {
        launcher: {
            "second_over_first": [round(x, 3) for x in values],
            "median": statistics.median(values),
            "geometric_mean": statistics.geometric_mean(values),
        }
        for launcher, values in ratios.items()
    }


def impl_ratio(tmp: Path, name: str, order: str) -> dict:
    sweep_dir = tmp / name
    fastgpu(
        "-m",
        f"optimizer.impl={order}",
        *JOB,
        f"hydra.sweep.dir={sweep_dir}",
        "report.baseline=['optimizer.impl=foreach']",
    )
    rows = {r["name"]: r for r in csv_rows(sweep_dir / "results.csv")}
    loop = next(r for n, r in rows.items() if "loop" in n)
    return {k: float(loop[k]) if loop[k] else None for k in ("speedup", "speedup_low", "speedup_high")}


def csv_rows(path: Path) -> list:
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--out", default=str(REPO / "experiments/results/isolation.json"))
    args = parser.parse_args()
    same = "logger.wandb.notes=" + ",".join(f"copy{i}" for i in range(args.points))  # identical training
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() and not args.rounds else {}
    result.update(command="python experiments/isolation.py", job=JOB, points=args.points)
    rounds = result.setdefault("rounds", []) if not args.rounds else []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            rounds.append(
                {
                    "isolated_sweep": describe(sweep(tmp, "isolated", same)),
                    "basic_sweep": describe(sweep(tmp, "basic", same, "hydra/launcher=basic")),
                    "separate_runs": describe(separate(tmp, args.points)),
                    "loop_over_foreach": {
                        "foreach,loop": impl_ratio(tmp, "forward", "foreach,loop"),
                        "loop,foreach": impl_ratio(tmp, "reverse", "loop,foreach"),
                    },
                }
            )
        result["rounds"] = rounds
        out.write_text(json.dumps(result, indent=2) + "\n")  # after every round: nothing lost
        print(json.dumps(rounds[-1], indent=2), flush=True)
    if args.pairs:
        with tempfile.TemporaryDirectory() as tmp:
            result["position_bias"] = position_bias(Path(tmp), args.pairs)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["position_bias"], indent=2))


if __name__ == "__main__":
    main()
