"""Safetensors checkpoints on disk: the index, a streaming shard reader and a shard writer.

The file format (https://github.com/huggingface/safetensors#format): an 8-byte little-endian
header length N, N bytes of JSON (``{"__metadata__": {...}, name: {"dtype", "shape",
"data_offsets": [begin, end]}}``, offsets relative to the data section), then the tensor data,
contiguous. A sharded checkpoint adds ``model.safetensors.index.json``, whose ``weight_map`` says
which shard holds each tensor.

Everything here works from headers and byte ranges, so a checkpoint can be checked (truncated
shard, index naming a tensor a shard lacks) before anything is loaded, and an untouched tensor
can be copied byte for byte without ever becoming a tensor. torch is imported only by the
functions that make tensors (``ShardReader.read_rows``, ``tensor_bytes``).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apto_release.errors import InputError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

# Bits per element of each safetensors dtype (safetensors/src/tensor.rs, Dtype::bitsize).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
# Dtypes a LoRA delta can be added to (merged in float32, stored back in the same dtype).
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")

# The safetensors reader refuses headers above 100 MB; so do we, before reading one into memory.
MAX_HEADER_BYTES = 100_000_000
COPY_CHUNK = 16 << 20
_SHARD_NAME = re.compile(r"^[^/\\]+\.safetensors$")


def shard_file_name(index: int, total: int) -> str:
    """The Hugging Face name of shard ``index`` (1-based) of ``total``: ``model-00001-of-00003.safetensors``."""
    if total == 1:
        return SINGLE_NAME
    return f"model-{index:05d}-of-{total:05d}.safetensors"


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in its shard: dtype, shape and the byte range of its data."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offsets relative to the data section, as in the header
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ShardHeader:
    """A checked safetensors header: its tensors in data order, and where the data starts."""

    path: Path
    data_start: int
    file_size: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] | None = None

    @property
    def data_size(self) -> int:
        return self.file_size - self.data_start


def _corrupt(path: Path, what: str) -> InputError:
    return InputError(f"not a valid safetensors shard: {what}", path=path, hint="download or copy the file again; it is truncated or corrupted")


def read_header(path: str | Path) -> ShardHeader:
    """Read and check the header of one safetensors file (no tensor data is read).

    Checks what the safetensors loader checks, so that a bad shard is refused before a merge
    starts: the header length fits the file, the JSON parses, each tensor's byte range matches
    its dtype and shape, the ranges are contiguous, and the file ends where the last one ends
    (a truncated download fails here).

    Raises:
        InputError: naming the file and what is wrong.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise _corrupt(path, f"the file has {size} bytes, fewer than the 8-byte header length")
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise _corrupt(path, f"truncated or corrupted: the header length ({n:,} bytes) runs past the end of the file ({size:,} bytes)")
            raw = f.read(n)
    except OSError as exc:
        raise InputError(f"cannot read the shard: {exc.strerror or exc}", path=path) from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"the header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _corrupt(path, "the header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not isinstance(metadata, dict):
        raise _corrupt(path, "'__metadata__' is not an object")
    infos: list[TensorInfo] = []
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = (
                isinstance(dtype, str)
                and isinstance(shape, list)
                and all(isinstance(d, int) and d >= 0 for d in shape)
                and isinstance(begin, int)
                and isinstance(end, int)
                and 0 <= begin <= end
            )
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise _corrupt(path, f"the header entry of '{name}' is malformed")
        info = TensorInfo(name, dtype, tuple(shape), begin, end)
        bits = DTYPE_BITS.get(dtype)
        if bits is not None and info.numel * bits != info.nbytes * 8:
            raise _corrupt(path, f"'{name}' ({dtype} {list(shape)}) should take {info.numel * bits // 8:,} bytes, the header gives it {info.nbytes:,}")
        infos.append(info)
    infos.sort(key=lambda i: (i.begin, i.end))
    position = 0
    for info in infos:
        if info.begin != position:
            raise _corrupt(path, f"the data of '{info.name}' does not follow the previous tensor's (offset {info.begin:,}, expected {position:,})")
        position = info.end
    data_start = 8 + n
    if data_start + position != size:
        if data_start + position > size:
            what = f"truncated: the header describes {position:,} bytes of tensor data, the file holds {size - data_start:,}"
        else:
            what = f"{size - data_start - position:,} bytes follow the last tensor"
        raise _corrupt(path, what)
    return ShardHeader(path=path, data_start=data_start, file_size=size, tensors={i.name: i for i in infos}, metadata=metadata)


@dataclass
class CheckpointIndex:
    """A safetensors checkpoint folder: which shard holds each tensor, with every shard's header checked.

    ``weight_map`` keeps the order of the base's index; ``shards`` are the shard file names,
    sorted. A single-file checkpoint (``model.safetensors``, no index) has ``index_file`` None.
    """

    root: Path
    weight_map: dict[str, str]
    shards: tuple[str, ...]
    headers: dict[str, ShardHeader]
    index_file: str | None = INDEX_NAME
    index_metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dir(cls, root: str | Path) -> CheckpointIndex:
        """Read the index (or the single shard) of the checkpoint in ``root`` and check every shard header.

        Raises:
            InputError: no safetensors weights, an unreadable index, a shard that is missing,
                truncated or corrupted, or an index naming a tensor its shard lacks.
        """
        root = Path(root)
        if not root.is_dir():
            raise InputError("the checkpoint folder does not exist" if not root.exists() else "expected a checkpoint folder, not a file", path=root)
        index_path = root / INDEX_NAME
        if index_path.is_file():
            try:
                data = json.loads(index_path.read_text("utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(f"cannot read the checkpoint index: {exc}", path=index_path) from exc
            weight_map = data.get("weight_map") if isinstance(data, dict) else None
            if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
                raise InputError("the index has no 'weight_map' of tensor names to shard files", path=index_path, field="weight_map")
            metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
            shards = tuple(sorted(set(weight_map.values())))
            for shard in shards:
                if not _SHARD_NAME.match(shard):
                    raise InputError(f"the index names '{shard}', which is not a .safetensors file in this folder", path=index_path, field="weight_map")
                if not (root / shard).is_file():
                    raise InputError(f"the index names shard '{shard}', which is missing", path=index_path, hint="download the missing shard")
            headers = {shard: read_header(root / shard) for shard in shards}
            for name, shard in weight_map.items():
                if name not in headers[shard].tensors:
                    raise InputError(f"the index puts '{name}' in '{shard}', whose header does not list it", path=index_path, hint="the index and the shards come from different checkpoints")
            return cls(root, dict(weight_map), shards, headers, INDEX_NAME, dict(metadata))
        single = root / SINGLE_NAME
        if single.is_file():
            header = read_header(single)
            weight_map = {name: SINGLE_NAME for name in sorted(header.tensors)}
            return cls(root, weight_map, (SINGLE_NAME,), {SINGLE_NAME: header}, None, {})
        if any(root.glob("*.bin")) or any(root.glob("*.pt")):
            raise InputError("the checkpoint has only PyTorch pickle weights (*.bin)", path=root, hint="re-save it with save_pretrained(..., safe_serialization=True)")
        raise InputError(f"no {INDEX_NAME} or {SINGLE_NAME} in the checkpoint folder", path=root, hint="give the folder that holds config.json and the .safetensors shards")

    def info(self, name: str) -> TensorInfo:
        return self.headers[self.weight_map[name]].tensors[name]

    def tensors_in(self, shard: str) -> list[TensorInfo]:
        """The tensors of ``shard`` in data order (those the index does not list included)."""
        return list(self.headers[shard].tensors.values())

    @property
    def total_size(self) -> int:
        """Bytes of tensor data over all shards (the index's ``metadata.total_size``)."""
        return sum(h.data_size for h in self.headers.values())


class ShardReader:
    """One open shard: read a tensor (or a block of its rows) at a time, or stream its raw bytes.

    Tensors are read with ``readinto`` into memory they own, not through a memory map: pages of a
    mapped file stay resident while the map is open, so a reader built on ``safe_open`` would
    grow to the size of the whole shard. Use as a context manager; the merge keeps exactly one
    open at a time.
    """

    def __init__(self, header: ShardHeader) -> None:
        self.header = header
        self._file = None

    def __enter__(self) -> ShardReader:  # noqa: PYI034
        self._file = open(self.header.path, "rb")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _read_into(self, offset: int, buffer: memoryview, name: str) -> None:
        if self._file is None:
            raise RuntimeError("ShardReader used outside its 'with' block")
        self._file.seek(self.header.data_start + offset)
        done = 0
        while done < len(buffer):
            n = self._file.readinto(buffer[done:])
            if not n:
                raise InputError(f"the shard ended inside the data of '{name}'", path=self.header.path, hint="the file changed while being read")
            done += n

    def read_rows(self, name: str, start: int = 0, stop: int | None = None):
        """Rows ``start:stop`` of a tensor (along its first dimension), as a torch.Tensor of the stored dtype."""
        import torch

        info = self.header.tensors[name]
        dtype = torch_dtype(info.dtype)
        if not info.shape:
            if (start, stop) not in ((0, None), (0, 1)):
                raise ValueError(f"'{name}' is a scalar; it has no rows to slice")
            shape: tuple[int, ...] = ()
            start, count, row_bytes = 0, 1, info.nbytes
        else:
            rows = info.shape[0]
            stop = rows if stop is None else stop
            if not 0 <= start <= stop <= rows:
                raise ValueError(f"rows {start}:{stop} are outside '{name}' ({rows} rows)")
            count = stop - start
            row_bytes = info.nbytes // rows if rows else 0
            shape = (count, *info.shape[1:])
        buffer = torch.empty(count * row_bytes, dtype=torch.uint8)
        self._read_into(info.begin + start * row_bytes, memoryview(buffer.numpy()).cast("B"), name)
        return buffer.view(dtype).reshape(shape)

    def get_tensor(self, name: str):
        """Load one whole tensor with its stored dtype (a torch.Tensor)."""
        return self.read_rows(name)

    def raw_chunks(self, name: str, chunk_size: int = COPY_CHUNK) -> Iterator[bytes]:
        """The stored bytes of one tensor, in chunks, without making a tensor of them."""
        if self._file is None:
            raise RuntimeError("ShardReader used outside its 'with' block")
        info = self.header.tensors[name]
        self._file.seek(self.header.data_start + info.begin)
        left = info.nbytes
        while left:
            chunk = self._file.read(min(chunk_size, left))
            if not chunk:
                raise InputError(f"the shard ended inside the data of '{name}'", path=self.header.path, hint="the file changed while being read")
            left -= len(chunk)
            yield chunk


# safetensors dtype names -> torch dtype names (safetensors/torch.py, _TYPES)
_TORCH_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "U16": "uint16", "U32": "uint32", "U64": "uint64", "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
}


def torch_dtype(dtype: str):
    """The torch dtype of a safetensors dtype name (``"BF16"`` -> ``torch.bfloat16``)."""
    import torch

    name = _TORCH_DTYPES.get(dtype)
    if name is None or not hasattr(torch, name):
        raise ValueError(f"safetensors dtype {dtype!r} cannot be read as a torch tensor here")
    return getattr(torch, name)


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to be written: name, safetensors dtype and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        bits = DTYPE_BITS.get(self.dtype)
        if bits is None:
            raise ValueError(f"unknown safetensors dtype {self.dtype!r} for '{self.name}'")
        return math.prod(self.shape) * bits // 8


def encode_header(specs: Sequence[TensorSpec], metadata: dict[str, str] | None = None) -> tuple[bytes, list[int]]:
    """The header bytes (length prefix included) for ``specs`` laid out in order, and each tensor's begin offset.

    Like safetensors, the JSON is compact and padded with spaces so the data starts 8-byte aligned.
    """
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offsets = []
    position = 0
    for spec in specs:
        if spec.name in header or spec.name == "__metadata__":
            raise ValueError(f"tensor name '{spec.name}' is used twice")
        offsets.append(position)
        header[spec.name] = {"dtype": spec.dtype, "shape": list(spec.shape), "data_offsets": [position, position + spec.nbytes]}
        position += spec.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, offsets


class ShardWriter:
    """Write one safetensors file in explicit, checked phases: header, then each tensor's data in order.

    The header is written on construction from the specs; ``write`` must then be called once per
    tensor, in the specs' order, with exactly that tensor's bytes (a bytes-like object or an
    iterable of chunks); ``close`` checks that every tensor was written and syncs the file.
    Nothing is buffered beyond one chunk, so a shard of any size streams through.

        with ShardWriter(path, specs) as writer:
            for spec in specs:
                writer.write(spec.name, data_for(spec))
    """

    def __init__(self, path: str | Path, specs: Sequence[TensorSpec], metadata: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.specs = list(specs)
        header, _ = encode_header(self.specs, metadata)
        self._next = 0
        self.bytes_written = 0
        self._file = open(self.path, "wb")  # noqa: SIM115 (closed by close() or __exit__)
        try:
            self._file.write(header)
        except BaseException:
            self._file.close()
            raise
        self.bytes_written = len(header)

    def __enter__(self) -> ShardWriter:  # noqa: PYI034
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self._file.close()

    def write(self, name: str, data: bytes | bytearray | memoryview | Iterable[bytes]) -> None:
        """Write the data of the next tensor, which must be ``name``."""
        if self._next >= len(self.specs):
            raise ValueError(f"'{name}' written after the last tensor of {self.path.name}")
        spec = self.specs[self._next]
        if spec.name != name:
            raise ValueError(f"'{name}' written where '{spec.name}' comes next in {self.path.name}")
        chunks = (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data
        written = 0
        for chunk in chunks:
            written += self._file.write(chunk)
        if written != spec.nbytes:
            raise ValueError(f"'{name}' got {written:,} bytes, its dtype and shape take {spec.nbytes:,}")
        self.bytes_written += written
        self._next += 1

    def close(self) -> None:
        """Check every tensor was written, then flush and sync the file."""
        if self._file.closed:
            return
        try:
            if self._next != len(self.specs):
                raise ValueError(f"{self.path.name} closed with {len(self.specs) - self._next} of {len(self.specs)} tensors unwritten")
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()


def tensor_bytes(tensor) -> memoryview:
    """The raw little-endian bytes of a CPU tensor, as safetensors stores them (no copy if contiguous)."""
    import sys

    import torch

    if sys.byteorder != "little":  # pragma: no cover - every platform we run on is little-endian
        raise RuntimeError("writing safetensors on a big-endian machine is not supported")
    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


def write_index(path: str | Path, weight_map: dict[str, str], total_size: int, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors.index.json`` as transformers does: ``metadata.total_size`` and the ``weight_map``."""
    meta = dict(metadata or {})
    meta["total_size"] = total_size
    from apto_release.io import write_text

    return write_text(path, json.dumps({"metadata": meta, "weight_map": weight_map}, indent=2, ensure_ascii=False) + "\n")
