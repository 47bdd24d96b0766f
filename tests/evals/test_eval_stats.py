"""Paired statistics against hand-computed and published values."""

from __future__ import annotations

import math

import pytest

from apto_release.evals.stats import (
    Z,
    bootstrap_mean_interval,
    compare_means,
    compare_rates,
    mcnemar_exact,
    newcombe_paired_interval,
    wilson_interval,
)


def test_the_normal_quantile():
    assert Z == pytest.approx(1.959964, abs=1e-6)


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (8, 2, 2 * (1 + 10 + 45) / 2**10),  # 0.109375
        (2, 8, 2 * (1 + 10 + 45) / 2**10),  # symmetric
        (6, 16, 2 * (1 + 22 + 231 + 1540 + 7315 + 26334 + 74613) / 2**22),  # 0.0525, Fagerland et al.'s example
        (10, 0, 2 / 2**10),
        (3, 3, 1.0),  # 2 * (1 + 6 + 15 + 20) / 64 = 1.3125, capped at 1
        (0, 0, 1.0),  # no discordant pair: no evidence of a change
    ],
)
def test_mcnemar_exact(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_wilson_interval_by_hand():
    # 0 of 10: the lower bound is 0 and the upper z^2 / (n + z^2)
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0, abs=1e-15)
    assert high == pytest.approx(Z**2 / (10 + Z**2))
    # 5 of 10: symmetric around 1/2, half-width z * sqrt(1/40 + z^2/400) / (1 + z^2/10)
    low, high = wilson_interval(5, 10)
    half = Z * math.sqrt(0.25 / 10 + Z**2 / 400) / (1 + Z**2 / 10)
    assert (low, high) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))


def test_newcombe_against_the_published_example():
    # Fagerland, Lydersen & Laake (2017), section 8.5: complete response before and after
    # consolidation therapy (Cavo et al. 2012), table [[59, 6], [16, 80]]:
    # their estimate (first minus second) -0.0621, Newcombe square-and-add CI -0.1186 to -0.0046.
    # Ours is after minus before; with the first measurement as "after" (b=16, c=6) it is theirs.
    low, high = newcombe_paired_interval(59, 16, 6, 80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)
    low, high = newcombe_paired_interval(59, 6, 16, 80)  # the other way round: the mirror image
    assert (round(low, 4), round(high, 4)) == (0.0046, 0.1186)


def test_newcombe_with_no_change_and_empty_margins():
    low, high = newcombe_paired_interval(5, 0, 0, 5)  # no discordant pair
    assert low < 0 < high and low == pytest.approx(-high)
    low, high = newcombe_paired_interval(10, 0, 0, 0)  # every item yes both times: phi is 0, the interval stays in [-1, 1]
    w_low, _ = wilson_interval(10, 10)
    assert (low, high) == (pytest.approx(-(1 - w_low)), pytest.approx(1 - w_low))


def test_compare_rates_by_hand():
    # a = 3 (yes, yes), b = 1 (yes, no), c = 4 (no, yes), d = 2 (no, no)
    before = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    after = [1, 1, 1, 0, 1, 1, 1, 1, 0, 0]
    c = compare_rates([bool(x) for x in before], [bool(x) for x in after])
    assert (c.before, c.after, c.n, c.method) == (0.4, 0.7, 10, "mcnemar")
    assert c.change == pytest.approx(0.3)
    assert c.p_value == (1 + 5) * 2 / 2**5  # 0.375
    assert c.significant is False
    assert c.ci == newcombe_paired_interval(3, 1, 4, 2)


def test_a_change_every_item_shares_is_significant():
    c = compare_rates([False] * 12, [True] * 12)
    assert c.p_value == 2 / 2**12 and c.significant
    assert c.ci[0] > 0 and c.ci[1] == pytest.approx(1.0)


def test_bootstrap_contains_the_observed_change_and_is_deterministic():
    differences = [1, 0, 2, -1, 0.5, 3, 0, 1, -2, 1]
    observed = sum(differences) / len(differences)
    low, high = bootstrap_mean_interval(differences, resamples=2000, seed=0)
    assert low < observed < high
    assert bootstrap_mean_interval(differences, resamples=2000, seed=0) == (low, high)
    assert bootstrap_mean_interval(differences, resamples=2000, seed=1) != (low, high)


def test_bootstrap_interval_narrows_with_more_items():
    differences = [1, 0, 2, -1, 0.5, 3, 0, 1, -2, 1]
    low, high = bootstrap_mean_interval(differences, resamples=2000, seed=0)
    low4, high4 = bootstrap_mean_interval(differences * 4, resamples=2000, seed=0)
    assert high4 - low4 < 0.7 * (high - low)  # about half: the standard error falls with sqrt(n)


def test_bootstrap_of_a_constant_change_is_that_change():
    assert bootstrap_mean_interval([1.5, 1.5, 1.5], resamples=500, seed=3) == (1.5, 1.5)


def test_bootstrap_memory_blocks_do_not_change_the_result(monkeypatch):
    from apto_release.evals import stats

    differences = [1, 0, 2, -1, 0.5]
    whole = bootstrap_mean_interval(differences, resamples=1000, seed=0)
    monkeypatch.setattr(stats, "_BOOTSTRAP_BLOCK", 7)  # one resample or so per block
    assert bootstrap_mean_interval(differences, resamples=1000, seed=0) == whole


def test_compare_means():
    c = compare_means([3, 4, 5], [4, 4, 7], resamples=1000, seed=0)
    assert (c.before, c.after, c.n, c.method, c.p_value) == (4.0, 5.0, 3, "bootstrap", None)
    low, high = c.ci
    assert low <= 1.0 <= high and 0 <= low and high <= 2  # the resampled means of (1, 0, 2) lie in [0, 2]
    assert c.significant == (low > 0)


def test_pairs_must_match():
    with pytest.raises(ValueError, match="same, non-zero number"):
        compare_rates([True], [True, False])
    with pytest.raises(ValueError, match="same, non-zero number"):
        compare_means([], [], resamples=10, seed=0)
