"""Run-level statistics: a speed-up's interval covers run-to-run noise (coverage on simulated autocorrelated runs,
where the old one-by-one bootstrap fails), repeats run in shuffled rounds and are pooled by setting, and a single
run's gain counts as reliable only above the device's run-to-run noise floor."""

import numpy as np
import pytest

from fastgpu.results.compare import pool_repeats, recommend
from fastgpu.results.stats import median_ci, old_ratio_ci, paired_ratio_ci, ratio_ci, runs_measured
from fastgpu.sweep.repeats import rounds

TRUE_RATIO = 1.15


def _ar1(rng, count: int, phi: float, sigma: float) -> np.ndarray:
    noise = rng.normal(0, sigma, count)
    series = np.empty(count)
    series[0] = noise[0] / np.sqrt(1 - phi**2)
    for i in range(1, count):
        series[i] = phi * series[i - 1] + noise[i]
    return series


def _setting(rng, rate: float, runs: int, intervals: int = 20) -> list:
    """Interval rates of `runs` runs: a run-to-run offset (sd 5%) and AR(1) drift within each run (phi 0.7)."""
    return [list(rate * np.exp(rng.normal(0, 0.05) + _ar1(rng, intervals, phi=0.7, sigma=0.03))) for _ in range(runs)]


def _coverage(method, comparisons: int = 500, runs: int = 3) -> float:
    rng = np.random.default_rng(2026)
    covered = 0
    for seed in range(comparisons):
        fast, base = _setting(rng, 1000 * TRUE_RATIO, runs), _setting(rng, 1000, runs)
        _, low, high = method(fast, base, seed=seed)
        covered += low <= TRUE_RATIO <= high
    return covered / comparisons


def test_the_two_level_interval_covers_the_true_ratio_and_the_old_one_does_not():
    assert 0.90 <= _coverage(ratio_ci) <= 0.98  # 0.94
    assert _coverage(old_ratio_ci) < 0.80  # intervals resampled one by one, runs pooled: 45% (0.454)


def test_a_single_runs_interval_is_marked_as_within_run_only():
    rng = np.random.default_rng(0)
    one, three = _setting(rng, 1000, 1), _setting(rng, 1000, 3)
    assert not runs_measured(one[0], three) and runs_measured(three, three)
    median, low, high = median_ci(three)
    assert low < median < high and median == pytest.approx(np.median(np.concatenate(three)))


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


def _point(index, overrides, rates, device="cpu", accuracy=0.9):
    metrics = {
        "status": "ok",
        "name": "-".join(o.split("=")[1] for o in overrides),
        "throughput": float(np.median(rates)),
        "throughput_intervals": rates,
        "accuracy": accuracy,
        "device_name": device,
    }
    return {"point": index, "overrides": overrides, "metrics": metrics, "history": []}


def test_runs_of_a_setting_pool_into_one_row_with_every_run():
    points = [
        _point(i, [f"precision={p}", f"trainer.repeat={r}"], [100.0 + i, 101.0 + i, 99.0 + i])
        for i, (r, p) in enumerate([(0, "fp32"), (0, "bf16"), (1, "bf16"), (1, "fp32")])
    ]
    pooled = pool_repeats(points)
    assert [p["metrics"]["repeats"] for p in pooled] == [2, 2]
    assert pooled[0]["metrics"]["run_intervals"] == [[100.0, 101.0, 99.0], [103.0, 104.0, 102.0]]
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
