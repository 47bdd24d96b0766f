from __future__ import annotations

import pytest

from apto_release.dataset.text import is_my_number, japanese_share, luhn_ok, my_number_check_digit, personal_data


def test_my_number_check_digit_by_hand():
    # digits from the right P1..P11 = 1,0,9,8,7,6,5,4,3,2,1 with weights 2..7,2..6: sum 212, 212 % 11 = 3, 11 - 3 = 8
    assert my_number_check_digit("12345678901") == 8
    assert is_my_number("123456789018")
    assert not is_my_number("123456789017")
    # remainders 0 and 1 give check digit 0
    assert my_number_check_digit("00000000000") == 0


@pytest.mark.parametrize("number,ok", [("4111111111111111", True), ("5500005555555559", True), ("4111111111111112", False), ("79927398713", True)])
def test_luhn(number, ok):
    assert luhn_ok(number) is ok


def test_japanese_share():
    assert japanese_share("すべて日本語の文章です。")[0] == 1.0
    share, letters = japanese_share("日本語 and English")
    assert letters == 13 and share == pytest.approx(3 / 13)
    assert japanese_share("1234 !!")[1] == 0


def test_masked_excerpts():
    assert personal_data("mail: hanako@example.jp") == [("pii_email", "h***@example.jp")]
    assert personal_data("tel 0120-123-456") == [("pii_phone", "012***3456")]
