"""How small a difference a paired comparison can detect, and how many rows a larger one would need.

The verdict compares two variants on the same held-out rows. When the interval of their
difference spans 0, the question a learner asks next is "how many more rows?". The answer here is
the textbook normal approximation for a paired test, two-sided at the 5% level with 80% power:

    smallest detectable difference  MDE = (z_0.975 + z_0.80) * SE      (1.960 + 0.842 = 2.802)
    rows to detect a difference d   n'  = n * (MDE / |d|)**2   = ((z_0.975 + z_0.80) * sd / |d|)**2

where SE is the standard error of the mean paired difference (``sd / sqrt(n)`` for a per-row
metric). It assumes the rows still to be collected look like these; the observed difference is
itself noisy, so ``n'`` says the order of magnitude to plan for, not a promise.

>>> round(detectable_difference([1.0, 0.0, -1.0, 0.0]), 3)   # sd 0.816, 4 rows: SE 0.408
1.144
>>> rows_needed(4, 1.144, 0.5)
21
"""

from __future__ import annotations

import math
from statistics import NormalDist, stdev

__all__ = ["ALPHA", "POWER", "detectable_difference", "detectable_from_interval", "rows_needed", "z_sum"]

ALPHA = 0.05  # two-sided test level
POWER = 0.80  # the chance of detecting a true difference of the stated size


def z_sum(alpha: float = ALPHA, power: float = POWER) -> float:
    """``z_(1 - alpha/2) + z_power``: how many standard errors a true difference must span to be
    detected with probability ``power`` by a two-sided test at level ``alpha``.

    >>> round(z_sum(), 4)
    2.8016
    """
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power are probabilities between 0 and 1; got alpha={alpha}, power={power}")
    z = NormalDist().inv_cdf
    return z(1 - alpha / 2) + z(power)


def detectable_difference(diffs, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true mean difference these paired differences (``a - b``, one per row) detect
    with probability ``power`` at level ``alpha``: ``z_sum * sd / sqrt(n)``, ``sd`` the sample
    standard deviation (n - 1). None when it cannot be estimated: fewer than 2 rows, or every row's
    difference the same (no spread to scale by; all ties says nothing about what more rows detect).

    >>> detectable_difference([0.5, 0.5, 0.5]) is None
    True
    """
    values = [float(x) for x in diffs]
    if len(values) < 2:
        return None
    sd = stdev(values)
    if sd == 0:
        return None
    return z_sum(alpha, power) * sd / math.sqrt(len(values))


def detectable_from_interval(low: float, high: float, level: float = 0.95, alpha: float = ALPHA,
                             power: float = POWER) -> float | None:
    """The smallest detectable difference when only a ``level`` interval of the difference is
    known, as for a corpus metric (BLEU, chrF), whose paired bootstrap resamples whole corpora and
    has no per-row differences to take a standard deviation of. The interval is read as normal:
    ``SE = (high - low) / (2 * z_(1 - (1 - level)/2))``, i.e. its width over 3.92 for a 95%
    interval; then ``MDE = z_sum * SE``. None for an interval of width 0.

    >>> round(detectable_from_interval(-0.1, 0.3), 4)   # SE 0.4 / 3.92 = 0.1020; x 2.8016
    0.2859
    """
    if high < low:
        raise ValueError(f"an interval runs from low to high; got low={low} > high={high}")
    if high == low:
        return None
    se = (high - low) / (2 * NormalDist().inv_cdf(1 - (1 - level) / 2))
    return z_sum(alpha, power) * se


def rows_needed(rows: int, detectable: float | None, difference: float) -> int | None:
    """Rows that would detect a true difference of ``difference`` (with the same power and level
    as ``detectable``, which these ``rows`` detect): ``ceil(rows * (detectable / |difference|)**2)``,
    since the standard error shrinks as ``1 / sqrt(rows)``. None when ``difference`` is 0 (no
    number of rows detects no difference) or ``detectable`` is unknown.

    >>> rows_needed(36, 2.801585 / 12, 1 / 12)   # 36 * 2.801585**2 = 282.6
    283
    """
    if detectable is None or difference == 0:
        return None
    # A hair below the integer: 25.000000001 from rounding is 25 rows, not 26.
    return max(1, math.ceil(rows * (detectable / abs(difference)) ** 2 - 1e-9))
