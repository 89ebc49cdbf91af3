"""FastGPU's per-step cost against a hand-written plain PyTorch loop, measured in one process, by one statistic.

Both loops train the same model on the same DataLoader. Each is timed from outside, as a whole call, at two step
counts N1 < N2, and its cost of one step is the marginal wall time (T(N2) - T(N1)) / (N2 - N1): set-up, warm-up,
the final evaluation and checkpoint cancel out, and neither side's own clock or statistic is trusted. FastGPU
evaluates once, at the end (trainer.eval_every_n_epochs is set past the run), so the steps are what differ; its
log steps, progress bar and resource sampler are in (they are its per-step cost). The calls alternate (F1 P1 F2 P2,
then P1 F1 P2 F2, ...) so that drift on a shared machine hits both, after one untimed call of each (a process's
first call pays its one-time imports: before this, round 0 read 1.4-2.0 on small_cnn); the figure is the median of
the per-round ratios of plain's marginal step time over FastGPU's (FastGPU's throughput relative to plain). Target:
0.97 to 1.03 (above 1.03 the two loops do different work). The same ratio of marginal *process CPU time* per step
(this process's threads; W&B's own service process is not in it) is reported beside it: steal time stretches wall
time, not CPU time (but contention for caches and memory bandwidth stretches both).

    python experiments/overhead.py                       # small_cnn/digits, resnet18/synthetic 3x32x32, gpt/text
    python experiments/overhead.py --rounds 7 --device cuda
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fastgpu.config import register_schema  # noqa: E402
from fastgpu.job.launch import launch  # noqa: E402
from fastgpu.zoo.data import build_data  # noqa: E402
from fastgpu.zoo.models import build_model  # noqa: E402

# (overrides, N1, N2): N2 - N1 steps take several seconds on 2 CPU cores, far above the calls' timing noise
CASES = {
    "small_cnn-digits": (["model=small_cnn", "data=digits"], 100, 1100),
    # torchvision's own resnet18 stem, as on ImageNet; the CIFAR stem makes a CPU step ~1 s
    "resnet18-synthetic32": (
        ["model=resnet18", "model.stem=imagenet", "data=synthetic", "data.image_size=32"],
        20,
        120,
    ),
    # FastGPU's GPT on the shipped text (task=language_model) against a nanoGPT-style plain loop
    "gpt-text": (["task=language_model", "model=gpt", "data=text"], 10, 60),
}
WARMUP = 5


def plain_loop(cfg, device, steps: int) -> None:
    """What a user writes by hand: build, then `steps` steps; no logging, no metrics. A language model's loss is
    nanoGPT's: the logits flattened into one cross-entropy."""
    language_model = cfg.task.name == "language_model"
    torch.manual_seed(cfg.trainer.seed)
    loader = build_data(cfg.data, cfg.trainer.seed, device=device).train
    model = build_model(cfg.model).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()
    done = 0
    while done < steps:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)
            if language_model:
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
            else:
                loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()


def fastgpu_loop(cfg, steps: int, workdir: Path) -> None:
    cfg = cfg.copy()
    cfg.trainer.max_steps = steps
    metrics = launch(cfg, workdir)
    assert metrics["status"] == "ok" and metrics["steps"] == steps, metrics


def timed(call) -> tuple:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--steps", default=None, help="N1,N2 for every case instead of each case's own")
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "overhead.json"))
    args = parser.parse_args()

    os.environ.setdefault("WANDB_MODE", "offline")
    register_schema()
    device = torch.device(args.device)
    results = {}
    for case in args.cases.split(","):
        case_overrides, n1, n2 = CASES[case]
        if args.steps:
            n1, n2 = (int(n) for n in args.steps.split(","))
        overrides = case_overrides + [
            f"trainer.device={args.device}",
            f"trainer.warmup_steps={WARMUP}",
            "trainer.eval_every_n_epochs=100000",  # one evaluation, at the end: cancels between N1 and N2
            "trainer.checkpoint=false",
            "inference.benchmark=false",
            "export=[]",
        ]
        with initialize_config_dir(str(REPO / "fastgpu" / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        ratios, fast_step, plain_step, cpu_ratios = [], [], [], []
        # one untimed call of each first: the first call in a process pays its one-time imports and initialisation
        # (W&B, torch's first kernels), which would shrink that side's marginal step in round 0
        with tempfile.TemporaryDirectory() as tmp:
            fastgpu_loop(cfg, n1, Path(tmp) / "warm")
            plain_loop(cfg, device, n1)
        for round_index in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                calls = {("fastgpu", n): (lambda n=n: fastgpu_loop(cfg, n, Path(tmp) / f"f{n}")) for n in (n1, n2)} | {
                    ("plain", n): (lambda n=n: plain_loop(cfg, device, n)) for n in (n1, n2)
                }
                order = [("fastgpu", n1), ("plain", n1), ("fastgpu", n2), ("plain", n2)]
                if round_index % 2:
                    order = [("plain", n1), ("fastgpu", n1), ("plain", n2), ("fastgpu", n2)]
                seconds = {key: timed(calls[key]) for key in order}
            who = ("fastgpu", "plain")
            per_step = {w: (seconds[(w, n2)][0] - seconds[(w, n1)][0]) / (n2 - n1) for w in who}
            cpu_step = {w: (seconds[(w, n2)][1] - seconds[(w, n1)][1]) / (n2 - n1) for w in who}
            cpu_ratios.append(cpu_step["plain"] / cpu_step["fastgpu"])
            fast_step.append(1e3 * per_step["fastgpu"])
            plain_step.append(1e3 * per_step["plain"])
            ratios.append(per_step["plain"] / per_step["fastgpu"])
            print(
                f"{case} round {round_index}: marginal step fastgpu {fast_step[-1]:.2f} ms, plain "
                f"{plain_step[-1]:.2f} ms: ratio {ratios[-1]:.3f}; CPU time ratio {cpu_ratios[-1]:.3f}",
                flush=True,
            )
        results[case] = {
            "ratio_median": statistics.median(ratios),
            "ratios": ratios,
            "cpu_ratio_median": statistics.median(cpu_ratios),
            "cpu_ratios": cpu_ratios,
            "fastgpu_marginal_step_ms": fast_step,
            "plain_marginal_step_ms": plain_step,
            "steps": [n1, n2],
            "overrides": overrides,
        }
    summary = {
        "command": "python " + " ".join(sys.argv),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "statistic": "marginal wall time per step, (T(N2) - T(N1)) / (N2 - N1), both sides; ratio plain / FastGPU",
        "cases": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if Path(args.out).exists() and set(results) != set(CASES):  # a subset of the cases: keep the others' results
        earlier = json.loads(Path(args.out).read_text())["cases"]
        summary["cases"] = {**earlier, **results}
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print("\n| case | FastGPU / plain, wall (median) | per-round | CPU time (median) | per-round |")
    print("|---|---|---|---|---|")
    for case, r in results.items():
        print(
            f"| {case} | {r['ratio_median']:.3f} | {', '.join(f'{x:.2f}' for x in r['ratios'])} | "
            f"{r['cpu_ratio_median']:.3f} | {', '.join(f'{x:.2f}' for x in r['cpu_ratios'])} |"
        )


if __name__ == "__main__":
    main()
