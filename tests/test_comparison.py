"""A recommendation you can trust: spread, a gain that must beat the noise, names from what ran, timing
isolation, hardware kept apart, plots that read at a glance."""

import itertools
import json

import matplotlib
import numpy as np
import pytest
import yaml
from conftest import compose_cfg, offline_runs, run_cli

from fastgpu.job.launch import launch
from fastgpu.results.plots import curves_figure, throughput_figure
from fastgpu.results.report import build_report, collect_points
from fastgpu.results.store import HistoryWriter, read_metrics, write_metrics

matplotlib.use("Agg")
QUICK = ["trainer.progress_bar=false", "inference.benchmark=false", "export=[]"]  # no time spent after training


def write_point(sweep_dir, number, name, rates, accuracy=0.95, overrides=None, **extra):
    """A finished sweep point as FastGPU writes it: .hydra/overrides.yaml and metrics.json."""
    point = sweep_dir / str(number)
    (point / ".hydra").mkdir(parents=True)
    (point / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides or [f"+point={name}"]))
    metrics = {
        "status": "ok",
        "name": name,
        "throughput": float(np.median(rates)),
        "throughput_intervals": list(rates),
        "throughput_cv": float(np.std(rates, ddof=1) / np.mean(rates)),
        "accuracy": accuracy,
        "precision_mode": "fp32",
        "compile": False,
        "channels_last": False,
        "peak_rss_mb": 900.0,
        "compression": "none",
        "device": "cuda" if "NVIDIA" in extra.get("device_name", "") else "cpu",
        **extra,
    }
    write_metrics(point, metrics)
    history = HistoryWriter(point)
    for step in (1, 10, 20):
        history.write({"step": step, "train/loss": 2.0 / step})
    history.write({"step": 20, "val/accuracy": accuracy})
    history.close()


def noisy_rates(mean, n=16, noise=0.05, seed=0):
    return list(mean * (1 + noise * np.random.default_rng(seed).standard_normal(n)))


@pytest.mark.parametrize("second_mean", [1000.0, 1010.0])  # the same setting twice; a 1% "gain" inside 5% noise
def test_identical_settings_never_recommend_a_change(tmp_path, second_mean):
    write_point(tmp_path, 0, "fp32", noisy_rates(1000.0, seed=1))
    write_point(tmp_path, 1, "fp32-cl", noisy_rates(second_mean, seed=2))
    report = build_report(tmp_path, ["+point=fp32"])
    assert report["recommendation"].startswith("Recommendation: keep the baseline 'fp32': no setting is reliably")
    assert "best: 'fp32-cl'" in report["recommendation"]
    assert "noisy" not in report["recommendation"]  # 5% noise is not noisy


def test_noisy_timings_are_called_noisy(tmp_path):
    write_point(tmp_path, 0, "fp32", noisy_rates(1000.0, noise=0.4, seed=1))
    write_point(tmp_path, 1, "bf16", noisy_rates(1000.0, seed=2))
    assert "Caution: noisy timings — 'fp32' (CV " in build_report(tmp_path)["recommendation"]


def test_a_reliable_gain_is_recommended_with_its_interval_and_its_memory_cost(tmp_path):
    write_point(tmp_path, 0, "fp32", noisy_rates(1000.0, seed=1))
    # one run each, on a CPU: a gain must clear the run-to-run noise floor measured there (1.7x)
    write_point(tmp_path, 1, "bf16", noisy_rates(2500.0, seed=2), peak_rss_mb=1800.0)
    rec = build_report(tmp_path, ["+point=fp32"])["recommendation"]
    assert rec.startswith("Recommendation: 'bf16': ") and "peak memory 2.00x — much more memory" in rec
    ratio = float(rec.split("': ")[1].split("x")[0])
    low, high = (float(v) for v in rec.split("[")[1].split("]")[0].split(", "))
    assert 1.7 < low < ratio < high and ratio == pytest.approx(2.5, rel=0.05)


def test_repeats_that_differ_only_in_seed_are_pooled(tmp_path):
    settings = [("fp32", 0, 1000.0), ("fp32", 1, 1000.0), ("bf16", 0, 1500.0), ("bf16", 1, 1500.0)]
    for i, (precision, seed, mean) in enumerate(settings):
        overrides = [f"precision={precision}", f"trainer.seed={seed}"]
        write_point(
            tmp_path,
            i,
            f"{precision}-seed{seed}",
            noisy_rates(mean, n=8, seed=i),
            overrides=overrides,
            accuracy=0.9 + 0.01 * seed,
        )
    report = build_report(tmp_path, ["precision=fp32"])
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) == {"fp32", "bf16"} and rows["bf16"]["repeats"] == 2
    assert rows["bf16"]["accuracy"] == pytest.approx(0.905)  # the mean of the repeats
    assert rows["bf16"]["speedup_low"] > 1.3 and report["recommendation"].startswith("Recommendation: 'bf16'")
    # the baseline is 1x by definition: no interval of it against itself (two runs would make one look noisy)
    assert rows["fp32"]["speedup"] == 1.0 and rows["fp32"]["speedup_low"] is None


def test_points_from_different_gpus_are_compared_only_within_their_gpu(tmp_path):
    write_point(tmp_path, 0, "fp32", noisy_rates(1000.0, seed=1), device_name="NVIDIA H200")
    write_point(tmp_path, 1, "bf16", noisy_rates(3000.0, seed=2), device_name="NVIDIA H200")
    write_point(tmp_path, 2, "fp32", noisy_rates(500.0, seed=3), device_name="NVIDIA A100")
    report = build_report(tmp_path)
    lines = report["recommendation"].splitlines()
    # one run per setting, and no run-to-run noise floor measured on GPUs: a gain needs repeats before a verdict
    assert lines[0].startswith("On NVIDIA H200: Recommendation: keep the baseline 'fp32' for now: 'bf16' looks faster")
    assert lines[1].startswith("On NVIDIA A100:")
    text = (tmp_path / "report.md").read_text()
    assert "## On NVIDIA H200" in text and "## On NVIDIA A100" in text
    assert sum(r["baseline"] for r in report["rows"]) == 2  # one baseline per device


def test_points_timed_together_are_flagged(tmp_path):
    common = {"host": "node1", "device_name": "cpu"}
    write_point(
        tmp_path,
        0,
        "fp32",
        noisy_rates(1000.0),
        started_at="2026-11-26T10:00:00",
        ended_at="2026-11-26T10:05:00",
        **common,
    )
    write_point(
        tmp_path,
        1,
        "bf16",
        noisy_rates(1000.0),
        started_at="2026-11-26T10:04:00",
        ended_at="2026-11-26T10:09:00",
        **common,
    )
    write_point(
        tmp_path,
        2,
        "fp16",
        noisy_rates(1000.0),
        started_at="2026-11-26T10:10:00",
        ended_at="2026-11-26T10:12:00",
        **common,
    )
    report = build_report(tmp_path)
    assert [(a["name"], b["name"]) for a, b in report["timed_together"]] == [("fp32", "bf16")]
    assert (
        "Caution: points timed at the same time on one machine ('fp32' and 'bf16' on node1)" in report["recommendation"]
    )


# steps whose time is mostly a host sleep (an mlp step is ~1 ms): a planted slowdown that load cannot fake; long
# sleeps, so that a loaded machine's late wake-ups (a few ms) stay small beside them
SLEEPY = ("model=mlp", "trainer.max_steps=60", "trainer.log_every_n_steps=5", "trainer.warmup_steps=5")


@pytest.mark.slow
def test_a_planted_15_percent_slowdown_is_detected_with_repeats_in_shuffled_rounds(tmp_path):
    """trainer.repeats=3: each setting three runs in shuffled rounds; the speed-up's interval is over runs."""
    sweep = tmp_path / "s"
    result = run_cli(
        "-m", "trainer.sleep_ms=100,115", "trainer.repeats=3", *SLEEPY, *QUICK, f"hydra.sweep.dir={sweep}",
        env={"WANDB_MODE": "disabled"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    order = [read_metrics(sweep / str(i))["name"] for i in range(6)]
    assert [name.rsplit("-r", 1)[1] for name in order] == ["0", "0", "1", "1", "2", "2"]  # every setting per round
    rows = {r["name"]: r for r in build_report(sweep)["rows"]}
    assert {r["repeats"] for r in rows.values()} == {3} and rows["sleep_ms115"]["runs_measured"]
    assert rows["sleep_ms115"]["speedup_high"] < 1  # 115 ms against 100 ms a step: ~13% fewer samples/s, found
    assert "keep the baseline" in result.stdout and "Intervals: Welch t" in (sweep / "report.md").read_text()


def test_throughput_counts_the_samples_actually_trained(tmp_path, quiet_wandb):
    cfg = compose_cfg(
        "data.drop_last=false",
        "trainer.epochs=2",
        "trainer.warmup_steps=5",
        "trainer.progress_bar=false",
        "export=[]",
        "inference.benchmark=false",
    )
    metrics = launch(cfg, tmp_path)
    assert metrics["steps"] == 2 * 23  # 22 full batches of 64 and one of 29, twice
    assert metrics["timed_samples"] == 2 * 1437 - 5 * 64  # not 41 x 64
    assert sum(metrics["throughput_intervals"]) / len(metrics["throughput_intervals"]) < 1.2 * metrics["throughput"]


@pytest.mark.slow
def test_a_fallback_point_is_named_by_what_ran_and_resume_leaves_ok_points_untouched(tmp_path):
    sweep = tmp_path / "s"
    common = [
        "trainer.max_steps=20",
        *QUICK,
        f"hydra.sweep.dir={sweep}",
    ]
    first = run_cli("-m", "precision=fp32,tf32", *common, env={"WANDB_MODE": "offline"})
    assert first.returncode == 1 and read_metrics(sweep / "1")["status"] == "failed"  # no tf32 on a CPU
    kept = {f: (sweep / "0" / f).read_bytes() for f in ["metrics.json", ".hydra/overrides.yaml", ".hydra/config.yaml"]}
    again = run_cli(
        "-m", "precision=fp32,tf32", "precision.fallback=fp32", "+resume=true", *common, env={"WANDB_MODE": "offline"}
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert all((sweep / "0" / f).read_bytes() == kept[f] for f in kept)  # the ok point, byte for byte
    ran = read_metrics(sweep / "1")
    assert ran["precision_mode"] == "fp32" and ran["name"] == "fp32"
    row = next(r for r in collect_points(sweep) if r["point"] == 1)
    assert row["metrics"]["name"] == "fp32"
    (run,) = [r for r in offline_runs(sweep / "1") if r["summary"].get("status") == "ok"]
    assert run["name"] == "fp32" and "precision=fp32" in run["tags"] and "precision=tf32" not in run["tags"]


@pytest.mark.slow
def test_the_local_launcher_times_one_point_at_a_time(tmp_path):
    sweep = tmp_path / "s"
    result = run_cli(
        "-m",
        "hydra/launcher=local",
        "model.width=8,16",
        "trainer.max_steps=30",
        *QUICK,
        f"hydra.sweep.dir={sweep}",
        env={"WANDB_MODE": "disabled"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = read_metrics(sweep / "0"), read_metrics(sweep / "1")
    assert a["status"] == b["status"] == "ok"
    assert list((sweep / ".submitit").rglob("*_result.pkl")), "each point ran as a submitit job"
    assert a["ended_at"] <= b["started_at"] or b["ended_at"] <= a["started_at"]
    assert "timed at the same time" not in result.stdout and (sweep / "report.md").exists()


def _text_boxes(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts]


def test_plots_labels_never_overlap_and_a_one_point_front_draws_no_legend_entry(tmp_path):
    for i, (name, speed, acc) in enumerate(
        [("fp32", 1000, 0.95), ("fp32-cl", 1003, 0.951), ("bf16", 1002, 0.950), ("bf16-cl", 1500, 0.96)]
    ):
        write_point(tmp_path, i, name, noisy_rates(speed, seed=i), accuracy=acc)
    rows = build_report(tmp_path)["rows"]
    fig = throughput_figure(rows, "accuracy", "validation accuracy")
    boxes = _text_boxes(fig)
    legend = {text.split(". ", 1)[1] for text, _ in boxes if ". " in text}
    assert legend == {"fp32 (baseline)", "fp32-cl", "bf16", "bf16-cl"}  # every point named, in the legend
    for (a_text, a), (b_text, b) in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a_text, b_text)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "Pareto front" not in labels  # bf16-cl beats every other point: a front of one is no front
    curves = curves_figure(collect_points(tmp_path))
    assert all(ax.lines and ax.get_legend() is not None for ax in curves.axes)  # a legend on every panel


def test_the_throughput_axis_mentions_interval_bars_only_when_it_draws_them(tmp_path):
    write_point(tmp_path, 0, "fp32", noisy_rates(1000.0, seed=1))
    write_point(tmp_path, 1, "bf16", noisy_rates(1200.0, seed=2))
    rows = build_report(tmp_path)["rows"]
    assert all(r["throughput_ci_low"] is None for r in rows)  # one run each, no interval written: nothing to draw
    bare = throughput_figure(rows, "accuracy", "validation accuracy").axes[0]
    assert not bare.containers and "bars" not in bare.get_xlabel()
    rows[0].update(throughput_ci_low=0.9 * rows[0]["throughput"], throughput_ci_high=1.1 * rows[0]["throughput"])
    drawn = throughput_figure(rows, "accuracy", "validation accuracy").axes[0]
    assert len(drawn.containers) == 1 and "bars: 95% interval" in drawn.get_xlabel()


def test_the_accuracy_axis_shows_the_tolerance_every_point_and_identical_curves_apart(tmp_path):
    for i, (name, speed, acc) in enumerate([("fp32", 1000, 0.990), ("bf16", 1000, 0.990), ("cl", 1400, 0.993)]):
        write_point(tmp_path, i, name, noisy_rates(speed, seed=0), accuracy=acc)  # fp32 and bf16 coincide
    rows = build_report(tmp_path)["rows"]
    fig = throughput_figure(rows, "accuracy", "validation accuracy", tolerance=0.01)
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert high - low >= 0.03 and low < 0.98  # 0.3 points do not fill the height; the tolerance line is on it
    assert "baseline - tolerance (1 pts)" in ax.get_legend_handles_labels()[1]
    numbers = [t for t in ax.texts if t.get_text() in ("1", "2", "3")]
    boxes = _text_boxes(fig)  # the two coinciding points' numbers are both readable
    assert len(numbers) == 3 and not [(a, b) for (a, x), (b, y) in itertools.combinations(boxes, 2) if x.overlaps(y)]
    for i in range(3):  # the same loss history three times
        history = [{"step": s, "train/loss": 1.0 / s} for s in (1, 2, 3)]
        (tmp_path / str(i) / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    curves = curves_figure(collect_points(tmp_path)).axes[0]
    assert len({(line.get_linestyle(), line.get_marker()) for line in curves.lines}) == 3
