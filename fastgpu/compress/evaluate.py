"""Re-load a run's exported model and evaluate it on the run's validation data.

    python -m fastgpu.compress.evaluate outputs/DATE/TIME

Prints accuracy, precision, recall and F1 next to the values recorded in the run's metrics.json.
"""

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch
import torchao.quantization.pt2e  # noqa: E402,F401  registers the int8 ops quantised programs use
from omegaconf import OmegaConf

from fastgpu.compress import quantize  # noqa: F401  (registers torchao's int8 ops, quiets its import)
from fastgpu.compress.deploy import MODEL_FILE
from fastgpu.measure.quality import evaluate
from fastgpu.results.store import CONFIG_FILE, read_metrics
from fastgpu.train.task import batches_for, build_task
from fastgpu.zoo.data import build_data


def evaluate_run(run_dir: Path, device: str = "cpu") -> dict:
    cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    program = torch.export.load(str(run_dir / MODEL_FILE))
    model = program.module()
    target = torch.device(device)
    task = build_task(cfg.task)
    data = batches_for(task, build_data(cfg.data, cfg.trainer.seed, 0, 1, target))
    memory_format = torch.channels_last if cfg.channels_last and target.type == "cuda" else torch.preserve_format
    collection = task.metrics(target)
    return evaluate(model.to(target), data.val, contextlib.nullcontext, target, memory_format, collection)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastgpu.compress.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--device", default="cpu", help="where to run the model (int8 models: cpu)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / MODEL_FILE).exists():
        print(
            f"fastgpu.compress.evaluate: error: {run_dir / MODEL_FILE} not found; "
            "run with export=[torch_export] (the default)",
            file=sys.stderr,
        )
        return 2
    results = evaluate_run(run_dir, args.device)
    recorded = read_metrics(run_dir)
    for key in ("accuracy", "precision", "recall", "f1"):
        value = recorded.get(key)
        print(f"{key:<10} {results[key]:.4f}   recorded {value if value is None else f'{value:.4f}'}")
    print(json.dumps({k: results[k] for k in ("accuracy", "precision", "recall", "f1", "loss")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
