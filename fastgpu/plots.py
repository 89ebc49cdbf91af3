"""The sweep report's plots: throughput against accuracy (Pareto front marked), peak memory, training curves."""

from pathlib import Path


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
