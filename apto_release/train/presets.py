"""Training presets: TOML files shipped in the package, loaded into one frozen ``TrainConfig``.

A preset is ``apto_release/train/presets/NAME.toml``: two top-level keys (``description``,
``base_model``) and three tables, ``[lora]``, ``[train]`` and ``[data]``. Every setting carries a
comment in the file saying *why* it has its value. The loader is strict where mergekit is lax (it
silently drops a misspelt field): an unknown key, a missing key or a value of the wrong type is an
error that names the file and the key.

Overrides (``apto-release train --set KEY=VALUE``) name a setting as ``table.key``, exactly as it
is spelt in the file (``lora.r=8``, ``train.learning_rate=5e-5``, ``data.max_length=2048``;
top-level keys have no table: ``base_model=...``). The value is parsed with the type of the field:

=========  =============================================================================
type       accepted ``VALUE``
=========  =============================================================================
int        ``8``, ``-1``, ``1_000`` (not ``8.0``)
float      ``2e-4``, ``0.05``, ``1``
bool       ``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``)
str        the text after ``=``, as it is (``""`` or nothing: the empty string)
list       comma-separated: ``q_proj,v_proj`` (brackets and quotes allowed: ``["q_proj", "v_proj"]``)
=========  =============================================================================

Example::

    config = load_preset("qwen3.5-9b", ["lora.r=8", "train.epochs=1"])
    config.lora.r                # 8
    config.lora.target_regex     # the PEFT ``target_modules`` regex (text decoder only)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from apto_release.errors import UsageError

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None  # type: ignore[assignment]

PRESET_SUFFIX = ".toml"

#: The projections of the Qwen3.5 *text* decoder that LoRA may target, by parent module
#: (``transformers/models/qwen3_5/modeling_qwen3_5.py``, transformers 5.x):
#:
#: - ``self_attn``: ``Qwen3_5Attention``, the full (gated) attention layers (every 4th layer);
#: - ``linear_attn``: ``Qwen3_5GatedDeltaNet``, the linear-attention layers: ``in_proj_qkv``
#:   (queries, keys, values), ``in_proj_z`` (the output gate), ``in_proj_b`` (beta, the write
#:   strength), ``in_proj_a`` (the decay input) and ``out_proj``;
#: - ``mlp``: ``Qwen3_5MLP``.
#:
#: The vision tower (``model.visual``: ``blocks.N.attn.qkv``, ``attn.proj``, ``mlp.linear_fc1/2``,
#: ``merger.linear_fc1/2``) uses other names *and* lives outside ``layers.N``; ``target_regex``
#: requires both, so no vision module can ever match.
TEXT_PROJECTIONS: dict[str, tuple[str, ...]] = {
    "self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "linear_attn": ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj"),
    "mlp": ("gate_proj", "up_proj", "down_proj"),
}
KNOWN_TARGETS: tuple[str, ...] = tuple(name for names in TEXT_PROJECTIONS.values() for name in names)

PRECISIONS = ("bf16", "fp32")
LR_SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
#: Chat templates a preset may name; "" means the tokenizer's own (see ``train.collate``).
CHAT_TEMPLATE_NAMES = ("", "chatml")
#: What the think block of a final assistant turn holds (``train.collate.THINKING_POLICIES``):
#: "empty" trains the answers after the template's empty block; "reasoning" also trains a record's
#: ``reasoning_content`` in the block.
THINKING_POLICIES = ("empty", "reasoning")


def target_regex(targets: Iterable[str]) -> str:
    """The PEFT ``target_modules`` regex for projection names of ``TEXT_PROJECTIONS``.

    PEFT full-matches a string ``target_modules`` against every module name. The pattern accepts
    ``model.layers.N.<parent>.<name>`` (``Qwen3_5ForCausalLM``) and
    ``model.language_model.layers.N.<parent>.<name>`` (``Qwen3_5ForConditionalGeneration``), under
    any wrapper prefix, and rejects any name with a ``visual`` component (belt and braces: the
    vision tower has no ``layers.N`` either).
    """
    chosen = set(targets)
    unknown = sorted(chosen - set(KNOWN_TARGETS))
    if unknown:
        raise ValueError(f"unknown target module(s) {', '.join(unknown)}; known: {', '.join(KNOWN_TARGETS)}")
    if not chosen:
        raise ValueError("no target modules")
    groups = []
    for parent, names in TEXT_PROJECTIONS.items():
        picked = [n for n in names if n in chosen]
        if picked:
            groups.append(rf"{parent}\.(?:{'|'.join(picked)})")
    return rf"(?!(?:.*\.)?visual\.)(?:.*\.)?model\.(?:language_model\.)?layers\.\d+\.(?:{'|'.join(groups)})"


@dataclass(frozen=True)
class LoraSettings:
    """The adapter: rank, scale, dropout and which projections of the text decoder it adapts."""

    r: int
    alpha: int
    dropout: float
    use_rslora: bool
    target_modules: tuple[str, ...]

    @property
    def target_regex(self) -> str:
        """``target_modules`` as the regex to give PEFT's ``LoraConfig(target_modules=...)``."""
        return target_regex(self.target_modules)


@dataclass(frozen=True)
class TrainSettings:
    """The optimiser, schedule, batch and the memory/precision switches."""

    learning_rate: float
    lr_scheduler: str
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    epochs: int
    per_device_batch_size: int
    gradient_accumulation_steps: int
    precision: str
    gradient_checkpointing: bool
    fsdp: bool
    seed: int
    # Settings added after the first presets: a file that predates one gets its default.
    liger_kernel: bool = False  # the Trainer's use_liger_kernel (refused where it cannot run: train.kernels)


@dataclass(frozen=True)
class DataSettings:
    """How records become token sequences (see ``train.collate``)."""

    max_length: int
    chat_template: str
    end_of_turn: str
    thinking: str
    packing: bool = False  # several records per row; refused for Qwen3.5 (train.kernels.check_packing)


@dataclass(frozen=True)
class TrainConfig:
    """The resolved training configuration: a preset plus its overrides. The single source of truth."""

    name: str
    description: str
    base_model: str
    lora: LoraSettings
    train: TrainSettings
    data: DataSettings

    def flat(self) -> dict[str, Any]:
        """Every setting by its ``--set`` key (``lora.r``), in file order; ``name`` is not a setting."""
        out: dict[str, Any] = {}
        for key, (section, field_name, _) in _FIELDS.items():
            holder = getattr(self, section) if section else self
            out[key] = getattr(holder, field_name)
        return out

    @property
    def effective_batch_per_device(self) -> int:
        """Sequences per optimiser step on one device (times the number of devices under FSDP)."""
        return self.train.per_device_batch_size * self.train.gradient_accumulation_steps


class PresetError(UsageError):
    """A preset file or an override is wrong: unknown or missing key, wrong type, bad value."""


# --set key -> (table or "" for top level, field name, type hint). Built from the dataclasses,
# so that a new field is a key of the files and of --set at once.
_SECTIONS: dict[str, type] = {"lora": LoraSettings, "train": TrainSettings, "data": DataSettings}
_TOP_LEVEL = ("description", "base_model")


def _build_fields() -> dict[str, tuple[str, str, Any]]:
    fields: dict[str, tuple[str, str, Any]] = {}
    top_hints = typing.get_type_hints(TrainConfig)
    for name in _TOP_LEVEL:
        fields[name] = ("", name, top_hints[name])
    for section, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            fields[f"{section}.{f.name}"] = (section, f.name, hints[f.name])
    return fields


_FIELDS = _build_fields()
#: Keys a preset file may leave out (settings added after presets were first written), by default.
_DEFAULTS: dict[str, Any] = {
    f"{section}.{f.name}": f.default
    for section, cls in _SECTIONS.items() for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
}


def known_keys() -> list[str]:
    """Every key a preset file has and ``--set`` accepts, as ``table.key``."""
    return list(_FIELDS)


# ---------------------------------------------------------------------------------------------
# Finding presets


def _preset_dir():
    return resources.files("apto_release.train").joinpath("presets")


def preset_names() -> list[str]:
    """The names of the presets shipped in the package, sorted."""
    return sorted(
        entry.name[: -len(PRESET_SUFFIX)]
        for entry in _preset_dir().iterdir()
        if entry.name.endswith(PRESET_SUFFIX) and entry.is_file()
    )


def _read_preset(name_or_path: str | Path) -> tuple[str, str, dict[str, Any]]:
    """(name, source for messages, parsed TOML) of a shipped preset name or a .toml path."""
    if _toml is None:  # pragma: no cover - Python 3.10 without tomli
        raise UsageError("reading presets needs Python 3.11 or the 'tomli' package", hint="pip install tomli")
    text_name = str(name_or_path)
    if text_name in preset_names():
        entry = _preset_dir().joinpath(text_name + PRESET_SUFFIX)
        source = f"presets/{text_name}{PRESET_SUFFIX}"
        raw = entry.read_text(encoding="utf-8")
        name = text_name
    elif text_name.endswith(PRESET_SUFFIX) or Path(text_name).is_file():
        path = Path(text_name)
        try:
            raw = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PresetError(f"cannot read the preset file: {exc}", path=path) from exc
        source = str(path)
        name = path.stem
    else:
        close = difflib.get_close_matches(text_name, preset_names(), n=1)
        raise PresetError(
            f"unknown preset {text_name!r}; known presets: {', '.join(preset_names())}",
            hint=(f"did you mean {close[0]!r}? Or give" if close else "give") + " the path of a .toml file in the presets' format",
        )
    try:
        data = _toml.loads(raw)
    except _toml.TOMLDecodeError as exc:
        raise PresetError(f"not valid TOML: {exc}", path=source) from exc
    return name, source, data


# ---------------------------------------------------------------------------------------------
# Types


def _type_name(hint: Any) -> str:
    if hint is bool:
        return "a boolean (true or false)"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    return "a list of strings"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _coerce(key: str, hint: Any, value: Any, source: str | None) -> Any:
    """A TOML value checked against the field's type (ints are accepted where floats are)."""
    ok = False
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif hint is str:
        ok = isinstance(value, str)
    else:  # tuple[str, ...]
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        if ok:
            value = tuple(value)
    if not ok:
        raise PresetError(f"'{key}' must be {_type_name(hint)}, not {_json_type(value)} ({value!r})", path=source, field=key)
    return value


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_value(key: str, text: str) -> Any:
    """The typed value of ``--set key=text`` (see the module docstring for the syntax per type)."""
    if key not in _FIELDS:
        raise _unknown_key(key, "--set")
    hint = _FIELDS[key][2]
    raw = text.strip()
    try:
        if hint is bool:
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError
        if hint is int:
            return int(raw, 10)
        if hint is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
            return value
        if hint is str:
            if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
                return raw[1:-1]
            return text
        inner = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
        items = [item.strip().strip("\"'").strip() for item in inner.split(",")]
        return tuple(item for item in items if item)
    except ValueError:
        raise PresetError(
            f"--set {key}={text}: '{key}' must be {_type_name(hint)}, not {text!r}", field=key,
            hint=f"for example --set {key}={_example(hint)}",
        ) from None


def _example(hint: Any) -> str:
    return {bool: "true", int: "8", float: "2e-4", str: "text"}.get(hint, "q_proj,v_proj")


def _unknown_key(key: str, where: str, source: str | None = None) -> PresetError:
    close = difflib.get_close_matches(key, list(_FIELDS), n=1)
    return PresetError(
        f"unknown key '{key}'" + (f" in {where}" if where and source is None else "")
        + f"; known keys: {', '.join(_FIELDS)}",
        path=source,
        field=key,
        hint=(f"did you mean '{close[0]}'?" if close else "keys are table.key, as in the preset files"),
    )


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["lora.r=8", ...]`` → ``{"lora.r": 8, ...}``, typed by the fields; later items win."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PresetError(f"--set {item!r} is not KEY=VALUE", hint="for example --set lora.r=8")
        out[key] = parse_value(key, text)
    return out


# ---------------------------------------------------------------------------------------------
# Building and checking a config


def _flatten(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """TOML tables → ``{"table.key": value}``, with unknown tables and keys as errors."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise PresetError(f"'{key}' must be a table ([{key}]), not {_json_type(value)}", path=source, field=key)
            for sub, subvalue in value.items():
                full = f"{key}.{sub}"
                if full not in _FIELDS:
                    raise _unknown_key(full, "", source)
                flat[full] = subvalue
        elif key in _FIELDS:
            flat[key] = value
        else:
            raise _unknown_key(key, "", source)
    return flat


def _check_values(values: Mapping[str, Any], source: str | None, overridden: frozenset[str]) -> None:
    """Ranges and choices; the message says where the bad value came from."""

    def fail(key: str, message: str) -> None:
        where = f"--set {key}: " if key in overridden else ""
        raise PresetError(f"{where}'{key}' {message}", path=None if key in overridden else source, field=key)

    positive_ints = ("lora.r", "lora.alpha", "train.epochs", "train.per_device_batch_size", "train.gradient_accumulation_steps", "data.max_length")
    for key in positive_ints:
        if values[key] < 1:
            fail(key, f"must be at least 1, not {values[key]}")
    if not 0.0 <= values["lora.dropout"] < 1.0:
        fail("lora.dropout", f"must be from 0 up to (not including) 1, not {values['lora.dropout']}")
    if not values["train.learning_rate"] > 0.0:
        fail("train.learning_rate", f"must be positive, not {values['train.learning_rate']}")
    if not 0.0 <= values["train.warmup_ratio"] < 1.0:
        fail("train.warmup_ratio", f"must be from 0 up to (not including) 1, not {values['train.warmup_ratio']}")
    if values["train.weight_decay"] < 0.0:
        fail("train.weight_decay", f"must not be negative, not {values['train.weight_decay']}")
    if not values["train.max_grad_norm"] > 0.0:
        fail("train.max_grad_norm", f"must be positive, not {values['train.max_grad_norm']}")
    if values["train.lr_scheduler"] not in LR_SCHEDULERS:
        fail("train.lr_scheduler", f"must be one of {', '.join(LR_SCHEDULERS)}, not {values['train.lr_scheduler']!r}")
    if values["train.precision"] not in PRECISIONS:
        fail("train.precision", f"must be one of {', '.join(PRECISIONS)}, not {values['train.precision']!r}")
    if values["data.chat_template"] not in CHAT_TEMPLATE_NAMES:
        fail("data.chat_template", f"must be \"\" (the tokenizer's own) or one of {', '.join(n for n in CHAT_TEMPLATE_NAMES if n)}, not {values['data.chat_template']!r}")
    if values["data.thinking"] not in THINKING_POLICIES:
        fail("data.thinking", f"must be one of {', '.join(repr(p) for p in THINKING_POLICIES)}, not {values['data.thinking']!r}")
    if not values["data.end_of_turn"].strip():
        fail("data.end_of_turn", "must name the token that ends an assistant turn (e.g. <|im_end|>)")
    targets = values["lora.target_modules"]
    unknown = [t for t in targets if t not in KNOWN_TARGETS]
    if unknown:
        fail("lora.target_modules", f"has unknown module name(s) {', '.join(unknown)}; the text decoder's are {', '.join(KNOWN_TARGETS)} (the vision tower is never a target)")
    if not targets:
        fail("lora.target_modules", "is empty")
    if len(set(targets)) != len(targets):
        fail("lora.target_modules", "names a module twice")


def config_from_dict(data: Mapping[str, Any], *, name: str, source: str = "<config>", overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Build a ``TrainConfig`` from parsed TOML (and typed overrides), checking everything.

    Raises:
        PresetError: an unknown or missing key, a value of the wrong type, a value out of range.
    """
    flat = _flatten(data, source)
    missing = [key for key in _FIELDS if key not in flat and key not in _DEFAULTS]
    if missing:
        raise PresetError(f"missing key(s) {', '.join(missing)}: a preset states every setting (and why)", path=source, field=missing[0])
    values = {key: _coerce(key, _FIELDS[key][2], value, source) for key, value in flat.items()}
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        if key not in _FIELDS:
            raise _unknown_key(key, "--set")
        values[key] = _coerce(key, _FIELDS[key][2], value, None)
    _check_values(values, source, frozenset(overrides))
    per_section: dict[str, dict[str, Any]] = {section: {} for section in _SECTIONS}
    top: dict[str, Any] = {}
    for key, value in values.items():
        section, field_name, _ = _FIELDS[key]
        (per_section[section] if section else top)[field_name] = value
    return TrainConfig(
        name=name,
        lora=LoraSettings(**per_section["lora"]),
        train=TrainSettings(**per_section["train"]),
        data=DataSettings(**per_section["data"]),
        **top,
    )


def load_preset(name_or_path: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> TrainConfig:
    """Load a shipped preset by name (``qwen3.5-9b``) or a ``.toml`` file, then apply overrides.

    ``overrides`` is a list of ``"key=value"`` strings (as ``--set`` gives them) or a mapping of
    key to an already typed value.

    Raises:
        PresetError: an unknown preset, a bad file, an unknown key or a badly typed value.
    """
    name, source, data = _read_preset(name_or_path)
    typed = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    return config_from_dict(data, name=name, source=source, overrides=typed)


def with_overrides(config: TrainConfig, overrides: Sequence[str] | Mapping[str, Any]) -> TrainConfig:
    """A copy of ``config`` with overrides applied and checked again."""
    typed = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    base: dict[str, Any] = {}
    for key, value in config.flat().items():
        section = _FIELDS[key][0]
        target = base.setdefault(section, {}) if section else base
        target[key.split(".", 1)[-1]] = list(value) if isinstance(value, tuple) else value
    return config_from_dict(base, name=config.name, source=f"preset {config.name}", overrides=typed)


def render_value(value: Any) -> str:
    """A setting as TOML would spell it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(render_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


__all__ = [
    "DataSettings",
    "KNOWN_TARGETS",
    "LoraSettings",
    "PresetError",
    "TEXT_PROJECTIONS",
    "THINKING_POLICIES",
    "TrainConfig",
    "TrainSettings",
    "config_from_dict",
    "known_keys",
    "load_preset",
    "parse_overrides",
    "parse_value",
    "preset_names",
    "render_value",
    "target_regex",
    "with_overrides",
]
