"""Identical settings must never be called "reliably faster": the same setting twice (two labels), trainer.repeats=3,
in N sweeps with N round-order seeds, optionally while other processes load the machine. Also one-run sweeps of the
same pair, which the run-to-run noise floor must keep from a verdict.

    python experiments/identical_settings.py --sweeps 10                 # writes experiments/results/identical.json
    python experiments/identical_settings.py --sweeps 10 --load 2        # two CPU-burning processes meanwhile
"""

import argparse
import json
import multiprocessing
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETTING = [  # the default model and data, short runs; the two labels change nothing the run does
    "+label=a,b",
    "trainer.max_steps=150",
    "trainer.log_every_n_steps=15",
    "trainer.progress_bar=false",
    "trainer.checkpoint=false",
    "trainer.eval_every_n_epochs=1000",
    "inference.benchmark=false",
    "export=[]",
    "report.baseline=['+label=a']",
]


def burn() -> None:
    while True:
        sum(i * i for i in range(10_000))


def sweep(seed: int, repeats: int, workdir: Path) -> dict:
    out = workdir / f"seed{seed}-r{repeats}"
    command = [sys.executable, "-m", "fastgpu", "-m", *SETTING, f"trainer.repeats={repeats}",
               f"hydra.sweeper.seed={seed}", f"hydra.sweep.dir={out}"]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={"WANDB_MODE": "disabled",
                            "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})  # fmt: skip
    line = next((x for x in result.stdout.splitlines() if x.startswith("Recommendation")), "")
    interval = re.search(r"([\d.]+)x \[([\d.]+), ([\d.]+)\]", line)
    return {
        "seed": seed,
        "repeats": repeats,
        "exit": result.returncode,
        "reliably_faster": line.startswith("Recommendation: '"),
        "speedup": [float(g) for g in interval.groups()] if interval else None,
        "recommendation": line,
        "wall_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweeps", type=int, default=10)
    parser.add_argument("--load", type=int, default=0, help="CPU-burning processes running meanwhile")
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "identical.json"))
    args = parser.parse_args()
    burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.load)]
    for b in burners:
        b.start()
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for seed in range(args.sweeps):
                for repeats in (3, 1):
                    results.append(sweep(seed, repeats, Path(tmp)))
                    print(json.dumps(results[-1]), flush=True)
    finally:
        for b in burners:
            b.terminate()
    verdicts = {r: sum(x["reliably_faster"] for x in results if x["repeats"] == r) for r in (3, 1)}
    summary = {"command": "python " + " ".join(sys.argv), "load_processes": args.load, "sweeps": args.sweeps,
               "reliably_faster_verdicts": verdicts, "results": results}  # fmt: skip
    out = Path(args.out)
    earlier = json.loads(out.read_text()) if out.exists() else {}
    earlier[f"load{args.load}"] = summary
    out.write_text(json.dumps(earlier, indent=1) + "\n")
    print(f"'reliably faster' verdicts for identical settings: {verdicts} of {args.sweeps} sweeps each")


if __name__ == "__main__":
    main()
