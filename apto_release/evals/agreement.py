"""Agreement between judges: Krippendorff's alpha.

Alpha fits judges' outputs as they come: any number of judges, an item some judge skipped, and
a choice of distance between values that matches the scale (nominal for verdicts, ordinal for
AnswerCarefully's 1-5 grades, interval for MT-Bench-ja's 1-10 scores). Fleiss' kappa would need
every judge on every item and treats scores as unordered categories.

alpha = 1 - D_o / D_e: the disagreement observed within units over the disagreement expected
from the pooled values. 1 is perfect agreement, 0 agreement no better than chance. Computed from
the coincidence matrix as in Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability",
https://repository.upenn.edu/asc_papers/43 (whose worked example the tests reproduce).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from itertools import permutations
from typing import Literal

Level = Literal["nominal", "ordinal", "interval"]
LEVELS: tuple[Level, ...] = ("nominal", "ordinal", "interval")


def krippendorff_alpha(units: Iterable[Sequence[Hashable]], level: Level) -> float | None:
    """Krippendorff's alpha of ``units``: each unit is the values its judges gave (missing ones left out).

    Units with fewer than two values cannot be compared and are skipped. Ordinal and interval
    values must be numbers. Returns None when alpha is not defined: no unit has two values, or
    every value is the same (no disagreement is expected, so none can be measured).
    """
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {', '.join(LEVELS)}")
    coincidences: Counter = Counter()
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for c, k in permutations(values, 2):
            coincidences[c, k] += 1 / (m - 1)
    totals: Counter = Counter()
    for (c, _), count in coincidences.items():
        totals[c] += count
    n = sum(totals.values())
    if len(totals) < 2:
        return None
    delta = _distance(level, totals)
    observed = sum(count * delta(c, k) for (c, k), count in coincidences.items())
    expected = sum(totals[c] * totals[k] * delta(c, k) for c in totals for k in totals) / (n - 1)
    return 1 - observed / expected


def _distance(level: Level, totals: Counter):
    """The squared distance between two values for ``level`` (Krippendorff's delta squared)."""
    if level == "nominal":
        return lambda c, k: 0.0 if c == k else 1.0
    if level == "interval":
        return lambda c, k: float(c - k) ** 2
    # Ordinal: the distance between two ranks is the number of values between them (each end
    # counting half), so that rarely used grades sit close together.
    ordered = sorted(totals)
    cumulative, running = {}, 0.0
    for value in ordered:
        cumulative[value] = running + totals[value] / 2
        running += totals[value]
    return lambda c, k: (cumulative[c] - cumulative[k]) ** 2
