"""The Parquet layout: a page index, content-defined chunking, documented row groups, same bytes again."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from apto_release.dataset import parquet as parquet_mod
from apto_release.dataset.build import build_dataset
from apto_release.dataset.example import generate_records
from apto_release.dataset.parquet import CDC_OPTIONS, records_table, write_records_parquet, write_table
from tests.dataset.test_build import synthetic_records

# --- a Xet-like chunker: what the Hub's storage deduplicates ----------------------------------
# Xet cuts files where a gear rolling hash (64-byte window) hits a mask, 64 KiB on average; these
# are smaller (8 KiB on average, 2 KiB minimum) so that a 2 MB test file has a few hundred chunks.
_GEAR = np.random.default_rng(20261204).integers(0, 2**63, 256, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def chunk_hashes(data: bytes, *, bits: int = 13, min_size: int = 2048, max_size: int = 65536) -> list[tuple[bytes, int]]:
    """(SHA-256, length) of each content-defined chunk of ``data``."""
    b = np.frombuffer(data, dtype=np.uint8)
    g = _GEAR[b]
    h = np.zeros(len(b), dtype=np.uint64)
    for k in range(64):  # h[n] = sum over the window of gear[b[n-k]] << k (mod 2**64): the gear hash
        h[k:] += g[: len(b) - k] << np.uint64(k)
    mask = np.uint64(((1 << bits) - 1) << (64 - bits))
    candidates = np.flatnonzero((h & mask) == 0)
    out, start = [], 0
    while start < len(b):
        j = np.searchsorted(candidates, start + min_size)
        end = min(int(candidates[j]) + 1 if j < len(candidates) else len(b), start + max_size)
        out.append((hashlib.sha256(data[start:end]).digest(), end - start))
        start = end
    return out


def new_fraction(before: bytes, after: bytes) -> float:
    """The share of ``after``'s bytes in chunks that ``before`` does not have: what a re-push uploads."""
    known = {h for h, _ in chunk_hashes(before)}
    chunks = chunk_hashes(after)
    return sum(n for h, n in chunks if h not in known) / sum(n for _, n in chunks)


def written(table, writer) -> bytes:
    buf = io.BytesIO()
    writer(table, buf)
    return buf.getvalue()


# --- the tests --------------------------------------------------------------------------------


def test_a_record_inserted_near_the_start_changes_few_chunks_with_cdc_and_all_without():
    records = list(generate_records(3000, 0))  # realistic Japanese chats, about 2 MB of Parquet
    before, after = records_table(records[1:]), records_table(records[:1] + records[1:])

    def plain(table, buf):  # pyarrow's defaults: fixed-size pages, every column dictionary-encoded
        pq.write_table(table, buf)

    ours = new_fraction(written(before, write_table), written(after, write_table))
    baseline = new_fraction(written(before, plain), written(after, plain))
    assert baseline > 0.9  # every page after the insertion shifts: the whole file uploads again
    assert ours < 0.25  # measured 0.14: the pages around the new record, the footer
    assert baseline / ours > 4


def test_the_build_and_the_sample_write_a_page_index_and_cdc(tmp_path):
    built = build_dataset(synthetic_records(40), tmp_path / "hub")
    files = [built.out_dir / f for f in built.files if f.suffix == ".parquet"]
    files.append(write_records_parquet(synthetic_records(20), tmp_path / "sample.parquet"))
    for path in files:
        meta = pq.ParquetFile(path).metadata
        assert meta.num_row_groups == 1, path
        for i in range(meta.num_columns):
            column = meta.row_group(0).column(i)
            assert column.has_offset_index and column.has_column_index, (path, column.path_in_schema)
        assert json.loads(meta.metadata[b"content_defined_chunking"]) == CDC_OPTIONS
        # low-cardinality columns keep their dictionary; unique texts are plain (see write_table)
        encodings = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i).encodings
                     for i in range(meta.num_columns)}
        assert "RLE_DICTIONARY" in encodings["messages.list.element.role"]
        assert "RLE_DICTIONARY" not in encodings["messages.list.element.content"]
        assert "RLE_DICTIONARY" not in encodings["id"]


def test_row_groups_are_capped_by_bytes_and_rebuilds_are_byte_identical(tmp_path, monkeypatch):
    records = synthetic_records(40)
    a = build_dataset(records, tmp_path / "a", verify=False)
    b = build_dataset(list(reversed(records)), tmp_path / "b", verify=False)
    for f in a.files:
        assert (a.out_dir / f).read_bytes() == (b.out_dir / f).read_bytes(), f
    table = records_table(records)
    monkeypatch.setattr(parquet_mod, "ROW_GROUP_BYTES", table.nbytes // 4)
    meta = pq.ParquetFile(write_table(table, tmp_path / "small-groups.parquet")).metadata
    assert meta.num_row_groups == 4 and meta.num_rows == 40
    assert pq.read_table(tmp_path / "small-groups.parquet").equals(table)


@pytest.mark.parametrize("rows", [0, 1])
def test_tiny_tables_write(tmp_path, rows):
    table = records_table(synthetic_records(rows)) if rows else records_table(synthetic_records(1)).slice(0, 0)
    assert pq.read_table(write_table(table, tmp_path / "t.parquet")).num_rows == rows
