"""Records as Parquet: one explicit Arrow schema for schema-v1 records, and the one way files are written.

``metadata`` (an object of string to string) becomes a struct over the union of keys seen, so the
column is typed and every row has the same shape; a file without metadata has no such column.
Fields outside the schema are not written (the JSON Lines output keeps them).

``write_table`` writes every Parquet file of a release (the layout and its reasons: README,
``dataset build``): a page index, content-defined chunking so that a re-pushed file deduplicates on
the Hub's Xet storage, dictionaries only for the columns of few values, row groups capped by bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from apto_release.io import atomic_path, dump_jsonl_line


#: Content-defined chunking (pyarrow 21+): data pages end where a rolling hash of the values says,
#: not every 1 MiB, so an inserted or removed record changes the pages around it and the rest keep
#: their bytes. pyarrow's defaults, which ``datasets``' ``push_to_hub`` also writes.
CDC_OPTIONS: dict[str, int] = {"min_chunk_size": 256 * 1024, "max_chunk_size": 1024 * 1024, "norm_level": 0}
#: The most Arrow bytes in one row group. Row groups are what the Hub's dataset viewer and
#: ``datasets`` read at a time; a row-group boundary at a fixed row count moves with every inserted
#: record (and so changes the pages at each boundary), so the cap is in bytes and large: a file of
#: this project's size (18,000 example records: 32 MB of Arrow data) is one row group, and
#: every row group stays under the viewer's 100 MB limit for using a file as it is.
ROW_GROUP_BYTES = 64 * 1024 * 1024
#: Leaf columns with few distinct values, dictionary-encoded. A dictionary over unique texts
#: (ids, messages) renumbers every later value when a record is inserted, which defeats the
#: chunking; they are written plain (measured: 39% of a re-pushed file new with dictionaries,
#: 14% without, 100% without chunking; tests/dataset/test_parquet.py).
DICTIONARY_COLUMNS = ("category", "messages.list.element.role", "harm_category", "judge_score")


def row_group_rows(table) -> int:
    """Rows per row group of ``table``: as many as fit in ``ROW_GROUP_BYTES`` (at least one)."""
    if not table.num_rows or table.nbytes <= ROW_GROUP_BYTES:
        return max(1, table.num_rows)
    return max(1, table.num_rows * ROW_GROUP_BYTES // table.nbytes)


def write_table(table, dest: str | Path | BinaryIO) -> Path | BinaryIO:
    """Write an Arrow table as Parquet with this project's layout, atomically when ``dest`` is a path.

    Its schema metadata (``datasets``' features) is kept. The same table gives the same bytes.

    Returns:
        ``dest`` (as a ``Path`` when it was a path).
    """
    import json

    import pyarrow.parquet as pq

    def write(sink) -> None:
        with pq.ParquetWriter(
            sink,
            table.schema,
            compression="snappy",
            use_dictionary=[c for c in DICTIONARY_COLUMNS if c in _leaf_paths(table.schema)],
            write_page_index=True,
            use_content_defined_chunking=dict(CDC_OPTIONS),
        ) as writer:
            writer.write_table(table, row_group_size=row_group_rows(table))
            # what datasets' writer records too: the chunking a later writer must repeat to dedupe
            writer.add_key_value_metadata({"content_defined_chunking": json.dumps(CDC_OPTIONS)})

    if hasattr(dest, "write"):
        write(dest)
        return dest
    with atomic_path(dest) as tmp:
        write(tmp)
    return Path(dest)


def _leaf_paths(schema) -> set[str]:
    """The dotted leaf column paths of an Arrow schema, as Parquet names them."""
    import pyarrow as pa

    def walk(path: str, kind) -> list[str]:
        if pa.types.is_struct(kind):
            return [leaf for f in kind for leaf in walk(f"{path}.{f.name}", f.type)]
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            return walk(f"{path}.list.element", kind.value_type)
        return [path]

    return {leaf for f in schema for leaf in walk(f.name, f.type)}


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
    """Write ``records`` to a Parquet file atomically (``write_table``'s layout)."""
    return write_table(records_table(records), dest)
