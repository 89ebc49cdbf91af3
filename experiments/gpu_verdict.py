"""The GPU check's verdict: FastGPU's sweep points against the plain loop of the same call, and the figures a
user acts on against what they must read. Writes verdict.json and verdict.md; exits 1 when a check fails.

    python experiments/gpu_verdict.py RESULTS_DIR [--tests-exit N] [--advisory]

Checks (enforced on CUDA; `--advisory` — the CPU fallback — records the speed, data-share and energy checks
without failing on them):
- every sweep point finished (status ok) and the cuda tests passed;
- FastGPU / plain >= 0.97 on every setting both ran;
- bf16 + channels_last >= 4x fp32 (FastGPU's own report);
- no `export_error` in any point;
- the data share of device-resident data <= 5%;
- the compile point's steady energy per sample within 20% of eager bf16 + channels_last's;
- GPT points (sweep_gpt/, where the check ran them): every point finished, and FastGPU / the plain nanoGPT-style
  loop >= 0.97 in tokens/s on every setting both ran;
- the default sweep of a model module that asks CUDA at import (sweep_fork/, enforced on every device): every point
  finished on `--device`, in a process that was not a bad fork, started by the fork server.
"""

import argparse
import json
import sys
from pathlib import Path

MIN_RATIO, MIN_BF16_CL_SPEEDUP, MAX_RESIDENT_DATA_SHARE, ENERGY_TOLERANCE = 0.97, 4.0, 0.05, 0.20
LEVERS_TARGET = 1.15  # the best point with the expert levers against the plain loop's bf16 + cl + compile


def setting_key(precision: str, channels_last: bool, compile_, fused: bool = False) -> str:
    """'bf16,cl,compile[-MODE][,fused]': compile_ is False/None (eager), True or 'default', or a mode name."""
    mode = "" if compile_ in (True, "default") else f"-{compile_}"
    return (
        precision
        + (",cl" if channels_last else "")
        + (f",compile{mode}" if compile_ else "")
        + (",fused" if fused else "")
    )


def load_points(sweep_dir: Path) -> list:
    points = []
    for d in sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").exists() else {}
        points.append({"point": int(d.name), **metrics})
    return points


def point_key(m: dict) -> str:
    mode = m.get("compile_mode") or bool(m.get("compile"))
    return setting_key(
        m.get("precision_mode") or "?", bool(m.get("channels_last")), mode, m.get("optimizer_impl") == "fused"
    )


def judge(points: list, plain_rows: list, tests_exit: int, speed_enforced: bool) -> dict:
    plain = {
        setting_key(r["precision"], r["channels_last"], r["compile"], r.get("fused", False)): r for r in plain_rows
    }
    rows, checks = [], []

    def check(name, passed, detail, enforced=True):
        checks.append({"check": name, "passed": bool(passed), "enforced": enforced, "detail": detail})

    for m in points:
        key = point_key(m)
        p = plain.get(key, {})
        ratio = m["throughput"] / p["samples_per_s"] if m.get("throughput") and p.get("samples_per_s") else None
        rows.append(
            {
                "setting": key,
                "status": m.get("status", "missing"),
                "fastgpu": m.get("throughput"),
                "plain": p.get("samples_per_s"),
                "ratio": ratio,
                "data_share": m.get("data_time_share"),
                "energy_per_sample_j": m.get("energy_per_sample_j"),
                "gpu_util": m.get("mean_gpu_util_percent"),
                "mfu": m.get("mfu"),
                "export_error": m.get("export_error"),
                "error": m.get("error"),
            }
        )

    bad = [f"{r['setting']}: {r['status']} ({r['error']})" for r in rows if r["status"] != "ok"]
    check("every point finished", not bad and rows, "; ".join(bad) or f"{len(rows)} points ok")
    check(
        "cuda tests pass",
        tests_exit in (0, None),
        "not run" if tests_exit is None else f"pytest exit code {tests_exit}",
    )
    slow = [f"{r['setting']} {r['ratio']:.3f}" for r in rows if r["ratio"] is not None and r["ratio"] < MIN_RATIO]
    compared = [r for r in rows if r["ratio"] is not None]
    check(
        f"FastGPU / plain >= {MIN_RATIO}",
        compared and not slow,
        "; ".join(slow)
        or f"min {min((r['ratio'] for r in compared), default=float('nan')):.3f} over {len(compared)} settings",
        speed_enforced,
    )
    by_key = {r["setting"]: r for r in rows if r["status"] == "ok"}
    fp32, bf16_cl = by_key.get("fp32", {}).get("fastgpu"), by_key.get("bf16,cl", {}).get("fastgpu")
    speedup = bf16_cl / fp32 if fp32 and bf16_cl else None
    check(
        f"bf16 + channels_last >= {MIN_BF16_CL_SPEEDUP}x fp32",
        speedup is not None and speedup >= MIN_BF16_CL_SPEEDUP,
        f"{speedup:.2f}x" if speedup else "a point is missing",
        speed_enforced,
    )
    plain_compiled = plain.get("bf16,cl,compile", {}).get("samples_per_s")
    lever_points = [r for r in rows if r["status"] == "ok" and r["fastgpu"] and "compile" in r["setting"]]
    best = max(lever_points, key=lambda r: r["fastgpu"], default=None)
    lever_gain = best["fastgpu"] / plain_compiled if best and plain_compiled else None
    check(
        f"best lever point >= {LEVERS_TARGET}x the plain loop's bf16 + cl + compile",
        lever_gain is not None and lever_gain >= LEVERS_TARGET,
        f"{best['setting']}: {lever_gain:.3f}x" if lever_gain else "a point is missing",
        speed_enforced,
    )
    exports = [f"{r['setting']}: {r['export_error']}" for r in rows if r["export_error"]]
    check("no export_error", not exports, "; ".join(exports) or "none")
    shares = [r["data_share"] for r in rows if r["data_share"] is not None]
    check(
        f"device-resident data share <= {MAX_RESIDENT_DATA_SHARE:.0%}",
        shares and max(shares) <= MAX_RESIDENT_DATA_SHARE,
        f"max {max(shares):.3f}" if shares else "no data share recorded",
        speed_enforced,
    )
    eager, compiled = (by_key.get(k, {}).get("energy_per_sample_j") for k in ("bf16,cl", "bf16,cl,compile"))
    if eager and compiled:
        check(
            f"compile energy/sample within {ENERGY_TOLERANCE:.0%} of eager bf16+cl",
            abs(compiled / eager - 1) <= ENERGY_TOLERANCE,
            f"{compiled:.4f} vs {eager:.4f} J/sample",
        )
    else:
        check(
            "compile energy/sample within 20% of eager bf16+cl",
            not speed_enforced,
            "no energy counter (or a point missing)",
            speed_enforced,
        )
    passed = all(c["passed"] for c in checks if c["enforced"])
    return {"passed": passed, "checks": checks, "rows": rows, "bf16_cl_speedup": speedup, "lever_gain": lever_gain}


def judge_gpt(points: list, plain_rows: list, speed_enforced: bool) -> tuple:
    """(rows, checks) of the GPT points against the plain nanoGPT-style loop, in tokens/s."""
    plain = {setting_key(r["precision"], False, r["compile"], r.get("fused", False)): r for r in plain_rows}
    rows, checks = [], []
    for m in points:
        key = point_key(m)
        rate = plain.get(key, {}).get("tokens_per_s")
        rows.append(
            {
                "setting": f"gpt:{key}",
                "status": m.get("status", "missing"),
                "fastgpu": m.get("throughput"),
                "plain": rate,
                "ratio": m["throughput"] / rate if m.get("throughput") and rate else None,
                "data_share": m.get("data_time_share"),
                "energy_per_sample_j": None,
                "gpu_util": m.get("mean_gpu_util_percent"),
                "mfu": m.get("mfu"),
                "export_error": None,
                "error": m.get("error"),
            }
        )
    bad = [f"{r['setting']}: {r['status']} ({r['error']})" for r in rows if r["status"] != "ok"]
    checks.append(
        {"check": "every GPT point finished", "passed": not bad, "enforced": True, "detail": "; ".join(bad) or "ok"}
    )
    compared = [r for r in rows if r["ratio"] is not None]
    slow = [f"{r['setting']} {r['ratio']:.3f}" for r in compared if r["ratio"] < MIN_RATIO]
    checks.append(
        {
            "check": f"GPT: FastGPU / plain nanoGPT-style loop >= {MIN_RATIO} (tokens/s)",
            "passed": bool(compared) and not slow,
            "enforced": speed_enforced,
            "detail": "; ".join(slow) or f"min {min((r['ratio'] for r in compared), default=float('nan')):.3f}",
        }
    )
    return rows, checks


def judge_fork_sweep(points: list, device: str) -> dict:
    """The check of a default sweep whose model module asks CUDA at import: every point trained on `device` from a
    clean process (torch.cuda._is_in_bad_fork() False), started by the launcher's fork server."""
    wrong = [
        f"point {m['point']}: {m.get('status', 'missing')} on {m.get('device')}, bad_fork={m.get('bad_fork')}, "
        f"{m.get('point_start')} {m.get('error') or ''}".strip()
        for m in points
        if m.get("status") != "ok"
        or m.get("device") != device
        or m.get("bad_fork") is not False
        or not str(m.get("point_start")).startswith("fork server")
    ]
    return {
        "check": f"default sweep, model module asks CUDA at import: every point on {device}, no bad fork",
        "passed": bool(points) and not wrong,
        "enforced": True,
        "detail": "; ".join(wrong)
        or (f"{len(points)} points ok ({points[0]['point_start']})" if points else "no point"),
    }


def markdown(verdict: dict, device: str) -> str:
    lines = [
        f"# GPU check verdict: {'PASS' if verdict['passed'] else 'FAIL'} ({device})",
        "",
        "| setting | status | FastGPU img/s (gpt: tok/s) | plain | FastGPU / plain | MFU | data share | J/sample "
        "| GPU util % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    for r in verdict["rows"]:
        lines.append(
            f"| {r['setting']} | {r['status']} | {fmt(r['fastgpu'], ',.0f')} | {fmt(r['plain'], ',.0f')} | "
            f"{fmt(r['ratio'], '.3f')} | {fmt(r.get('mfu'), '.1%')} | {fmt(r['data_share'], '.3f')} | "
            f"{fmt(r['energy_per_sample_j'], '.4f')} | {fmt(r['gpu_util'], '.0f')} |"
        )
    lines += ["", "| check | result | detail |", "|---|---|---|"]
    for c in verdict["checks"]:
        result = ("pass" if c["passed"] else "FAIL") + ("" if c["enforced"] else " (advisory)")
        lines.append(f"| {c['check']} | {result} | {c['detail']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir")
    parser.add_argument("--tests-exit", type=int, default=None, help="exit code of the cuda tests (absent: not run)")
    parser.add_argument("--advisory", action="store_true", help="record the speed checks without failing on them")
    parser.add_argument("--device", default="cuda", help="the device every point must have trained on")
    args = parser.parse_args(argv)
    results = Path(args.results_dir)
    plain = json.loads((results / "plain_loop.json").read_text()) if (results / "plain_loop.json").exists() else {}
    verdict = judge(load_points(results / "sweep"), plain.get("rows", []), args.tests_exit, not args.advisory)
    if (results / "sweep_gpt").is_dir():
        plain_gpt = results / "plain_loop_gpt.json"
        gpt_rows = json.loads(plain_gpt.read_text())["rows"] if plain_gpt.exists() else []
        rows, checks = judge_gpt(load_points(results / "sweep_gpt"), gpt_rows, not args.advisory)
        verdict["rows"] += rows
        verdict["checks"] += checks
    if (results / "sweep_fork").is_dir():
        verdict["checks"].append(judge_fork_sweep(load_points(results / "sweep_fork"), args.device))
    verdict["passed"] = all(c["passed"] for c in verdict["checks"] if c["enforced"])
    verdict["device"] = plain.get("device", "unknown")
    (results / "verdict.json").write_text(json.dumps(verdict, indent=1) + "\n")
    (results / "verdict.md").write_text(markdown(verdict, verdict["device"]))
    print(markdown(verdict, verdict["device"]))
    return 0 if verdict["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
