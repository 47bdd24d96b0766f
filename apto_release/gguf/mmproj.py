"""The vision projector of a Qwen3.5 checkpoint as llama.cpp's ``mmproj`` GGUF (architecture ``clip``).

What llama.cpp's converter writes with ``--mmproj`` (``conversion/qwen3vl.py``: ``Qwen3VLVisionModel``
and its base ``MmprojModel`` in ``conversion/base.py``), and its ``clip``/``mtmd`` loader reads
(projector ``qwen3vl_merger``):

- Tensors: the vision tower ``model.visual.*`` only. ``patch_embed.proj.weight``, a Conv3D over two
  frames (out, in, 2, patch, patch), is split into two Conv2D kernels ``v.patch_embd.weight`` and
  ``v.patch_embd.weight.1``; the merger's ``linear_fc1``/``linear_fc2`` become ``mm.0``/``mm.2``
  and its ``norm`` ``v.post_ln``; no value is changed.
- Types: 1-D tensors and the position embedding stay F32; the patch kernels are F16 in an F16 file
  and F32 otherwise; the others take the file's type (Q8_0 falls back to F16 for rows that do not
  split into blocks of 32).
- Metadata: the ``general.*`` keys of the text files (type ``mmproj``, the size label from the
  projector's own parameters) and ``clip.*``: sizes from ``vision_config``, the text model's
  hidden size as ``projection_dim``, ``image_mean``/``image_std`` from ``preprocessor_config.json``
  (or ``processor_config.json``), the text config's ``rms_norm_eps`` as the layer-norm epsilon.

Streamed and staged like every output (``convert.write_planned``, ``output.staging``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf

from apto_release.errors import InputError, UsageError
from apto_release.gguf import output
from apto_release.gguf.archs import TensorRule
from apto_release.gguf.convert import (
    QUANT_TYPES,
    ConvertResult,
    Planned,
    add_general,
    card_metadata,
    check_name,
    tensor_nbytes,
    tensor_type,
    write_planned,
)
from apto_release.gguf.sampling import sampling_defaults
from apto_release.io import read_json_object
from apto_release.merge.shards import CheckpointIndex

MT = gguf.MODEL_TENSOR
QT = gguf.GGMLQuantizationType

#: Checkpoint architectures whose vision tower becomes a ``qwen3vl_merger`` projector.
VISION_ARCHITECTURES = ("Qwen3_5ForConditionalGeneration",)
PROJECTOR_TYPE = "qwen3vl_merger"  # gguf.VisionProjectorType.QWEN3VL
PREFIXES = ("model.visual.", "visual.")
PREPROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")  # llama.cpp reads both, the second wins

# visual.blocks.{bid}.<leaf>.{weight,bias} -> v.blk.{bid}.<name> (gguf-py's tensor_mapping for MMPROJ)
_BLOCK: dict[str, gguf.MODEL_TENSOR] = {
    "attn.qkv": MT.V_ENC_ATTN_QKV,
    "attn.proj": MT.V_ENC_ATTN_O,
    "mlp.linear_fc1": MT.V_ENC_FFN_UP,
    "mlp.linear_fc2": MT.V_ENC_FFN_DOWN,
    "norm1": MT.V_ENC_INPUT_NORM,
    "norm2": MT.V_ENC_POST_ATTN_NORM,
}
# visual.<leaf>.{weight,bias} -> <name> (Qwen3VLVisionModel.modify_tensors: fc1 -> mm.0, fc2 -> mm.2)
_GLOBAL: dict[str, str] = {
    "merger.linear_fc1": gguf.TENSOR_NAMES[MT.V_MMPROJ].format(bid=0),
    "merger.linear_fc2": gguf.TENSOR_NAMES[MT.V_MMPROJ].format(bid=2),
    "merger.norm": gguf.TENSOR_NAMES[MT.V_POST_NORM],
}
_PATCH = gguf.TENSOR_NAMES[MT.V_ENC_EMBD_PATCH]  # v.patch_embd
_POSITION = gguf.TENSOR_NAMES[MT.V_ENC_EMBD_POS]  # v.position_embd
_BLOCK_NAME = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")


def mmproj_name(name: str, quant: str) -> str:
    """``mmproj-<Model>-<TYPE>.gguf``: the name llama.cpp's converter gives, and ``llama-server -hf`` finds."""
    return f"mmproj-{name}-{quant}.gguf"


def vision_tower(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` holds a Qwen3.5 with a vision tower (config and tensors) to write an mmproj of."""
    model_dir = Path(model_dir)
    config = read_json_object(model_dir / "config.json", "the model's config")
    if (config.get("architectures") or [None])[0] not in VISION_ARCHITECTURES or not config.get("vision_config"):
        return False
    index = CheckpointIndex.from_dir(model_dir)
    return any(n.startswith(PREFIXES) for n in index.weight_map)


def convert_mmproj(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    quant: str = "F16",
    name: str | None = None,
    overwrite: bool = False,
    on_bytes: Callable[[int, int], None] | None = None,
    **general: Any,
) -> ConvertResult:
    """Write the vision projector of ``model_dir`` to ``out_dir/mmproj-<name>-<quant>.gguf``.

    Args:
        quant: ``F16``, ``BF16`` or ``Q8_0``.
        name: ``general.name`` and the file name's stem; default the model folder's name.
        general: the text files' metadata (``convert``'s basename, finetune, version, license,
            base_model, tags, languages, datasets, quantized_by); the others (``size_label``,
            ``mtp``, ``pre``) describe the text model and are ignored: the size label is the
            projector's own parameter count.

    Raises:
        UsageError: an unknown ``quant``, a checkpoint without a Qwen3.5 vision tower, a bad name,
            an existing file (without ``overwrite``).
        InputError: a missing preprocessor config, a vision tensor of an unknown name or shape, a
            missing one. In every case no file is left behind.
    """
    started = time.monotonic()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    quant = quant.upper()
    if quant not in QUANT_TYPES:
        raise UsageError(f"unknown mmproj type '{quant}'; choose one of {', '.join(QUANT_TYPES)}", field="mmproj-type")
    target, file_type = QUANT_TYPES[quant]
    config_path = model_dir / "config.json"
    config = read_json_object(config_path, "the model's config")
    hf_arch = (config.get("architectures") or [None])[0]
    vision = config.get("vision_config")
    if hf_arch not in VISION_ARCHITECTURES or not isinstance(vision, dict):
        raise UsageError(f"'{hf_arch}' has no vision tower llama.cpp can load as an mmproj; supported: {', '.join(VISION_ARCHITECTURES)}"
                         " with a vision_config", path=config_path, field="vision_config")
    name = check_name(name or model_dir.resolve().name)
    stem = mmproj_name(name, quant).removesuffix(".gguf")
    output.check_free(out_dir, stem, overwrite=overwrite)

    index = CheckpointIndex.from_dir(model_dir)
    hparams = _VisionHparams(config, config_path)
    image_mean, image_std = _normalisation(model_dir)
    plan = _plan(index, hparams, target)
    n_params = sum(math.prod(p.shape) for p in plan)
    card = card_metadata(model_dir)
    keep = ("basename", "finetune", "version", "license", "quantized_by", "base_model", "tags", "languages", "datasets")
    general = {k: v for k, v in general.items() if k in keep}
    general["size_label"] = gguf.size_label(n_params, 0, 0, 0)  # the projector's own, as llama.cpp's converter counts

    def metadata(writer: gguf.GGUFWriter) -> None:
        add_general(writer, gguf.GGUFType.MMPROJ, card, sampling_defaults(model_dir), name=name, **general)
        writer.add_file_type(file_type)
        hparams.add(writer, image_mean, image_std)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    with output.staging(out_dir, stem) as staged:
        write_planned(staged / f"{stem}.gguf", gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ], index, plan, metadata, on_bytes=on_bytes)
        paths = output.publish(staged, out_dir, stem)
    counts: dict[str, int] = {}
    for p in plan:
        counts[p.qtype.name] = counts.get(p.qtype.name, 0) + 1
    return ConvertResult(quant=quant, paths=paths, bytes=sum(p.stat().st_size for p in paths), seconds=time.monotonic() - started,
                         tensor_types=counts, architecture="clip", tensors=len(plan))


class _VisionHparams:
    """``vision_config`` as llama.cpp's ``Qwen3VLVisionModel`` reads it."""

    def __init__(self, config: dict[str, Any], path: Path) -> None:
        vision, text = config["vision_config"], config.get("text_config") or config

        def need(source: dict[str, Any], key: str, where: str) -> Any:
            if source.get(key) is None:
                raise InputError(f"config.json's {where} has no '{key}'", path=path, field=key)
            return source[key]

        self.depth = int(need(vision, "depth", "vision_config"))
        self.hidden = int(need(vision, "hidden_size", "vision_config"))
        self.ffn = int(need(vision, "intermediate_size", "vision_config"))
        self.heads = int(need(vision, "num_heads", "vision_config"))
        self.patch = int(need(vision, "patch_size", "vision_config"))
        self.temporal_patch = int(vision.get("temporal_patch_size") or 2)
        self.merge = vision.get("spatial_merge_size")
        # llama.cpp: image_size = sqrt(num_position_embeddings) * patch_size when the config has none
        self.image_size = int(vision.get("image_size") or int(int(vision.get("num_position_embeddings") or 2304) ** 0.5 * self.patch))
        self.projection = int(need(text, "hidden_size", "text_config"))
        self.eps = float(text.get("rms_norm_eps", 1e-6))
        if vision.get("deepstack_visual_indexes"):
            raise UsageError("the vision tower has deepstack layers (Qwen3-VL); only Qwen3.5's is supported", path=path,
                             field="deepstack_visual_indexes")
        if self.temporal_patch != 2:  # llama.cpp: "Current implementation only supports temporal_patch_size of 2"
            raise UsageError(f"llama.cpp's mmproj needs temporal_patch_size 2, not {self.temporal_patch}", path=path,
                             field="temporal_patch_size")

    def add(self, writer: gguf.GGUFWriter, image_mean: list[float], image_std: list[float]) -> None:
        writer.add_clip_has_vision_encoder(True)
        writer.add_vision_projection_dim(self.projection)
        writer.add_vision_image_size(self.image_size)
        writer.add_vision_patch_size(self.patch)
        writer.add_vision_embedding_length(self.hidden)
        writer.add_vision_feed_forward_length(self.ffn)
        writer.add_vision_block_count(self.depth)
        writer.add_vision_head_count(self.heads)
        writer.add_vision_image_mean(image_mean)
        writer.add_vision_image_std(image_std)
        writer.add_clip_projector_type(PROJECTOR_TYPE)
        writer.add_vision_use_gelu(True)
        if self.merge is not None:
            writer.add_vision_spatial_merge_size(int(self.merge))
        writer.add_vision_attention_layernorm_eps(self.eps)
        writer.add_vision_is_deepstack_layers([False] * self.depth)


def _normalisation(model_dir: Path) -> tuple[list[float], list[float]]:
    """``image_mean`` and ``image_std`` of the checkpoint's image processor (as llama.cpp merges its files)."""
    merged: dict[str, Any] = {}
    for file in PREPROCESSOR_FILES:
        if (model_dir / file).is_file():
            data = read_json_object(model_dir / file, "the image processor's config")
            merged.update({**data, **(data.get("image_processor") or {})} if file == "processor_config.json" else data)
    values = []
    for key in ("image_mean", "image_std"):
        value = merged.get(key)
        if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
            raise InputError(f"the image processor's '{key}' (three numbers) is missing", path=model_dir / PREPROCESSOR_FILES[0],
                             field=key, hint="copy preprocessor_config.json from the base model into the checkpoint")
        values.append([float(v) for v in value])
    return values[0], values[1]


def _plan(index: CheckpointIndex, hp: _VisionHparams, target: gguf.GGMLQuantizationType) -> list[Planned]:
    """Every vision tensor's GGUF name, shape and type, in the shards' order."""
    planned: list[Planned] = []
    for shard in index.shards:
        for info in index.tensors_in(shard):
            if index.weight_map.get(info.name) != shard or not info.name.startswith(PREFIXES):
                continue
            if info.dtype not in ("F32", "F16", "BF16", "F64"):
                raise InputError(f"tensor '{info.name}' has dtype {info.dtype}; only float checkpoints convert", path=index.root / shard)
            for rule, qtype in _rules(info.name, tuple(info.shape), hp, target, index.root / shard):
                planned.append(Planned(rule, shard, qtype, tensor_nbytes(rule.shape, qtype)))
    have = {p.gguf_name for p in planned}
    missing = [n for n in _required(hp) if n not in have]
    if missing:
        raise InputError(f"the vision tower lacks {len(missing)} tensor(s) llama.cpp's mmproj needs, e.g. '{missing[0]}'", path=index.root)
    return planned


def _required(hp: _VisionHparams) -> list[str]:
    names = [f"{_PATCH}.weight", f"{_PATCH}.weight.1", f"{_PATCH}.bias", f"{_POSITION}.weight"]
    names += [f"{base}.{s}" for base in _GLOBAL.values() for s in ("weight", "bias")]
    names += [f"{gguf.TENSOR_NAMES[t].format(bid=b)}.{s}" for b in range(hp.depth) for t in _BLOCK.values() for s in ("weight", "bias")]
    return names


def _rules(hf_name: str, shape: tuple[int, ...], hp: _VisionHparams, target: gguf.GGMLQuantizationType,
           path: Path) -> list[tuple[TensorRule, gguf.GGMLQuantizationType]]:
    leaf = hf_name.split(".visual.", 1)[-1].removeprefix("visual.")
    if leaf == "patch_embed.proj.weight":
        if len(shape) != 5 or shape[2] != 2:
            raise InputError(f"tensor '{hf_name}' has shape {list(shape)}; a Conv3D kernel over 2 frames is expected", path=path)
        kernel = (*shape[:2], *shape[3:])
        qtype = QT.F16 if target == QT.F16 else QT.F32  # MmprojModel.tensor_force_quant
        return [(TensorRule(hf_name, f"{_PATCH}.weight{suffix}", kernel, _frame(i)), qtype) for i, suffix in enumerate(("", ".1"))]
    if leaf == "patch_embed.proj.bias":
        return [(TensorRule(hf_name, f"{_PATCH}.bias", shape), QT.F32)]
    if leaf == "pos_embed.weight":
        return [(TensorRule(hf_name, f"{_POSITION}.weight", shape), QT.F32)]  # V_ENC_EMBD_POS stays F32
    base = None
    stem, _, suffix = leaf.rpartition(".")
    if stem in _GLOBAL and suffix in ("weight", "bias"):
        base = _GLOBAL[stem]
    elif (m := _BLOCK_NAME.match(leaf)) and m.group(2) in _BLOCK:
        if int(m.group(1)) >= hp.depth:
            raise InputError(f"tensor '{hf_name}' belongs to vision block {m.group(1)}, but vision_config has depth {hp.depth}", path=path)
        base = gguf.TENSOR_NAMES[_BLOCK[m.group(2)]].format(bid=int(m.group(1)))
    if base is None:
        raise InputError(f"unknown vision tensor '{hf_name}': not part of Qwen3.5's vision tower", path=path,
                         hint="only Qwen3.5's vision tower (blocks, merger, patch and position embeddings) converts")
    return [(TensorRule(hf_name, f"{base}.{suffix}", shape), tensor_type(shape, target))]


def _frame(i: int) -> Callable[[Any], Any]:
    def take(t):
        return t[:, :, i]

    return take


__all__ = ["PROJECTOR_TYPE", "VISION_ARCHITECTURES", "convert_mmproj", "mmproj_name", "vision_tower"]
