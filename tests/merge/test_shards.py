"""merge.shards: header checks, the checkpoint index, the streaming reader and the phased writer."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from safetensors.torch import load_file, save_file

from apto_release.errors import InputError
from apto_release.merge.shards import (
    INDEX_NAME,
    CheckpointIndex,
    ShardReader,
    ShardWriter,
    TensorSpec,
    encode_header,
    read_header,
    shard_file_name,
    tensor_bytes,
    write_index,
)

DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I8": torch.int8, "I64": torch.int64}


def _tensors(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "a.weight": torch.randn(4, 3, generator=g),
        "b.bias": torch.randn(5, generator=g).to(torch.bfloat16),
        "c.scalar": torch.tensor(1.5),
        "d.empty": torch.zeros(0, 2),
    }


def test_read_header_agrees_with_safetensors(tmp_path):
    tensors = _tensors()
    save_file(tensors, tmp_path / "x.safetensors", metadata={"format": "pt"})
    header = read_header(tmp_path / "x.safetensors")
    assert header.metadata == {"format": "pt"}
    assert set(header.tensors) == set(tensors)
    assert header.tensors["b.bias"].dtype == "BF16" and header.tensors["b.bias"].shape == (5,)
    assert header.data_start + sum(i.nbytes for i in header.tensors.values()) == header.file_size
    with ShardReader(header) as reader:
        for name, tensor in tensors.items():
            assert torch.equal(reader.get_tensor(name), tensor)
            assert b"".join(reader.raw_chunks(name, chunk_size=3)) == bytes(tensor_bytes(tensor))


def test_encode_header_matches_safetensors_bytes(tmp_path):
    tensors = {f"layers.{i}.w": torch.randn(3, i + 1) for i in range(5)}
    save_file(tensors, tmp_path / "x.safetensors", metadata={"format": "pt"})
    header = read_header(tmp_path / "x.safetensors")
    specs = [TensorSpec(i.name, i.dtype, i.shape) for i in header.tensors.values()]
    encoded, offsets = encode_header(specs, header.metadata)
    assert encoded == (tmp_path / "x.safetensors").read_bytes()[: header.data_start]
    assert offsets == [i.begin for i in header.tensors.values()]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:-1], "truncated: the header describes"),
        (lambda b: b + b"\0" * 8, "8 bytes follow the last tensor"),
        (lambda b: b[:5], "fewer than the 8-byte header length"),
        (lambda b: struct.pack("<Q", 10**6) + b[8:], "runs past the end of the file"),
        (lambda b: b[:8] + b"[" + b[9:], "header is not valid JSON"),
    ],
)
def test_read_header_refuses_damaged_files(tmp_path, damage, message):
    path = tmp_path / "x.safetensors"
    save_file(_tensors(), path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(InputError, match=message) as info:
        read_header(path)
    assert str(path) in str(info.value) and info.value.exit_code == 2


def _raw_file(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_read_header_refuses_inconsistent_entries(tmp_path):
    bad_size = _raw_file(tmp_path / "a.safetensors", {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}, b"\0" * 12)
    with pytest.raises(InputError, match=r"'w' \(F32 \[2, 2\]\) should take 16 bytes, the header gives it 12"):
        read_header(bad_size)
    gap = _raw_file(tmp_path / "b.safetensors", {"w": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}}, b"\0" * 4)
    with pytest.raises(InputError, match="does not follow the previous tensor"):
        read_header(gap)
    malformed = _raw_file(tmp_path / "c.safetensors", {"w": {"dtype": "U8", "shape": "2", "data_offsets": [0, 2]}}, b"\0" * 2)
    with pytest.raises(InputError, match="header entry of 'w' is malformed"):
        read_header(malformed)


def test_checkpoint_index_sharded_and_single(tmp_path):
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    save_file({"a": torch.ones(2)}, sharded / shard_file_name(1, 2))
    save_file({"b": torch.ones(3), "c": torch.zeros(1)}, sharded / shard_file_name(2, 2))
    weight_map = {"a": shard_file_name(1, 2), "b": shard_file_name(2, 2), "c": shard_file_name(2, 2)}
    write_index(sharded / INDEX_NAME, weight_map, 24, {"total_parameters": 6})
    written = json.loads((sharded / INDEX_NAME).read_text())
    assert written == {"metadata": {"total_parameters": 6, "total_size": 24}, "weight_map": weight_map}
    index = CheckpointIndex.from_dir(sharded)
    assert index.shards == ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    assert index.total_size == 24 and index.info("c").shape == (1,)
    assert [i.name for i in index.tensors_in(shard_file_name(2, 2))] == ["b", "c"]

    single = tmp_path / "single"
    single.mkdir()
    save_file({"x": torch.ones(2)}, single / shard_file_name(1, 1))
    index = CheckpointIndex.from_dir(single)
    assert index.index_file is None and index.weight_map == {"x": "model.safetensors"}


def test_checkpoint_index_refusals(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    with pytest.raises(InputError, match="no model.safetensors.index.json or model.safetensors"):
        CheckpointIndex.from_dir(folder)
    (folder / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(InputError, match=r"PyTorch pickle weights") as info:
        CheckpointIndex.from_dir(folder)
    assert "safe_serialization" in info.value.hint
    save_file({"a": torch.ones(2)}, folder / shard_file_name(1, 2))
    write_index(folder / INDEX_NAME, {"a": shard_file_name(1, 2), "b": shard_file_name(2, 2)}, 8)
    with pytest.raises(InputError, match="names shard 'model-00002-of-00002.safetensors', which is missing"):
        CheckpointIndex.from_dir(folder)
    write_index(folder / INDEX_NAME, {"a": shard_file_name(1, 2), "b": shard_file_name(1, 2)}, 8)
    with pytest.raises(InputError, match="puts 'b' in 'model-00001-of-00002.safetensors', whose header does not list it"):
        CheckpointIndex.from_dir(folder)
    write_index(folder / INDEX_NAME, {"a": "../elsewhere.safetensors"}, 8)
    with pytest.raises(InputError, match="not a .safetensors file in this folder"):
        CheckpointIndex.from_dir(folder)


def test_writer_checks_its_phases(tmp_path):
    specs = [TensorSpec("a", "F32", (2,)), TensorSpec("b", "U8", (3,))]
    with pytest.raises(ValueError, match="'b' written where 'a' comes next"), ShardWriter(tmp_path / "x.safetensors", specs) as writer:
        writer.write("b", b"abc")
    with pytest.raises(ValueError, match="'a' got 4 bytes, its dtype and shape take 8"), ShardWriter(tmp_path / "x.safetensors", specs) as writer:
        writer.write("a", b"\0" * 4)
    writer = ShardWriter(tmp_path / "x.safetensors", specs)
    writer.write("a", [b"\0" * 4, b"\0" * 4])  # chunks
    with pytest.raises(ValueError, match="closed with 1 of 2 tensors unwritten"):
        writer.close()
    with ShardWriter(tmp_path / "x.safetensors", specs, {"format": "pt"}) as writer:
        writer.write("a", tensor_bytes(torch.tensor([1.0, 2.0])))
        writer.write("b", b"xyz")
    loaded = load_file(tmp_path / "x.safetensors")
    assert loaded["a"].tolist() == [1.0, 2.0] and bytes(loaded["b"].tolist()) == b"xyz"


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(DTYPES)), st.lists(st.integers(0, 4), min_size=0, max_size=3)),
        min_size=1, max_size=6,
    ),
    st.randoms(use_true_random=False),
)
def test_writer_round_trips_through_safetensors(entries, rng):
    """Whatever the dtypes and shapes (scalars and empty tensors included), safetensors reads back what we wrote."""
    tensors = {}
    for i, (dtype, shape) in enumerate(entries):
        values = torch.tensor([rng.uniform(-100, 100) for _ in range(int(torch.Size(shape).numel()))]).reshape(shape)
        tensors[f"t{i}.{dtype.lower()}"] = values.to(DTYPES[dtype])
    specs = [TensorSpec(name, dtype, tuple(t.shape)) for (name, t), (dtype, _) in zip(tensors.items(), entries)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.safetensors"
        with ShardWriter(path, specs, {"format": "pt"}) as writer:
            for name, tensor in tensors.items():
                writer.write(name, tensor_bytes(tensor))
        loaded = load_file(path)
        header = read_header(path)
    assert list(header.tensors) == list(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name


def test_shard_file_name():
    assert shard_file_name(1, 1) == "model.safetensors"
    assert shard_file_name(2, 12) == "model-00002-of-00012.safetensors"
