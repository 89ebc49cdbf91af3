"""Spread for the figures a user acts on. Torch-free and seeded: a report rebuilt from the files says the same thing.

A run's throughput is its work over its timed window: the units of its steady log intervals over their seconds, so
a stall in any interval slows it as much as it slowed training. Its *within-run* interval resamples blocks of
consecutive intervals (a moving-block bootstrap, blocks of n^(1/3) intervals: consecutive intervals are
autocorrelated). That covers the noise inside one run only; runs of one setting differ from each other by more.

Settings are compared on their runs: each run gives one figure, the log of its throughput. A setting's throughput is
the geometric mean of its runs'. A speed-up of setting a over b is exp(mean log a - mean log b), with a Welch t
interval (Satterthwaite degrees of freedom) once both settings have two runs or more: it holds at 2 runs, where a
normal interval does not (tests/test_stats.py: coverage at 2, 3 and 5 runs). With one run of either, only the
within-run bootstrap is possible, and the interval says so.

"Reliably faster" is a one-sided test that the speed-up exceeds 1 + min_gain, at the level of the lower end of a 95%
interval, controlled over all the settings compared with the baseline (Holm's step-down). The detectable effect of a
comparison, and the runs a given gain needs, come from the noncentral t at 80% power and Holm's strictest level.
"""

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np


def _special():
    """scipy.special, imported where a t or chi-square quantile is needed (0.1 s: not on a run's way to its start)."""
    import scipy.special

    return scipy.special


LEVEL = 0.95
ALPHA = (1 - LEVEL) / 2  # one-sided: "above the threshold" means the lower end of a two-sided 95% interval is
POWER = 0.8
RESAMPLES = 2000
WITHIN_RUN, RUN_TO_RUN = "within-run 95%", "run-to-run 95%"  # what an interval covers, as the files label it


def intervals(step_times: list, step_samples: list, every: int) -> tuple:
    """(samples, seconds) of consecutive groups of `every` steps — one throughput reading per log interval;
    a last group shorter than half an interval is merged into the one before."""
    bounds = list(range(0, len(step_times), max(every, 1))) + [len(step_times)]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < every / 2:
        del bounds[-2]
    pairs = [(sum(step_samples[a:b]), sum(step_times[a:b])) for a, b in zip(bounds, bounds[1:])]
    return [n for n, _ in pairs], [s for _, s in pairs]


# --- one run ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One run's steady log intervals: each one's rate (units/s) and seconds."""

    rates: tuple
    seconds: tuple

    @classmethod
    def of(cls, rates, seconds=None) -> "Run":
        """`seconds` absent (files written before they were kept): intervals of equal work, so seconds ~ 1/rate."""
        rates = tuple(float(r) for r in rates)
        if seconds is None or len(seconds) != len(rates):
            seconds = tuple(1.0 / r if r > 0 else 0.0 for r in rates)
        return cls(rates, tuple(float(s) for s in seconds))

    @property
    def throughput(self) -> Optional[float]:
        """Units over seconds of the whole timed window (a stall counts for its whole length)."""
        return pooled_rate([self])


def pooled_rate(runs: list) -> Optional[float]:
    """The runs' units over their seconds, as one stream; None where no time was timed."""
    units = sum(r * s for run in runs for r, s in zip(run.rates, run.seconds))
    seconds = sum(s for run in runs for s in run.seconds)
    return units / seconds if seconds > 0 else None


def block_length(count: int) -> int:
    """Intervals per block of the moving-block bootstrap: n^(1/3), the usual rate for a median's variance."""
    return max(1, round(count ** (1 / 3)))


def block_indices(count: int, resamples: int, rng) -> np.ndarray:
    """`resamples` moving-block resamples of positions 0..count-1 (each as long as the series)."""
    block = block_length(count)
    starts = rng.integers(0, count - block + 1, size=(resamples, -(-count // block)))
    return (starts[..., None] + np.arange(block)).reshape(resamples, -1)[:, :count]


def _resampled_work(runs: list, resamples: int, rng) -> tuple:
    """(units, seconds) of the runs' intervals, block-resampled within each run, summed over the runs."""
    units, seconds = np.zeros(resamples), np.zeros(resamples)
    for run in runs:
        rates, secs = np.asarray(run.rates), np.asarray(run.seconds)
        index = block_indices(len(rates), resamples, rng)
        units += (rates * secs)[index].sum(axis=1)
        seconds += secs[index].sum(axis=1)
    return units, seconds


def throughput_ci(runs, seed: int = 0) -> tuple:
    """(throughput, low, high) of one run, or of several as one stream: their units over their seconds, with the
    within-run block-bootstrap interval; (throughput, None, None) under 3 intervals."""
    runs = [runs] if isinstance(runs, Run) else list(runs)
    rate = pooled_rate(runs)
    if rate is None or sum(len(run.rates) for run in runs) < 3:
        return rate, None, None
    u, s = _resampled_work(runs, RESAMPLES, np.random.default_rng(seed))
    rates = u / s
    return rate, float(np.quantile(rates, ALPHA)), float(np.quantile(rates, 1 - ALPHA))


def median_ci(values: list, seed: int = 0) -> tuple:
    """(median, low, high) of one run's interval rates, with the within-run block-bootstrap interval of the median;
    (median, None, None) under 3 rates. The typical interval's rate: it leaves stalls out, the headline does not."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return None, None, None
    median = float(np.median(values))
    if len(values) < 3:
        return median, None, None
    medians = _block_medians(values, np.random.default_rng(seed))
    return median, float(np.quantile(medians, ALPHA)), float(np.quantile(medians, 1 - ALPHA))


def _block_medians(values: np.ndarray, rng) -> np.ndarray:
    """Medians of RESAMPLES moving-block resamples of one series."""
    return np.median(values[block_indices(len(values), RESAMPLES, rng)], axis=1)


def stall_ratio(rates: list) -> Optional[float]:
    """The longest interval over the median one, per unit of work: median rate over the slowest rate (1 = no stall)."""
    rates = [r for r in rates if r > 0]
    return float(np.median(rates) / min(rates)) if rates else None


def cv(values: list):
    """Coefficient of variation (standard deviation over mean), None under 2 values."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / values.mean()) if len(values) >= 2 and values.mean() > 0 else None


# --- settings: their runs -----------------------------------------------------------------------------------------
def _logs(runs: list) -> np.ndarray:
    return np.log([run.throughput for run in runs if run.throughput])


def setting_ci(runs: list) -> tuple:
    """(throughput, low, high, covers) of a setting: the geometric mean of its runs' throughputs with a t interval
    over runs (two runs or more), else its one run's within-run interval."""
    if len(runs) < 2:
        return (*throughput_ci(runs), WITHIN_RUN)
    return (*geometric_mean_ci([run.throughput for run in runs]), RUN_TO_RUN)


def geometric_mean_ci(values: list) -> tuple:
    """(geometric mean, low, high): a t interval on the logs of independent values (runs, rounds) around their mean;
    (value, None, None) for one value."""
    logs = np.log(np.asarray([v for v in values if v], dtype=float))
    if len(logs) < 2:
        return (float(np.exp(logs[0])) if len(logs) else None), None, None
    half = float(_special().stdtrit(len(logs) - 1, 1 - ALPHA)) * float(logs.std(ddof=1)) / math.sqrt(len(logs))
    centre = float(logs.mean())
    return math.exp(centre), math.exp(centre - half), math.exp(centre + half)


@dataclass(frozen=True)
class Comparison:
    """A speed-up of one setting over the baseline. `covers`: RUN_TO_RUN (Welch over runs) or WITHIN_RUN (one run
    of either: the block bootstrap, too narrow for run-to-run noise). `p_value`: one-sided, of a speed-up no
    larger than 1 + min_gain (run-to-run only). `se`, `df`: of the log speed-up."""

    ratio: Optional[float]
    low: Optional[float] = None
    high: Optional[float] = None
    covers: str = WITHIN_RUN
    p_value: Optional[float] = None
    se: Optional[float] = None
    df: Optional[float] = None

    @property
    def runs_measured(self) -> bool:
        return self.covers == RUN_TO_RUN


def welch(a: np.ndarray, b: np.ndarray) -> tuple:
    """(difference of means, its standard error, Satterthwaite degrees of freedom) of two samples."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se > 0 else float(len(a) + len(b) - 2)
    return float(a.mean() - b.mean()), se, df


def compare(a: list, b: list, min_gain: float = 0.03, seed: int = 0) -> Comparison:
    """The speed-up of setting `a` over setting `b` (each a list of Run)."""
    if not a or not b or not all(run.throughput for run in (*a, *b)):
        return Comparison(None)
    if len(a) >= 2 and len(b) >= 2:
        diff, se, df = welch(_logs(a), _logs(b))
        half = float(_special().stdtrit(df, 1 - ALPHA)) * se
        margin = diff - math.log1p(min_gain)
        p = float(_special().stdtr(df, -margin / se)) if se > 0 else float(margin <= 0)
        return Comparison(math.exp(diff), math.exp(diff - half), math.exp(diff + half), RUN_TO_RUN, p, se, df)
    ratio = pooled_rate(a) / pooled_rate(b)
    if sum(len(r.rates) for r in a) < 3 or sum(len(r.rates) for r in b) < 3:
        return Comparison(ratio)
    rng = np.random.default_rng(seed)
    ua, sa = _resampled_work(a, RESAMPLES, rng)
    ub, sb = _resampled_work(b, RESAMPLES, rng)
    logs = np.log((ua / sa) / (ub / sb))
    low, high = np.quantile(logs, [ALPHA, 1 - ALPHA])
    return Comparison(ratio, float(np.exp(low)), float(np.exp(high)), WITHIN_RUN, se=float(logs.std()))


def z_ratio_ci(a: list, b: list) -> tuple:
    """The interval FastGPU gave before: the same standard error with z = 1.96 however few runs measured it. At 2 runs
    a setting it covers too seldom; kept as the negative check of the coverage test. `a`, `b`: lists of Run."""
    diff, se, _ = welch(_logs(a), _logs(b))
    return math.exp(diff), math.exp(diff - 1.959964 * se), math.exp(diff + 1.959964 * se)


def holm(p_values: list, alpha: float = ALPHA) -> list:
    """Which of the hypotheses Holm's step-down rejects at family-wise level `alpha` (None: not tested)."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    rejected = [False] * len(p_values)
    for step, (p, i) in enumerate(tested):
        if p > alpha / (len(tested) - step):
            break
        rejected[i] = True
    return rejected


def _strictest_critical(df: float, comparisons: int) -> float:
    """The t a comparison must clear at Holm's first (strictest) step over `comparisons`: level ALPHA / comparisons."""
    return float(_special().stdtrit(df, 1 - ALPHA / max(comparisons, 1)))


def _power(shift: float, df: float, critical: float) -> float:
    """P(t > critical) for a noncentral t with `df` and noncentrality `shift`."""
    return 1.0 - float(_special().nctdtr(df, shift, critical))


def detectable_speedup(se: float, df: float, comparisons: int, min_gain: float = 0.03) -> Optional[float]:
    """The smallest true speed-up a comparison with this standard error (log scale) and `df` calls reliably faster
    with 80% power, at Holm's strictest level over `comparisons` (ALPHA / comparisons)."""
    if not se or not df:
        return None
    critical = _strictest_critical(df, comparisons)
    low, high = 0.0, 100.0
    for _ in range(60):  # bisection on the noncentrality
        mid = (low + high) / 2
        low, high = (mid, high) if _power(mid, df, critical) < POWER else (low, mid)
    return math.exp(math.log1p(min_gain) + high * se)


def runs_needed(noise_sd: float, gain: float, comparisons: int, min_gain: float = 0.03, most: int = 200):
    """Runs a setting (the baseline too) for a true speed-up of 1 + `gain` to be called reliably faster with 80%
    power, at run-to-run noise `noise_sd` (sd of a run's log throughput) and Holm's strictest level; None: over
    `most`, or a gain no larger than min_gain (never called reliable)."""
    margin = math.log1p(gain) - math.log1p(min_gain)
    if margin <= 0:
        return None
    for n in range(2, most + 1):
        se, df = noise_sd * math.sqrt(2 / n), n - 1  # Welch's degrees of freedom are at least n - 1: the safe side
        critical = _strictest_critical(df, comparisons)
        if noise_sd == 0 or _power(margin / se, df, critical) >= POWER:
            return n
    return None


def run_noise(settings: list) -> tuple:
    """(sd, df): the run-to-run sd of a run's log throughput, pooled over the settings with two runs or more."""
    squares, df = 0.0, 0
    for runs in settings:
        logs = _logs(runs)
        if len(logs) >= 2:
            squares += float(((logs - logs.mean()) ** 2).sum())
            df += len(logs) - 1
    return (math.sqrt(squares / df), df) if df else (None, 0)


def noise_upper(sd: float, df: int, confidence: float = POWER) -> float:
    """An upper confidence bound of a run-to-run sd estimated with `df` degrees of freedom (chi-square): planning
    repeats on the estimate itself falls short whenever a few runs happened to agree."""
    return sd * math.sqrt(df / float(_special().chdtri(df, confidence)))


# --- timings of one process: inference latency, paired rounds ----------------------------------------------------
def within_run_ratio_ci(a: list, b: list, seed: int = 0) -> tuple:
    """(ratio, low, high) of the medians of two series timed in one process (inference latency blocks), with a
    block-bootstrap interval: within-run by construction."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not len(a) or not len(b):
        return None, None, None
    ratio = float(np.median(a) / np.median(b))
    if len(a) < 3 or len(b) < 3:
        return ratio, None, None
    rng = np.random.default_rng(seed)
    ratios = _block_medians(a, rng) / _block_medians(b, rng)
    return ratio, float(np.quantile(ratios, ALPHA)), float(np.quantile(ratios, 1 - ALPHA))


def paired_ratio_ci(ratios: list) -> tuple:
    """(geometric mean, low, high) of per-round ratios of two settings alternated in one process (+experiment=ab):
    rounds are independent pairs, so the t interval of geometric_mean_ci on their ratios."""
    return geometric_mean_ci(ratios)
