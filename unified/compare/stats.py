"""Statistics of compare.py: Student t quantiles, per-group 95% t-intervals and Welch contrasts.

A group's metric is the mean over its seeds with the 95% t-interval mean +- t(0.975, n-1) s/sqrt(n);
a criterion's contrast c = mean(a) - k mean(b) - delta gets Welch's 95% interval (unequal
variances, Welch-Satterthwaite degrees of freedom). scipy's quantile is used when installed,
else a table (df <= 30, non-integer df rounded down: conservative) and Cornish-Fisher above.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

CONFIDENCE = 0.95
# Two-sided 95% Student t quantiles t(0.975, df) for df = 1..30 (used when scipy is absent).
T_TABLE_975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
               2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
               2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
Z_975 = 1.959964


def t_quantile_table(df: float) -> float:
    """t(0.975, df) without scipy: the table for df <= 30, with a non-integer df (Welch) rounded
    down, which is conservative (the interval is never narrower than the exact one); above 30 the
    Cornish-Fisher expansion (error < 1e-4)."""
    if not df >= 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= 30:
        return T_TABLE_975[int(math.floor(df)) - 1]
    z = Z_975
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def t_quantile(df: float) -> float:
    """t(0.975, df): scipy's when installed (it is optional), else `t_quantile_table`."""
    try:
        from scipy.stats import t as student_t
    except ImportError:
        return t_quantile_table(df)
    return float(student_t.ppf(0.5 + CONFIDENCE / 2, df))


@dataclass
class Estimate:
    """Mean of one metric over a group's seeds, with its 95% interval (None below two values)."""

    mean: float
    n: int
    std: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (None without an interval)."""
        return None if self.ci_high is None else (self.ci_high - self.ci_low) / 2


def estimate(values: Sequence[float]) -> Estimate | None:
    """Mean and 95% t-interval of `values` (None when empty; no interval for one value)."""
    vals = [float(v) for v in values]
    if not vals:
        return None
    mean = statistics.fmean(vals)
    if len(vals) < 2:
        return Estimate(mean, 1)
    std = statistics.stdev(vals)
    half = t_quantile(len(vals) - 1) * std / math.sqrt(len(vals))
    return Estimate(mean, len(vals), std, mean - half, mean + half)


@dataclass
class Contrast:
    """c = mean(a) - k * mean(b) - delta with its Welch 95% interval (None if either side has < 2)."""

    value: float
    ci_low: float | None
    ci_high: float | None
    df: float | None
    n_a: int
    n_b: int


def welch_contrast(a: Sequence[float], b: Sequence[float], k: float = 1.0, delta: float = 0.0) -> Contrast:
    """The contrast mean(a) - k mean(b) - delta and its Welch-Satterthwaite 95% interval. When
    both samples have zero spread the interval is the point itself."""
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    value = ma - k * mb - delta
    if len(a) < 2 or len(b) < 2:
        return Contrast(value, None, None, None, len(a), len(b))
    va = statistics.variance(a) / len(a)
    vb = k * k * statistics.variance(b) / len(b)
    var = va + vb
    if var == 0.0:
        return Contrast(value, value, value, math.inf, len(a), len(b))
    df = var ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile(df) * math.sqrt(var)
    return Contrast(value, value - half, value + half, df, len(a), len(b))
