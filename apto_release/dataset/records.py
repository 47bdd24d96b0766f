"""Reading record files: JSON Lines (``.jsonl``, ``.jsonl.gz``) and Parquet.

The reader never loads a whole file into memory and never gives up on a bad line: every line
becomes a ``RawRecord`` that holds either the parsed object or the finding that says why it could
not be parsed. Validation, sampling and the dataset build all read through here.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from apto_release.dataset.findings import RULES, Finding
from apto_release.errors import InputError

#: A record (one line) larger than this is reported and skipped without being read into memory.
DEFAULT_MAX_RECORD_BYTES = 1_000_000
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class RawRecord:
    """One line (JSON Lines) or row (Parquet): the parsed value, or the finding that stopped it."""

    line: int
    value: Any = None
    finding: Finding | None = None


def _finding(rule: str, message: str, line: int | None) -> Finding:
    return Finding(rule, RULES[rule].severity, message, line=line)


def input_format(path: Path) -> str:
    """``jsonl``, ``jsonl.gz`` or ``parquet``, from the file name."""
    name = path.name.lower()
    if name.endswith((".jsonl.gz", ".json.gz", ".ndjson.gz")):
        return "jsonl.gz"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise InputError(
        "unknown input format",
        path=path,
        hint="use .jsonl, .jsonl.gz or .parquet",
    )


def read_records(path: str | Path, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[RawRecord]:
    """Yield every line or row of ``path`` as a ``RawRecord``, in file order.

    Raises:
        InputError: the file does not exist, cannot be opened, or is not in its format at all
            (a broken gzip stream, a file that is not Parquet). Bad *lines* are findings instead.
    """
    path = Path(path)
    fmt = input_format(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    if fmt == "parquet":
        yield from _read_parquet(path, max_record_bytes)
        return
    try:
        opener = gzip.open if fmt == "jsonl.gz" else open
        with opener(path, "rb") as f:
            yield from _read_jsonl(f, max_record_bytes)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"cannot read the file: {exc}", path=path) from exc


def _read_jsonl(f: IO[bytes], max_record_bytes: int) -> Iterator[RawRecord]:
    line_no = 0
    while True:
        raw = f.readline(max_record_bytes + 1)
        if not raw:
            return
        line_no += 1
        if len(raw) > max_record_bytes and not raw.endswith(b"\n"):
            size = len(raw) + _skip_rest_of_line(f)
            yield RawRecord(
                line_no,
                finding=_finding(
                    "record_too_large",
                    f"record is {size:,} bytes, over the limit of {max_record_bytes:,} bytes",
                    line_no,
                ),
            )
            continue
        if line_no == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
            yield RawRecord(line_no, finding=_finding("bom", "the file starts with a UTF-8 byte-order mark; save it as UTF-8 without BOM", line_no))
        if not raw.strip():
            continue  # blank lines (a final newline, a trailing empty line) hold no record
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield RawRecord(
                line_no,
                finding=_finding("invalid_utf8", f"invalid UTF-8 byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line", line_no),
            )
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield RawRecord(line_no, finding=_finding("invalid_json", f"invalid JSON: {exc.msg} at column {exc.colno}", line_no))
            continue
        except RecursionError:
            yield RawRecord(line_no, finding=_finding("invalid_json", "invalid JSON: nested too deeply", line_no))
            continue
        yield RawRecord(line_no, value)


def _skip_rest_of_line(f: IO[bytes]) -> int:
    skipped = 0
    while True:
        chunk = f.readline(_CHUNK)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def _read_parquet(path: Path, max_record_bytes: int) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"not a readable Parquet file: {exc}", path=path) from exc
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=4096):
            for value in batch.to_pylist():
                row += 1
                # Parquet has no "absent": a null optional field reads as None, like JSON null.
                # A struct column of metadata holds every key of every row; drop the nulls.
                if isinstance(value, dict) and "metadata" in value:
                    metadata = value["metadata"]
                    if metadata is None:
                        del value["metadata"]
                    elif isinstance(metadata, dict):
                        value["metadata"] = {k: v for k, v in metadata.items() if v is not None}
                size = len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8"))
                if size > max_record_bytes:
                    yield RawRecord(
                        row,
                        finding=_finding("record_too_large", f"record is {size:,} bytes, over the limit of {max_record_bytes:,} bytes", row),
                    )
                    continue
                yield RawRecord(row, value)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read row {row + 1}: {exc}", path=path, line=row + 1) from exc
