"""Run-level statistics: a speed-up's interval holds at 2, 3 and 5 runs (coverage on simulated autocorrelated runs,
where a normal interval fails at 2), "reliably faster" holds its family-wise error over many settings (Holm, where
the uncorrected rule fails), the stated repeat count finds the gain it is stated for, repeats run in shuffled rounds
and pool by setting with every figure by its rule, and a single run's gain counts as reliable only above the
device's run-to-run noise floor."""

import re

import numpy as np
import pytest

from fastgpu.results.compare import pool_repeats, recommend
from fastgpu.results.report import build_rows, correct_for_comparisons, find_baseline, power_note
from fastgpu.results.stats import (
    ALPHA,
    RUN_TO_RUN,
    WITHIN_RUN,
    Run,
    compare,
    paired_ratio_ci,
    setting_ci,
    z_ratio_ci,
)
from fastgpu.sweep.repeats import rounds

TRUE_RATIO = 1.15


def _ar1(rng, count: int, phi: float, sigma: float) -> np.ndarray:
    noise = rng.normal(0, sigma, count)
    series = np.empty(count)
    series[0] = noise[0] / np.sqrt(1 - phi**2)
    for i in range(1, count):
        series[i] = phi * series[i - 1] + noise[i]
    return series


def _rates(rng, rate: float, intervals: int = 20, run_sd: float = 0.05) -> list:
    """One run's interval rates: a run-to-run offset (sd `run_sd`) and AR(1) drift within the run (phi 0.7)."""
    return list(rate * np.exp(rng.normal(0, run_sd) + _ar1(rng, intervals, phi=0.7, sigma=0.03)))


def _setting(rng, rate: float, runs: int, run_sd: float = 0.05) -> list:
    """`runs` runs of one setting, each interval the same work (its seconds 64 / rate)."""
    return [Run.of(r, [64 / x for x in r]) for r in (_rates(rng, rate, run_sd=run_sd) for _ in range(runs))]


def _coverage(method, runs: int, comparisons: int = 600) -> float:
    rng = np.random.default_rng(2026)
    covered = 0
    for _ in range(comparisons):
        _, low, high = method(_setting(rng, 1000 * TRUE_RATIO, runs), _setting(rng, 1000, runs))
        covered += low <= TRUE_RATIO <= high
    return covered / comparisons


@pytest.mark.parametrize("runs", [2, 3, 5])
def test_the_welch_interval_covers_the_true_ratio_at_few_runs(runs):
    def welch(a, b):
        c = compare(a, b)
        assert c.covers == RUN_TO_RUN
        return c.ratio, c.low, c.high

    assert 0.93 <= _coverage(welch, runs) <= 0.99


def test_a_normal_interval_at_two_runs_covers_too_seldom():
    assert _coverage(z_ratio_ci, 2) < 0.90  # the old z = 1.96 with two runs a setting: about 0.83


def _point(index, overrides, rates, device="cpu", accuracy=0.9, **metrics):
    metrics = {
        "status": "ok",
        "name": "-".join(o.split("=")[1] for o in overrides),
        "throughput": Run.of(rates).throughput,
        "throughput_intervals": list(rates),
        "accuracy": accuracy,
        "device_name": device,
        "device": "cpu",
        "compression": "none",
        **metrics,
    }
    return {"point": index, "overrides": overrides, "metrics": metrics, "history": [], "dir": f"/sweep/{index}"}


def _sweep(rng, gains: list, runs: int, run_sd: float = 0.06, min_gain: float = 0.03) -> list:
    """Rows of one simulated sweep: a baseline and one setting per gain (1.0: identical), `runs` rounds each."""
    points = []
    for r in range(runs):
        for k, gain in enumerate([1.0, *gains]):
            overrides = [f"model.width={k}", f"trainer.repeat={r}"]
            points.append(_point(len(points), overrides, _rates(rng, 1000 * gain, run_sd=run_sd)))
    pooled = pool_repeats(points)
    baseline = find_baseline(pooled, ["model.width=0"])
    rows = build_rows(pooled, baseline, min_gain)
    correct_for_comparisons(rows, min_gain)
    return pooled, rows


def test_twelve_identical_settings_are_seldom_called_faster_after_holm_and_often_without_it():
    """report.min_gain=0, the hardest case: any gain at all counts."""
    rng = np.random.default_rng(7)
    corrected = uncorrected = 0
    for _ in range(200):
        _, rows = _sweep(rng, [1.0] * 12, runs=3, min_gain=0.0)
        compared = [r for r in rows if not r["baseline"]]
        assert all(r["comparisons"] == 12 for r in compared)
        corrected += any(r["reliably_faster"] for r in compared)
        uncorrected += any(r["speedup_p"] <= ALPHA for r in compared)  # each tested on its own
    assert corrected / 200 <= 0.05
    assert uncorrected / 200 > 0.05  # the negative check: the rule without the correction


def test_the_stated_repeat_count_finds_a_20_percent_gain_in_most_sweeps():
    rng = np.random.default_rng(11)
    pooled, rows = _sweep(rng, [1.2, 1.0, 1.0], runs=3, run_sd=0.06)
    note = power_note(pooled, rows, 0.03)
    stated = int(re.search(r"20%: about (\d+)", note).group(1))  # at the noise this sweep measured
    found = sum(
        next(r for r in _sweep(rng, [1.2, 1.0, 1.0], runs=stated)[1] if r["name"].startswith("1"))["reliably_faster"]
        for _ in range(200)
    )
    assert found / 200 >= 0.80
    detectable = [r["detectable_speedup"] for r in rows if not r["baseline"]]
    assert all(1.03 < d < 2.0 for d in detectable)  # each comparison reports what it could have seen


def test_a_single_runs_interval_is_marked_as_within_run_only():
    rng = np.random.default_rng(0)
    one, three = _setting(rng, 1000, 1), _setting(rng, 1000, 3)
    assert compare(one, three).covers == WITHIN_RUN and compare(three, three).covers == RUN_TO_RUN
    rate, low, high, covers = setting_ci(three)
    assert low < rate < high and covers == RUN_TO_RUN
    assert rate == pytest.approx(np.exp(np.mean(np.log([run.throughput for run in three]))))
    assert setting_ci(one)[3] == WITHIN_RUN


def test_repeats_run_in_rounds_each_shuffled_by_its_seed_or_alternating():
    grid = [["precision=fp32"], ["precision=bf16"], ["channels_last=true"]]
    jobs = rounds(grid, 3, "shuffle", seed=0)
    assert len(jobs) == 9 and jobs == rounds(grid, 3, "shuffle", seed=0)  # the same order every time
    for r in range(3):
        one_round = jobs[3 * r : 3 * r + 3]
        assert sorted(j[0] for j in one_round) == sorted(g[0] for g in grid)  # every point once per round
        assert all(j[-1] == f"trainer.repeat={r}" for j in one_round)
    assert len({tuple(j[0] for j in jobs[3 * r : 3 * r + 3]) for r in range(3)}) > 1  # the orders differ
    ab = rounds(grid[:2], 4, "alternate")
    assert [j[0].split("=")[1] for j in ab] == ["fp32", "bf16", "bf16", "fp32", "fp32", "bf16", "bf16", "fp32"]
    assert rounds(grid, 1) == grid


def test_runs_of_a_setting_pool_into_one_row_with_every_run():
    points = [
        _point(i, [f"precision={p}", f"trainer.repeat={r}"], [100.0 + i, 101.0 + i, 99.0 + i])
        for i, (r, p) in enumerate([(0, "fp32"), (0, "bf16"), (1, "bf16"), (1, "fp32")])
    ]
    pooled = pool_repeats(points)
    assert [p["metrics"]["repeats"] for p in pooled] == [2, 2]
    assert pooled[0]["metrics"]["run_intervals"] == [[100.0, 101.0, 99.0], [103.0, 104.0, 102.0]]
    assert pooled[0]["metrics"]["throughput_ci_covers"] == RUN_TO_RUN
    # halving's runs: a setting's stopped_early probes pool with each other, apart from its runs to the end
    marked = [{**p, "metrics": {**p["metrics"], "status": "stopped_early"}} for p in points]
    finished = [{**p, "point": p["point"] + 4} for p in (points[0], points[3])]
    pooled = pool_repeats(marked + finished)
    assert [(p["metrics"]["status"], p["metrics"]["name"], p["metrics"].get("repeats")) for p in pooled] == [
        ("stopped_early", "fp32-0", 2),
        ("stopped_early", "bf16-0", 2),
        ("ok", "fp32-0", 2),
    ]


def _row(name, speedup, low, high, runs_measured, baseline=False, device="cpu"):
    return {
        "reliably_faster": runs_measured and low > 1.03,  # as the report's Holm step sets it for one comparison
        "name": name,
        "status": "ok",
        "throughput": 1000 * speedup,
        "baseline": baseline,
        "accuracy": 0.9,
        "accuracy_delta": 0.0,
        "compression": "none",
        "speedup": speedup,
        "speedup_low": low,
        "speedup_high": high,
        "runs_measured": runs_measured,
        "memory_ratio": None,
        "energy_ratio": None,
        "device": device,
    }


def test_a_pooled_row_pools_every_figure_so_identical_settings_compare_as_one():
    """Two identical settings, 3 runs each whose memory and step times differ run to run (the same values, in
    another order): every ratio is 1. Before, memory and step percentiles came from each setting's first run."""
    per_run = [(900.0, 10.0, 14.0), (1040.0, 11.5, 13.0), (980.0, 10.4, 15.5)]
    points = []
    for r in range(3):
        for k, order in enumerate((per_run, per_run[::-1])):
            memory, p50, p90 = order[r]
            extra = dict(peak_rss_mb=memory, step_time_p50_ms=p50, step_time_p90_ms=p90, accuracy=0.8 + 0.01 * r)
            points.append(
                _point(len(points), [f"model.width={k}", f"trainer.repeat={r}"], [100.0, 101.0, 99.0], **extra)
            )
    pooled = pool_repeats(points)
    rows = build_rows(pooled, find_baseline(pooled, ["model.width=0"]))
    other = next(r for r in rows if not r["baseline"])
    assert other["memory_ratio"] == 1.0 and other["peak_memory_mb"] == 1040.0  # the largest run's peak
    base = next(r for r in rows if r["baseline"])
    assert other["step_time_p50_ms"] == base["step_time_p50_ms"] == 10.4  # the median run's
    assert other["step_time_p90_ms"] == base["step_time_p90_ms"] == 14.0
    assert other["accuracy"] == pytest.approx(0.81) and other["speedup"] == pytest.approx(1.0)


def test_a_single_runs_gain_needs_repeats_unless_it_clears_the_devices_noise_floor():
    base = _row("base", 1.0, 0.9, 1.1, False, baseline=True)
    modest = _row("bf16", 1.2, 1.1, 1.3, False)
    text = recommend([base, modest], tolerance=0.01, device_floor=None)
    assert "keep the baseline 'base' for now: 'bf16' looks faster" in text and "trainer.repeats=3" in text
    assert recommend([base, _row("bf16", 1.2, 1.1, 1.3, True)], tolerance=0.01).startswith("Recommendation: 'bf16'")
    assert "for now" in recommend([base, _row("bf16", 2.0, 1.6, 2.4, False)], tolerance=0.01)  # under 1.7x
    large = _row("bf16", 2.5, 2.0, 3.0, False)  # above the CPU's measured floor of 1.7x
    assert recommend([base, large], tolerance=0.01).startswith("Recommendation: 'bf16'")
    on_gpu = [_row("base", 1.0, 0.9, 1.1, False, True, "cuda"), _row("bf16", 2.0, 1.6, 2.4, False, device="cuda")]
    assert "for now" in recommend(on_gpu, tolerance=0.01)  # no floor measured on GPUs: repeats needed
    assert recommend(on_gpu, tolerance=0.01, device_floor=0.1).startswith("Recommendation: 'bf16'")


def test_paired_rounds_give_a_t_interval_around_their_geometric_mean():
    ratio, low, high = paired_ratio_ci([1.0, 1.1, 1.2, 1.1])
    logs = np.log([1.0, 1.1, 1.2, 1.1])
    assert ratio == pytest.approx(np.exp(logs.mean()))
    half = 3.182 * logs.std(ddof=1) / 2  # t(0.975, 3) = 3.182
    assert (low, high) == pytest.approx((np.exp(logs.mean() - half), np.exp(logs.mean() + half)), rel=1e-3)


def test_repeats_outside_a_grid_sweep_or_halving_are_one_line_and_write_nothing(tmp_path, cli_in_process):
    single = cli_in_process("trainer.repeats=3", cwd=tmp_path)
    assert single.returncode == 2 and "repeats the points of a sweep; add -m" in single.stderr
    search = cli_in_process("-m", "hydra/sweeper=max_batch", "trainer.repeats=3", "precision=fp32,bf16", cwd=tmp_path)
    assert search.returncode == 2 and "hydra/sweeper=max_batch decides by single runs" in search.stderr
    assert list(tmp_path.iterdir()) == []


def test_ab_drops_a_warm_up_round_and_compares_the_paired_rounds(tmp_path):
    """+experiment=ab: A and B once first in the shared process (its one-time costs), then 2 ABBA rounds; the report
    pairs the rounds and leaves the warm-up runs out."""
    from conftest import run_cli

    sweep = tmp_path / "ab"
    short = ("trainer.repeats=2", "trainer.max_steps=8", "trainer.warmup_steps=2", "trainer.log_every_n_steps=2")
    result = run_cli("-m", "+experiment=ab", "precision=fp32,bf16", *short, f"hydra.sweep.dir={sweep}",
                     env={"WANDB_MODE": "disabled"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    overrides = [(sweep / str(i) / ".hydra" / "overrides.yaml").read_text() for i in range(6)]
    assert ["warmup_round=true" in o for o in overrides] == [True, True, False, False, False, False]
    report = (sweep / "report.md").read_text()
    assert "Warm-up round: 2 runs trained first in the same process" in report
    assert "Paired rounds in one process" in report and "(t-interval over 2 rounds)" in report
    rows = {r["name"]: r for r in build_report_rows(sweep)}
    assert rows["bf16"]["speedup_covers"] == RUN_TO_RUN and len(rows["bf16"]["paired_ratios"]) == 2
    assert rows["fp32"]["repeats"] == 2  # the two measured rounds, not the warm-up run


def build_report_rows(sweep):
    from fastgpu.results.report import build_report

    return build_report(sweep)["rows"]
