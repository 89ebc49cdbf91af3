"""Spread for the figures a user acts on: per-interval rates, a bootstrap confidence interval of their median,
and the interval of a speed-up between two points. Torch-free and seeded: the same inputs give the same
interval, so a report rebuilt from the files says the same thing."""

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
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    return np.median(values[picks], axis=1)


def median_ci(values: list, level: float = LEVEL, seed: int = 0) -> tuple:
    """(median, low, high): a percentile-bootstrap interval of the median; (median, None, None) under 3 values."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return None, None, None
    median = float(np.median(values))
    if len(values) < 3:
        return median, None, None
    medians = _bootstrap(values, RESAMPLES, np.random.default_rng(seed))
    tail = (1 - level) / 2
    return median, float(np.quantile(medians, tail)), float(np.quantile(medians, 1 - tail))


def cv(values: list):
    """Coefficient of variation (standard deviation over mean), None under 2 values."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / values.mean()) if len(values) >= 2 and values.mean() > 0 else None


def ratio_ci(a: list, b: list, level: float = LEVEL, seed: int = 0) -> tuple:
    """(median(a) / median(b), low, high): the speed-up of rates `a` over rates `b`, each resampled on its own."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        return None, None, None
    ratio = float(np.median(a) / np.median(b))
    if len(a) < 3 or len(b) < 3:
        return ratio, None, None
    rng = np.random.default_rng(seed)
    ratios = _bootstrap(a, RESAMPLES, rng) / _bootstrap(b, RESAMPLES, rng)
    tail = (1 - level) / 2
    return ratio, float(np.quantile(ratios, tail)), float(np.quantile(ratios, 1 - tail))
