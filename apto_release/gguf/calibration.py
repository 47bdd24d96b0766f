"""Calibration text for llama.cpp's importance matrix, drawn from the release's own records.

``draw_calibration`` takes a deterministic set of records (validated as every stage does; every
category, taken in turns, each category's records in the order of a SHA-256 of their id) up to the
first record that would exceed a token budget, renders each with the chat template as training does
(``train.collate.RecordEncoder.render``: the same messages, harmful prefixes included), and
writes them as one UTF-8 text, records separated by a blank line. Its size in tokens is counted
with the model's tokenizer. (Leaving out records close to an evaluation benchmark and mixing in
general Japanese text are not done yet.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apto_release.errors import InputError
from apto_release.io import write_text

#: The common practice is a few hundred thousand tokens (bartowski's and unsloth's calibration sets).
DEFAULT_MAX_TOKENS = 300_000
SEPARATOR = "\n\n"


@dataclass
class Calibration:
    """What ``draw_calibration`` wrote."""

    path: Path
    tokens: int
    records: int
    by_category: dict[str, int] = field(default_factory=dict)  # category -> records drawn
    source: Path | None = None


def _order(record: dict[str, Any], seed: str) -> str:
    return hashlib.sha256(f"{seed}\0{record.get('id')}".encode()).hexdigest()


def draw_calibration(
    records_path: str | Path,
    model_dir: str | Path,
    dest: str | Path,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    seed: str = "apto-calibration",
) -> Calibration:
    """Write ``dest``: records of ``records_path`` rendered with ``model_dir``'s tokenizer and chat template.

    Raises:
        ValidationFailed: the records do not validate.
        InputError: no record fits within ``max_tokens``.
    """
    from apto_release.train.collate import RecordEncoder, load_tokenizer, read_training_records

    records = read_training_records(records_path)
    tokenizer = load_tokenizer(model_dir)
    encoder = RecordEncoder(tokenizer, max_length=max(1, max_tokens))
    queues: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        queues.setdefault(record["category"], []).append(record)
    for queue in queues.values():
        queue.sort(key=lambda r: _order(r, seed), reverse=True)  # popped from the end
    texts: list[str] = []
    by_category: dict[str, int] = {}
    tokens = 0
    full = False
    while not full and any(queues.values()):
        for category in sorted(queues):
            if not queues[category]:
                continue
            text = encoder.render(queues[category].pop())[0]
            n = len(tokenizer(text + SEPARATOR, add_special_tokens=False)["input_ids"])
            if tokens + n > max_tokens:  # the budget is reached: stop at the first record over it
                full = True
                break
            texts.append(text)
            tokens += n
            by_category[category] = by_category.get(category, 0) + 1
    if not texts:
        raise InputError(f"no record fits in {max_tokens} tokens", path=records_path, hint="raise --max-tokens")
    path = write_text(dest, SEPARATOR.join(texts) + SEPARATOR)
    return Calibration(Path(path), tokens, len(texts), dict(sorted(by_category.items())), Path(records_path))


def count_tokens(text_path: str | Path, model_dir: str | Path) -> int:
    """The tokens of a plain UTF-8 text with ``model_dir``'s tokenizer (special tokens parsed, as llama-imatrix does).

    Raises:
        InputError: the file is missing or is not UTF-8.
    """
    from apto_release.train.collate import load_tokenizer

    try:
        text = Path(text_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the calibration text: {exc}", path=text_path, hint="give a plain UTF-8 text file") from None
    return len(load_tokenizer(model_dir)(text, add_special_tokens=False)["input_ids"])
