"""Records as Parquet: one explicit Arrow schema for schema-v1 records.

``metadata`` (an object of string to string) becomes a struct over the union of keys seen, so the
column is typed and every row has the same shape; a file without metadata has no such column.
Fields outside the schema are not written (the JSON Lines output keeps them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apto_release.io import atomic_path, dump_jsonl_line


def metadata_keys(records: Sequence[dict[str, Any]]) -> list[str]:
    """The sorted union of metadata keys over ``records``."""
    keys: set[str] = set()
    for record in records:
        keys.update(record.get("metadata") or ())
    return sorted(keys)


def arrow_schema(records: Sequence[dict[str, Any]]):
    """The Arrow schema of ``records`` (category as a plain string)."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    fields = [
        ("id", pa.string()),
        ("category", pa.string()),
        ("messages", pa.list_(message)),
        ("harmful_prefix", pa.string()),
        ("has_jailbreak", pa.bool_()),
        ("harm_category", pa.string()),
        ("judge_score", pa.int8()),
    ]
    keys = metadata_keys(records)
    if keys:
        fields.append(("metadata", pa.struct([(k, pa.string()) for k in keys])))
    return pa.schema(fields)


def records_table(records: Sequence[dict[str, Any]]):
    """``records`` as an Arrow table with ``arrow_schema``.

    The rows go through Arrow's JSON reader with the schema given: that is fast, and unlike
    ``pyarrow.array`` on Python lists it does not import pandas (a quarter of a second).
    """
    import io

    import pyarrow.json as pj

    schema = arrow_schema(records)
    keys = schema.field("metadata").type.names if "metadata" in schema.names else []
    lines = []
    for r in records:
        row = {name: r.get(name) for name in schema.names if name != "metadata"}
        row["judge_score"] = int(row["judge_score"])  # 4.0 is valid JSON Schema, but the column is int8
        if keys:
            row["metadata"] = r.get("metadata") or {}
        lines.append(dump_jsonl_line(row))
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    return pj.read_json(io.BytesIO("".join(lines).encode("utf-8")), parse_options=options)


def write_records_parquet(records: Sequence[dict[str, Any]], dest: str | Path) -> Path:
    """Write ``records`` to a Parquet file atomically."""
    import pyarrow.parquet as pq

    with atomic_path(dest) as tmp:
        pq.write_table(records_table(records), tmp)
    return Path(dest)
