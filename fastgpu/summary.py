"""The short table printed at the end of a run."""

ROWS = [
    ("status", "status", "{}"),
    ("throughput", "throughput (samples/s)", "{:,.0f}"),
    ("step_time_p50_ms", "step time p50 (ms)", "{:.2f}"),
    ("step_time_p90_ms", "step time p90 (ms)", "{:.2f}"),
    ("data_time_share", "data-loading share", "{:.1%}"),
    ("warmup_time_s", "warm-up (s, not timed)", "{:.2f}"),
    ("epoch_time_s", "epoch time p50 (s)", "{:.2f}"),
    ("time_to_target_s", "time to target acc (s)", "{:.2f}"),
    ("accuracy", "val accuracy", "{:.4f}"),
    ("best_accuracy", "best val accuracy", "{:.4f}"),
    ("precision", "val precision (macro)", "{:.4f}"),
    ("recall", "val recall (macro)", "{:.4f}"),
    ("f1", "val F1 (macro)", "{:.4f}"),
    ("val_loss", "val loss", "{:.4f}"),
    ("peak_mem_allocated_mb", "peak allocated (MB)", "{:,.0f}"),
    ("peak_mem_reserved_mb", "peak reserved (MB)", "{:,.0f}"),
    ("peak_rss_mb", "peak RSS (MB)", "{:,.0f}"),
    ("mean_cpu_percent", "mean process CPU (%)", "{:.0f}"),
    ("mean_gpu_util_percent", "mean GPU utilisation (%)", "{:.0f}"),
    ("mean_gpu_power_w", "mean GPU power (W)", "{:.0f}"),
    ("energy_per_sample_j", "GPU energy / sample (J)", "{:.4f}"),
    ("params", "parameters", "{:,}"),
    ("model_size_mb", "model size (MB)", "{:.2f}"),
]


def format_summary(metrics: dict, title: str = "") -> str:
    lines = []
    for key, label, fmt in ROWS:
        value = metrics.get(key)
        text = "-" if value is None else fmt.format(value)
        lines.append((label, text))
    setting = (
        f"{metrics.get('device_name', '')} x{metrics.get('world_size', 1)} | {metrics.get('precision_mode')}"
        f" | compile={metrics.get('compile')} | channels_last={metrics.get('channels_last')}"
        f" | parallel={metrics.get('parallel')} | {metrics.get('steps')} steps"
    )
    width = max(len(label) for label, _ in lines)
    out = [title or "FastGPU run", setting, "-" * (width + 16)]
    out += [f"{label:<{width}}  {text:>14}" for label, text in lines]
    return "\n".join(out)
