"""The yardstick: a hand-written PyTorch training loop, run on the settings of the GPU check's sweep.

`--model gpt` is a nanoGPT-style loop instead: random token ids (batch x block size) on the device, the logits
flattened into one cross-entropy (nanoGPT's `F.cross_entropy(logits.view(-1, V), targets.view(-1))`), throughput
in tokens/s; `fp8` swaps the blocks' Linear layers for torchao's float8 ones, as FastGPU's precision=fp8 does.

What a careful user writes by hand: the model, SGD (lr 0.01, momentum 0.9, weight decay 1e-4), one fixed
synthetic batch on the device, autocast (+ GradScaler for fp16), TF32 flags, channels_last and
torch.compile (and its mode) and a fused SGD as the setting says, cudnn.benchmark on (FastGPU's default);
`--warmup` steps, then `--steps` timed steps, the device synchronised
before each clock read. No logging, no metrics. One row per setting in one process, written to `--out`.

    python experiments/plain_loop.py --device cuda --model resnet50 --image-size 224 --classes 1000 \\
        --batch 256 --settings fp32 fp32,cl bf16,cl bf16,cl,compile bf16,cl,compile-max-autotune-no-cudagraphs,fused \
        --out plain.json
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from fastgpu.zoo.models import build_model  # noqa: E402

DTYPES = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.bfloat16}
VOCAB = 256  # data=text is byte-level


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def parse_setting(text: str) -> dict:
    """'bf16,cl,compile-max-autotune,fused' -> {'precision': 'bf16', 'channels_last': True,
    'compile': 'max-autotune', 'fused': True}; plain 'compile' is mode default."""
    tokens = text.split(",")
    modes = {"compile": "default", **{f"compile-{m}": m for m in COMPILE_MODES}}
    if tokens[0] not in DTYPES or not set(tokens[1:]) <= {"cl", "fused", *modes}:
        raise SystemExit(
            f"plain_loop: setting {text!r} is not PRECISION[,cl][,compile[-MODE]][,fused] with PRECISION in "
            f"{list(DTYPES)}"
        )
    mode = next((modes[t] for t in tokens[1:] if t in modes), None)
    return {"precision": tokens[0], "channels_last": "cl" in tokens, "compile": mode, "fused": "fused" in tokens}


def run(setting: dict, args) -> dict:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = True
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = setting["precision"] == "tf32"
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    # the same model FastGPU builds: its model config, with the data facts it interpolates
    gpt = args.model == "gpt"
    config = OmegaConf.create(
        {
            "model": OmegaConf.load(REPO / "fastgpu" / "conf" / "model" / f"{args.model}.yaml"),
            "data": {
                "channels": 3,
                "image_size": args.image_size,
                "num_classes": args.classes,
                "vocab_size": VOCAB,
                "block_size": args.block_size,
            },
        }
    )
    if "stem" in config.model:
        config.model.stem = args.stem
    for assignment in args.model_args:  # n_layer=12 n_embd=768 ...
        key, value = assignment.split("=", 1)
        config.model[key] = type(config.model[key])(value) if key in config.model else value
    memory_format = torch.channels_last if setting["channels_last"] else torch.contiguous_format
    model = build_model(config.model).to(device, memory_format=memory_format)
    if setting["precision"] == "fp8":
        from torchao.float8 import convert_to_float8_training

        from fastgpu.train.precision import fp8_eligible

        model = convert_to_float8_training(model, module_filter_fn=fp8_eligible)
    forward = torch.compile(model, mode=setting["compile"]) if setting["compile"] else model
    fused = {"fused": True} if setting["fused"] else {}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4, **fused)
    dtype = DTYPES[setting["precision"]]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    if gpt:
        x = torch.randint(0, VOCAB, (args.batch, args.block_size), device=device)
        y = torch.randint(0, VOCAB, (args.batch, args.block_size), device=device)
    else:
        x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device).to(memory_format=memory_format)
        y = torch.randint(0, args.classes, (args.batch,), device=device)

    def loss_of(output):
        if gpt:
            return F.cross_entropy(output.view(-1, output.size(-1)), y.view(-1))
        return F.cross_entropy(output, y)

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_of(forward(x))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def synchronize():
        if cuda:
            torch.cuda.synchronize()

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    synchronize()
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize()
    seconds = time.perf_counter() - start
    row = {
        "kind": "plain",
        "model": args.model,
        "batch": args.batch,
        **setting,
        "steps": args.steps,
        "samples_per_s": args.steps * args.batch / seconds,
        **({"tokens_per_s": args.steps * args.batch * args.block_size / seconds} if gpt else {}),
        "step_ms": 1e3 * seconds / args.steps,
        "warmup_s": warmup_s,
    }
    if cuda:
        row["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    torch._dynamo.reset()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--stem", default="imagenet")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--block-size", type=int, default=1024, help="gpt: tokens per sequence")
    parser.add_argument("--model-args", nargs="*", default=[], help="the model config's keys, e.g. n_layer=12")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--settings", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    settings = [parse_setting(s) for s in args.settings]
    rows = []
    for setting in settings:
        try:
            rows.append(run(setting, args))
        except Exception as exc:  # a setting the device cannot run is a row, not the end
            rows.append(
                {"kind": "plain", **setting, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            )
        print(json.dumps(rows[-1]), flush=True)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    out = {"device": name, "torch": torch.__version__, "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
