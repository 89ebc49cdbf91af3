"""The short table printed at the end of a run: the figures of fastgpu/results/figures.py marked `summary`."""

from fastgpu.results.figures import in_unit, show, summary_rows


def format_summary(metrics: dict, title: str = "") -> str:
    lines, unit = [("status", str(metrics.get("status")))], metrics.get("throughput_unit", "samples")
    for figure in summary_rows(compressed=metrics.get("compression") not in (None, "none")):
        value = metrics.get(figure.key)
        if value is None and figure.key != "time_to_target_s":  # e.g. GPU memory and energy on a CPU run
            continue
        lines.append((in_unit(figure.label, unit), show(figure, value)))
    setting = (
        f"{metrics.get('device_name', '')} x{metrics.get('world_size', 1)} | {metrics.get('precision_mode')}"
        f" | compile={metrics.get('compile')} | channels_last={metrics.get('channels_last')}"
        f" | parallel={metrics.get('parallel')} | {metrics.get('steps')} steps"
    )
    width = max(len(label) for label, _ in lines)
    out = [title or "FastGPU run", setting, "-" * (width + 16)]
    out += [f"{label:<{width}}  {text:>14}" for label, text in lines]
    top = metrics.get("profile_top_ops") or []
    if top:
        out.append("top ops by self time (profiled steps):")
        out += [f"  {op['share']:6.1%}  {op['time_ms']:9.2f} ms  {op['op']}" for op in top[:5]]
    return "\n".join(out)
