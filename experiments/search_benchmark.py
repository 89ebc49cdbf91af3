"""Successive halving against the full grid, on one 16-point space, in one call (issue 15's benchmark).

Runs the grid with FastGPU's grid sweeper, then the same space with `hydra/sweeper=halving`, both to the same
full budget, one point at a time, each point `--repeats` times in shuffled rounds (trainer.repeats); compares the
recommendations, the wall time of the two sweeps (process start to end, as a user waits for them), and the
speed-up intervals of every setting both sweeps trained to the end (issue 23: they must overlap).

    python experiments/search_benchmark.py --out experiments/results/search_cpu.json            # CPU, ~25 min
    python experiments/search_benchmark.py --gpu --out experiments/results/search_gpu.json      # resnet50 on a GPU
    python experiments/search_benchmark.py --short --eta 3 --probe-steps 30 --repeats 1 \
        --out experiments/results/search_short.json

`--short` is the held-out tryout's space (3 widths x 2 batch sizes, 4 epochs: 88 steps against a 35-step probe),
where halving costs more than the grid (1.37x its wall time on 2026-12-06 with hydra.sweeper.min_budget_ratio=0):
the sweeper refuses it before training, in one line that names the fixed cost; that refusal is the result.
Each result gives the measured saving (1 - halving wall / grid wall) beside the sweeper's
estimate.
"""

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CPU_SPACE = [  # small_cnn on the bundled digits: width x batch size, every point its own speed
    "model.width=8,16,32,64",
    "data.batch_size=16,32,64,128",
    "trainer.max_steps=1200",
    "trainer.device=cpu",
    "report.baseline=['model.width=32','data.batch_size=32']",
]
SHORT_SPACE = [  # the held-out tryout's: a budget of 2.5 probes
    "model.width=8,16,32",
    "data.batch_size=32,128",
    "trainer.epochs=4",
    "trainer.device=cpu",
    "report.baseline=['model.width=32','data.batch_size=32']",
]
GPU_SPACE = [
    "model=resnet50",
    "model.stem=imagenet",
    "data=synthetic",
    "data.image_size=224",
    "data.num_classes=1000",
    "data.train_samples=2560",
    "data.val_samples=256",
    "data.device_resident=true",
    "precision=fp32,bf16",
    "channels_last=false,true",
    "optimizer.impl=foreach,fused",
    "data.batch_size=128,256",
    "trainer.max_steps=300",
    "trainer.device=cuda",
    "report.baseline=['precision=fp32','channels_last=false','optimizer.impl=foreach','data.batch_size=128']",
]
COMMON = [
    "trainer.progress_bar=false",
    "trainer.warmup_steps=5",
    "trainer.log_every_n_steps=20",
    "trainer.checkpoint=false",
    "inference.benchmark=false",
    "export=[]",
    "logger.wandb.mode=disabled",
]


def final_rows(sweep_dir: Path) -> dict:
    """The sweep's finished settings (name -> speed-up, its interval, repeats), from its results.csv."""
    with open(sweep_dir / "results.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok" and r["speedup"]]
    return {
        r["name"].removesuffix(" (baseline)"): {
            "speedup": float(r["speedup"]),
            "interval": [float(r["speedup_low"] or "nan"), float(r["speedup_high"] or "nan")],  # nan: none
            "repeats": int(r["repeats"] or 1),
        }
        for r in rows
    }


def sweep(space: list, extra: list, sweep_dir: Path) -> dict:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "fastgpu", "-m", *space, *COMMON, *extra, f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    found = re.search(r"Recommendation: (keep the baseline )?'([^']+)'", result.stdout)
    return {
        "exit": result.returncode,
        "wall_s": wall,
        "recommendation": found.group(2) if found else None,
        "recommendation_line": next((line for line in result.stdout.splitlines() if "Recommendation" in line), None),
        "stderr_tail": result.stderr[-500:] if result.returncode else "",
        "settings": final_rows(sweep_dir) if (sweep_dir / "results.csv").exists() else {},
    }


def overlaps(grid: dict, halving: dict) -> dict:
    """Each setting both sweeps trained to the end, less the baseline (1x by definition): whether its two
    speed-up intervals overlap."""
    pairs = {}
    for name in sorted(set(grid) & set(halving)):
        if grid[name]["speedup"] == 1.0 and halving[name]["speedup"] == 1.0:
            continue
        (a_low, a_high), (b_low, b_high) = grid[name]["interval"], halving[name]["interval"]
        overlap = a_low <= b_high and b_low <= a_high
        pairs[name] = {"grid": [a_low, a_high], "halving": [b_low, b_high], "overlap": overlap}
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="resnet50 points on the GPU instead of the CPU space")
    parser.add_argument("--short", action="store_true", help="the tryout's short budget, where halving does not pay")
    parser.add_argument("--eta", type=int, default=8)
    parser.add_argument("--probe-steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3, help="runs of every point, in shuffled rounds (both sweeps)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    space = GPU_SPACE if args.gpu else SHORT_SPACE if args.short else CPU_SPACE
    with tempfile.TemporaryDirectory() as tmp:
        repeats = [f"trainer.repeats={args.repeats}"] if args.repeats > 1 else []
        grid = sweep(space, repeats, Path(tmp) / "grid")
        halving_args = [
            "hydra/sweeper=halving",
            f"hydra.sweeper.eta={args.eta}",
            f"hydra.sweeper.probe_steps={args.probe_steps}",
            "hydra.sweeper.final_points=1",
        ]
        halving = sweep(space, halving_args + repeats, Path(tmp) / "halving")
        ledger_path = Path(tmp) / "halving" / "halving.json"
        ledger = json.loads(ledger_path.read_text()) if ledger_path.exists() else None
    if ledger is None:  # refused before training (a budget too short for halving to pay): the refusal is the result
        refused = halving["stderr_tail"].strip().splitlines()[-1] if halving["stderr_tail"] else ""
        result = {"space": space, "grid": grid, "halving": {"exit": halving["exit"], "refused": refused}}
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"grid: {grid['wall_s']:.1f} s; halving refused (exit {halving['exit']}): {refused}")
        return 0 if halving["exit"] == 2 and "halving would cost more than the grid" in refused else 1
    result = {
        "space": space,
        "points": 16,
        "repeats": args.repeats,
        "grid": grid,
        "halving": {
            **halving,
            "eta": args.eta,
            "probe_steps": args.probe_steps,
            **{k: ledger.get(k) for k in ("sweep_cost_saved", "steps_spent", "steps_full_grid")},
            "rung_sizes": [len({p["grid_index"] for p in r["points"]}) for r in ledger["rungs"]],
        },
        "same_recommendation": grid["recommendation"] == halving["recommendation"],
        "intervals": overlaps(grid["settings"], halving["settings"]),
        "wall_ratio": halving["wall_s"] / grid["wall_s"],
        "measured_cost_saved": 1 - halving["wall_s"] / grid["wall_s"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"grid:    {grid['wall_s']:.0f} s, {grid['recommendation_line']}")
    print(f"halving: {halving['wall_s']:.0f} s, {halving['recommendation_line']}")
    print(
        f"same recommendation: {result['same_recommendation']}; halving wall time / grid: {result['wall_ratio']:.2f} "
        f"(target <= 0.35); rungs {result['halving']['rung_sizes']}; saved: measured "
        f"{result['measured_cost_saved']:.0%}, the sweeper's estimate {result['halving']['sweep_cost_saved']:.0%}"
    )
    for name, pair in result["intervals"].items():
        print(f"{name}: grid {pair['grid']}, halving {pair['halving']}: {'overlap' if pair['overlap'] else 'APART'}")
    overlap = all(pair["overlap"] for pair in result["intervals"].values())
    return 0 if result["same_recommendation"] and result["wall_ratio"] <= 0.35 and overlap else 1


if __name__ == "__main__":
    sys.exit(main())
