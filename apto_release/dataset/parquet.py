"""Records as Parquet: one explicit Arrow schema for schema-v1 records.

``metadata`` (an object of string to string) becomes a struct over the union of keys seen, so the
column is typed and every row has the same shape; a file without metadata has no such column.
Fields outside the schema are not written (the JSON Lines output keeps them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apto_release.io import atomic_path


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
    """``records`` as an Arrow table with ``arrow_schema``."""
    import pyarrow as pa

    schema = arrow_schema(records)
    columns = {name: [r.get(name) for r in records] for name in schema.names}
    if "judge_score" in columns:
        columns["judge_score"] = [int(v) for v in columns["judge_score"]]
    if "metadata" in columns:
        keys = schema.field("metadata").type.names
        columns["metadata"] = [{k: (m or {}).get(k) for k in keys} for m in columns["metadata"]]
    return pa.table(columns, schema=schema)


def write_records_parquet(records: Sequence[dict[str, Any]], dest: str | Path) -> Path:
    """Write ``records`` to a Parquet file atomically."""
    import pyarrow.parquet as pq

    with atomic_path(dest) as tmp:
        pq.write_table(records_table(records), tmp)
    return Path(dest)
