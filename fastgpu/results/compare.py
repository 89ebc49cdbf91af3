"""Which point is reliably better: the recommendation (a gain must beat the noise), points timed together,
points from different hardware kept apart, repeats pooled. Torch-free; fastgpu/results/report.py builds the rows it
reads."""

from fastgpu.results.figures import unit_of
from fastgpu.results.stats import cv, median_ci


def _interval(low, high) -> str:
    return f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else " (no interval)"


def recommend(rows: list, tolerance: float, min_gain: float = 0.03) -> str:
    """The fastest point that is *reliably* faster than the baseline — the lower end of its speed-up's 95%
    interval above 1 + `min_gain` — within `tolerance` accuracy of it. When the sweep varies compression:
    by each point's inference speed-up over its own uncompressed model on the same device (`latency_ratio`),
    the same rule on its interval. Otherwise: keep the baseline, and say what came closest."""
    ok = [r for r in rows if r["status"] == "ok" and r["throughput"]]
    base = next((r for r in rows if r["baseline"]), None)
    if not ok or base is None:
        return "No recommendation: no point finished."
    eligible = [
        r for r in ok if r is not base and r["accuracy"] is not None and r["accuracy"] >= base["accuracy"] - tolerance
    ]
    inference = len({r["compression"] for r in ok}) > 1
    key = "latency_ratio" if inference else "speedup"
    low_key, high_key = f"{key}_low", f"{key}_high"
    measured = [r for r in eligible if r[key] is not None]
    reliable = [r for r in measured if r[low_key] is not None and r[low_key] > 1 + min_gain]
    what = "faster at inference" if inference else "faster"
    if not reliable:
        closest = max(measured, key=lambda r: r[key], default=None)
        best = ""
        if closest:
            best = f" (best: '{closest['name']}', {closest[key]:.2f}x{_interval(closest[low_key], closest[high_key])})"
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
    return (
        f"Recommendation: '{best['name']}': {best['speedup']:.2f}x{_interval(best[low_key], best[high_key])} the "
        f"baseline's throughput ('{base['name']}', {base['throughput']:,.0f} -> {best['throughput']:,.0f} "
        f"{unit_of(rows)}/s), "
        f"{accuracy}" + "".join(f", {c}" for c in costs) + "."
    )


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


def pool_repeats(points: list) -> list:
    """Points that differ only in `trainer.seed` are repeats of one setting (other data orders): one point
    whose throughput is the median of all their interval rates, its interval over all of them, and the
    mean of their accuracies. Sweep `trainer.seed=0,1,2` to repeat every setting three times."""
    groups = {}
    for p in points:
        setting = tuple(sorted(o for o in p["overrides"] if not o.lstrip("+").startswith("trainer.seed=")))
        key = (p["metrics"].get("device_name"), setting)  # repeats on other hardware are not repeats
        groups.setdefault(key, []).append(p)
    pooled = []
    for group in groups.values():
        ok = [p for p in group if p["metrics"].get("status") == "ok" and p["metrics"].get("throughput_intervals")]
        if len(ok) < 2:
            pooled += group
            continue
        rates = [rate for p in ok for rate in p["metrics"]["throughput_intervals"]]
        median, low, high = median_ci(rates)
        first = ok[0]
        metrics = {
            **first["metrics"],
            "throughput": median,
            "throughput_ci_low": low,
            "throughput_ci_high": high,
            "throughput_cv": cv(rates),
            "throughput_intervals": rates,
            "repeats": len(ok),
            "name": "-".join(part for part in first["metrics"]["name"].split("-") if not part.startswith("seed"))
            or "baseline",
        }
        for key in ("accuracy", "precision", "recall", "f1"):
            values = [p["metrics"][key] for p in ok if p["metrics"].get(key) is not None]
            metrics[key] = sum(values) / len(values) if values else None
        pooled.append({**first, "metrics": metrics, "history": first["history"]})
        pooled += [p for p in group if p not in ok]
    return sorted(pooled, key=lambda p: p["point"])
