"""FastGPU's per-step cost against a hand-written plain PyTorch loop, measured in one process.

Both loops train the same model on the same DataLoader for the same number of steps; both exclude
the same warm-up steps and synchronise the device before reading clocks. The two alternate
(A B, B A, ...) so that drift on a shared machine hits both; the reported figure is the median
of the per-round ratios FastGPU throughput / plain throughput. Target: >= 0.97.
Each round also runs FastGPU with its resource sampler off (trainer.monitor_interval_s=0), giving
the sampler's own cost: median of sampler-on / sampler-off throughput. Target: >= 0.99.

    python experiments/overhead.py                       # small_cnn/digits and resnet18/synthetic 3x32x32
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
from fastgpu.data import build_data  # noqa: E402
from fastgpu.launch import launch  # noqa: E402
from fastgpu.models import build_model  # noqa: E402

CASES = {
    "small_cnn-digits": ["model=small_cnn", "data=digits", "trainer.max_steps=400"],
    # torchvision's own resnet18 stem, as on ImageNet; the CIFAR stem makes a CPU step ~1 s
    "resnet18-synthetic32": [
        "model=resnet18",
        "model.stem=imagenet",
        "data=synthetic",
        "data.image_size=32",
        "trainer.max_steps=60",
    ],
}
WARMUP = 5


def plain_loop(cfg, device) -> float:
    """What a user writes by hand: no logging, no metrics; returns samples/s after warm-up."""
    torch.manual_seed(cfg.trainer.seed)
    loader = build_data(cfg.data, cfg.trainer.seed, device=device).train
    model = build_model(cfg.model, cfg.data).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()
    steps, total = 0, cfg.trainer.max_steps
    start = None
    while steps < total:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if steps == WARMUP:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            if steps == total:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (total - WARMUP) * cfg.data.batch_size / (time.perf_counter() - start)


def fastgpu_loop(cfg, workdir: Path) -> float:
    return launch(cfg, workdir)["throughput"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "overhead.json"))
    args = parser.parse_args()

    os.environ.setdefault("WANDB_MODE", "offline")
    register_schema()
    device = torch.device(args.device)
    results = {}
    for case in args.cases.split(","):
        overrides = CASES[case] + [
            f"trainer.device={args.device}",
            f"trainer.warmup_steps={WARMUP}",
            "trainer.checkpoint=false",
            "inference.benchmark=false",
            "export=[]",
        ]  # after training: not timed, just slow
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        ratios, fast, plain, monitor_ratios = [], [], [], []
        cfg_no_monitor = cfg.copy()
        cfg_no_monitor.trainer.monitor_interval_s = 0
        for round_index in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                order = (
                    ("fastgpu", "plain", "no_monitor") if round_index % 2 == 0 else ("no_monitor", "plain", "fastgpu")
                )
                measured = {}
                for which in order:
                    if which == "plain":
                        measured[which] = plain_loop(cfg, device)
                    else:
                        measured[which] = fastgpu_loop(cfg if which == "fastgpu" else cfg_no_monitor, Path(tmp) / which)
            fast.append(measured["fastgpu"])
            plain.append(measured["plain"])
            ratios.append(measured["fastgpu"] / measured["plain"])
            monitor_ratios.append(measured["fastgpu"] / measured["no_monitor"])
            print(
                f"{case} round {round_index}: fastgpu {measured['fastgpu']:.0f} "
                f"plain {measured['plain']:.0f} samples/s "
                f"ratio {ratios[-1]:.3f}; sampler on/off {monitor_ratios[-1]:.3f}",
                flush=True,
            )
        results[case] = {
            "ratio_median": statistics.median(ratios),
            "ratios": ratios,
            "monitor_on_off_ratio_median": statistics.median(monitor_ratios),
            "monitor_on_off_ratios": monitor_ratios,
            "fastgpu_samples_per_s": fast,
            "plain_samples_per_s": plain,
            "overrides": overrides,
        }
    summary = {
        "command": "python " + " ".join(sys.argv),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cases": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if Path(args.out).exists() and set(results) != set(CASES):  # a subset of the cases: keep the others' results
        earlier = json.loads(Path(args.out).read_text())["cases"]
        summary["cases"] = {**earlier, **results}
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print("\n| case | FastGPU / plain (median) | per-round | sampler on / off (median) |")
    print("|---|---|---|---|")
    for case, r in results.items():
        print(
            f"| {case} | {r['ratio_median']:.3f} | {', '.join(f'{x:.2f}' for x in r['ratios'])} | "
            f"{r['monitor_on_off_ratio_median']:.3f} |"
        )


if __name__ == "__main__":
    main()
