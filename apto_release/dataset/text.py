"""Checks on the text of a record: encoding damage, invisible characters, language, personal data.

Each check is a regular expression run once over a string, so that the validator stays fast on
tens of thousands of records. The thresholds are documented here and in the README:

- *Not Japanese*: among letters (Unicode category L), the share of hiragana, katakana and kanji is
  below ``JAPANESE_SHARE_MIN`` (0.5), in a text with at least ``JAPANESE_MIN_LETTERS`` (20) letters.
- *Personal data*: e-mail addresses; Japanese phone numbers (``0`` + 9 or 10 digits in the
  national groupings, or ``+81``); 12-digit My Number values whose check digit is right (the
  official formula of the 行政手続における特定の個人を識別するための番号の利用等に関する法律施行令);
  13-19 digit card numbers that pass the Luhn check.
"""

from __future__ import annotations

import re

CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# JSON can spell half of a UTF-16 surrogate pair ("\ud800"): that is not text, and no UTF-8 file
# can hold it.
LONE_SURROGATE_RE = re.compile("[\ud800-\udfff]")
HALFWIDTH_KATAKANA_RE = re.compile(r"[\uff61-\uff9f]")
ZERO_WIDTH_RE = re.compile(r"[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
# UTF-8 read as Latin-1/cp1252 ("ã\x81\x82" for "あ", "Ã©" for "é"), UTF-8 read as Shift_JIS
# ("縺" for hiragana, "繧"/"繝" for katakana) and the replacement character.
MOJIBAKE_RE = re.compile(
    "\ufffd"
    "|[ÃÂ][\u0080-\u00bf]"
    "|ã[\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013-\u203a\u20ac\u2122]"
    "|[縺繧繝]"
)

#: One character class that every match of the four patterns above starts with: a single fast
#: search tells that a text (as almost every text) has none of them.
ODD_CHARACTER_RE = re.compile("[\ud800-\udfff\x00-\x08\x0b-\x1f\x7f-\x9f\uff61-\uff9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\ufffdÃÂã縺繧繝]")

_JAPANESE = "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f々〆ヵヶ"
JAPANESE_RUN_RE = re.compile(f"[{_JAPANESE}]+")
# Letters of the other scripts one meets in Japanese data: Latin (with accents), Greek, Cyrillic,
# Hangul, Arabic, Hebrew, Thai and Devanagari. (Han characters count as Japanese.)
OTHER_LETTER_RUN_RE = re.compile(
    "[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u0370-\u03ff\u0400-\u04ff\u0590-\u05ff"
    "\u0600-\u06ff\u0900-\u097f\u0e00-\u0e7f\u1100-\u11ff\uac00-\ud7af\uff21-\uff3a\uff41-\uff5a]+"
)
JAPANESE_SHARE_MIN = 0.5
JAPANESE_MIN_LETTERS = 20

EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+[@＠][A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# A run of digits, possibly grouped by hyphens or spaces, that could be a phone, My Number or card.
_DIGITS = "0-9０-９"
_SEP = "\\- －‐‑–—ー"
# The optional "+" (of "+81") sits in the first character class, so that the regex engine can
# skip quickly to the next digit.
NUMBER_RUN_RE = re.compile(f"[+{_DIGITS}](?:[{_SEP}]?[{_DIGITS}]){{9,18}}(?![{_DIGITS}])")
_TO_ASCII = str.maketrans("０１２３４５６７８９", "0123456789")
_NON_DIGIT_RE = re.compile(r"\D")
# National numbers: 0 + area/mobile prefix, 10 digits (landline, 0120/0800) or 11 (070/080/090/050).
_PHONE_GROUPED_RE = re.compile(r"0\d{1,4}[-－‐ ]\d{1,4}[-－‐ ]\d{3,4}")


def japanese_share(text: str) -> tuple[float, int]:
    """(share of Japanese characters among letters, number of letters) of ``text``."""
    other = sum(map(len, OTHER_LETTER_RUN_RE.findall(text)))
    japanese = len(text) - len(JAPANESE_RUN_RE.sub("", text))
    letters = japanese + other
    return (japanese / letters if letters else 1.0), letters


def mostly_not_japanese(text: str) -> float | None:
    """The Japanese share of ``text`` when it is below ``JAPANESE_SHARE_MIN`` (with at least
    ``JAPANESE_MIN_LETTERS`` letters), else None. Fast for Japanese text."""
    other = sum(map(len, OTHER_LETTER_RUN_RE.findall(text)))
    # A share below one half needs more other letters than Japanese ones, so with fewer than half
    # the minimum of letters in other scripts the text cannot be flagged.
    if other * 2 < JAPANESE_MIN_LETTERS:
        return None
    share, letters = japanese_share(text)
    return share if letters >= JAPANESE_MIN_LETTERS and share < JAPANESE_SHARE_MIN else None


def my_number_check_digit(first11: str) -> int:
    """The check digit of a My Number (個人番号) from its first 11 digits."""
    total = 0
    for n, digit in enumerate(reversed(first11), start=1):
        weight = n + 1 if n <= 6 else n - 5
        total += int(digit) * weight
    remainder = total % 11
    return 0 if remainder <= 1 else 11 - remainder


def is_my_number(digits: str) -> bool:
    return len(digits) == 12 and digits.isdigit() and my_number_check_digit(digits[:11]) == int(digits[11])


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_phone(run: str, digits: str) -> bool:
    if run.startswith("+81"):
        return 9 <= len(digits) - 2 <= 10
    if not digits.startswith("0") or digits.startswith("00"):
        return False
    if len(digits) == 11:
        return digits[:3] in {"070", "080", "090", "050", "020"} or bool(_PHONE_GROUPED_RE.fullmatch(run))
    return len(digits) == 10 and (bool(_PHONE_GROUPED_RE.fullmatch(run)) or digits.startswith(("0120", "0800")) or not any(c in run for c in "- "))


def may_hold_personal_data(text: str) -> bool:
    """A fast test: False means ``personal_data(text)`` is certainly empty."""
    return "@" in text or "＠" in text or NUMBER_RUN_RE.search(text) is not None


def personal_data(text: str) -> list[tuple[str, str]]:
    """Every personal-data match in ``text`` as (rule, masked excerpt).

    The excerpt is masked (``090-****-5678``) so that reports do not spread the data further.
    """
    found: list[tuple[str, str]] = []
    if "@" in text or "＠" in text:
        for m in EMAIL_RE.finditer(text):
            local, _, domain = m.group().replace("＠", "@").partition("@")
            found.append(("pii_email", f"{local[:1]}***@{domain}"))
    for m in NUMBER_RUN_RE.finditer(text):
        run = m.group().translate(_TO_ASCII)
        digits = _NON_DIGIT_RE.sub("", run)
        masked = digits[:3] + "*" * (len(digits) - 7) + digits[-4:]
        if _is_phone(run, digits):
            found.append(("pii_phone", masked))
        elif is_my_number(digits):
            found.append(("pii_my_number", masked))
        elif 13 <= len(digits) <= 19 and luhn_ok(digits):
            found.append(("pii_card_number", masked))
    return found
