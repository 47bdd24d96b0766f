"""Merge a PEFT LoRA adapter into its base checkpoint, out of core and exactly: plan, then execute.

``plan_merge`` checks everything it can from JSON files and safetensors headers and says what will be
written (``--dry-run`` prints it); ``execute_merge`` writes it shard by shard, adding each delta in
float32 as PEFT computes it. The checks, the memory bound and PEFT's key names: docs/merge.md.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from apto_release.errors import AptoError, InputError, UsageError
from apto_release.io import read_json_object, remove_stale_temps
from apto_release.merge.shards import (
    FLOAT_DTYPES,
    INDEX_NAME,
    CheckpointIndex,
    read_header,
)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: Written by ``train`` when its preset sets the chat template (base models have none).
CHAT_TEMPLATE_FILE = "chat_template.jinja"
#: Test hook: seconds to sleep after each shard is written, so a test can kill the merge part-way.
PAUSE_ENV = "APTO_MERGE_PAUSE_AFTER_SHARD"
#: The chat's end of turn (ChatML, as Qwen's templates use it): generation must stop there.
END_OF_TURN = "<|im_end|>"

# How PEFT names an adapter's tensors, in either checkpoint layout: docs/merge.md.
_PEFT_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.(?P<param>weight|bias)$")
# Weights in other formats would be stale next to the merged ones; README.md is the base's card
# (the model-card stage writes ours). Hidden files are local state, not part of a checkpoint.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx", ".pkl")
_SKIPPED_FILES = ("README.md", INDEX_NAME)
# Tokenizer files that may carry the end-of-sequence token.
_TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json")


class MergeError(AptoError, ValueError):
    """The adapter cannot be merged into this base (wrong base, unsupported adapter, bad values).

    ``key`` names the tensor or adapter key concerned, where there is one.
    """

    def __init__(self, message: str, *, key: str | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.key = key


# ---------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class TensorUpdate:
    """What happens to one base tensor.

    ``kind`` is ``"lora"`` (add ``scale * lora_B @ lora_A``, transposed for ``fan_in_fan_out``),
    ``"lora_bias"`` (add ``scale * lora_B.bias``, PEFT's ``lora_bias=True``) or ``"replace"``
    (a ``modules_to_save`` copy, cast to the stored dtype). ``sources`` are adapter keys.
    """

    target: str
    kind: Literal["lora", "lora_bias", "replace"]
    module: str
    sources: tuple[str, ...]
    scale: float = 1.0
    rank: int | None = None
    alpha: float | None = None
    transpose: bool = False


@dataclass(frozen=True)
class ShardPlan:
    """One output shard: ``"copy"`` (a plain file copy) or ``"merge"`` (rewritten tensor by tensor)."""

    name: str
    action: Literal["copy", "merge"]
    size: int
    tensors: int
    updates: tuple[str, ...] = ()


@dataclass(frozen=True)
class FilePlan:
    """One non-weight file: copied as is, or written with ``content`` (an edited JSON file)."""

    name: str
    action: Literal["copy", "edit"]
    note: str = ""
    content: str | None = None

    @property
    def size(self) -> int:
        return len(self.content.encode("utf-8")) if self.content is not None else 0


@dataclass
class MergePlan:
    """Everything a merge will do, checked; ``execute_merge`` writes exactly this."""

    base: Path
    adapter: Path
    checkpoint: CheckpointIndex
    adapter_config: dict[str, Any]
    updates: dict[str, TensorUpdate]
    shards: tuple[ShardPlan, ...]
    files: tuple[FilePlan, ...]
    skipped: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    layout: str = ""
    eos_token_ids: tuple[int, ...] = ()

    @property
    def adapter_file(self) -> Path:
        return self.adapter / ADAPTER_WEIGHTS

    @property
    def shard_bytes(self) -> int:
        return sum(s.size for s in self.shards)

    @property
    def total_bytes(self) -> int:
        """Bytes the output folder will hold (shards, index and other files)."""
        files = sum(f.size if f.action == "edit" else (self.base / f.name).stat().st_size for f in self.files)
        index = (self.base / INDEX_NAME).stat().st_size if self.checkpoint.index_file else 0
        return self.shard_bytes + files + index

    def describe_adapter(self) -> str:
        c = self.adapter_config
        text = f"LoRA r={c.get('r')} alpha={c.get('lora_alpha')}"
        if c.get("use_rslora"):
            text += " rsLoRA (scale alpha/sqrt(r))"
        if c.get("rank_pattern"):
            text += f", rank_pattern {len(c['rank_pattern'])} entries"
        if c.get("alpha_pattern"):
            text += f", alpha_pattern {len(c['alpha_pattern'])} entries"
        return text


@dataclass(frozen=True)
class MergeResult:
    """What a merge wrote."""

    out_dir: Path
    shards_written: int  # all shards of the output
    shards_merged: int  # of which rewritten with merged tensors (the rest are file copies)
    tensors_merged: int  # tensors changed by a delta or replaced by a modules_to_save copy
    tensors_copied: int  # tensors copied byte for byte
    bytes_written: int
    files: tuple[str, ...]  # other files copied or edited
    seconds: float
    stale_removed: int = 0  # temporary folders of killed merges removed
    warnings: tuple[str, ...] = ()  # the plan's


def _check_not_quantized(config: dict[str, Any], path: Path) -> None:
    for where, cfg in (("", config), ("text_config.", config.get("text_config") or {})):
        quant = cfg.get("quantization_config") if isinstance(cfg, dict) else None
        if quant:
            method = quant.get("quant_method", "unknown") if isinstance(quant, dict) else "unknown"
            bits = ""
            if isinstance(quant, dict):
                if quant.get("load_in_4bit"):
                    bits = " 4-bit"
                elif quant.get("load_in_8bit"):
                    bits = " 8-bit"
                elif quant.get("bits"):
                    bits = f" {quant['bits']}-bit"
            raise MergeError(
                f"the base checkpoint is quantized ({method}{bits}: {where}quantization_config); a LoRA delta cannot be merged exactly into quantized weights",
                path=path, field=f"{where}quantization_config",
                hint="merge into the unquantized (bf16 or float32) base model, then quantize the merged model",
            )


# Fields of LoraConfig that select a LoRA variant (``is_lora_variant`` in peft 0.21's
# LoraConfig metadata) or change what the weights mean, and why they cannot be merged here.
_UNMERGEABLE: tuple[tuple[str, str], ...] = (
    ("use_dora", "DoRA (use_dora): the merged weight depends on a learnt magnitude vector and the weight's column norms"),
    ("use_qalora", "QA-LoRA (use_qalora): it is merged into a quantized base"),
    ("use_bdlora", "BD-LoRA (use_bdlora): block-diagonal factors"),
    ("velora_config", "VeLoRA (velora_config)"),
    ("alora_invocation_tokens", "activated LoRA (alora_invocation_tokens): it applies only after its invocation tokens, so it has no merged form"),
    ("monteclora_config", "MonteCLoRA (monteclora_config)"),
    ("arrow_config", "Arrow routing (arrow_config): a mixture of adapters chosen per token"),
    ("kasa_config", "KaSA (kasa_config)"),
    ("layer_replication", "layer replication (layer_replication): the merged model has layers the base does not"),
    ("target_parameters", "LoRA on parameters (target_parameters)"),
    ("trainable_token_indices", "trainable tokens (trainable_token_indices)"),
)
# init_lora_weights values whose adapter is relative to a base the initialisation changed.
_MUTATING_INITS = ("pissa", "olora", "corda", "lora_ga", "loftq", "mica")


def _check_adapter_config(config: dict[str, Any], path: Path) -> None:
    peft_type = config.get("peft_type")
    if peft_type is None:
        raise MergeError("not a PEFT adapter config: it has no 'peft_type'", path=path, field="peft_type")
    if str(peft_type).upper() != "LORA":
        raise MergeError(f"cannot merge a {peft_type} adapter: only LoRA (peft_type LORA) adapters are supported", path=path, field="peft_type", hint="merge it with peft's merge_and_unload instead")
    for name, what in _UNMERGEABLE:
        if config.get(name):
            raise MergeError(f"cannot merge this LoRA variant: {what}", path=path, field=name, hint="merge it with peft's merge_and_unload, or train a plain LoRA adapter")
    init = str(config.get("init_lora_weights", True)).lower()
    if any(init.startswith(prefix) for prefix in _MUTATING_INITS):
        raise MergeError(
            f"the adapter was initialised with init_lora_weights={config.get('init_lora_weights')!r}, which changes the base weights; its deltas do not apply to the original base",
            path=path, field="init_lora_weights",
            hint="save it with save_pretrained(..., path_initial_model_for_weight_conversion=...) to get a plain LoRA adapter",
        )
    for name in ("r", "lora_alpha"):
        value = config.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise MergeError(f"'{name}' must be a positive number, not {value!r}", path=path, field=name)
    for name in ("rank_pattern", "alpha_pattern"):
        if config.get(name) is not None and not isinstance(config.get(name), dict):
            raise MergeError(f"'{name}' must be an object of module patterns", path=path, field=name)


def _base_names(base: Path, config: dict[str, Any]) -> set[str]:
    """Names the base checkpoint goes by: its folder, a Hub cache's repo id, config's ``_name_or_path``."""
    resolved = base.resolve()
    names = {str(base), str(resolved), base.name, resolved.name}
    for part in resolved.parts:  # ~/.cache/huggingface/hub/models--Qwen--Qwen3.5-9B/snapshots/<sha>
        if part.startswith("models--"):
            repo = part[len("models--"):].replace("--", "/")
            names.update({repo, repo.rsplit("/", 1)[-1]})
    if isinstance(config.get("_name_or_path"), str) and config["_name_or_path"]:
        names.add(config["_name_or_path"])
    return {n.rstrip("/").lower() for n in names if n}


def _same_base(claimed: str, base: Path, config: dict[str, Any]) -> bool:
    """Whether the adapter's ``base_model_name_or_path`` can name this base.

    A Hub id and a local folder both count by their last component, so that ``Qwen/Qwen3.5-9B``
    matches ``models/Qwen3.5-9B`` and the Hub cache; ``Qwen3.5-9B-Base`` does not match
    ``Qwen3.5-9B``.
    """
    claimed = claimed.rstrip("/")
    names = _base_names(base, config)
    if claimed.lower() in names or claimed.replace("\\", "/").rsplit("/", 1)[-1].lower() in names:
        return True
    try:
        return Path(claimed).exists() and Path(claimed).resolve() == base.resolve()
    except OSError:
        return False


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """peft's ``get_pattern_key``: the first pattern that matches the end of the module name."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def _layout_candidates(name: str) -> list[str]:
    """``name`` and its spelling in the other text-model layout.

    Qwen3.5 checkpoints (``*ForConditionalGeneration``) keep the text model under
    ``model.language_model.``; a text-only ``*ForCausalLM`` keeps it under ``model.``.
    """
    out = [name]
    if name.startswith("model.language_model."):
        out.append("model." + name[len("model.language_model."):])
    elif name.startswith("model.") and not name.startswith(("model.visual.", "model.vision_tower.")):
        out.append("model.language_model." + name[len("model."):])
    return out


def _lookup(name: str, weight_map: dict[str, str]) -> tuple[str | None, bool]:
    """The checkpoint key for an adapter-side key, and whether the layout differed."""
    for i, candidate in enumerate(_layout_candidates(name)):
        if candidate in weight_map:
            return candidate, i > 0
    return None, False


class _Problems:
    """Collect every mismatch, then raise one error naming the first and counting the rest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[tuple[str, str | None, str | None]] = []

    def add(self, message: str, key: str | None = None, hint: str | None = None) -> None:
        self.items.append((message, key, hint))

    def raise_if_any(self, default_hint: str) -> None:
        if not self.items:
            return
        message, key, hint = self.items[0]
        if len(self.items) > 1:
            message += f" (and {len(self.items) - 1} more such problems)"
        raise MergeError(message, path=self.path, key=key, hint=hint or default_hint)


def plan_merge(base: str | Path, adapter: str | Path, *, force: bool = False) -> MergePlan:
    """Check that ``adapter`` can be merged into ``base`` and say exactly what the merge will write.

    Reads config and tokenizer JSON and safetensors headers only (no tensor data, no torch).

    Args:
        base: the base checkpoint folder (config.json, safetensors shards, tokenizer files).
        adapter: the PEFT adapter folder (adapter_config.json, adapter_model.safetensors).
        force: merge even when the adapter's ``base_model_name_or_path`` names another model
            (shapes and keys are still checked).

    Returns:
        A ``MergePlan`` for ``execute_merge``.

    Raises:
        InputError: a missing or unreadable file, a truncated or corrupted shard.
        MergeError: a quantized base, an adapter that is not plain LoRA, an adapter for another
            base (name, missing keys, shapes, ranks).
    """
    base, adapter = Path(base), Path(adapter)
    for path, what in ((base, "base checkpoint"), (adapter, "adapter")):
        if not path.is_dir():
            raise InputError(f"the {what} folder does not exist" if not path.exists() else f"the {what} must be a folder", path=path)
    base_config = read_json_object(base / "config.json", "the base model's config")
    _check_not_quantized(base_config, base / "config.json")
    adapter_config_path = adapter / ADAPTER_CONFIG
    adapter_config = read_json_object(adapter_config_path, "the adapter's config")
    _check_adapter_config(adapter_config, adapter_config_path)
    claimed = adapter_config.get("base_model_name_or_path")
    warnings: list[str] = []
    if isinstance(claimed, str) and claimed and not _same_base(claimed, base, base_config):
        if not force:
            raise MergeError(
                f"the adapter was trained on '{claimed}', not on this base",
                path=adapter_config_path, field="base_model_name_or_path",
                hint=f"give --base the model the adapter was trained on, or pass --force if {base} is that model under another name",
            )
        warnings.append(f"the adapter names its base '{claimed}'; merged into {base} because of --force")
    elif not claimed:
        warnings.append("the adapter's config does not name its base model (base_model_name_or_path); only keys and shapes were checked")

    checkpoint = CheckpointIndex.from_dir(base)
    weights_path = adapter / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        if (adapter / "adapter_model.bin").is_file():
            raise InputError("the adapter's weights are a PyTorch pickle (adapter_model.bin)", path=adapter, hint="re-save the adapter with save_pretrained(..., safe_serialization=True)")
        raise InputError(f"no {ADAPTER_WEIGHTS} in the adapter folder", path=adapter, hint="give the folder written by the adapter's save_pretrained")
    adapter_header = read_header(weights_path)
    updates, layout = _plan_updates(adapter_config, adapter_header.tensors, checkpoint, weights_path)

    shards = []
    for shard in checkpoint.shards:
        header = checkpoint.headers[shard]
        targeted = tuple(name for name in header.tensors if name in updates)
        shards.append(ShardPlan(shard, "merge" if targeted else "copy", header.file_size, len(header.tensors), targeted))
    files, skipped, eos_ids, file_warnings = _plan_files(base, base_config, adapter)
    return MergePlan(
        base=base, adapter=adapter, checkpoint=checkpoint, adapter_config=adapter_config, updates=updates,
        shards=tuple(shards), files=tuple(files), skipped=tuple(skipped), warnings=tuple(warnings + file_warnings),
        layout=layout, eos_token_ids=tuple(eos_ids),
    )


def _plan_updates(config: dict[str, Any], tensors: dict, checkpoint: CheckpointIndex, weights_path: Path) -> tuple[dict[str, TensorUpdate], str]:
    """Map every adapter tensor to the base tensor it changes, checking keys, shapes and ranks."""
    problems = _Problems(weights_path)
    weight_map = checkpoint.weight_map
    lora: dict[str, dict[str, str]] = {}  # module -> {"A": key, "B": key, "bias": key}
    others: list[str] = []
    for key in tensors:
        name = key.removeprefix(_PEFT_PREFIX)
        match = _LORA_KEY.match(name)
        if match:
            slot = match["ab"] if match["param"] == "weight" else ("bias" if match["ab"] == "B" else "A.bias")
            lora.setdefault(match["module"], {})[slot] = key
        elif ".lora_embedding_" in name:
            raise MergeError("cannot merge a LoRA on an embedding layer (lora_embedding_A/B); only Linear layers are supported", path=weights_path, key=key, hint="merge it with peft's merge_and_unload")
        elif ".lora_magnitude_vector" in name:
            raise MergeError("cannot merge DoRA weights (lora_magnitude_vector)", path=weights_path, key=key, hint="merge it with peft's merge_and_unload")
        else:
            others.append(key)
    if not lora and not others:
        raise MergeError("the adapter has no LoRA weights", path=weights_path, hint="give the folder written by the adapter's save_pretrained")

    r_default, alpha_default = config["r"], config["lora_alpha"]
    rank_pattern, alpha_pattern = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    use_rslora = bool(config.get("use_rslora"))
    fan_in_fan_out = bool(config.get("fan_in_fan_out"))
    updates: dict[str, TensorUpdate] = {}
    swapped = same = 0
    default_hint = "the adapter was trained on another base model; give --base the model it was trained on"

    for module, keys in lora.items():
        if "A" not in keys or "B" not in keys or "A.bias" in keys:
            problems.add(f"module '{module}' has an incomplete LoRA pair ({', '.join(sorted(keys))})", keys.get("A") or keys.get("B"))
            continue
        target, layout_swapped = _lookup(module + ".weight", weight_map)
        if target is None:
            tried = " or ".join(f"'{c}'" for c in _layout_candidates(module + ".weight"))
            problems.add(f"the adapter changes '{module}', but the base checkpoint has no {tried}", keys["A"])
            continue
        swapped += layout_swapped
        same += not layout_swapped
        info = checkpoint.info(target)
        a, b = tensors[keys["A"]], tensors[keys["B"]]
        rank = _pattern_value(rank_pattern, module, r_default)
        alpha = _pattern_value(alpha_pattern, module, alpha_default)
        if len(a.shape) != 2 or len(b.shape) != 2 or a.shape[0] != b.shape[1]:
            problems.add(f"'{module}': lora_A {list(a.shape)} and lora_B {list(b.shape)} do not multiply", keys["A"])
            continue
        if a.shape[0] != rank:
            problems.add(f"'{module}': the adapter's config gives rank {rank} (r, rank_pattern) but lora_A has rank {a.shape[0]}", keys["A"], hint="the adapter_config.json does not belong to these weights")
            continue
        if info.dtype not in FLOAT_DTYPES:
            problems.add(f"'{target}' is stored as {info.dtype}; a LoRA delta can only be merged into F32, F16 or BF16 weights", target, hint="merge into the unquantized base model")
            continue
        # peft sets fan_in_fan_out from the module type when it wraps it (False for nn.Linear, True
        # for GPT-2's Conv1D, which stores the weight as (in, out)) and saves that, so it is followed
        # as saved; guessing from shapes would fail for square weights.
        delta_shape = (b.shape[0], a.shape[1])
        transpose = fan_in_fan_out
        expected = delta_shape[::-1] if transpose else delta_shape
        if info.shape != expected:
            layout = " (transposed: fan_in_fan_out)" if transpose else ""
            problems.add(f"'{target}' is {list(info.shape)} in the base, but the adapter's delta for it is {list(expected)}{layout} (lora_B {list(b.shape)} @ lora_A {list(a.shape)})", target)
            continue
        scale = alpha / math.sqrt(rank) if use_rslora else alpha / rank
        updates[target] = TensorUpdate(target, "lora", module, (keys["A"], keys["B"]), scale, rank, alpha, transpose)
        if "bias" in keys:  # peft's lora_bias=True: merge adds scale * lora_B.bias to the base bias
            bias_target, _ = _lookup(module + ".bias", weight_map)
            bias = tensors[keys["bias"]]
            if bias_target is None:
                problems.add(f"the adapter has a LoRA bias for '{module}', but the base layer has no bias", keys["bias"])
            elif checkpoint.info(bias_target).shape != tuple(bias.shape) or checkpoint.info(bias_target).dtype not in FLOAT_DTYPES:
                problems.add(f"'{bias_target}' is {list(checkpoint.info(bias_target).shape)} {checkpoint.info(bias_target).dtype} in the base, the adapter's LoRA bias is {list(bias.shape)}", keys["bias"])
            else:
                updates[bias_target] = TensorUpdate(bias_target, "lora_bias", module, (keys["bias"],), scale, rank, alpha)

    saved_modules = [m for m in (config.get("modules_to_save") or []) if isinstance(m, str)]
    for key in others:
        name = key.removeprefix(_PEFT_PREFIX)
        module = name.rpartition(".")[0]
        if not any(re.fullmatch(rf"(.*\.)?{re.escape(m)}", module) for m in saved_modules):
            problems.add(f"unexpected tensor '{key}' in the adapter: neither a LoRA weight nor a modules_to_save copy", key, hint="only plain LoRA adapters (with optional modules_to_save) can be merged")
            continue
        target, layout_swapped = _lookup(name, weight_map)
        if target is None:
            problems.add(f"the adapter replaces '{name}' (modules_to_save), but the base checkpoint has no such tensor", key)
            continue
        info = checkpoint.info(target)
        if info.shape != tuple(tensors[key].shape):
            problems.add(f"'{target}' is {list(info.shape)} in the base, but the adapter's copy (modules_to_save) is {list(tensors[key].shape)}", target)
            continue
        if target in updates:
            problems.add(f"'{target}' is both changed by a LoRA and replaced by a modules_to_save copy", key)
            continue
        swapped += layout_swapped
        same += not layout_swapped
        updates[target] = TensorUpdate(target, "replace", module, (key,))
    problems.raise_if_any(default_hint)

    swapped_example = next((u for u in updates.values() if not u.target.startswith(u.module + ".") and u.target != u.module), None)
    if swapped and same:
        layout = "adapter modules matched in both text-model layouts"
    elif swapped_example is not None:
        layout = f"adapter modules renamed to the checkpoint's layout: '{swapped_example.module}' → '{swapped_example.target}'"
    else:
        layout = "adapter modules have the checkpoint's names"
    return updates, layout


def _token_id(base: Path, token: str) -> int | None:
    """The id of ``token`` from the base's tokenizer files (tokenizer.json, then tokenizer_config.json)."""
    path = base / "tokenizer.json"
    if path.is_file():
        data = read_json_object(path, "the tokenizer")
        for entry in data.get("added_tokens") or []:
            if isinstance(entry, dict) and entry.get("content") == token and isinstance(entry.get("id"), int):
                return entry["id"]
        vocab = (data.get("model") or {}).get("vocab")
        if isinstance(vocab, dict) and isinstance(vocab.get(token), int):
            return vocab[token]
    path = base / "tokenizer_config.json"
    if path.is_file():
        decoder = read_json_object(path, "the tokenizer config").get("added_tokens_decoder") or {}
        for token_id, entry in decoder.items():
            if isinstance(entry, dict) and entry.get("content") == token:
                try:
                    return int(token_id)
                except ValueError:
                    continue
    return None


def _as_id_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int)]
    return [value] if isinstance(value, int) else []


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _plan_files(base: Path, base_config: dict[str, Any], adapter: Path) -> tuple[list[FilePlan], list[str], list[int], list[str]]:
    """Which non-weight files are copied and which edited so that ``<|im_end|>`` ends generation.

    An adapter trained with a chat template of its preset (a base model has none of its own)
    carries it as ``chat_template.jinja``; the merged model gets that template, since it is the
    format the model was tuned in.
    """
    files: dict[str, FilePlan] = {}
    skipped: list[str] = []
    for path in sorted(base.iterdir(), key=lambda p: p.name):
        name = path.name
        if name.startswith(".") or name in _SKIPPED_FILES or name.endswith(_WEIGHT_SUFFIXES) or not path.is_file():
            if name not in (INDEX_NAME,) and not name.endswith(".safetensors"):
                skipped.append(name + ("/" if path.is_dir() else ""))
            continue
        files[name] = FilePlan(name, "copy")
    warnings: list[str] = []
    end_id = _token_id(base, END_OF_TURN)
    eos_ids: list[int] = []
    if end_id is None:
        warnings.append(f"the tokenizer has no {END_OF_TURN} token; generation_config.json and the tokenizer's eos were left as they are")
        gen_path = base / "generation_config.json"
        if gen_path.is_file():
            eos_ids = _as_id_list(read_json_object(gen_path, "the generation config").get("eos_token_id"))
        return list(files.values()), skipped, eos_ids, warnings

    gen_path = base / "generation_config.json"
    if gen_path.is_file():
        generation = read_json_object(gen_path, "the generation config")
        before = _as_id_list(generation.get("eos_token_id"))
        eos_ids = before if end_id in before else [*before, end_id]
        if eos_ids != before:
            generation["eos_token_id"] = eos_ids if len(eos_ids) > 1 else eos_ids[0]
            files["generation_config.json"] = FilePlan("generation_config.json", "edit", f"eos_token_id {before} → {eos_ids}", _dump(generation))
    else:
        text = base_config.get("text_config") if isinstance(base_config.get("text_config"), dict) else base_config
        before = _as_id_list(text.get("eos_token_id")) or _as_id_list(base_config.get("eos_token_id"))
        eos_ids = before if end_id in before else [*before, end_id]
        generation = {"eos_token_id": eos_ids if len(eos_ids) > 1 else eos_ids[0]}
        pad = text.get("pad_token_id", base_config.get("pad_token_id"))
        if isinstance(pad, int):
            generation["pad_token_id"] = pad
        files["generation_config.json"] = FilePlan("generation_config.json", "edit", f"written: eos_token_id {eos_ids}", _dump(generation))

    trained_template = adapter / CHAT_TEMPLATE_FILE
    if trained_template.is_file():
        files[CHAT_TEMPLATE_FILE] = FilePlan(
            CHAT_TEMPLATE_FILE, "edit", "the chat template the adapter was trained with", trained_template.read_text("utf-8")
        )
    for name in _TOKENIZER_FILES:
        path = base / name
        if not path.is_file():
            continue
        data = read_json_object(path, f"the tokenizer's {name}")
        notes = []
        eos = data.get("eos_token")
        current = eos.get("content") if isinstance(eos, dict) else eos
        if current != END_OF_TURN and not (eos is None and name == "special_tokens_map.json"):
            data["eos_token"] = dict(eos, content=END_OF_TURN) if isinstance(eos, dict) else END_OF_TURN
            notes.append(f"eos_token {current!r} → {END_OF_TURN!r}")
        if trained_template.is_file() and "chat_template" in data:
            del data["chat_template"]  # chat_template.jinja from the adapter is the one
            notes.append("chat_template moved to chat_template.jinja")
        if notes:
            files[name] = FilePlan(name, "edit", "; ".join(notes), _dump(data))
    return list(files.values()), skipped, eos_ids, warnings


# ---------------------------------------------------------------------------------------------
# Execution


#: float32 bytes of weight rows merged at a time: the merge's working memory is a few times this,
#: whatever the size of the tensor (a targeted lm_head of a 248k vocabulary included).
MERGE_BLOCK_BYTES = 16 << 20
# A block of one row takes BLAS's matrix-vector path, whose rounding can differ from the
# matrix-matrix product peft computes; blocks of 16 rows or more give peft's values bit for bit.
_MIN_BLOCK_ROWS = 16


def _row_blocks(rows: int, row_bytes: int) -> list[tuple[int, int]]:
    step = max(_MIN_BLOCK_ROWS, MERGE_BLOCK_BYTES // max(1, row_bytes))
    bounds = [*range(0, rows, step), rows]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < _MIN_BLOCK_ROWS:
        del bounds[-2]  # no thin last block: fold it into the one before
    return list(itertools.pairwise(bounds))


def _non_finite(update: TensorUpdate, adapter: dict, base_values, stored) -> MergeError:
    import torch

    bad = [k for k in update.sources if not bool(torch.isfinite(adapter[k].float()).all())]
    if bad:
        cause = f"the adapter's '{bad[0]}' has non-finite values"
    elif base_values is not None and not bool(torch.isfinite(base_values.float()).all()):
        cause = "the base tensor already has non-finite values"
    else:
        cause = f"the merged values overflow {str(stored).removeprefix('torch.')}"
    return MergeError(
        f"merging gives non-finite values (inf or nan) in '{update.target}': {cause}",
        key=update.target, hint="the adapter's training diverged, or it belongs to another model; nothing was written",
    )


def _merged_chunks(update: TensorUpdate, reader, adapter: dict) -> Iterator[memoryview]:
    """The new bytes of one base tensor, in its stored dtype, a block of rows at a time.

    Raises MergeError on a non-finite value (before that block is written).
    """
    import torch

    from apto_release.merge.shards import tensor_bytes, torch_dtype

    info = reader.header.tensors[update.target]
    stored = torch_dtype(info.dtype)
    if update.kind == "replace":  # a modules_to_save copy: peft's merge keeps the base module's dtype
        value = adapter[update.sources[0]].to(stored).reshape(info.shape)
        if not bool(torch.isfinite(value).all()):
            raise _non_finite(update, adapter, None, stored)
        yield tensor_bytes(value)
        return
    if update.kind == "lora_bias":  # peft: bias.data += lora_B.bias * scaling
        base = reader.get_tensor(update.target)
        merged = base.to(torch.float32, copy=True)
        merged += adapter[update.sources[0]].to(torch.float32) * update.scale
        value = merged.to(stored)
        if not bool(torch.isfinite(value).all()):
            raise _non_finite(update, adapter, base, stored)
        yield tensor_bytes(value)
        return
    lora_a = adapter[update.sources[0]].to(torch.float32)
    lora_b = adapter[update.sources[1]].to(torch.float32)
    rows = info.shape[0]
    for start, stop in _row_blocks(rows, 4 * info.numel // max(1, rows)):
        base = reader.read_rows(update.target, start, stop)
        merged = base.to(torch.float32, copy=True)
        # peft's Linear.get_delta_weight and merge: transpose(B @ A) * scaling, then weight += delta,
        # all in float32 here, so a float32 merge equals merge_and_unload's bit for bit. A bf16
        # weight is rounded once, after the float32 add: so does peft with float32 adapter weights
        # (its default); with bf16 adapter weights or safe_merge it rounds the delta first.
        if update.transpose:  # fan_in_fan_out: the stored weight is (B @ A).T
            delta = (lora_b @ lora_a[:, start:stop]).T
        else:
            delta = lora_b[start:stop] @ lora_a
        delta.mul_(update.scale)
        merged += delta
        del delta
        value = merged.to(stored)
        del merged
        if not bool(torch.isfinite(value).all()):
            raise _non_finite(update, adapter, base, stored)
        yield tensor_bytes(value)


def execute_merge(
    plan: MergePlan,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    on_shard: Callable[[ShardPlan], None] | None = None,
    on_bytes: Callable[[int, int], None] | None = None,
) -> MergeResult:
    """Write the merged checkpoint of ``plan`` into ``out_dir``; it appears only when complete.

    Args:
        plan: from ``plan_merge``.
        out_dir: the output folder; it must not exist unless ``overwrite``.
        overwrite: replace an existing ``out_dir`` (the old one stays until the new one is complete).
        on_shard: called after each shard is written (for progress output).
        on_bytes: called as ``on_bytes(done, total)`` after each tensor of a rewritten shard and
            after each shard, with the bytes of the base's shards dealt with so far and in all
            (``plan.shard_bytes``): a bar that moves within a shard of several GB.

    Raises:
        UsageError: ``out_dir`` exists (without ``overwrite``) or is the base or adapter folder.
        MergeError: a merged tensor has non-finite values (nothing is written).
        InputError: a shard changed since the plan was made.
    """
    import torch
    from safetensors.torch import load_file

    from apto_release.io import atomic_dir
    from apto_release.merge.shards import (
        ShardReader,
        ShardWriter,
        TensorSpec,
        write_index,
    )

    started = time.monotonic()
    out_dir = Path(out_dir)
    for source in (plan.base, plan.adapter):
        if out_dir.resolve() == source.resolve():
            raise UsageError("the output folder is the merge's input folder", path=out_dir, hint="choose another -o")
    if out_dir.exists() and not overwrite:
        raise UsageError("the output folder already exists", path=out_dir, hint="choose another -o or pass --overwrite")
    adapter = load_file(str(plan.adapter_file))  # small: kept in memory for the whole merge
    pause = float(os.environ.get(PAUSE_ENV) or 0)
    stale = remove_stale_temps(out_dir.parent, out_dir.name) if out_dir.parent.is_dir() else 0
    merged = copied = shards_merged = written = 0
    done = 0  # bytes of the base's shards dealt with, for on_bytes
    with torch.no_grad(), atomic_dir(out_dir, overwrite=overwrite) as tmp:  # named with this process's mark
        for shard in plan.shards:
            header = read_header(plan.base / shard.name)  # again: the file may have changed since the plan
            if header.tensors != plan.checkpoint.headers[shard.name].tensors:
                raise InputError("the shard changed since the merge was planned", path=header.path, hint="run the merge again")
            if shard.action == "copy":
                shutil.copyfile(header.path, tmp / shard.name)
                copied += len(header.tensors)
            else:
                specs = [TensorSpec(i.name, i.dtype, i.shape) for i in header.tensors.values()]
                with ShardReader(header) as reader, ShardWriter(tmp / shard.name, specs, header.metadata) as writer:
                    for info in header.tensors.values():
                        update = plan.updates.get(info.name)
                        if update is None:
                            writer.write(info.name, reader.raw_chunks(info.name))
                            copied += 1
                        else:
                            writer.write(info.name, _merged_chunks(update, reader, adapter))
                            merged += 1
                        if on_bytes is not None:
                            on_bytes(done + header.data_start + info.end, plan.shard_bytes)
                shards_merged += 1
            written += (tmp / shard.name).stat().st_size
            done += shard.size
            if on_shard is not None:
                on_shard(shard)
            if on_bytes is not None:
                on_bytes(done, plan.shard_bytes)
            if pause:
                time.sleep(pause)
        if plan.checkpoint.index_file:
            total = sum((tmp / s.name).stat().st_size - plan.checkpoint.headers[s.name].data_start for s in plan.shards)
            index = write_index(tmp / INDEX_NAME, plan.checkpoint.weight_map, total, plan.checkpoint.index_metadata)
            written += index.stat().st_size
        for item in plan.files:
            if item.action == "copy":
                shutil.copyfile(plan.base / item.name, tmp / item.name)
            else:
                (tmp / item.name).write_text(item.content or "", encoding="utf-8")
            written += (tmp / item.name).stat().st_size
    return MergeResult(
        out_dir=out_dir, shards_written=len(plan.shards), shards_merged=shards_merged, tensors_merged=merged,
        tensors_copied=copied, bytes_written=written, files=tuple(f.name for f in plan.files),
        seconds=time.monotonic() - started, stale_removed=stale, warnings=plan.warnings,
    )


def merge(
    base: str | Path,
    adapter: str | Path,
    out_dir: str | Path,
    *,
    force: bool = False,
    overwrite: bool = False,
    on_shard: Callable[[ShardPlan], None] | None = None,
    on_bytes: Callable[[int, int], None] | None = None,
) -> MergeResult:
    """Plan, then execute: merge the LoRA ``adapter`` into ``base`` and write ``out_dir``.

    ``on_shard`` and ``on_bytes`` report progress (see ``execute_merge``).

    Example:
        >>> result = merge("models/Qwen3.5-9B", "out/adapter", "out/merged")
        >>> result.tensors_merged
        248
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:  # before planning, which reads every header
        raise UsageError("the output folder already exists", path=out_dir, hint="choose another -o or pass --overwrite")
    return execute_merge(
        plan_merge(base, adapter, force=force), out_dir, overwrite=overwrite, on_shard=on_shard, on_bytes=on_bytes
    )
