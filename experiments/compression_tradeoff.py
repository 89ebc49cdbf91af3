"""What each compression option buys and costs, on realistic sizes: resnet18 on synthetic 3x32x32
(CIFAR-style stem, batch 64) and the small CNN on digits. Latency is measured after torch.compile
(with freezing) for the trained and the compressed model alike, on the CPU.

    python experiments/compression_tradeoff.py     # writes experiments/results/compression_tradeoff.json
Targets on CPU: int8 static >= 1.5x lower batch latency than fp32 for resnet18 and >= 3.5x smaller.
Accuracy on synthetic data is chance level: read the accuracy delta on the digits case.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fastgpu.config import register_schema  # noqa: E402
from fastgpu.job.launch import launch  # noqa: E402

OPTIONS = ["none", "prune", "prune_structured", "quantize_dynamic", "quantize_static", "qat"]
CASES = {
    "resnet18-synthetic32": [
        "model=resnet18",
        "data=synthetic",
        "data.train_samples=256",
        "data.val_samples=128",
        "trainer.max_steps=4",
        "trainer.warmup_steps=1",
    ],
    "small_cnn-digits": ["model=small_cnn", "data=digits", "trainer.epochs=10"],
}
KEYS = [
    "accuracy_before",
    "accuracy",
    "sparsity",
    "serialized_bytes_before",
    "serialized_bytes_after",
    "size_ratio",
    "quantized_weight_ratio",
    "latency_b1_ms_before",
    "latency_b1_ms_after",
    "latency_batch_ms_before",
    "latency_batch_ms_after",
    "latency_ratio",
    "structured_speedup",
]


def main() -> None:
    """Optional argument: a comma-separated subset of the cases, merged into the existing results file."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    register_schema()
    out = REPO / "experiments" / "results" / "compression_tradeoff.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    cases = sys.argv[1].split(",") if len(sys.argv) > 1 else list(CASES)
    results = json.loads(out.read_text())["cases"] if out.exists() and len(sys.argv) > 1 else {}
    for case in cases:
        overrides = CASES[case]
        results[case] = {}
        for option in OPTIONS:
            with initialize_config_dir(str(REPO / "fastgpu" / "conf"), version_base="1.3"):
                cfg = compose(
                    "config",
                    overrides=overrides
                    + [
                        f"compression={option}",
                        "compression.compile_inference=true",
                        "inference.repeats=10",
                        "trainer.progress_bar=false",
                    ],
                )
            with tempfile.TemporaryDirectory() as tmp:
                metrics = launch(cfg, Path(tmp))
            row = {k: metrics.get(k) for k in KEYS}
            row["accuracy_delta"] = metrics["accuracy"] - metrics["accuracy_before"]
            for key in ("inference_compile_error_before", "inference_compile_error_after"):
                if metrics.get(key):
                    row[key] = metrics[key]
            results.setdefault(case, {})[option] = row
            print(case, option, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
            out.write_text(
                json.dumps({"command": "python experiments/compression_tradeoff.py", "cases": results}, indent=2) + "\n"
            )
    print(
        "\n| case | option | size ratio | int8 weights | batch latency ratio "
        "| batch-1 latency (ms) before → after | accuracy Δ (pts) |"
    )
    print("|---|---|---|---|---|---|---|")
    for case, options in results.items():
        for option, r in options.items():
            q = f"{r['quantized_weight_ratio']:.2f}x" if r["quantized_weight_ratio"] else "-"
            eager = " (eager: compile failed)" if r.get("inference_compile_error_after") else ""
            print(
                f"| {case} | {option} | {r['size_ratio']:.2f}x | {q} | {r['latency_ratio']:.2f}x{eager} | "
                f"{r['latency_b1_ms_before']:.2f} → {r['latency_b1_ms_after']:.2f} | {100 * r['accuracy_delta']:+.2f} |"
            )


if __name__ == "__main__":
    main()
