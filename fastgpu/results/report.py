"""The sweep report: results.csv, report.md, plots and a one-line recommendation, from a multirun dir.

    python -m fastgpu report outputs/multirun/DATE/TIME [--baseline precision=fp32] [--tolerance 0.01]

Runs by itself at the end of every multirun (fastgpu.sweep.callbacks.SweepReport) and on demand, also
while or after jobs run elsewhere (Slurm): it reads only the files in the sweep dir.
"""

import argparse
import csv
import sys
from pathlib import Path

from omegaconf import OmegaConf

from fastgpu.results.compare import (
    ONE_RUN,
    WARMUP_ROUND,
    by_device,
    pool_repeats,
    recommend,
    runs_of,
    setting_of,
    settings_compared,
    timed_together,
)
from fastgpu.results.figures import BY_KEY, csv_keys, in_unit, report_columns, show, unit_of
from fastgpu.results.naming import row_label, shown
from fastgpu.results.plots import write_plots
from fastgpu.results.search_sections import SEARCH_STATUSES, mark_probes, mark_rungs, max_batch_section, rung_section
from fastgpu.results.stats import (
    RUN_TO_RUN,
    WITHIN_RUN,
    compare,
    detectable_speedup,
    holm,
    noise_upper,
    paired_ratio_ci,
    run_noise,
    runs_needed,
)
from fastgpu.results.store import HISTORY_FILE, UNREADABLE, point_metrics, read_history, read_ledger

COLUMNS = ["point", "rung", "name", "overrides", "status", "error", *csv_keys(), "dir"]  # results.csv
# runs a search did not train to the end, or probes it expected to fail: not failures
HALVING_LEDGER, MAX_BATCH_LEDGER = "halving.json", "max_batch.json"
COMPRESSION_KEYS = [f.key for f in BY_KEY.values() if f.group == "compression"]
BASELINE_SETTING = {"precision_mode": "fp32", "compile": False, "channels_last": False}


def collect_points(sweep_dir: Path) -> list:
    """One dict per point dir (numbered subdirs with Hydra's .hydra/overrides.yaml), in job order."""
    points = []
    for job_dir in sorted(Path(sweep_dir).iterdir(), key=lambda p: (len(p.name), p.name)):
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        if not (job_dir.is_dir() and job_dir.name.isdigit() and overrides_file.exists()):
            continue
        overrides = [
            shown(o)
            for o in OmegaConf.load(overrides_file)
            if not o.lstrip("+").startswith(("resume", "hydra.", "logger."))
        ]
        metrics = point_metrics(job_dir, missing={"status": "pending"})
        try:
            history = read_history(job_dir) if (job_dir / HISTORY_FILE).exists() else []
        except (OSError, ValueError):  # a damaged history costs the point its curves and interval, not the report
            history = []
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


def _speedup(m: dict, base: dict, min_gain: float) -> dict:
    """A point's speed-up over the baseline (stats.compare: Welch over runs, or within-run with one run of either);
    the plain ratio of throughputs where a point recorded no intervals."""
    runs, base_runs = runs_of(m), runs_of(base)
    if runs and base_runs:
        c = compare(runs, base_runs, min_gain)
        return {
            "speedup": c.ratio,
            "speedup_low": c.low,
            "speedup_high": c.high,
            "runs_measured": c.runs_measured,
            "speedup_covers": c.covers if c.low is not None else None,
            "speedup_p": c.p_value,
            "speedup_se": c.se,
            "speedup_df": c.df,
        }
    return {
        "speedup": _ratio(m.get("throughput"), base.get("throughput")),
        "speedup_low": None,
        "speedup_high": None,
        "runs_measured": False,
    }


def _interval_text(low: float, high: float, covers: str = "") -> str:
    """An interval as the table shows it; a within-run one says so (it leaves run-to-run noise out)."""
    return f"[{low:.2f}, {high:.2f}]" + (" within-run" if covers == WITHIN_RUN else "")


def correct_for_comparisons(rows: list, min_gain: float) -> None:
    """Holm over the settings compared with the baseline over runs: `reliably_faster`, `comparisons` (how many were
    corrected for), and each one's `detectable_speedup` (80% power at Holm's strictest level)."""
    tested = [r for r in rows if r["status"] == "ok" and not r["baseline"] and r.get("speedup_p") is not None]
    for row, rejected in zip(tested, holm([r["speedup_p"] for r in tested])):
        row["reliably_faster"] = rejected
        row["comparisons"] = len(tested)
        row["detectable_speedup"] = detectable_speedup(row["speedup_se"], row["speedup_df"], len(tested), min_gain)


def power_note(points: list, rows: list, min_gain: float) -> str:
    """How many runs a setting a 10% and a 20% gain need at the sweep's own run-to-run noise."""
    settings = [runs_of(p["metrics"]) for p in points if p["metrics"].get("repeats")]
    sd, df = run_noise(settings)
    if sd is None:
        return ""
    compared = settings_compared(rows)  # the family Holm corrected over (none yet: a single comparison is planned)
    upper = noise_upper(sd, df)
    needs = []
    for gain in (0.10, 0.20):
        n = runs_needed(upper, gain, max(compared, 1), min_gain)
        needs.append(f"{gain:.0%}: {'over 200' if n is None else f'about {n}'}")
    family = f"with {compared} setting{'s' if compared > 1 else ''} compared" if compared else "in one comparison"
    return (
        f"Power: run-to-run noise {sd:.1%} a run (sd of log throughput over {df} degrees of freedom; planned at its "
        f"80% upper bound, {upper:.1%}); to call a gain reliable 8 times in 10 {family}, runs a setting "
        f"(trainer.repeats) for {needs[0]}, {needs[1]}."
    )


def build_rows(points: list, baseline, min_gain: float = 0.03) -> list:
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
            "rung": p.get("rung"),
        }
        row.update({key: m.get(key) for key in COLUMNS if key not in row})
        if p is baseline:  # 1x by definition: an interval of the baseline against itself would only show its noise
            row.update(speedup=1.0, speedup_low=None, speedup_high=None, runs_measured=False)
        else:
            row.update(_speedup(m, base, min_gain))
        for key in ("speedup", "latency_ratio"):
            if row.get(f"{key}_low") is not None:
                label = "speedup_interval" if key == "speedup" else "latency_interval"
                covers = row.get("speedup_covers") if key == "speedup" else WITHIN_RUN
                row[label] = _interval_text(row[f"{key}_low"], row[f"{key}_high"], covers)
        row["memory_ratio"] = _ratio(row["peak_memory_mb"], peak_memory_mb(base) if base else None)
        row["energy_ratio"] = _ratio(row["energy_per_sample_j"], base.get("energy_per_sample_j"))
        row["accuracy_delta"] = row["accuracy"] - base["accuracy"] if row["accuracy"] is not None and base else None
        row["baseline"] = baseline is not None and p is baseline
        rows.append(row)
    # best first: finished points by throughput, then the rest in job order
    # best first: by inference speed-up where the sweep varies compression, else by training throughput
    speed = "latency_ratio" if compression_sweep(rows) else "throughput"
    return sorted(rows, key=lambda r: (r["status"] != "ok", -(r[speed] or 0), r["point"]))


def _round(point):
    return next((int(o.split("=", 1)[1]) for o in point["overrides"] if o.startswith("trainer.repeat=")), None)


def paired_rounds(points: list, baseline_overrides=()) -> dict:
    """+experiment=ab: two settings alternated in rounds inside one process. {setting: per-round ratio of its
    throughput over the other's (the baseline's)}, or {} when the sweep is not such a pairing."""
    ok = [p for p in points if p["metrics"].get("status") == "ok" and p["metrics"].get("throughput")]
    settings = sorted({setting_of(p["overrides"]) for p in ok})
    before = sorted(p["metrics"].get("runs_before_in_process", -1) for p in points)  # after a warm-up round: from 2
    in_one_process = bool(before) and before[0] >= 0 and before == list(range(before[0], before[0] + len(points)))
    if len(settings) != 2 or not in_one_process or any(_round(p) is None for p in ok):
        return {}
    base = find_baseline(ok, baseline_overrides)
    base_setting = setting_of(base["overrides"])
    other = next(s for s in settings if s != base_setting)
    by_round = {}
    for p in ok:
        by_round.setdefault(_round(p), {})[setting_of(p["overrides"])] = p["metrics"]["throughput"]
    ratios = [r[other] / r[base_setting] for _, r in sorted(by_round.items()) if len(r) == 2]
    return {other: ratios} if len(ratios) >= 2 else {}


def apply_pairs(rows: list, paired: dict, min_gain: float) -> None:
    """The paired setting's speed-up: the geometric mean of its per-round ratios, with their t-interval (one
    comparison: reliably faster when its lower end clears 1 + min_gain)."""
    for row in rows:
        setting = setting_of(row["overrides"].split())
        if setting in paired:
            ratios = paired[setting]
            row["speedup"], row["speedup_low"], row["speedup_high"] = paired_ratio_ci(ratios)
            row["speedup_interval"] = _interval_text(row["speedup_low"], row["speedup_high"])
            row["runs_measured"] = True  # independent rounds: their spread is the run-to-run noise
            row["speedup_covers"], row["speedup_p"] = RUN_TO_RUN, None
            row["reliably_faster"] = row["speedup_low"] is not None and row["speedup_low"] > 1 + min_gain
            row["comparisons"] = 1
            row["paired_ratios"] = ratios


def interval_note(rows: list) -> str:
    """What the speed-up intervals cover: run-to-run noise (repeats, paired rounds) or within-run noise only."""
    compared = [r for r in rows if r["status"] == "ok" and not r["baseline"] and r.get("speedup_low") is not None]
    if not compared:
        return ""
    paired = [r for r in compared if r.get("paired_ratios")]
    if paired:
        r = paired[0]
        rounds = ", ".join(f"{x:.3f}" for x in r["paired_ratios"])
        return (
            f" Paired rounds in one process (+experiment=ab): '{r['name']}' over the baseline per round {rounds}; "
            f"{r['speedup']:.3f}x [{r['speedup_low']:.3f}, {r['speedup_high']:.3f}] (t-interval over "
            f"{len(r['paired_ratios'])} rounds)."
        )
    if all(r.get("runs_measured") for r in compared):
        return (
            " Intervals: Welch t over each setting's runs (run-to-run noise included); reliably faster: Holm-corrected"
            f" over the {len(compared)} setting{'s' if len(compared) > 1 else ''} compared."
        )
    return f" Intervals: within-run only ({ONE_RUN})."


def compression_sweep(rows: list) -> bool:
    """A sweep over compression: its speed is deployed inference latency, not training throughput."""
    return len({r["compression"] for r in rows if r["status"] == "ok"}) > 1


NOISY_CV = 0.2  # per-interval rates varying more than this: the report says the timings are noisy
TRAINING_SPEED = ("throughput", "throughput_cv", "speedup", "speedup_interval")


def _columns(rows: list) -> list:
    """The table's columns (the figures with a report header), less those no point has a value for (GPU
    columns on a CPU sweep), the compression ones when no point was compressed, and training speed in a sweep
    over compression (what it changes is inference latency)."""
    compressed = any(r.get("compression") not in (None, "none") for r in rows)
    hidden = TRAINING_SPEED if compression_sweep(rows) else ()
    return [
        f
        for f in report_columns()
        if any(r.get(f.key) is not None for r in rows)
        and (compressed or f.group != "compression")
        and f.key not in hidden
    ]


def _cells(row, columns) -> list:
    name = row_label(row["name"], row["baseline"])
    return [name, str(row["status"])] + [show(f, row.get(f.key)) for f in columns]


def markdown_table(rows: list) -> str:
    columns = _columns(rows)
    headers = ["point", "status"] + [in_unit(f.header, unit_of(rows)) for f in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cells(r, columns)) + " |" for r in rows]
    return "\n".join(lines)


def terminal_table(rows: list) -> str:
    columns = _columns(rows)
    headers = ["point", "status"] + [in_unit(f.header, unit_of(rows)) for f in columns]
    table = [headers] + [_cells(r, columns) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in table
    )


def build_report(
    sweep_dir, baseline_overrides=(), tolerance: float = 0.01, min_gain: float = 0.03, noise_floor=None
) -> dict:
    """Write results.csv, report.md and the plots into `sweep_dir`; return what was found. Each device
    the sweep ran on gets its own baseline, table and recommendation."""
    sweep_dir = Path(sweep_dir)
    points = collect_points(sweep_dir)
    warmup = [p for p in points if WARMUP_ROUND in (o.lower() for o in p["overrides"])]
    points = [p for p in points if p not in warmup]
    halving = mark_rungs(points, read_ledger(sweep_dir, HALVING_LEDGER))
    max_batch = mark_probes(points, read_ledger(sweep_dir, MAX_BATCH_LEDGER))
    paired = paired_rounds(points, baseline_overrides)
    shared_process = (
        [] if paired else [p["metrics"].get("name") for p in points if p["metrics"].get("runs_before_in_process")]
    )
    points = pool_repeats(points)
    groups = by_device(points)
    rows, sections, recommendations, baseline = [], [], [], None
    for device, group in groups.items():
        baseline = find_baseline(group, baseline_overrides)
        group_rows = build_rows(group, baseline, min_gain)
        if paired:
            apply_pairs(group_rows, paired, min_gain)
        correct_for_comparisons(group_rows, min_gain)
        recommendation = in_unit(recommend(group_rows, tolerance, min_gain, noise_floor), unit_of(group_rows))
        power = "" if paired else power_note(group, group_rows, min_gain)  # paired rounds: their own t-interval
        if power:
            recommendation += "\n" + power
        rows += group_rows
        heading = [f"## On {device}", ""] if len(groups) > 1 else []
        recommendations.append(f"On {device}: {recommendation}" if len(groups) > 1 else recommendation)
        sections += heading + [
            recommendations[-1],
            "",
            f"Baseline: {baseline['metrics'].get('name') if baseline else 'none'}; speed-up (with its 95% interval), "
            "Δacc and memory ratio are against it. Throughput: work over the timed window (stalls included); stall: "
            "the slowest log interval against the median one." + interval_note(group_rows),
            "",
            markdown_table(group_rows),
            "",
        ]
    recommendation = "\n".join(recommendations)
    for search in (max_batch or {}).get("searches", []):
        if search["max_batch_size"] and not search["failure"]:
            recommendation = f"Largest batch that fits: {search['max_batch_size']}.\n" + recommendation
    overlaps = timed_together(rows)
    if overlaps:
        pairs = ", ".join(f"'{a['name']}' and '{b['name']}' on {a['host']}" for a, b in overlaps)
        caveat = (
            f"Caution: points timed at the same time on one machine ({pairs}) measured each other as much as "
            "themselves; run one point at a time (hydra.launcher.max_parallel_points=1) before acting on them."
        )
        recommendation += "\n" + caveat
        sections = [caveat, ""] + sections
    noisy = [r for r in rows if r["status"] == "ok" and (r.get("throughput_cv") or 0) > NOISY_CV]
    if noisy:
        names = ", ".join(f"'{r['name']}' (CV {r['throughput_cv']:.0%})" for r in noisy)
        caveat = (
            f"Caution: noisy timings — {names} varied by more than {NOISY_CV:.0%} between log intervals; something "
            "else was using the machine, or the intervals are too short (raise trainer.log_every_n_steps)."
        )
        recommendation += "\n" + caveat
        sections = [caveat, ""] + sections

    if shared_process:
        caveat = (
            f"Caution: {', '.join(map(repr, shared_process))} trained in a process that had trained other points "
            "before (hydra/launcher=basic), which can slow later points by a quarter; rerun with the default "
            "launcher (each point in its own process) before acting on them."
        )
        recommendation += "\n" + caveat
        sections = [caveat, ""] + sections

    with open(sweep_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS + ["baseline"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plots = write_plots(rows, points, sweep_dir, tolerance) if rows else []
    unreadable = [r for r in rows if r["status"] == UNREADABLE]
    failed = [r for r in rows if r["status"] not in ("ok", "pending", UNREADABLE, *SEARCH_STATUSES)]
    lines = [
        f"# FastGPU sweep report: {sweep_dir}",
        "",
        f"{len(rows)} points, {len(rows) - len(failed) - len(unreadable)} without failure, {len(failed)} failed"
        + (f", {len(unreadable)} unreadable." if unreadable else "."),
        "",
    ]
    if warmup:
        sections += [
            f"Warm-up round: {len(warmup)} run{'s' if len(warmup) > 1 else ''} trained first in the same process "
            "(hydra.sweeper.warmup_rounds), not compared.",
            "",
        ]
    lines += sections
    lines += [in_unit(line, unit_of(rows)) for line in rung_section(halving) + max_batch_section(max_batch)]
    if failed:
        lines += (
            ["## Failed points", ""]
            + [f"- `{r['name']}` ({r['overrides']}): **{r['status']}** — {r['error']} — `{r['dir']}`" for r in failed]
            + [""]
        )
    if unreadable:
        lines += ["## Unreadable results", ""] + [f"- `{r['name']}`: {r['error']}" for r in unreadable] + [""]
    lines += where_time_goes(points)
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    (sweep_dir / "report.md").write_text("\n".join(lines) + "\n")
    return {
        "rows": rows,
        "recommendation": recommendation,
        "failed": failed,
        "unreadable": unreadable,
        "plots": plots,
        "baseline": baseline,
        "timed_together": overlaps,
        "halving": halving,
        "max_batch": max_batch,
    }


def where_time_goes(points: list, n: int = 5) -> list:
    """Per profiled point (trainer.profile=true): its top ops by device time and the trace to open."""
    profiled = [p for p in points if p["metrics"].get("profile_top_ops")]
    if not profiled:
        return []
    lines = ["## Where the time goes (profiled steps, self time)", ""]
    for point in profiled:
        m = point["metrics"]
        ops = ", ".join(f"`{op['op']}` {op['share']:.0%}" for op in m["profile_top_ops"][:n])
        trace = f"{point['dir']}/{m['profile_trace']}" if m.get("profile_trace") else "no trace"
        lines.append(f"- **{m.get('name')}**: {ops} — trace `{trace}`")
    return lines + [""]


def main(argv=None, prog: str = "python -m fastgpu report") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Build the report of a FastGPU sweep dir.")
    parser.add_argument("sweep_dir")
    parser.add_argument(
        "--baseline", nargs="*", default=None, help="overrides naming the baseline point, e.g. precision=fp32"
    )
    parser.add_argument(
        "--tolerance", type=float, default=None, help="accuracy (fraction) the recommendation may give up"
    )
    parser.add_argument("--min-gain", type=float, default=None, help="speed-up a point must reliably beat (0.03)")
    args = parser.parse_args(argv)
    name = prog.removeprefix("python -m ")
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        print(
            f"{name}: error: {sweep_dir} is not a directory; pass a multirun dir such as outputs/multirun/DATE/TIME",
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
    min_gain = args.min_gain if args.min_gain is not None else OmegaConf.select(saved, "report.min_gain", default=0.03)
    floor = OmegaConf.select(saved, "report.noise_floor", default=None)
    report = build_report(sweep_dir, baseline, tolerance, min_gain, floor)
    if not report["rows"]:
        print(
            f"{name}: error: no sweep points (numbered dirs with .hydra/) in {sweep_dir}; pass a multirun dir such as "
            "outputs/multirun/DATE/TIME",
            file=sys.stderr,
        )
        return 2
    print(terminal_table(report["rows"]))
    print(report["recommendation"])
    print(f"report: {sweep_dir / 'report.md'}")
    for row in report["unreadable"]:
        print(f"{name}: {row['error']}", file=sys.stderr)
    if len(report["unreadable"]) == len(report["rows"]):
        print(f"{name}: error: no point of {sweep_dir} has readable results", file=sys.stderr)
        return 2
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
