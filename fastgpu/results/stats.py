"""Spread for the figures a user acts on: per-interval rates, a bootstrap confidence interval of their median,
and the interval of a speed-up between two settings. Torch-free and seeded: the same inputs give the same
interval, so a report rebuilt from the files says the same thing.

The rates of consecutive log intervals of one run are autocorrelated (load, clocks and allocator state drift), and
runs of one setting differ from each other by more than their intervals do. So a setting's spread comes from a
two-level bootstrap: its runs resampled with replacement, and within each run blocks of consecutive intervals
(a moving-block bootstrap, blocks of n^(1/3) intervals), never intervals one by one. A speed-up's interval is
normal on the log scale around the observed ratio of pooled medians, with the bootstrap's standard error,
corrected for resampling few runs (variance x m / (m - 1) for m runs). With one run per setting only the
within-run part can be measured: such an interval is marked as such, and is too narrow for run-to-run noise.
`tests/test_stats.py` checks the coverage on simulated autocorrelated runs (AR(1) with run offsets): about 95%,
where resampling intervals one by one covers about half the time.
"""

from statistics import NormalDist

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000


def intervals(step_times: list, step_samples: list, every: int) -> tuple:
    """(samples, seconds) of consecutive groups of `every` steps — one throughput reading per log interval;
    a last group shorter than half an interval is merged into the one before."""
    bounds = list(range(0, len(step_times), max(every, 1))) + [len(step_times)]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < every / 2:
        del bounds[-2]
    pairs = [(sum(step_samples[a:b]), sum(step_times[a:b])) for a, b in zip(bounds, bounds[1:])]
    return [n for n, _ in pairs], [s for _, s in pairs]


def _bootstrap(values: np.ndarray, resamples: int, rng) -> np.ndarray:
    """Medians of `values` resampled one by one, as if independent: the old interval, kept for its negative check
    in tests/test_stats.py. Rates of one run are not independent."""
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    return np.median(values[picks], axis=1)


def block_length(count: int) -> int:
    """Intervals per block of the moving-block bootstrap: n^(1/3), the usual rate for a median's variance."""
    return max(1, round(count ** (1 / 3)))


def block_resample(values: np.ndarray, resamples: int, rng) -> np.ndarray:
    """`resamples` moving-block resamples of one run's series (each as long as the series)."""
    count = len(values)
    block = block_length(count)
    starts = rng.integers(0, count - block + 1, size=(resamples, -(-count // block)))
    index = (starts[..., None] + np.arange(block)).reshape(resamples, -1)[:, :count]
    return values[index]


def setting_medians(runs: list, resamples: int, rng) -> np.ndarray:
    """Two-level bootstrap of one setting's pooled median rate: its runs drawn with replacement, then blocks of
    consecutive intervals within each drawn run. `runs`: one list of interval rates per run."""
    runs = [np.asarray(r, dtype=float) for r in runs if len(r)]
    longest = max(len(r) for r in runs)
    within = np.full((len(runs), resamples, longest), np.nan)  # shorter runs padded: nanmedian skips the padding
    for j, run in enumerate(runs):
        within[j, :, : len(run)] = block_resample(run, resamples, rng)
    if len(runs) == 1:
        return np.nanmedian(within[0], axis=1)
    drawn = rng.integers(0, len(runs), size=(resamples, len(runs)))
    picked = within[drawn, np.arange(resamples)[:, None], :]
    return np.nanmedian(picked.reshape(resamples, -1), axis=1)


def _runs(values) -> list:
    """A flat list of rates is one run; a list of lists is one list per run."""
    values = list(values)
    return [list(r) for r in values] if values and isinstance(values[0], (list, tuple, np.ndarray)) else [values]


def median_ci(values: list, level: float = LEVEL, seed: int = 0) -> tuple:
    """(median, low, high) of a setting's rate: the median of its pooled interval rates, with a two-level block
    bootstrap interval (`values`: one run's rates, or one list per run); (median, None, None) under 3 rates."""
    runs = _runs(values)
    pooled = np.asarray([v for r in runs for v in r], dtype=float)
    if len(pooled) == 0:
        return None, None, None
    median = float(np.median(pooled))
    if len(pooled) < 3:
        return median, None, None
    medians = setting_medians(runs, RESAMPLES, np.random.default_rng(seed))
    tail = (1 - level) / 2
    return median, float(np.quantile(medians, tail)), float(np.quantile(medians, 1 - tail))


def cv(values: list):
    """Coefficient of variation (standard deviation over mean), None under 2 values."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / values.mean()) if len(values) >= 2 and values.mean() > 0 else None


def ratio_ci(a: list, b: list, level: float = LEVEL, seed: int = 0) -> tuple:
    """(ratio, low, high): the speed-up of setting `a` over setting `b`, the ratio of their pooled median rates,
    with a 95% interval from the two-level bootstrap (`a`, `b`: one run's rates, or one list per run). Run-to-run
    noise is in the interval only where both settings have two runs or more (`runs_measured`)."""
    a_runs, b_runs = _runs(a), _runs(b)
    a_all = [v for r in a_runs for v in r]
    b_all = [v for r in b_runs for v in r]
    if not a_all or not b_all:
        return None, None, None
    ratio = float(np.median(a_all) / np.median(b_all))
    if len(a_all) < 3 or len(b_all) < 3:
        return ratio, None, None
    rng = np.random.default_rng(seed)
    variance = 0.0
    for runs in (a_runs, b_runs):
        logs = np.log(setting_medians(runs, RESAMPLES, rng))
        m = len(runs)
        variance += logs.var() * (m / (m - 1) if m > 1 else 1.0)
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    half = z * float(np.sqrt(variance))
    return ratio, float(np.exp(np.log(ratio) - half)), float(np.exp(np.log(ratio) + half))


def runs_measured(a: list, b: list) -> bool:
    """Whether a speed-up's interval covers run-to-run noise: both settings measured in two runs or more."""
    return len(_runs(a)) >= 2 and len(_runs(b)) >= 2


def old_ratio_ci(a: list, b: list, level: float = LEVEL, seed: int = 0) -> tuple:
    """The interval FastGPU gave before 2026-11-30: every interval rate resampled one by one, runs pooled. Too
    narrow (it covers about half the time on autocorrelated runs); kept as the negative check of the coverage test."""
    a = np.asarray([v for r in _runs(a) for v in r], dtype=float)
    b = np.asarray([v for r in _runs(b) for v in r], dtype=float)
    rng = np.random.default_rng(seed)
    ratios = _bootstrap(a, RESAMPLES, rng) / _bootstrap(b, RESAMPLES, rng)
    tail = (1 - level) / 2
    return float(np.median(a) / np.median(b)), float(np.quantile(ratios, tail)), float(np.quantile(ratios, 1 - tail))


def paired_ratio_ci(ratios: list, level: float = LEVEL) -> tuple:
    """(geometric mean, low, high) of per-round ratios of two settings alternated in one process (+experiment=ab):
    a t-interval on the log ratios (rounds are independent pairs) around their mean."""
    logs = np.log(np.asarray(ratios, dtype=float))
    if len(logs) < 2:
        return (float(np.exp(logs[0])) if len(logs) else None), None, None
    from math import sqrt

    half = _t_quantile(1 - (1 - level) / 2, len(logs) - 1) * float(logs.std(ddof=1)) / sqrt(len(logs))
    centre = float(logs.mean())
    return float(np.exp(centre)), float(np.exp(centre - half)), float(np.exp(centre + half))


def _t_quantile(p: float, df: int) -> float:
    """Student's t quantile, by bisection on its CDF (no scipy): enough for a report's interval."""
    from math import lgamma, pi

    def pdf(t):
        return np.exp(lgamma((df + 1) / 2) - lgamma(df / 2)) / np.sqrt(df * pi) * (1 + t * t / df) ** (-(df + 1) / 2)

    grid = np.linspace(0, 200, 400001)
    density = pdf(grid)
    cdf = 0.5 + np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2) * (grid[1] - grid[0])])
    return float(grid[np.searchsorted(cdf, p)])
