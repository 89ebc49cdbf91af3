"""Which point is reliably better: the recommendation (a gain must beat the noise), points timed together,
points from different hardware kept apart, repeats pooled. Torch-free; fastgpu/results/report.py builds the rows it
reads."""

from fastgpu.results.figures import pooled as pooled_value
from fastgpu.results.figures import unit_of
from fastgpu.results.stats import Run, setting_ci

# Run-to-run noise floors measured on a device kind: how far a single run of a setting strayed from another single run
# of the same setting there. experiments/identical_settings.py on this project's 2-core CPU machine (2026-11-30, 20
# one-run sweeps of one setting under two labels, idle and loaded): estimates from 0.59x to 1.34x, so 1/0.59 = 1.69x.
# A single run's gain counts as reliable only when its interval clears 1 + this; none measured for GPUs yet, so there
# a "reliably faster" verdict needs repeats (trainer.repeats=3). report.noise_floor sets your own.
NOISE_FLOORS = {"cpu": 0.7}
ONE_RUN = "one run per setting: run-to-run noise not measured; repeat with trainer.repeats=3"


def _interval(low, high) -> str:
    return f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else " (no interval)"


def noise_floor(rows: list, given=None):
    """The run-to-run noise floor that a single-run gain must clear: `report.noise_floor`, else the measured one of
    the device kind the points ran on (None: not measured, repeats needed)."""
    if given is not None:
        return given
    kinds = {r.get("device") for r in rows if r["status"] == "ok"}
    return NOISE_FLOORS.get(kinds.pop()) if len(kinds) == 1 else None


def recommend(rows: list, tolerance: float, min_gain: float = 0.03, device_floor=None) -> str:
    """The fastest point that is *reliably* faster than the baseline within `tolerance` accuracy of it. Reliable:
    measured over runs (two or more of both settings), its one-sided test of a speed-up above 1 + `min_gain` passes
    Holm's correction over every setting compared (`reliably_faster`, set by the report); with one run of either,
    its within-run interval clears the device's run-to-run noise floor (`floor`, see noise_floor). When the sweep
    varies compression: by each point's inference speed-up over its own uncompressed model on the same device
    (`latency_ratio`), the floor rule on its interval. Otherwise: keep the baseline, and say what came closest."""
    ok = [r for r in rows if r["status"] == "ok" and r["throughput"]]
    base = next((r for r in rows if r["baseline"]), None)
    if not ok or base is None:
        return "No recommendation: no point finished."
    if len(rows) == 1:  # e.g. a sweep of seeds, pooled into one setting
        runs = base.get("repeats") or 1
        return (
            f"Nothing to compare: one setting ('{base['name']}', {runs} run{'s' if runs > 1 else ''}); sweep a "
            "setting to compare it (e.g. precision=fp32,bf16)."
        )
    eligible = [
        r for r in ok if r is not base and r["accuracy"] is not None and r["accuracy"] >= base["accuracy"] - tolerance
    ]
    inference = len({r["compression"] for r in ok}) > 1
    key = "latency_ratio" if inference else "speedup"
    low_key, high_key = f"{key}_low", f"{key}_high"
    measured = [r for r in eligible if r[key] is not None]
    above = [r for r in measured if r[low_key] is not None and r[low_key] > 1 + min_gain]
    # inference latency is timed in blocks of one process, within-run only: the floor applies to it as well
    floor = noise_floor(rows, device_floor)

    def reliable_gain(r) -> bool:
        if r.get("runs_measured") and not inference:  # tested over runs, Holm-corrected over the settings compared
            return bool(r.get("reliably_faster"))
        return floor is not None and r[low_key] > 1 + floor

    reliable = [r for r in above if reliable_gain(r)]
    what = "faster at inference" if inference else "faster"
    compared = settings_compared(rows)
    if not reliable:
        closest = max(measured, key=lambda r: r[key], default=None)
        best = ""
        if closest:
            best = f" (best: '{closest['name']}', {closest[key]:.2f}x{_interval(closest[low_key], closest[high_key])})"
        if above and above[0].get("runs_measured") and not inference:
            return (
                f"Recommendation: keep the baseline '{base['name']}': '{above[0]['name']}' looks {what} "
                f"({above[0][key]:.2f}x{_interval(above[0][low_key], above[0][high_key])}), but not once corrected "
                f"for the {compared} settings compared (Holm)."
            )
        if above:
            floor_text = f"the run-to-run noise floor ({1 + floor:.2f}x)" if floor is not None else "a measured floor"
            return (
                f"Recommendation: keep the baseline '{base['name']}' for now: '{above[0]['name']}' looks {what} "
                f"({above[0][key]:.2f}x{_interval(above[0][low_key], above[0][high_key])}), but {ONE_RUN}; a single "
                f"run's gain must clear {floor_text}."
            )
        return (
            f"Recommendation: keep the baseline '{base['name']}': no setting is reliably {what} — none has a 95% "
            f"interval above {1 + min_gain:.2f}x within {100 * tolerance:.1f} accuracy points{best}."
        )
    best = max(reliable, key=lambda r: r[key])
    accuracy = f"accuracy {best['accuracy']:.4f} ({100 * best['accuracy_delta']:+.2f} pts)"
    if inference:
        size_text = f", exported size {best['size_ratio']:.2f}x smaller" if best["size_ratio"] else ""
        return (
            f"Recommendation: '{best['name']}': {best['latency_ratio']:.2f}x"
            f"{_interval(best[low_key], best[high_key])} lower inference latency at the batch size than the same "
            f"model uncompressed ({best['latency_batch_ms_before']:.2f} -> {best['latency_batch_ms_after']:.2f} ms, "
            f"both on {best['deploy_device'] or 'the training device'}){size_text}, {accuracy}."
        )
    costs = []
    if best["memory_ratio"]:
        much = " — much more memory" if best["memory_ratio"] > 1.2 else ""
        costs.append(f"peak memory {best['memory_ratio']:.2f}x{much}")
    if best["energy_ratio"]:
        costs.append(f"energy per sample {best['energy_ratio']:.2f}x")
    selection = ""
    if best.get("runs_measured") and compared > 1:
        selection = (
            f" Reliable after Holm's correction for {compared} settings compared; as the best of {compared}, its "
            "estimate tends to read high: confirm it against the baseline alone (+experiment=ab)."
        )
    return (
        f"Recommendation: '{best['name']}': {best['speedup']:.2f}x{_interval(best[low_key], best[high_key])} the "
        f"baseline's throughput ('{base['name']}', {base['throughput']:,.0f} -> {best['throughput']:,.0f} "
        f"{unit_of(rows)}/s), "
        f"{accuracy}" + "".join(f", {c}" for c in costs) + "." + selection
    )


def settings_compared(rows: list) -> int:
    """How many settings were compared with the baseline over runs: the family Holm corrected over (report.py)."""
    return max((r.get("comparisons") or 0 for r in rows), default=0)


def timed_together(rows: list) -> list:
    """Pairs of finished points that trained on the same host at the same time: each slowed the other."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("started_at") and r.get("ended_at")]
    return [
        (a, b)
        for i, a in enumerate(ok)
        for b in ok[i + 1 :]
        if a["host"] == b["host"] and a["started_at"] < b["ended_at"] and b["started_at"] < a["ended_at"]
    ]


def by_device(points: list) -> dict:
    """Points grouped by the device they ran on: points from different hardware are never compared."""
    groups = {}
    for p in points:
        groups.setdefault(p["metrics"].get("device_name"), []).append(p)
    if None in groups and len(groups) > 1:  # pending and failed points: with the first device's group
        groups[next(k for k in groups if k is not None)] += groups.pop(None)
    return groups


MEASURED = ("ok", "stopped_early", "promoted")  # statuses of runs that measured their speed
REPEAT_KEYS = ("trainer.seed=", "trainer.repeat=", "trainer.repeats=")
WARMUP_ROUND = "trainer.warmup_round=true"  # a warm-up round's run (hydra.sweeper.warmup_rounds): never compared


def setting_of(overrides) -> tuple:
    """A run's setting: its overrides less those that tell repeats of one setting apart."""
    return tuple(sorted(o for o in overrides if not o.lstrip("+").startswith(REPEAT_KEYS)))


def runs_of(metrics: dict) -> list:
    """A point's runs (stats.Run): each pooled run's log intervals, or its one run's; [] where none were recorded."""
    if metrics.get("run_intervals"):
        seconds = metrics.get("run_interval_seconds") or [None] * len(metrics["run_intervals"])
        return [Run.of(rates, secs) for rates, secs in zip(metrics["run_intervals"], seconds)]
    if metrics.get("throughput_intervals"):
        return [Run.of(metrics["throughput_intervals"], metrics.get("throughput_interval_seconds"))]
    return []


def pool_repeats(points: list) -> list:
    """Points that differ only in `trainer.seed` (other data orders) or `trainer.repeat` (the rounds of
    trainer.repeats=N), with one status, are runs of one setting: one point. Its throughput is the geometric mean
    of its runs' with a t interval over the runs (stats.setting_ci); every other figure is pooled by its rule in
    the figures table (quality averaged, peaks the largest run's, the rest the median run's)."""
    groups = {}
    for p in points:
        # repeats on other hardware are not repeats; halving's stopped_early runs pool apart from finished ones
        key = (p["metrics"].get("device_name"), setting_of(p["overrides"]), p["metrics"].get("status"))
        groups.setdefault(key, []).append(p)
    pooled = []
    for group in groups.values():
        ok = [p for p in group if p["metrics"].get("status") in MEASURED and p["metrics"].get("throughput_intervals")]
        if len(ok) < 2:
            pooled += group
            continue
        runs = [runs_of(p["metrics"])[0] for p in ok]
        keys = {key for p in ok for key in p["metrics"]}
        metrics = {key: pooled_value(key, [p["metrics"].get(key) for p in ok]) for key in keys}
        throughput, low, high, covers = setting_ci(runs)
        metrics.update(
            throughput=throughput,
            throughput_ci_low=low,
            throughput_ci_high=high,
            throughput_ci_covers=covers,
            throughput_intervals=[rate for run in runs for rate in run.rates],
            run_intervals=[list(run.rates) for run in runs],
            run_interval_seconds=[list(run.seconds) for run in runs],
            throughput_interval_seconds=[sec for run in runs for sec in run.seconds],
            run_throughputs=[run.throughput for run in runs],
            repeats=len(ok),
            name=_setting_name(ok[0]["metrics"]["name"]),
        )
        if "tokens_per_s" in metrics:
            metrics["tokens_per_s"] = throughput
        pooled.append({**ok[0], "metrics": metrics, "history": ok[0]["history"]})
        pooled += [p for p in group if p not in ok]
    return sorted(pooled, key=lambda p: p["point"])


def _setting_name(name: str) -> str:
    """A run's name less what tells repeats apart (seed1, r2)."""
    import re

    parts = [part for part in name.split("-") if not re.fullmatch(r"seed\d+|r\d+", part)]
    return "-".join(parts) or "baseline"
