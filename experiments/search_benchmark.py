"""Successive halving against the full grid, on one 16-point space, in one call (issue 15's benchmark).

Runs the grid with Hydra's basic sweeper, then the same space with `hydra/sweeper=halving`, both to the same
full budget, one point at a time; compares the recommendations and the wall time of the two sweeps (process
start to end, as a user waits for them).

    python experiments/search_benchmark.py --out experiments/results/search_cpu.json            # CPU, ~5 min
    python experiments/search_benchmark.py --gpu --out experiments/results/search_gpu.json      # resnet50 on a GPU
    python experiments/search_benchmark.py --short --eta 3 --probe-steps 30 --out experiments/results/search_short.json

`--short` is the held-out tryout's space (3 widths x 2 batch sizes, 4 epochs: 88 steps against a 35-step probe),
where halving is expected to cost more than the grid: its own `sweep_cost_saved` must then say so (negative), and
the sweeper warns. Each result gives the measured saving (1 - halving wall / grid wall) beside the sweeper's
estimate.
"""

import argparse
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
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="resnet50 points on the GPU instead of the CPU space")
    parser.add_argument("--short", action="store_true", help="the tryout's short budget, where halving does not pay")
    parser.add_argument("--eta", type=int, default=8)
    parser.add_argument("--probe-steps", type=int, default=25)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    space = GPU_SPACE if args.gpu else SHORT_SPACE if args.short else CPU_SPACE
    with tempfile.TemporaryDirectory() as tmp:
        grid = sweep(space, [], Path(tmp) / "grid")
        halving_args = [
            "hydra/sweeper=halving",
            f"hydra.sweeper.eta={args.eta}",
            f"hydra.sweeper.probe_steps={args.probe_steps}",
            "hydra.sweeper.final_points=1",
        ]
        halving = sweep(space, halving_args, Path(tmp) / "halving")
        ledger = json.loads((Path(tmp) / "halving" / "halving.json").read_text())
    result = {
        "space": space,
        "points": 16,
        "grid": grid,
        "halving": {
            **halving,
            "eta": args.eta,
            "probe_steps": args.probe_steps,
            **{k: ledger.get(k) for k in ("sweep_cost_saved", "steps_spent", "steps_full_grid")},
            "rung_sizes": [len(r["points"]) for r in ledger["rungs"]],
        },
        "same_recommendation": grid["recommendation"] == halving["recommendation"],
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
    return 0 if result["same_recommendation"] and result["wall_ratio"] <= 0.35 else 1


if __name__ == "__main__":
    sys.exit(main())
