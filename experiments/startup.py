"""Start-up cost: wall time from launching `python -m fastgpu` to its first optimizer step, on the default job.

Measured the way an outsider would, the same on every side: a wrapper registers torch's global optimizer-step
pre-hook, runs `python -m fastgpu` through runpy, and the hook reports through a pipe and ends the process at the
first step. The parent's clock starts just before it launches the process and stops when the report arrives.
Everything before the first step counts: interpreter, imports, Hydra composition, checks, W&B (offline), data,
model and optimizer construction.

Target (issue 32): after / plain <= 1.3, median of the per-round ratios, W&B offline included. A run's W&B logger
outlives its first step: each side's time is read at the first step, and the next side starts once the logger is done
(it holds the run's stderr), so it never runs beside another side.

Sides, interleaved in each round (this machine is shared and noisy; ratios are per round, then the median):
- floor: `python -c "import torch"`, what any PyTorch program pays;
- plain: a plain PyTorch program's first step, timed the same way: the default job's model (SmallCNN, built
  directly) on a random digits-sized batch, SGD. What any training program pays: torch.optim's first optimizer
  imports torch._dynamo (Optimizer.add_param_group is wrapped by torch._disable_dynamo);
- before: the checkout at --before (default: main before issue 32), from a git worktree;
- after: this checkout;
- after_no_wandb: this checkout with `logger.wandb.mode=disabled`, to show W&B's share (its import and service start).

    python experiments/startup.py --rounds 5   # -> experiments/results/startup.json
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
BEFORE = "5ff047f"  # main before issue 32 (W&B opened in a thread of the run, waited for before the first step)

WRAPPER = """
import os, runpy, sys
from torch.optim.optimizer import register_optimizer_step_pre_hook

def first_step(optimizer, args, kwargs):
    os.write(int(os.environ["FASTGPU_FIRST_STEP_FD"]), b"x")
    os._exit(0)

register_optimizer_step_pre_hook(first_step)
sys.argv = ["fastgpu", *sys.argv[1:]]
runpy.run_module("fastgpu", run_name="__main__", alter_sys=True)
"""


PLAIN = """
import torch
from torch import nn

model = nn.Sequential(
    nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
    nn.Conv2d(32, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
nn.functional.cross_entropy(model(x), y).backward()
optimizer.step()
"""


def time_to_first_step(code_dir, run_dir: Path, wandb_mode: str = "offline") -> float:
    """Seconds from launch to the first optimizer step of the default job run from `code_dir` (None: the plain
    program)."""
    read_end, write_end = os.pipe()
    env = {**os.environ, "FASTGPU_FIRST_STEP_FD": str(write_end), "WANDB_MODE": wandb_mode}
    env["PYTHONPATH"] = str(code_dir or "")
    if code_dir is None:
        program = WRAPPER.split("sys.argv = ")[0] + PLAIN
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        program = WRAPPER
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", program, f"hydra.run.dir={run_dir}", "trainer.progress_bar=false"],
        cwd=run_dir.parent,
        env=env,
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    reported = os.read(read_end, 1)
    elapsed = time.perf_counter() - started
    os.close(read_end)
    _, err = proc.communicate()
    if reported != b"x":
        raise SystemExit(f"no first step from {code_dir}:\n{err.decode()[-2000:]}")
    return elapsed


def time_floor() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default=BEFORE, help="the commit to compare against")
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "startup.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fastgpu-startup-") as tmp:
        tmp = Path(tmp)
        before_dir = tmp / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(before_dir), args.before],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        try:
            sides = {"floor": [], "plain": [], "before": [], "after": [], "after_no_wandb": []}
            for round_ in range(args.rounds + 1):  # round 0 warms the page cache for every side and is dropped
                times = {
                    "floor": time_floor(),
                    "plain": time_to_first_step(None, tmp / f"run-plain-{round_}"),
                    "before": time_to_first_step(before_dir, tmp / f"run-before-{round_}"),
                    "after": time_to_first_step(REPO, tmp / f"run-after-{round_}"),
                    "after_no_wandb": time_to_first_step(REPO, tmp / f"run-nowandb-{round_}", "disabled"),
                }
                print(f"round {round_}: " + "  ".join(f"{k} {v:.2f} s" for k, v in times.items()), flush=True)
                if round_:
                    for side, value in times.items():
                        sides[side].append(value)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before_dir)], cwd=REPO, capture_output=True)
    ratios = [a / b for a, b in zip(sides["after"], sides["before"])]
    above_floor = [(a - f) / (b - f) for a, b, f in zip(sides["after"], sides["before"], sides["floor"])]
    above_plain = [(a - f) / (b - f) for a, b, f in zip(sides["after"], sides["before"], sides["plain"])]
    no_wandb = [a / b for a, b in zip(sides["after_no_wandb"], sides["before"])]
    over_plain = {side: [a / p for a, p in zip(sides[side], sides["plain"])] for side in ("before", "after")}
    result = {
        "what": "wall time from launching `python -m fastgpu` (the default job) to its first optimizer step",
        "before_commit": args.before,
        "rounds": args.rounds,
        "seconds": {side: values for side, values in sides.items()},
        "median_s": {side: statistics.median(values) for side, values in sides.items()},
        "after_over_before": {"median": statistics.median(ratios), "per_round": ratios},
        "above_floor_after_over_before": {"median": statistics.median(above_floor), "per_round": above_floor},
        "above_plain_after_over_before": {"median": statistics.median(above_plain), "per_round": above_plain},
        "after_no_wandb_over_before": {"median": statistics.median(no_wandb), "per_round": no_wandb},
        "after_over_plain": {"median": statistics.median(over_plain["after"]), "per_round": over_plain["after"]},
        "before_over_plain": {"median": statistics.median(over_plain["before"]), "per_round": over_plain["before"]},
        "plain_over_before": {
            "median": statistics.median(p / b for p, b in zip(sides["plain"], sides["before"])),
        },
        "cpus": os.cpu_count(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("median_s", "after_over_plain", "before_over_plain", "after_over_before")},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
