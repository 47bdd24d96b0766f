"""Krippendorff's alpha against his own worked example and hand-computed cases."""

from __future__ import annotations

import pytest

from apto_release.evals.agreement import krippendorff_alpha

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": four observers, twelve units,
# values 1-5, some missing (None). Published: nominal 0.743, ordinal 0.815, interval 0.849.
_OBSERVERS = (
    (1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None),
    (1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3),
    (None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None),
    (1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None),
)
KRIPPENDORFF_UNITS = [[v for v in unit if v is not None] for unit in zip(*_OBSERVERS)]


@pytest.mark.parametrize(("level", "alpha"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorffs_worked_example(level, alpha):
    assert round(krippendorff_alpha(KRIPPENDORFF_UNITS, level), 3) == alpha


def test_a_nominal_case_by_hand():
    # Units (a, a), (a, b), (b, b): coincidences o_aa = 2, o_ab = o_ba = 1, o_bb = 2; n_a = n_b = 3, n = 6.
    # alpha = 1 - (n - 1) * (o_ab + o_ba) / (n_a * n_b + n_b * n_a) = 1 - 5 * 2 / 18 = 4/9
    assert krippendorff_alpha([["a", "a"], ["a", "b"], ["b", "b"]], "nominal") == pytest.approx(4 / 9)


def test_an_interval_case_by_hand():
    # Units (1, 2), (3, 3): o_12 = o_21 = 1, o_33 = 2; n = 4.
    # D_o: sum o * delta^2 = 2 * 1 = 2.  D_e: sum n_c n_k delta^2 = 2 * (1*1*1 + 1*2*4 + 1*2*1) = 22.
    # alpha = 1 - (n - 1) * 2 / 22 = 1 - 6/22 = 8/11
    assert krippendorff_alpha([[1, 2], [3, 3]], "interval") == pytest.approx(8 / 11)


def test_perfect_agreement_and_undefined_cases():
    assert krippendorff_alpha([[1, 1, 1], [2, 2], [5, 5]], "ordinal") == pytest.approx(1.0)
    assert krippendorff_alpha([["safe", "safe"], ["safe", "safe"]], "nominal") is None  # no variation: not defined
    assert krippendorff_alpha([[1], [2]], "interval") is None  # no unit with two values
    assert krippendorff_alpha([], "nominal") is None


def test_units_with_one_value_are_skipped():
    with_lone = [["a", "a"], ["a", "b"], ["b", "b"], ["b"]]
    assert krippendorff_alpha(with_lone, "nominal") == krippendorff_alpha(with_lone[:3], "nominal")


def test_unknown_level():
    with pytest.raises(ValueError, match="unknown level 'ratio'"):
        krippendorff_alpha([[1, 2]], "ratio")
