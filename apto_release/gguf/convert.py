"""Convert a merged Qwen3.5 / Qwen3 / Qwen2 safetensors checkpoint to GGUF, streaming tensor by tensor.

What llama.cpp's ``convert_hf_to_gguf.py`` writes for these architectures, done in bounded memory:

1. Plan from headers only: ``config.json``, the tokenizer files and every shard header are read
   and checked (``merge.shards.CheckpointIndex``: a truncated or corrupted shard fails here), every
   tensor gets its GGUF name, output shape, transform and type from the architecture's spec
   (``archs.ArchSpec``: ``archs.DenseQwenSpec``, ``qwen35.Qwen35Spec``), and the byte size of the
   output is known. Nothing is written before the plan is complete.
2. Write in gguf-py's explicit phases into a hidden staging folder beside the destination
   (``output.staging``): header -> key/value metadata -> tensor infos -> tensor data, the data one
   tensor at a time, in the shards' data order (each shard is read front to back, one open at a
   time; one tensor and its converted copy are in memory at once). An output larger than
   ``split_max_size`` becomes a llama.cpp split set, split by gguf-py itself (the first file
   carries the metadata; every file ``split.no``, ``split.count``, ``split.tensors.count``).
3. Move the file(s) into place (``output.publish``) only when every tensor is written; any error,
   or an interrupt, removes the staging folder.

Tensor types follow llama.cpp's converter: 1-D tensors (norms, biases), norm weights and the tensors
the spec keeps in float32 (Qwen3.5's ``ssm_conv1d``) stay F32; the others take the requested type;
a tensor whose rows do not split into Q8_0 blocks of 32 falls back to F16 (as llama.cpp does on
``QuantError``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from apto_release.errors import InputError, UsageError
from apto_release.gguf import output
from apto_release.gguf.archs import ArchSpec, DenseQwenSpec, TensorRule
from apto_release.gguf.qwen35 import Qwen35Spec
from apto_release.gguf.sampling import add_to_gguf as add_sampling
from apto_release.gguf.sampling import sampling_defaults
from apto_release.io import read_json_object
from apto_release.merge.shards import CheckpointIndex, ShardReader

QT = gguf.GGMLQuantizationType

#: ``quant`` option -> (type of the 2-D tensors, ``general.file_type``).
QUANT_TYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "F16": (QT.F16, gguf.LlamaFileType.MOSTLY_F16),
    "BF16": (QT.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "Q8_0": (QT.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}

#: llama.cpp pre-tokenizer names, keyed by the Split regex of the tokenizer.json pre-tokenizer.
#: llama.cpp itself identifies the pre-tokenizer by hashing the tokenization of a test text
#: (convert_hf_to_gguf.py, get_vocab_base_pre); the regex is what decides that tokenization.
PRE_TOKENIZERS: dict[str, str] = {
    # Qwen2 / Qwen2.5 / Qwen3 (llama-vocab.cpp LLAMA_VOCAB_PRE_TYPE_QWEN2)
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
    # Qwen3.5: combining marks (\p{M}) stay with their letters (LLAMA_VOCAB_PRE_TYPE_QWEN35)
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen35",
}

#: ``config.json`` ``architectures[0]`` -> the spec of its family.
SPECS: dict[str, type[ArchSpec]] = {hf: spec for spec in (Qwen35Spec, DenseQwenSpec) for hf in spec.ARCHITECTURES}

EOT_TOKEN = "<|im_end|>"  # the ChatML end of turn: EOS and EOT of a chat model
_ENDOFTEXT = "<|endoftext|>"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass
class ConvertResult(output.Written):
    """What ``convert`` wrote, and from what."""

    architecture: str = ""
    tensors: int = 0


@dataclass(frozen=True)
class Planned:
    """One tensor of an output: its rule, the shard it is read from, its GGUF type and size."""

    rule: TensorRule
    shard: str
    qtype: gguf.GGMLQuantizationType
    nbytes: int

    @property
    def hf_name(self) -> str:
        return self.rule.hf_name

    @property
    def gguf_name(self) -> str:
        return self.rule.gguf_name

    @property
    def shape(self) -> tuple[int, ...]:  # the output's, torch order
        return self.rule.shape


@dataclass(frozen=True)
class Vocab:
    """The tokenizer as GGUF stores it."""

    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    eos_id: int
    eot_id: int
    bos_id: int | None
    pad_id: int | None
    chat_template: str | None


# ---------------------------------------------------------------------------------------------
# Reading the inputs


def read_vocab(model_dir: str | Path, vocab_size: int, *, pre: str | None = None) -> Vocab:
    """The tokenizer of ``model_dir`` (tokenizer.json, tokenizer_config.json, chat_template.jinja) as GGUF keys.

    Token types as llama.cpp's ``get_vocab_base``: added tokens that are special (or look special,
    ``<|...|>``) are CONTROL, other added tokens USER_DEFINED, the rest NORMAL; ids up to
    ``vocab_size`` that no token has are ``[PAD<id>]``, UNUSED.
    """
    model_dir = Path(model_dir)
    tok_path = model_dir / "tokenizer.json"
    tok = read_json_object(tok_path, "the tokenizer (tokenizer.json)")
    tok_config = read_json_object(model_dir / "tokenizer_config.json", "the tokenizer config") if (model_dir / "tokenizer_config.json").is_file() else {}
    model = tok.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise InputError(f"expected a byte-level BPE tokenizer, found model type {model.get('type')!r}", path=tok_path, field="model")
    by_id: dict[int, tuple[str, int]] = {i: (t, gguf.TokenType.NORMAL) for t, i in model["vocab"].items()}
    for added in tok.get("added_tokens") or []:
        text, i = added["content"], int(added["id"])
        special = added.get("special") or (text.startswith("<|") and text.endswith("|>"))
        by_id[i] = (text, gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    if by_id and max(by_id) >= vocab_size:
        raise InputError(f"the tokenizer has token id {max(by_id)}, beyond the model's vocab_size {vocab_size}", path=tok_path)
    tokens, types = [], []
    for i in range(vocab_size):
        text, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(text)
        types.append(int(kind))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]

    if pre is None:
        pre = _detect_pre(tok, tok_path)
    ids = {t: i for i, t in enumerate(tokens)}

    def token_id(value: Any) -> int | None:
        if isinstance(value, dict):  # old AddedToken serialisation
            value = value.get("content")
        return ids.get(value) if isinstance(value, str) else None

    eos = ids.get(EOT_TOKEN, token_id(tok_config.get("eos_token")))
    if eos is None:
        raise InputError(f"the tokenizer has no '{EOT_TOKEN}' and no eos_token", path=tok_path, hint="a Qwen chat tokenizer is expected")
    bos = token_id(tok_config.get("bos_token"))
    if bos is None:
        bos = ids.get(_ENDOFTEXT)  # what Qwen's config.json gives as bos_token_id (never added: add_bos_token is false)
    pad = token_id(tok_config.get("pad_token"))
    if pad is None:
        pad = ids.get(_ENDOFTEXT)

    template_file = model_dir / "chat_template.jinja"
    if template_file.is_file():
        chat_template = template_file.read_text("utf-8")
    else:
        chat_template = tok_config.get("chat_template")
    return Vocab(tokens, types, merges, pre, eos, eos, bos, pad, chat_template or None)


def _detect_pre(tok: dict[str, Any], tok_path: Path) -> str:
    regexes: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Split" and isinstance(node.get("pattern"), dict) and "Regex" in node["pattern"]:
                regexes.append(node["pattern"]["Regex"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tok.get("pre_tokenizer"))
    for regex in regexes:
        if regex in PRE_TOKENIZERS:
            return PRE_TOKENIZERS[regex]
    raise InputError(
        "the tokenizer's pre-tokenizer is not one llama.cpp knows as a Qwen pre-tokenizer (qwen2, qwen35)",
        path=tok_path, field="pre_tokenizer", hint="pass pre= to name llama.cpp's pre-tokenizer explicitly",
    )


# ---------------------------------------------------------------------------------------------
# Planning


def tensor_type(planned_shape: tuple[int, ...], target: gguf.GGMLQuantizationType, keep_f32: bool = False) -> gguf.GGMLQuantizationType:
    """The type a tensor of ``planned_shape`` takes in a ``target`` file (llama.cpp's converter's rules)."""
    if len(planned_shape) <= 1 or keep_f32:
        return QT.F32
    block, _ = gguf.GGML_QUANT_SIZES[target]
    if planned_shape[-1] % block:
        return QT.F16  # llama.cpp: QuantError -> "falling back to F16"
    return target


def tensor_nbytes(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> int:
    """The bytes of a tensor of ``shape`` stored as ``qtype``."""
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block * type_size


def _plan(index: CheckpointIndex, spec: ArchSpec, target: gguf.GGMLQuantizationType) -> list[Planned]:
    planned: list[Planned] = []
    seen: set[str] = set()
    for shard in index.shards:
        for info in index.tensors_in(shard):
            if index.weight_map.get(info.name) != shard:
                continue
            rule = spec.rule(info.name, tuple(info.shape), path=index.root / shard)
            if rule is None:
                continue
            if info.dtype not in ("F32", "F16", "BF16", "F64"):
                raise InputError(f"tensor '{info.name}' has dtype {info.dtype}; only float checkpoints convert", path=index.root / shard)
            if rule.gguf_name in seen:
                raise InputError(f"two tensors map to '{rule.gguf_name}'", path=index.root / shard)
            seen.add(rule.gguf_name)
            qtype = tensor_type(rule.shape, target, rule.keep_f32)
            planned.append(Planned(rule, shard, qtype, tensor_nbytes(rule.shape, qtype)))
    have = {p.hf_name for p in planned}
    missing = [n for n in spec.required() if n not in have]
    if missing:
        raise InputError(f"the checkpoint lacks {len(missing)} tensor(s) the architecture needs, e.g. '{missing[0]}'", path=index.root)
    return planned


# ---------------------------------------------------------------------------------------------
# Converting one tensor


def _convert_tensor(tensor, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    import torch

    if qtype == QT.F32:
        return tensor.to(torch.float32).numpy()
    if qtype == QT.F16:
        return tensor.to(torch.float16).numpy()
    # BF16 (llama.cpp's rounding, from float32) and Q8_0: gguf-py's reference quantizers, as uint8 bytes.
    return gguf.quants.quantize(tensor.to(torch.float32).numpy(), qtype)


# ---------------------------------------------------------------------------------------------
# The conversion


def check_name(name: str) -> str:
    """``name`` when it can be part of a file name; else a UsageError."""
    if not _SAFE_NAME.match(name):
        raise UsageError(f"the model name '{name}' cannot be a file name; use letters, digits, '.', '_', '+', '-'", field="name")
    return name


def output_name(name: str, quant: str) -> str:
    """``<Model>-<TYPE>.gguf``."""
    return f"{name}-{quant}.gguf"


def convert(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    quant: str = "F16",
    name: str | None = None,
    basename: str | None = None,
    finetune: str | None = None,
    version: str | None = None,
    size_label: str | None = None,
    license: str | None = None,
    pre: str | None = None,
    overwrite: bool = False,
    split_max_size: int = 0,
    mtp: bool | None = None,
    base_model: str | list[str] | None = None,
    tags: list[str] | None = None,
    languages: list[str] | None = None,
    datasets: list[str] | None = None,
    quantized_by: str | None = None,
    on_bytes: Callable[[int, int], None] | None = None,
) -> ConvertResult:
    """Convert the merged checkpoint in ``model_dir`` to ``out_dir/<name>-<quant>.gguf`` (or a split set).

    Args:
        quant: ``F16``, ``BF16`` or ``Q8_0``.
        name: ``general.name`` and the file name's stem; default the model folder's name.
        basename, finetune, version, size_label, license: ``general.*`` metadata;
            ``size_label`` defaults to the one computed from the parameter count (``"0.2M"``, ``"27B"``).
        pre: llama.cpp's pre-tokenizer name; default detected from the tokenizer's regex.
        overwrite: replace an existing output (a single file or a split set of the same name).
        split_max_size: bytes; when the tensor data exceed it the output is a llama.cpp split set
            ``<name>-<quant>-00001-of-0000N.gguf`` ... (gguf-py's splitting: each file's tensor
            data stay within it unless one tensor alone is larger); 0 writes one file.
        base_model, tags, languages, datasets: ``general.base_model.*``, ``general.tags``,
            ``general.languages``, ``general.dataset.*`` (Hub repo ids); each defaults to the
            model card's (``README.md``) ``base_model``, ``tags``, ``language``, ``datasets``, as
            ``license`` defaults to its ``license``.
        quantized_by: ``general.quantized_by``.
            The checkpoint's sampling defaults (``generation_config.json``) become
            ``general.sampling.*`` keys (``gguf.sampling``); llama.cpp's quantizer copies them.
        mtp: the multi-token-prediction layers (Qwen3.5): ``None`` includes them when the
            checkpoint has a complete set and leaves them out when it has none; ``True`` requires
            them; ``False`` leaves them out. Either way the metadata says what the file holds.
        on_bytes: called as ``on_bytes(done, total)`` after each tensor is written, with the
            bytes of tensor data written so far and in all (for progress output; bytes rather
            than tensors, because a norm takes a few KB and an embedding GBs).

    Raises:
        UsageError: an unknown ``quant``, an unsupported architecture, a bad name, an existing file,
            ``mtp=True`` without MTP tensors, a negative ``split_max_size``.
        InputError: a missing or malformed config, tokenizer or shard (truncated, corrupted), a
            partial set of MTP tensors (pass ``mtp=False``).
        In every case no output file is left behind.
    """
    started = time.monotonic()
    model_dir = Path(model_dir)
    out_dir = Path(out_dir)
    quant = quant.upper()
    if quant not in QUANT_TYPES:
        raise UsageError(f"unknown GGUF type '{quant}'; choose one of {', '.join(QUANT_TYPES)}", field="quant")
    target, file_type = QUANT_TYPES[quant]
    if isinstance(split_max_size, bool) or not isinstance(split_max_size, int) or split_max_size < 0:
        raise UsageError(f"split_max_size must be a number of bytes >= 0 (0: one file), not {split_max_size!r}", field="split_max_size")

    config_path = model_dir / "config.json"
    config = read_json_object(config_path, "the model's config")
    hf_arch = (config.get("architectures") or [None])[0]
    spec_class = SPECS.get(hf_arch)
    if spec_class is None:
        raise UsageError(
            f"architecture '{hf_arch}' is not supported for GGUF conversion; supported: {', '.join(SPECS)}",
            path=config_path, field="architectures",
        )

    name = check_name(name or model_dir.resolve().name)
    stem = output_name(name, quant).removesuffix(".gguf")
    output.check_free(out_dir, stem, overwrite=overwrite)

    index = CheckpointIndex.from_dir(model_dir)  # checks every shard header: truncation fails here
    spec = spec_class(hf_arch, config, config_path, index.weight_map.keys(), mtp=mtp)
    vocab = read_vocab(model_dir, spec.vocab_size, pre=pre)
    card = card_metadata(model_dir)
    sampling = sampling_defaults(model_dir)
    plan = _plan(index, spec, target)
    n_params = sum(math.prod(p.shape) for p in plan)

    def metadata(writer: gguf.GGUFWriter) -> None:
        add_general(writer, gguf.GGUFType.MODEL, card, sampling, name=name, basename=basename, finetune=finetune, version=version,
                    size_label=size_label or gguf.size_label(n_params, 0, 0, 0), license=license, quantized_by=quantized_by,
                    base_model=base_model, tags=tags, languages=languages, datasets=datasets)
        _add_metadata(writer, spec, vocab, file_type)

    with output.staging(out_dir, stem) as staged:
        write_planned(staged / f"{stem}.gguf", spec.name, index, plan, metadata, split_max_size=split_max_size, on_bytes=on_bytes)
        paths = output.publish(staged, out_dir, stem)
    size = sum(p.stat().st_size for p in paths)
    counts: dict[str, int] = {}
    for p in plan:
        counts[p.qtype.name] = counts.get(p.qtype.name, 0) + 1
    return ConvertResult(
        quant=quant, paths=paths, bytes=size, seconds=time.monotonic() - started, tensor_types=counts,
        architecture=spec.name, tensors=len(plan),
    )


def write_planned(
    path: Path, arch: str, index: CheckpointIndex, plan: list[Planned], metadata: Callable[[gguf.GGUFWriter], None], *,
    split_max_size: int = 0, on_bytes: Callable[[int, int], None] | None = None,
) -> None:
    """Write ``plan``'s tensors from ``index``'s shards to ``path`` (a split set beyond ``split_max_size``),
    in gguf-py's phases: header, the key/values ``metadata`` adds, tensor infos, then the data tensor by tensor."""
    data_bytes = sum(p.nbytes for p in plan)
    writer = gguf.GGUFWriter(path, arch, split_max_size=split_max_size if 0 < split_max_size < data_bytes else 0)
    try:
        metadata(writer)
        # Tensor infos, from the plan (no data yet). Shapes in torch order: the writer reverses them.
        for p in plan:
            byte_shape = (*p.shape[:-1], p.nbytes // max(1, math.prod(p.shape[:-1])))
            writer.add_tensor_info(p.gguf_name, byte_shape, np.dtype(np.uint8), p.nbytes, raw_dtype=p.qtype)
        # The phases (gguf-py opens every file of a split set here, and fills them in order).
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        _write_data(writer, index, plan, on_bytes)
        writer.flush()
    finally:
        writer.close()


def add_general(
    writer: gguf.GGUFWriter, gguf_type: str, card: dict[str, Any], sampling: dict[str, Any], *, name: str,
    base_model: str | list[str] | None = None, tags: list[str] | None = None, languages: list[str] | None = None,
    datasets: list[str] | None = None, license: str | None = None, **general: str | None,
) -> None:
    """The ``general.*`` keys: type, name, ``general`` (basename, finetune, version, size_label,
    quantized_by), the sampling defaults, and the licence and sources given or else the model card's."""
    # In the order of llama.cpp's converter (gguf-py's Metadata.set_gguf_meta_model), so that
    # files with the same keys are byte for byte the same.
    writer.add_type(gguf_type)
    add_sampling(writer, sampling)
    writer.add_name(name)
    general["license"] = license or card.get("license")
    for key in ("version", "finetune", "basename", "quantized_by", "size_label", "license"):
        if general.get(key):
            getattr(writer, f"add_{key}")(general[key])
    _add_sources(
        writer,
        base_model=_as_list(base_model if base_model is not None else card.get("base_model")),
        tags=_as_list(tags if tags is not None else card.get("tags")),
        languages=_as_list(languages if languages is not None else card.get("language")),
        datasets=_as_list(datasets if datasets is not None else card.get("datasets")),
    )


def _add_metadata(writer: gguf.GGUFWriter, spec: ArchSpec, vocab: Vocab, file_type: gguf.LlamaFileType) -> None:
    """The architecture's key/values as convert_hf_to_gguf.py writes them, and the tokenizer."""
    spec.add_hparams(writer)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_eot_token_id(vocab.eot_id)
    if vocab.bos_id is not None:
        writer.add_bos_token_id(vocab.bos_id)
    if vocab.pad_id is not None:
        writer.add_pad_token_id(vocab.pad_id)
    writer.add_add_bos_token(False)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def card_metadata(model_dir: Path) -> dict[str, Any]:
    """The YAML metadata of ``model_dir/README.md`` (a Hub model card), or ``{}`` without a card."""
    card = model_dir / "README.md"
    if not card.is_file():
        return {}
    from huggingface_hub.repocard import metadata_load

    try:
        return metadata_load(card) or {}
    except Exception as exc:  # a YAML error: the card is the user's to fix
        raise InputError(f"the model card's YAML metadata does not parse: {exc}", path=card) from None


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    return [str(v) for v in values if v]


def _add_sources(writer: gguf.GGUFWriter, *, base_model: list[str], tags: list[str], languages: list[str], datasets: list[str]) -> None:
    """``general.base_model.*`` and ``general.dataset.*`` (name, organisation, Hub URL), tags and languages."""
    for count, add, ids in (
        (writer.add_base_model_count, "base_model", base_model),
        (writer.add_dataset_count, "dataset", datasets),
    ):
        if not ids:
            continue
        count(len(ids))
        for i, repo_id in enumerate(ids):
            organisation, _, model = repo_id.rpartition("/")
            getattr(writer, f"add_{add}_name")(i, model)
            if organisation:
                getattr(writer, f"add_{add}_organization")(i, organisation)
                getattr(writer, f"add_{add}_repo_url")(i, f"https://huggingface.co/{'datasets/' if add == 'dataset' else ''}{repo_id}")
    if tags:
        writer.add_tags(tags)
    if languages:
        writer.add_languages(languages)


#: Tensors without a transform are converted this many bytes of float32 at a time, into their
#: output array: the float32 copy and gguf-py's quantizer (which keeps its pieces, then joins them)
#: would otherwise hold several times the largest tensor (an embedding) at once.
BLOCK_BYTES = 64 << 20


def _write_data(
    writer: gguf.GGUFWriter, index: CheckpointIndex, plan: list[Planned], on_bytes: Callable[[int, int], None] | None
) -> None:
    """Each tensor's data, in plan order: read, transform, convert, write; one tensor in memory at a time."""
    reader: ShardReader | None = None
    done, total = 0, sum(p.nbytes for p in plan)
    try:
        for p in plan:
            if reader is None or reader.header.path.name != p.shard:
                if reader is not None:
                    reader.close()
                reader = ShardReader(index.headers[p.shard]).__enter__()
            data = _converted(reader, p)
            if data.nbytes != p.nbytes:
                raise AssertionError(f"'{p.hf_name}' converted to {data.nbytes} bytes, planned {p.nbytes}")
            writer.write_tensor_data(data)
            del data
            done += p.nbytes
            if on_bytes is not None:
                on_bytes(done, total)
    finally:
        if reader is not None:
            reader.close()


def _converted(reader: ShardReader, p: Planned) -> np.ndarray:
    """The tensor's GGUF bytes: whole when it has a transform or is small, else in blocks of rows."""
    import torch

    rows = p.shape[0] if len(p.shape) >= 2 else 0
    block = max(1, BLOCK_BYTES // (4 * max(1, math.prod(p.shape[1:])))) if rows else 0
    if p.rule.transform is not None or not rows or rows <= block:
        tensor = reader.get_tensor(p.hf_name)
        if p.rule.transform is not None:
            tensor = p.rule.transform(tensor.to(torch.float32))
            if tuple(tensor.shape) != p.shape:
                raise AssertionError(f"'{p.hf_name}' transformed to shape {tuple(tensor.shape)}, planned {p.shape}")
        return _convert_tensor(tensor.contiguous(), p.qtype)
    out = np.empty((rows, p.nbytes // rows), dtype=np.uint8)  # every type here stores whole rows
    for start in range(0, rows, block):
        stop = min(rows, start + block)
        out[start:stop] = _convert_tensor(reader.read_rows(p.hf_name, start, stop), p.qtype).view(np.uint8).reshape(stop - start, -1)
    return out


__all__ = ["QUANT_TYPES", "SPECS", "ConvertResult", "Vocab", "convert", "output_name", "read_vocab"]
