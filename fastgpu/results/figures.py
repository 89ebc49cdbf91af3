"""The one table of every figure FastGPU reports. It feeds the order of metrics.json, the terminal summary,
the sweep report's columns (results.csv and the markdown table) and W&B's `define_metric` summaries, so adding
a figure is one row here plus the line that computes it. Torch-free: the report and status commands load it.

Columns of a row: the key in metrics.json / history, the label in the terminal summary (with its unit), its
format, which way is better, its group, where it appears (`summary`: the terminal summary; `header`: a column
of the report's table under that header; `csv`: a column of results.csv), a display scale, for history
series the W&B summary (`wandb`), and how a setting's runs pool into one row (`pool`; by its group where not given:
POOL_BY_GROUP).
"""

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    fmt: str = "{}"
    better: str = ""  # higher | lower | "" (not a score)
    group: str = "run"  # speed | quality | memory | energy | model | comparison | compression | history
    summary: bool = True
    header: str = ""
    csv: bool = True
    scale: float = 1.0
    wandb: str = ""  # history series only: the W&B summary (max | min | mean)
    pool: str = ""  # median | mean | max | sum | first | runs (computed from the runs themselves: compare.py)


def _compare(key, header, fmt, better, scale=1.0):
    """A figure the report derives from two points (a ratio or a difference against the baseline)."""
    return Figure(key, header, fmt, better, "comparison", summary=False, header=header, scale=scale)


FIGURES = [
    Figure("throughput", "throughput (samples/s)", "{:,.0f}", "higher", "speed", header="samples/s", pool="runs"),
    # a run's summary shows its within-run interval; a pooled row's (the report) covers run-to-run noise
    Figure("throughput_ci_low", "  within-run 95%, low", "{:,.0f}", "higher", "speed", pool="runs"),
    Figure("throughput_ci_high", "  within-run 95%, high", "{:,.0f}", "higher", "speed", pool="runs"),
    Figure("throughput_ci_covers", "the interval covers", "{}", "", "speed", summary=False, pool="runs"),
    Figure("throughput_cv", "  CV over log intervals", "{:.1%}", "lower", "speed", header="CV"),
    Figure("median_interval_rate", "median log interval (samples/s)", "{:,.0f}", "higher", "speed"),
    Figure("median_interval_rate_ci_low", "  its 95%, low", "{:,.0f}", "higher", "speed", summary=False),
    Figure("median_interval_rate_ci_high", "  its 95%, high", "{:,.0f}", "higher", "speed", summary=False),
    Figure("stall_ratio", "slowest interval (x the median)", "{:.2f}x", "lower", "speed", header="stall", pool="max"),
    Figure("timed_samples", "samples timed", "{:,}", "", "speed", summary=False, pool="sum"),
    Figure("repeats", "repeats pooled", "{}", "", "speed", summary=False, header="repeats", pool="runs"),
    _compare("speedup", "speed-up", "{:.2f}x", "higher"),
    Figure("speedup_low", "speed-up 95% low", "{:.3f}", "higher", "comparison", summary=False),
    Figure("speedup_high", "speed-up 95% high", "{:.3f}", "higher", "comparison", summary=False),
    Figure("speedup_interval", "95% interval", "{}", "", "comparison", summary=False, header="95% interval", csv=False),
    Figure("speedup_covers", "speed-up interval covers", "{}", "", "comparison", summary=False),
    Figure("speedup_p", "p (speed-up <= 1 + min gain)", "{:.4f}", "lower", "comparison", summary=False),
    Figure("reliably_faster", "reliably faster (Holm)", "{}", "", "comparison", summary=False, header="reliable"),
    _compare("detectable_speedup", "detectable", "{:.2f}x", "lower"),
    Figure("comparisons", "settings compared", "{}", "", "comparison", summary=False),
    Figure("step_time_p50_ms", "step time p50 (ms)", "{:.2f}", "lower", "speed", header="step p50 ms"),
    Figure("step_time_p90_ms", "step time p90 (ms)", "{:.2f}", "lower", "speed", header="step p90 ms"),
    Figure("data_time_share", "data-loading share", "{:.1%}", "lower", "speed", header="data share"),
    Figure("warmup_time_s", "warm-up (s, not timed)", "{:.2f}", "lower", "speed"),
    Figure("epoch_time_s", "epoch time p50 (s)", "{:.2f}", "lower", "speed", csv=False),
    # the way to the first step (fastgpu/measure/startup.py) and what runs after training
    Figure("time_to_first_step_s", "time to first step (s)", "{:.2f}", "lower", "speed"),
    Figure("startup_imports_s", "  imports (s)", "{:.2f}", "lower", "speed", summary=False),
    Figure("startup_composition_s", "  config composition (s)", "{:.2f}", "lower", "speed", summary=False),
    Figure("startup_setup_s", "  checks, run dir, W&B logger start (s)", "{:.2f}", "lower", "speed", summary=False),
    Figure("startup_build_s", "  build: data, model, optimizer (s)", "{:.2f}", "lower", "speed", summary=False),
    Figure("startup_first_step_s", "  first step (s)", "{:.2f}", "lower", "speed", summary=False),
    Figure("export_s", "export (s)", "{:.2f}", "lower", "compression", summary=False),
    Figure("inference_benchmark_s", "inference benchmark (s)", "{:.2f}", "lower", "compression", summary=False),
    Figure("tokens_per_s", "tokens/s (= throughput)", "{:,.0f}", "higher", "speed", summary=False),
    Figure("flops_per_sample", "train GFLOPs / sample", "{:.3f}", "", "speed", scale=1e-9),
    Figure("flops_per_token", "train MFLOPs / token", "{:.2f}", "", "speed", scale=1e-6),
    Figure("achieved_tflops", "achieved TFLOP/s", "{:.2f}", "higher", "speed", header="TFLOP/s"),
    Figure("mfu", "MFU (of dense peak)", "{:.1%}", "higher", "speed", header="MFU"),
    Figure("mfu_peak", "  MFU is against", "{}", "", "speed", csv=False),
    Figure("mfu_unavailable", "MFU", "{}", "", "speed", csv=False),
    Figure("time_to_target_s", "time to target acc (s)", "{:.2f}", "lower", "speed", header="time-to-acc s"),
    Figure("time_to_target_note", "  time to target", "{}", "", "speed", csv=False),
    Figure("accuracy", "val accuracy", "{:.4f}", "higher", "quality", header="accuracy"),
    _compare("accuracy_delta", "Δacc pts", "{:+.2f}", "higher", scale=100),
    Figure("best_accuracy", "best val accuracy", "{:.4f}", "higher", "quality", csv=False),
    Figure("precision", "val precision (macro)", "{:.4f}", "higher", "quality"),
    Figure("recall", "val recall (macro)", "{:.4f}", "higher", "quality"),
    Figure("f1", "val F1 (macro)", "{:.4f}", "higher", "quality", header="F1"),
    Figure("perplexity", "val perplexity", "{:.3f}", "lower", "quality", header="perplexity"),
    Figure("val_loss", "val loss", "{:.4f}", "lower", "quality", csv=False),
    Figure("skipped_samples", "unreadable samples skipped", "{:,}", "lower", "quality", pool="sum"),
    Figure("peak_mem_allocated_mb", "peak allocated (MB)", "{:,.0f}", "lower", "memory", csv=False),
    Figure("peak_mem_reserved_mb", "peak reserved (MB)", "{:,.0f}", "lower", "memory", csv=False),
    Figure("peak_rss_mb", "peak RSS (MB)", "{:,.0f}", "lower", "memory", csv=False),
    _compare("peak_memory_mb", "peak MB", "{:,.0f}", "lower"),
    _compare("memory_ratio", "mem ratio", "{:.2f}x", "lower"),
    Figure("mean_cpu_percent", "mean process CPU (%)", "{:.0f}", "", "energy"),
    Figure("mean_gpu_util_percent", "mean GPU utilisation (%)", "{:.0f}", "higher", "energy", header="util %"),
    Figure("mean_gpu_power_w", "mean GPU power (W)", "{:.0f}", "", "energy"),
    Figure("energy_per_sample_j", "GPU energy / sample (J)", "{:.4f}", "lower", "energy", header="J/sample"),
    Figure("warmup_energy_j", "warm-up GPU energy (J, not counted)", "{:,.0f}", "lower", "energy"),
    _compare("energy_ratio", "energy ratio", "{:.2f}x", "lower"),
    Figure("data", "data", "{}", "", "setting", summary=False),
    Figure("task", "task", "{}", "", "setting", summary=False),
    Figure("throughput_unit", "throughput counts", "{}", "", "setting", summary=False),
    Figure("optimizer_impl", "optimizer kernel", "{}", "", "setting", summary=False, header="optim"),
    Figure("accumulate_grad_batches", "gradient accumulation", "{}", "", "setting", summary=False),
    Figure("global_batch_size", "global batch (samples/update)", "{:,}", "", "setting", summary=False),
    Figure("compile_mode", "compile mode", "{}", "", "setting", summary=False),
    Figure("cudnn_benchmark", "cudnn.benchmark", "{}", "", "setting", summary=False),
    Figure("activation_checkpointing", "activation checkpointing", "{}", "", "setting", summary=False),
    Figure("profile_trace", "profiler trace", "{}", "", "speed", csv=False),
    Figure("precision_mode", "precision (as run)", "{}", "", "setting", summary=False, header="precision"),
    Figure("host", "host", "{}", "", "setting", summary=False),
    Figure("hosts", "hosts of the ranks", "{}", "", "setting", summary=False),
    Figure("device_name", "device", "{}", "", "setting", summary=False),
    Figure("device", "device kind", "{}", "", "setting", summary=False),
    Figure("started_at", "started (UTC)", "{}", "", "setting", summary=False),
    Figure("ended_at", "ended (UTC)", "{}", "", "setting", summary=False),
    Figure("params", "parameters", "{:,}", "", "model"),
    Figure("model_size_mb", "model size (MB)", "{:.2f}", "lower", "model", header="size MB"),
    Figure("deploy_note", "deployment figures", "{}", "", "model", csv=False),
    # compression: shown where a point was compressed
    Figure("compression", "compression", "{}", "", "compression"),
    Figure("deploy_device", "deployed and measured on", "{}", "", "compression", header="latency on"),
    Figure("accuracy_before", "val accuracy before", "{:.4f}", "higher", "compression", header="acc before"),
    Figure("accuracy_after", "val accuracy after", "{:.4f}", "higher", "compression", summary=False),
    Figure("f1_before", "val F1 before", "{:.4f}", "higher", "compression", summary=False),
    Figure("f1_after", "val F1 after", "{:.4f}", "higher", "compression", summary=False),
    Figure("sparsity", "weight sparsity", "{:.1%}", "", "compression", header="sparsity"),
    Figure("nonzero_params", "non-zero parameters", "{:,}", "lower", "compression", summary=False),
    Figure("serialized_bytes_before", "exported size before (KB)", "{:,.0f}", "lower", "compression", scale=1e-3),
    Figure("serialized_bytes_after", "exported size after (KB)", "{:,.0f}", "lower", "compression", scale=1e-3),
    Figure("size_ratio", "exported size smaller by", "{:.2f}x", "higher", "compression", header="size ratio"),
    Figure(
        "quantized_weight_ratio", "int8 weights smaller by", "{:.2f}x", "higher", "compression", header="int8 weights"
    ),
    Figure("latency_b1_ms_before", "batch-1 latency before (ms)", "{:.2f}", "lower", "compression", summary=False),
    Figure("latency_b1_ms_after", "batch-1 latency after (ms)", "{:.2f}", "lower", "compression"),
    Figure("latency_batch_ms_before", "batch latency before (ms)", "{:.2f}", "lower", "compression"),
    Figure("latency_batch_ms_after", "batch latency after (ms)", "{:.2f}", "lower", "compression", header="latency ms"),
    Figure(
        "latency_batch_ms_iqr_after",
        "  its interquartile range (ms)",
        "{:.2f}",
        "lower",
        "compression",
        header="IQR ms",
    ),
    Figure("latency_ratio", "batch latency lower by", "{:.2f}x", "higher", "compression", header="latency ratio"),
    Figure("latency_ratio_low", "  95% interval, low", "{:.2f}x", "higher", "compression", summary=False),
    Figure("latency_ratio_high", "  95% interval, high", "{:.2f}x", "higher", "compression", summary=False),
    Figure(
        "latency_interval", "95% interval", "{}", "", "compression", summary=False, header="95% interval", csv=False
    ),
    Figure("structured_speedup", "structured pruning", "{}", "", "compression", summary=False),
    Figure("sparse24_layers", "2:4 sparse layers", "{}", "", "compression", summary=False),
    Figure("sparse24_flops_share", "2:4 share of FLOPs", "{:.1%}", "", "compression", summary=False),
    # history series: W&B shows their summary (best accuracy, not the last one)
    Figure("val/accuracy", "val accuracy", better="higher", group="history", summary=False, csv=False, wandb="max"),
    Figure("val/f1", "val F1", better="higher", group="history", summary=False, csv=False, wandb="max"),
    Figure("val/loss", "val loss", better="lower", group="history", summary=False, csv=False, wandb="min"),
    Figure("val/perplexity", "val perplexity", better="lower", group="history", summary=False, csv=False, wandb="min"),
    Figure("train/loss", "train loss", better="lower", group="history", summary=False, csv=False, wandb="min"),
    Figure(
        "train/samples_per_s", "samples/s", better="higher", group="history", summary=False, csv=False, wandb="mean"
    ),
    Figure("train/tokens_per_s", "tokens/s", better="higher", group="history", summary=False, csv=False, wandb="mean"),
]
BY_KEY = {f.key: f for f in FIGURES}
# how a setting's runs pool, where a figure does not say: quality is averaged over the runs (seeds), a peak is the
# largest run's, a setting is the same in every run, the rest is the median run's
POOL_BY_GROUP = {"quality": "mean", "memory": "max", "setting": "first", "model": "first"}


def pool_rule(key: str) -> str:
    figure = BY_KEY.get(key)
    if figure is None:
        return "first"
    return figure.pool or POOL_BY_GROUP.get(figure.group, "median")


def pooled(key: str, values: list):
    """The runs' values of one figure pooled by its rule (numbers only; otherwise the first run's)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    rule = pool_rule(key)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
    if rule == "first" or not numbers:
        return present[0]
    if rule == "mean":
        return sum(present) / len(present)
    if rule == "max":
        return max(present)
    if rule == "sum":
        return sum(present)
    ordered_values = sorted(present)
    middle = len(ordered_values) // 2
    return (
        ordered_values[middle] if len(ordered_values) % 2 else (ordered_values[middle - 1] + ordered_values[middle]) / 2
    )


FIRST = ("status", "name", "error_type", "error")


def ordered(metrics: dict) -> dict:
    """metrics.json's order: status and name, then the figures in table order, then the setting."""
    rank = {key: i for i, key in enumerate([*FIRST, *BY_KEY])}
    return dict(sorted(metrics.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def summary_rows(compressed: bool) -> list:
    return [f for f in FIGURES if f.summary and (compressed or f.group != "compression")]


def report_columns() -> list:
    return [f for f in FIGURES if f.header]


def csv_keys() -> list:
    return [f.key for f in FIGURES if f.csv]


def wandb_summaries() -> dict:
    return {f.key: f.wandb for f in FIGURES if f.wandb}


def unit_of(rows: list) -> str:
    """What the points' throughput counts: tokens where a point trained a language model, else samples."""
    return "tokens" if any(r.get("throughput_unit") == "tokens" for r in rows) else "samples"


# a language model's accuracy is the next token's, and its time-to-target is a perplexity (trainer.target_perplexity)
LANGUAGE_MODEL_WORDS = (
    (r"time to target acc\b", "time to target perplexity"),
    (r"time-to-acc\b", "time-to-ppl"),
    (r"(?<!next-token )\baccuracy\b", "next-token accuracy"),
)


def in_unit(text: str, unit: str) -> str:
    """A label, header or sentence in the task's words: 'samples' becomes the throughput unit ('tokens/s'), and for a
    language model 'accuracy' becomes 'next-token accuracy' and time-to-accuracy a time to target perplexity."""
    if unit == "samples":
        return text
    text = re.sub(r"\bsamples\b", unit, text)
    if unit == "tokens":
        for pattern, words in LANGUAGE_MODEL_WORDS:
            text = re.sub(pattern, words, text)
    return text


def show(figure: Figure, value) -> str:
    """A value formatted for a person (scaled, '-' when absent)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return figure.fmt.format(value * figure.scale if figure.scale != 1 else value)
