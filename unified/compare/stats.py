"""Statistics of compare.py: Student t quantiles, per-group 95% t-intervals and Welch contrasts.

A group's metric is the mean over its seeds with the 95% t-interval mean +- t(0.975, n-1) s/sqrt(n);
a criterion's contrast c = mean(a) - k mean(b) - delta gets Welch's 95% interval (unequal
variances, Welch-Satterthwaite degrees of freedom). The quantiles are scipy's.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from scipy.stats import norm
from scipy.stats import t as student_t

CONFIDENCE = 0.95
Z_975 = float(norm.ppf(0.5 + CONFIDENCE / 2))  # 1.959964: the normal quantile of a 95% interval


def t_quantile(df: float) -> float:
    """t(0.975, df), Student's two-sided 95% quantile, for any real df >= 1 (Welch's df is not an
    integer): scipy's `t.ppf`."""
    if not df >= 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
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
