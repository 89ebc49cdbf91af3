"""The sweep report's plots, made to be read at a glance: every point a numbered marker with its 95% interval
(within-run or run-to-run, as the axis says) as an error bar and its name in a legend beside the axes (no label sits
on another), the Pareto front only where it joins two or more points, and throughput against memory and energy
instead of accuracy where accuracy means nothing (synthetic data, random labels)."""

from pathlib import Path

from fastgpu.results.figures import in_unit, unit_of
from fastgpu.results.naming import row_label


def pareto_front(rows: list, y: str = "accuracy", higher: bool = True) -> list:
    """Points no other point beats on both throughput and `y` (higher or lower is better)."""
    sign = 1 if higher else -1
    ok = [r for r in rows if r["status"] == "ok" and r["throughput"] is not None and r.get(y) is not None]
    front = [
        r
        for r in ok
        if not any(
            o["throughput"] >= r["throughput"]
            and sign * o[y] >= sign * r[y]
            and (o["throughput"], o[y]) != (r["throughput"], r[y])
            for o in ok
        )
    ]
    return sorted(front, key=lambda r: r["throughput"])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def meaningful_accuracy(rows: list) -> bool:
    """False when every finished point trained on synthetic data (random labels: accuracy is chance)."""
    return not all(r.get("data") == "synthetic" for r in rows if r["status"] == "ok")


def throughput_figure(rows: list, y: str, ylabel: str, higher: bool = True, tolerance=None):
    """Throughput (x, with its 95% interval) against `y`; numbered markers (set apart where points coincide), names
    in a legend beside the axes; on accuracy, the tolerance under the baseline that the recommendation keeps, and an
    axis at least as tall as three tolerances (0.3 points never fill the height)."""
    plt = _pyplot()
    ok = [r for r in rows if r["status"] == "ok" and r["throughput"] is not None and r.get(y) is not None]
    fig, ax = plt.subplots(figsize=(9, 5))
    bars = set()  # what the drawn intervals cover: within-run 95% (one run) or run-to-run 95% (repeats)
    offsets = _label_offsets(ok, y)
    for number, r in enumerate(ok, 1):
        low, high = r.get("throughput_ci_low"), r.get("throughput_ci_high")
        xerr = [[r["throughput"] - low], [high - r["throughput"]]] if low is not None and high is not None else None
        color = f"C{(number - 1) % 10}"
        if xerr is not None:
            bars.add(r.get("throughput_ci_covers") or "95%")
            ax.errorbar(r["throughput"], r[y], xerr=xerr, fmt="none", ecolor=color, capsize=3, alpha=0.7)
        label = f"{number}. {row_label(r['name'], r['baseline'])}"
        ax.scatter(r["throughput"], r[y], s=18, color=color, label=label, zorder=3)
        ax.annotate(
            str(number),
            (r["throughput"], r[y]),
            xytext=offsets[number - 1],
            textcoords="offset points",
            color=color,
            fontsize=10,
            fontweight="bold",
            zorder=4,
        )
    front = pareto_front(rows, y, higher)
    if len(front) >= 2:
        ax.plot([r["throughput"] for r in front], [r[y] for r in front], "--", color="gray", label="Pareto front")
    base = next((r for r in ok if r["baseline"]), None)
    if y == "accuracy" and base is not None and tolerance:
        floor = base[y] - tolerance
        ax.axhline(floor, ls=":", color="gray", label=f"baseline - tolerance ({100 * tolerance:g} pts)")
        values = [r[y] for r in ok] + [floor]
        low, high = min(values), max(values + [base[y] + tolerance])
        pad = max(high - low, 3 * tolerance) - (high - low)
        ax.set_ylim(low - pad / 2 - 0.05 * tolerance, high + pad / 2 + 0.05 * tolerance)
    ax.set(
        xlabel=f"throughput ({unit_of(rows)}/s, work over the timed window"
        + (f"; bars: {' or '.join(sorted(bars))} interval" if bars else "")
        + ")",
        ylabel=ylabel,
        title=f"Throughput vs {ylabel}",
    )
    ax.grid(alpha=0.3)
    if ok:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, borderaxespad=0)
    return fig


def _label_offsets(ok: list, y: str) -> list:
    """Each point's number beside its marker, in offset points; a point within 2% of an earlier one on both axes
    has its number moved along, so that every number can be read."""
    if not ok:
        return []
    xs, ys = [r["throughput"] for r in ok], [r[y] for r in ok]
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    offsets = []
    for i, (x, v) in enumerate(zip(xs, ys)):
        near = sum(abs(x - xs[j]) < 0.02 * span_x and abs(v - ys[j]) < 0.02 * span_y for j in range(i))
        offsets.append((5 + 12 * near, 5))
    return offsets


def write_plots(rows: list, points: list, out_dir: Path, tolerance=None) -> list:
    plt = _pyplot()
    ok = [r for r in rows if r["status"] == "ok" and r["throughput"] is not None]
    paths = []
    if meaningful_accuracy(rows):
        figures = [("throughput_vs_accuracy", "accuracy", in_unit("validation accuracy", unit_of(rows)), True)]
    else:  # synthetic data: what a speed setting trades is memory and energy
        figures = [("throughput_vs_memory", "peak_memory_mb", "peak memory (MB)", False)]
        if any(r.get("energy_per_sample_j") is not None for r in ok):
            figures.append(("throughput_vs_energy", "energy_per_sample_j", "GPU energy per sample (J)", False))
    for name, y, label, higher in figures:
        paths.append(_save(throughput_figure(rows, y, label, higher, tolerance), out_dir / f"{name}.png"))

    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.45 * len(ok) + 1)))
    ax.barh(
        [r["name"] for r in ok],
        [r["peak_memory_mb"] or 0 for r in ok],
        color=["tab:orange" if r["baseline"] else "tab:blue" for r in ok],
    )
    kind = "allocated device memory" if any(p["metrics"].get("peak_mem_allocated_mb") for p in points) else "RSS"
    ax.set(xlabel=f"peak memory (MB, {kind})", title="Peak memory per point (orange: baseline)")
    ax.invert_yaxis()
    paths.append(_save(fig, out_dir / "peak_memory.png"))
    paths.append(_save(curves_figure(points, unit_of(rows)), out_dir / "training_curves.png"))
    return paths


def curves_figure(points: list, unit: str = "samples"):
    """Training loss (mean over each log interval) and validation accuracy per point; a legend on each panel."""
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, p in enumerate(points):
        name = p["metrics"].get("name") or str(p["point"])
        # a style of its own per point: identical curves (the same setting twice) stay visible over one another
        style = {"linestyle": STYLES[i % len(STYLES)], "marker": MARKERS[i % len(MARKERS)], "markersize": 4}
        train = [h for h in p["history"] if "train/loss" in h]
        val = [h for h in p["history"] if "val/accuracy" in h]
        if train:
            loss_ax.plot([h["step"] for h in train], [h["train/loss"] for h in train], label=name, **style)
        if val:
            acc_ax.plot([h["step"] for h in val], [h["val/accuracy"] for h in val], label=name, **style)
    loss_ax.set(xlabel="step", ylabel="training loss (interval mean)", yscale="log", title="Training loss")
    acc_ax.set(xlabel="step", ylabel=in_unit("validation accuracy", unit), title=in_unit("Validation accuracy", unit))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig


STYLES, MARKERS = ("-", "--", "-.", ":"), (".", "o", "s", "^", "v")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path
