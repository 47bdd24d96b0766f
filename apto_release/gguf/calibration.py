"""Calibration text for llama.cpp's importance matrix, drawn from the release's own records.

``draw_calibration`` takes a deterministic set of records (validated as every stage does; every
category, taken in turns, each category's records in the order of a SHA-256 of their id) up to the
first record that would exceed a token budget, renders each with the chat template as training does
(``train.collate.RecordEncoder.render``: the same messages, harmful prefixes included), and
writes them as one UTF-8 text, records separated by a blank line. Records that ``validate
--against`` flags as close to an evaluation benchmark are left out (and counted); a general
Japanese text, when given, takes up to ``general_share`` of the budget (its lines in file order,
after the records). The size in tokens is counted with the model's tokenizer, per source.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from apto_release.errors import InputError
from apto_release.io import write_text

#: The common practice is a few hundred thousand tokens (bartowski's and unsloth's calibration sets).
DEFAULT_MAX_TOKENS = 300_000
#: The share of the token budget a general text (``--general``) may take; the records fill the rest.
DEFAULT_GENERAL_SHARE = 0.3
SEPARATOR = "\n\n"


@dataclass
class Calibration:
    """What ``draw_calibration`` wrote."""

    path: Path
    tokens: int
    records: int
    by_category: dict[str, int] = field(default_factory=dict)  # category -> records drawn
    source: Path | None = None
    left_out: int = 0  # records close to a benchmark (``against``), not drawn
    against: tuple[str, ...] = ()  # the benchmark files' names
    tokens_by_source: dict[str, int] = field(default_factory=dict)  # "records", "general" -> tokens
    general: Path | None = None


def _order(record: dict[str, Any], seed: str) -> str:
    return hashlib.sha256(f"{seed}\0{record.get('id')}".encode()).hexdigest()


def contaminated_ids(records_path: str | Path, against: Sequence[str | Path], fields: Sequence[str] = ()) -> set[str]:
    """The ids of the records that ``validate --against`` flags as close to a benchmark item.

    Raises:
        InputError: a benchmark file cannot be read.
    """
    from apto_release.dataset.validate import ValidateOptions, load_benchmark, validate_file

    if not against:
        return set()
    options = ValidateOptions(near_duplicates=False, against=tuple(load_benchmark(p, fields) for p in against))
    report = validate_file(records_path, options).report
    return {f.id for f in report.findings if f.rule == "benchmark_contamination" and f.id}


def _general_lines(path: str | Path) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("the general text is not UTF-8", path=path, hint="give a plain UTF-8 text file") from None
    except OSError as exc:
        raise InputError(f"cannot read the general text: {exc.strerror}", path=path) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError("the general text is empty", path=path)
    return lines


def draw_calibration(
    records_path: str | Path,
    model_dir: str | Path,
    dest: str | Path,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    seed: str = "apto-calibration",
    against: Sequence[str | Path] = (),
    against_fields: Sequence[str] = (),
    general: str | Path | None = None,
    general_share: float = DEFAULT_GENERAL_SHARE,
) -> Calibration:
    """Write ``dest``: records of ``records_path`` rendered with ``model_dir``'s tokenizer and chat template.

    Args:
        against: benchmark files (as ``validate --against``); records close to one are left out.
        general: a plain UTF-8 text whose non-empty lines, in file order, take up to
            ``general_share`` of ``max_tokens``; the records fill the rest and come first.

    Raises:
        ValidationFailed: the records do not validate.
        InputError: no record fits within ``max_tokens``; a benchmark or general file is unreadable;
            no line of the general text fits in its share.
        ValueError: ``general_share`` is not in [0, 1).
    """
    from apto_release.train.collate import RecordEncoder, load_tokenizer, read_training_records

    if not 0 <= general_share < 1:
        raise ValueError(f"the general text's share must be in [0, 1), not {general_share}")
    lines = _general_lines(general) if general is not None else []
    records = read_training_records(records_path)
    flagged = contaminated_ids(records_path, against, against_fields)
    tokenizer = load_tokenizer(model_dir)

    def size(text: str) -> int:
        return len(tokenizer(text + SEPARATOR, add_special_tokens=False)["input_ids"])

    general_texts: list[str] = []
    general_tokens = 0
    for line in lines:  # in file order, up to the share
        n = size(line)
        if general_tokens + n > int(max_tokens * general_share):
            break
        general_texts.append(line)
        general_tokens += n
    if lines and not general_texts:
        raise InputError(f"no line of the general text fits in its share ({int(max_tokens * general_share)} tokens)", path=general,
                         hint="break the text into lines (one paragraph a line), or raise --general-share or --max-tokens")
    budget = max_tokens - general_tokens
    encoder = RecordEncoder(tokenizer, max_length=max(1, max_tokens))
    queues: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("id") not in flagged:
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
            n = size(text)
            if tokens + n > budget:  # the budget is reached: stop at the first record over it
                full = True
                break
            texts.append(text)
            tokens += n
            by_category[category] = by_category.get(category, 0) + 1
    if not texts:
        raise InputError(f"no record fits in {budget} tokens", path=records_path, hint="raise --max-tokens")
    path = write_text(dest, SEPARATOR.join(texts + general_texts) + SEPARATOR)
    by_source = {"records": tokens, **({"general": general_tokens} if general is not None else {})}
    return Calibration(Path(path), tokens + general_tokens, len(texts), dict(sorted(by_category.items())), Path(records_path),
                       left_out=sum(1 for r in records if r.get("id") in flagged), against=tuple(Path(p).name for p in against),
                       tokens_by_source=by_source, general=Path(general) if general is not None else None)


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
