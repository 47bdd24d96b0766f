"""Paired comparisons of the model before and after tuning: intervals and tests, with no SciPy.

Both models answer the same items, so every comparison is *paired*: it looks at each item's
change, which is far more precise than comparing two independent samples.

- Rates (each item counts or not: acceptable, refused, correct): the exact McNemar test for
  significance and Newcombe's hybrid score interval for the difference of the paired proportions
  (Newcombe 1998, "Improved confidence intervals for the difference between binomial proportions
  based on paired data", Statistics in Medicine 17:2635-2650, method 10; the form in Fagerland,
  Lydersen & Laake 2017, "Statistical Analysis of Contingency Tables", section 8.5). It is closed
  form, stays inside [-1, 1], and keeps its coverage near 95% for small samples and for rates near
  0 or 1, where the Wald interval fails.
- Means of scores (AnswerCarefully's 1-5, MT-Bench-ja's 1-10): a paired bootstrap over items,
  the percentile interval of the mean change; significant when the interval excludes 0.

Every interval is a 95% interval of ``after - before``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
#: The normal quantile of a two-sided 95% interval (1.959964...).
Z = NormalDist().inv_cdf(1 - ALPHA / 2)
#: Resampled means computed at once: bounds the bootstrap's memory (resamples x items indices).
_BOOTSTRAP_BLOCK = 2_000_000


@dataclass(frozen=True)
class Comparison:
    """One metric of the model before and after, and the paired statistics of the change.

    ``before`` and ``after`` are proportions (0-1) for rates and means for scores; ``ci`` is the 95%
    interval of ``after - before``; ``p_value`` is the exact McNemar test's (rates only).
    """

    before: float
    after: float
    ci: tuple[float, float]
    significant: bool
    method: str  # "mcnemar" or "bootstrap"
    n: int
    p_value: float | None = None

    @property
    def change(self) -> float:
        return self.after - self.before


def mcnemar_exact(b: int, c: int) -> float:
    """The exact (conditional) McNemar test's two-sided p-value.

    ``b`` and ``c`` are the discordant pairs (yes before and no after; no before and yes after).
    Under no change each discordant pair goes either way with probability 1/2, so the p-value is
    twice the smaller binomial tail of Bin(b + c, 1/2), at most 1. Example: b=8, c=2 gives
    2 * (C(10,0) + C(10,1) + C(10,2)) / 2**10 = 0.109375.
    """
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """The Wilson score 95% interval of a proportion (the building block of Newcombe's interval)."""
    p = successes / n
    centre = p + Z**2 / (2 * n)
    spread = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    scale = 1 + Z**2 / n
    return (centre - spread) / scale, (centre + spread) / scale


def newcombe_paired_interval(a: int, b: int, c: int, d: int) -> tuple[float, float]:
    """Newcombe's hybrid score 95% interval of ``p_after - p_before`` for paired binary outcomes.

    The 2x2 table counts the items by (before, after): ``a`` yes/yes, ``b`` yes/no, ``c`` no/yes,
    ``d`` no/no. The Wilson intervals of the two marginal proportions are combined "square and
    add" with the estimated correlation phi between them; as Newcombe does, phi is shrunk towards 0
    by n/2 when positive (a continuity correction of phi only) and set to 0 when a margin is empty.
    Example: a=59, b=16, c=6, d=80 (Fagerland et al.'s paired table with the roles swapped) gives
    -0.0621 in [-0.1186, -0.0046].
    """
    n = a + b + c + d
    p_before, p_after = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + c, n)  # after
    l2, u2 = wilson_interval(a + b, n)  # before
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    if margins == 0 or 0 <= cross <= n / 2:
        phi = 0.0
    else:
        phi = (cross - n / 2 if cross > 0 else cross) / math.sqrt(margins)
    diff = p_after - p_before
    lower = diff - math.sqrt((p_after - l1) ** 2 - 2 * phi * (p_after - l1) * (u2 - p_before) + (u2 - p_before) ** 2)
    upper = diff + math.sqrt((u1 - p_after) ** 2 - 2 * phi * (u1 - p_after) * (p_before - l2) + (p_before - l2) ** 2)
    return max(-1.0, lower), min(1.0, upper)


def compare_rates(before: Sequence[bool], after: Sequence[bool]) -> Comparison:
    """Paired proportions: the share of items that count, before and after, with McNemar and Newcombe."""
    _check_pairs(before, after)
    a = b = c = d = 0
    for x, y in zip(before, after):
        if x and y:
            a += 1
        elif x:
            b += 1
        elif y:
            c += 1
        else:
            d += 1
    n = len(before)
    p_value = mcnemar_exact(b, c)
    return Comparison(
        before=(a + b) / n, after=(a + c) / n, ci=newcombe_paired_interval(a, b, c, d),
        significant=p_value < ALPHA, method="mcnemar", n=n, p_value=p_value,
    )


def bootstrap_mean_interval(differences: Sequence[float], *, resamples: int, seed: int) -> tuple[float, float]:
    """The 95% percentile interval of the mean of ``differences``, resampling items with replacement.

    Deterministic: the same differences, resamples and seed give the same interval (NumPy's PCG64).
    """
    d = np.asarray(differences, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    block = max(1, _BOOTSTRAP_BLOCK // len(d))
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        means[start:stop] = d[rng.integers(0, len(d), size=(stop - start, len(d)))].mean(axis=1)
    low, high = np.quantile(means, [ALPHA / 2, 1 - ALPHA / 2])
    return float(low), float(high)


def compare_means(before: Sequence[float], after: Sequence[float], *, resamples: int, seed: int) -> Comparison:
    """Paired means: the mean score before and after, with a paired bootstrap interval of the change."""
    _check_pairs(before, after)
    x, y = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    low, high = bootstrap_mean_interval(y - x, resamples=resamples, seed=seed)
    return Comparison(
        before=float(x.mean()), after=float(y.mean()), ci=(low, high), significant=low > 0 or high < 0,
        method="bootstrap", n=len(x),
    )


def _check_pairs(before: Sequence, after: Sequence) -> None:
    if len(before) != len(after) or not before:
        raise ValueError(f"a paired comparison needs the same, non-zero number of items: {len(before)} before, {len(after)} after")
