"""The sweep report: results.csv, report.md, plots and a one-line recommendation, from a multirun dir.

    python -m fastgpu.report outputs/multirun/2026-11-26/13-30-00 [--baseline precision=fp32] [--tolerance 0.01]

Runs by itself at the end of every multirun (fastgpu.callbacks.SweepReport) and on demand, also
while or after jobs run elsewhere (Slurm): it reads only the files in the sweep dir.
"""

import argparse
import csv
import sys
from pathlib import Path

from omegaconf import OmegaConf

from fastgpu.results import HISTORY_FILE, METRICS_FILE, read_history, read_metrics

COLUMNS = [
    "point",
    "name",
    "overrides",
    "status",
    "error",
    "throughput",
    "speedup",
    "step_time_p50_ms",
    "step_time_p90_ms",
    "accuracy",
    "accuracy_delta",
    "precision",
    "recall",
    "f1",
    "peak_memory_mb",
    "memory_ratio",
    "time_to_target_s",
    "model_size_mb",
    "params",
    "warmup_time_s",
    "mean_cpu_percent",
    "mean_gpu_util_percent",
    "mean_gpu_power_w",
    "energy_per_sample_j",
    "energy_ratio",
    "compression",
    "deploy_device",
    "accuracy_before",
    "accuracy_after",
    "f1_before",
    "f1_after",
    "sparsity",
    "nonzero_params",
    "serialized_bytes_before",
    "serialized_bytes_after",
    "size_ratio",
    "latency_b1_ms_before",
    "latency_b1_ms_after",
    "latency_batch_ms_before",
    "latency_batch_ms_after",
    "latency_ratio",
    "quantized_weight_ratio",
    "structured_speedup",
    "dir",
]
COMPRESSION_KEYS = COLUMNS[COLUMNS.index("compression") : -1]
BASELINE_SETTING = {"precision_mode": "fp32", "compile": False, "channels_last": False}


def collect_points(sweep_dir: Path) -> list:
    """One dict per point dir (numbered subdirs with Hydra's .hydra/overrides.yaml), in job order."""
    points = []
    for job_dir in sorted(Path(sweep_dir).iterdir(), key=lambda p: (len(p.name), p.name)):
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        if not (job_dir.is_dir() and job_dir.name.isdigit() and overrides_file.exists()):
            continue
        overrides = [o for o in OmegaConf.load(overrides_file) if not o.lstrip("+").startswith(("resume", "hydra."))]
        metrics = read_metrics(job_dir) if (job_dir / METRICS_FILE).exists() else {"status": "pending"}
        history = read_history(job_dir) if (job_dir / HISTORY_FILE).exists() else []
        points.append(
            {
                "point": int(job_dir.name),
                "dir": str(job_dir),
                "overrides": overrides,
                "metrics": metrics,
                "history": history,
            }
        )
    return points


def find_baseline(points: list, baseline_overrides=()) -> dict:
    ok = [p for p in points if p["metrics"].get("status") == "ok"]
    if baseline_overrides:
        wanted = {o.lower().lstrip("+") for o in baseline_overrides}  # Hydra writes booleans as True/False
        chosen = [p for p in ok if wanted <= {o.lower().lstrip("+") for o in p["overrides"]}]
    else:
        chosen = [
            p
            for p in ok
            if all(p["metrics"].get(k) == v for k, v in BASELINE_SETTING.items())
            and p["metrics"].get("compression", "none") == "none"
        ]
    return (chosen or ok or [None])[0]


def peak_memory_mb(metrics: dict):
    return metrics.get("peak_mem_allocated_mb") or metrics.get("peak_rss_mb")


def _ratio(a, b):
    return a / b if a is not None and b else None


def build_rows(points: list, baseline) -> list:
    base = baseline["metrics"] if baseline else {}
    rows = []
    for p in points:
        m = p["metrics"]
        row = {
            "point": p["point"],
            "name": m.get("name") or "-",
            "overrides": " ".join(p["overrides"]),
            "status": m.get("status"),
            "error": m.get("error", ""),
            "dir": p["dir"],
            "peak_memory_mb": peak_memory_mb(m),
        }
        for key in [
            "throughput",
            "step_time_p50_ms",
            "step_time_p90_ms",
            "accuracy",
            "precision",
            "recall",
            "f1",
            "time_to_target_s",
            "model_size_mb",
            "params",
            "warmup_time_s",
            "mean_cpu_percent",
            "mean_gpu_util_percent",
            "mean_gpu_power_w",
            "energy_per_sample_j",
        ]:
            row[key] = m.get(key)
        for key in COMPRESSION_KEYS:
            row[key] = m.get(key)
        row["speedup"] = _ratio(row["throughput"], base.get("throughput"))
        row["memory_ratio"] = _ratio(row["peak_memory_mb"], peak_memory_mb(base) if base else None)
        row["energy_ratio"] = _ratio(row["energy_per_sample_j"], base.get("energy_per_sample_j"))
        row["accuracy_delta"] = row["accuracy"] - base["accuracy"] if row["accuracy"] is not None and base else None
        row["baseline"] = baseline is not None and p is baseline
        rows.append(row)
    # best first: finished points by throughput, then the rest in job order
    return sorted(rows, key=lambda r: (r["status"] != "ok", -(r["throughput"] or 0), r["point"]))


def recommend(rows: list, tolerance: float) -> str:
    """The fastest point within `tolerance` accuracy of the baseline: by training throughput, or, when the
    sweep varies compression, by each point's inference speed-up over its own uncompressed model measured
    on the same device (`latency_ratio`): int8 runs on the CPU, so its latency is never set against a GPU's."""
    ok = [r for r in rows if r["status"] == "ok" and r["throughput"]]
    base = next((r for r in rows if r["baseline"]), None)
    if not ok or base is None:
        return "No recommendation: no point finished."
    eligible = [r for r in ok if r["accuracy"] is not None and r["accuracy"] >= base["accuracy"] - tolerance]
    inference = len({r["compression"] for r in ok}) > 1 and all(r["latency_ratio"] for r in eligible)
    if inference:
        best = max(eligible, key=lambda r: r["latency_ratio"])
        if best["latency_ratio"] <= 1:
            best = base
    else:
        best = max(eligible, key=lambda r: r["throughput"])
    if best is base:
        return (
            f"Recommendation: keep the baseline '{base['name']}': no other point is "
            f"{'faster at inference' if inference else 'faster'} within {100 * tolerance:.1f} accuracy points of it."
        )
    accuracy = f"accuracy {best['accuracy']:.4f} ({100 * best['accuracy_delta']:+.2f} pts)"
    if inference:
        size_text = f", exported size {best['size_ratio']:.2f}x smaller" if best["size_ratio"] else ""
        return (
            f"Recommendation: '{best['name']}': {best['latency_ratio']:.2f}x lower inference latency at the batch "
            f"size than the same model uncompressed ({best['latency_batch_ms_before']:.2f} -> "
            f"{best['latency_batch_ms_after']:.2f} ms, both on {best['deploy_device'] or 'the training device'})"
            f"{size_text}, {accuracy}."
        )
    memory = f", peak memory {best['memory_ratio']:.2f}x" if best["memory_ratio"] else ""
    return (
        f"Recommendation: '{best['name']}': {best['speedup']:.2f}x the baseline's throughput "
        f"('{base['name']}', {base['throughput']:,.0f} -> {best['throughput']:,.0f} samples/s), {accuracy}{memory}."
    )


def _fmt(value, spec="{:.3g}"):
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return spec.format(value)
    return str(value)


TABLE = [  # (header, row key, format)
    ("point", "name", "{}"),
    ("status", "status", "{}"),
    ("samples/s", "throughput", "{:,.0f}"),
    ("speed-up", "speedup", "{:.2f}x"),
    ("step p50 ms", "step_time_p50_ms", "{:.2f}"),
    ("step p90 ms", "step_time_p90_ms", "{:.2f}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("Δacc pts", "accuracy_delta", "{:+.2f}"),
    ("F1", "f1", "{:.4f}"),
    ("peak MB", "peak_memory_mb", "{:,.0f}"),
    ("mem ratio", "memory_ratio", "{:.2f}x"),
    ("time-to-acc s", "time_to_target_s", "{:.2f}"),
    ("size MB", "model_size_mb", "{:.2f}"),
    ("acc before", "accuracy_before", "{:.4f}"),
    ("sparsity", "sparsity", "{:.2f}"),
    ("size ratio", "size_ratio", "{:.2f}x"),
    ("latency ratio", "latency_ratio", "{:.2f}x"),
    ("latency on", "deploy_device", "{}"),
    ("int8 weights", "quantized_weight_ratio", "{:.2f}x smaller"),
    ("util %", "mean_gpu_util_percent", "{:.0f}"),
    ("J/sample", "energy_per_sample_j", "{:.4f}"),
    ("energy ratio", "energy_ratio", "{:.2f}x"),
]


def _columns(rows: list) -> list:
    """The table's columns, less those no point has a value for (GPU columns on a CPU sweep) and the
    before/after ones when no point was compressed."""
    compressed = any(r.get("compression") not in (None, "none") for r in rows)
    return [
        c
        for c in TABLE
        if c[1] in ("name", "status")
        or (any(r.get(c[1]) is not None for r in rows) and (compressed or c[1] not in COMPRESSION_KEYS))
    ]


def _cells(row, columns) -> list:
    cells = []
    for _, key, spec in columns:
        value = row[key] * 100 if key == "accuracy_delta" and row[key] is not None else row[key]
        cells.append(_fmt(value, spec))
    if row["baseline"]:
        cells[0] += " (baseline)"
    return cells


def markdown_table(rows: list) -> str:
    columns = _columns(rows)
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cells(r, columns)) + " |" for r in rows]
    return "\n".join(lines)


def terminal_table(rows: list) -> str:
    columns = _columns(rows)
    table = [[h for h, _, _ in columns]] + [_cells(r, columns) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in table
    )


def pareto_front(rows: list) -> list:
    """Points no other point beats on both throughput and accuracy."""
    ok = [r for r in rows if r["status"] == "ok" and r["throughput"] is not None and r["accuracy"] is not None]
    front = [
        r
        for r in ok
        if not any(
            o["throughput"] >= r["throughput"]
            and o["accuracy"] >= r["accuracy"]
            and (o["throughput"], o["accuracy"]) != (r["throughput"], r["accuracy"])
            for o in ok
        )
    ]
    return sorted(front, key=lambda r: r["throughput"])


def write_plots(rows: list, points: list, out_dir: Path) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok" and r["throughput"] is not None]
    paths = []

    fig, ax = plt.subplots(figsize=(7, 5))
    for r in ok:
        ax.scatter(r["throughput"], r["accuracy"], s=60, marker="*" if r["baseline"] else "o", zorder=3)
        ax.annotate(r["name"], (r["throughput"], r["accuracy"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    front = pareto_front(rows)
    if front:
        ax.plot(
            [r["throughput"] for r in front],
            [r["accuracy"] for r in front],
            "--",
            color="gray",
            label="Pareto front",
            zorder=2,
        )
        ax.legend()
    ax.set(xlabel="throughput (samples/s)", ylabel="validation accuracy", title="Throughput vs accuracy (★ baseline)")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "throughput_vs_accuracy.png"))

    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.45 * len(ok) + 1)))
    names = [r["name"] for r in ok]
    ax.barh(
        names, [r["peak_memory_mb"] or 0 for r in ok], color=["tab:orange" if r["baseline"] else "tab:blue" for r in ok]
    )
    kind = (
        "allocated device memory" if any(p["metrics"].get("peak_mem_allocated_mb") for p in points) else "process RSS"
    )
    ax.set(xlabel=f"peak memory (MB, {kind})", title="Peak memory per point (orange: baseline)")
    ax.invert_yaxis()
    paths.append(_save(fig, out_dir / "peak_memory.png"))

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for p in points:
        name = p["metrics"].get("name") or str(p["point"])
        train = [h for h in p["history"] if "train/loss" in h]
        val = [h for h in p["history"] if "val/accuracy" in h]
        if train:
            loss_ax.plot([h["step"] for h in train], [h["train/loss"] for h in train], label=name)
        if val:
            acc_ax.plot([h["step"] for h in val], [h["val/accuracy"] for h in val], marker=".", label=name)
    loss_ax.set(xlabel="step", ylabel="training loss", yscale="log", title="Training loss")
    acc_ax.set(xlabel="step", ylabel="validation accuracy", title="Validation accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=8)
    paths.append(_save(fig, out_dir / "training_curves.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def build_report(sweep_dir, baseline_overrides=(), tolerance: float = 0.01) -> dict:
    """Write results.csv, report.md and the plots into `sweep_dir`; return what was found."""
    sweep_dir = Path(sweep_dir)
    points = collect_points(sweep_dir)
    baseline = find_baseline(points, baseline_overrides)
    rows = build_rows(points, baseline)
    recommendation = recommend(rows, tolerance)

    with open(sweep_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS + ["baseline"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plots = write_plots(rows, points, sweep_dir) if rows else []
    failed = [r for r in rows if r["status"] not in ("ok", "pending")]
    lines = [
        f"# FastGPU sweep report: {sweep_dir}",
        "",
        recommendation,
        "",
        f"{len(rows)} points, {len(rows) - len(failed)} without failure, {len(failed)} failed. "
        f"Baseline: {baseline['metrics'].get('name') if baseline else 'none'}; "
        "speed-up, Δacc and memory ratio are against it.",
        "",
        markdown_table(rows),
        "",
    ]
    if failed:
        lines += (
            ["## Failed points", ""]
            + [f"- `{r['name']}` ({r['overrides']}): **{r['status']}** — {r['error']} — `{r['dir']}`" for r in failed]
            + [""]
        )
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    (sweep_dir / "report.md").write_text("\n".join(lines) + "\n")
    return {"rows": rows, "recommendation": recommendation, "failed": failed, "plots": plots, "baseline": baseline}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastgpu.report", description="Build the report of a FastGPU sweep dir."
    )
    parser.add_argument("sweep_dir")
    parser.add_argument(
        "--baseline", nargs="*", default=None, help="overrides naming the baseline point, e.g. precision=fp32"
    )
    parser.add_argument(
        "--tolerance", type=float, default=None, help="accuracy (fraction) the recommendation may give up"
    )
    args = parser.parse_args(argv)
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        print(
            f"fastgpu.report: error: {sweep_dir} is not a directory; "
            "pass a multirun dir such as outputs/multirun/DATE/TIME",
            file=sys.stderr,
        )
        return 2
    saved = (
        OmegaConf.load(sweep_dir / "multirun.yaml") if (sweep_dir / "multirun.yaml").exists() else OmegaConf.create()
    )
    baseline = args.baseline if args.baseline is not None else list(OmegaConf.select(saved, "report.baseline") or [])
    tolerance = (
        args.tolerance
        if args.tolerance is not None
        else OmegaConf.select(saved, "report.accuracy_tolerance", default=0.01)
    )
    report = build_report(sweep_dir, baseline, tolerance)
    if not report["rows"]:
        print(f"fastgpu.report: error: no sweep points (numbered dirs with .hydra/) in {sweep_dir}", file=sys.stderr)
        return 2
    print(terminal_table(report["rows"]))
    print(report["recommendation"])
    print(f"report: {sweep_dir / 'report.md'}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
