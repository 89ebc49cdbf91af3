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


COMPRESSION_ROWS = [
    ("compression", "compression", "{}"),
    ("accuracy_before", "val accuracy before", "{:.4f}"),
    ("sparsity", "weight sparsity", "{:.1%}"),
    ("serialized_bytes_before", "exported size before (KB)", "{:,.0f}", 1e-3),
    ("serialized_bytes_after", "exported size after (KB)", "{:,.0f}", 1e-3),
    ("quantized_weight_ratio", "int8 weights smaller by", "{:.2f}x"),
    ("latency_batch_ms_before", "batch latency before (ms)", "{:.2f}"),
    ("latency_batch_ms_after", "batch latency after (ms)", "{:.2f}"),
    ("latency_b1_ms_after", "batch-1 latency after (ms)", "{:.2f}"),
]


def format_summary(metrics: dict, title: str = "") -> str:
    lines = []
    rows = ROWS + (COMPRESSION_ROWS if metrics.get("compression") not in (None, "none") else [])
    for key, label, fmt, *scale in rows:
        value = metrics.get(key)
        if value is None and key != "time_to_target_s":  # e.g. GPU memory and energy on a CPU run
            continue
        text = "-" if value is None else fmt.format(value * scale[0] if scale else value)
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
