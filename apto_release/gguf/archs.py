"""Per-architecture knowledge for the GGUF converter: tensor names, tensor transforms, metadata.

``convert`` is architecture-blind: it asks an ``ArchSpec`` what each checkpoint tensor becomes
(``rule``: a GGUF name, the output shape, an optional transform, whether it stays float32), which
tensors must be there (``required``) and what hyperparameters to write (``add_hparams``). One
subclass per family:

- ``DenseQwenSpec``: Qwen2 / Qwen3 (``qwen2``, ``qwen3``), names from ``names``; no transforms.
- ``qwen35.Qwen35Spec``: Qwen3.5 dense (``qwen35``): Gated DeltaNet layers, zero-centred norms,
  multi-token prediction (see that module).

Every rule maps one source tensor to one output tensor whose shape is known from the header, so
the plan is complete before anything is written and the writer streams one tensor at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gguf

from apto_release.errors import InputError, UsageError
from apto_release.gguf import names


@dataclass(frozen=True)
class TensorRule:
    """What one checkpoint tensor becomes in the GGUF file."""

    hf_name: str
    gguf_name: str
    shape: tuple[int, ...]  # the output shape, torch order
    transform: Callable[[Any], Any] | None = None  # torch.Tensor (float32) -> torch.Tensor of ``shape``
    keep_f32: bool = False  # stays float32 whatever the requested type (1-D tensors always do)


def hparam(config: dict[str, Any], key: str, path: Path) -> Any:
    """``config[key]``, or an InputError naming the missing key."""
    if config.get(key) is None:
        raise InputError(f"config.json has no '{key}'", path=path, field=key)
    return config[key]


def rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """transformers 5's ``rope_parameters`` or the older ``rope_scaling`` (empty when neither)."""
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    return params if isinstance(params, dict) else {}


def rope_theta(config: dict[str, Any], path: Path) -> float:
    """rope_theta from ``rope_parameters`` or the older top-level key; only plain RoPE."""
    params = rope_parameters(config)
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in (None, "default"):
        raise UsageError(f"RoPE scaling '{rope_type}' is not supported by this converter yet", path=path, field="rope_parameters")
    theta = params.get("rope_theta") or config.get("rope_theta")
    if theta is None:
        raise InputError("config.json has no rope_theta (in 'rope_parameters' or at the top level)", path=path, field="rope_parameters")
    return float(theta)


class ArchSpec:
    """One architecture family: the base reads the hyperparameters every Qwen text model has.

    Args:
        config: ``config.json``; a ``text_config`` is lifted to the top level (as llama.cpp's
            converter does), so a ``...ForConditionalGeneration`` reads like its text model.
        config_path: for error messages.
        tensor_names: every tensor name in the checkpoint (decides optional parts such as MTP).
        mtp: include multi-token-prediction layers: ``None`` when complete, ``True`` required,
            ``False`` never. Families without MTP refuse ``True``.
    """

    #: ``config.json`` ``architectures[0]`` -> gguf-py architecture, for the families this class handles.
    ARCHITECTURES: ClassVar[dict[str, gguf.MODEL_ARCH]] = {}
    #: Whether the family has multi-token-prediction layers the converter can write.
    SUPPORTS_MTP: ClassVar[bool] = False

    def __init__(
        self, hf_arch: str, config: dict[str, Any], config_path: Path, tensor_names: Collection[str], *, mtp: bool | None = None
    ) -> None:
        self.hf_arch = hf_arch
        self.arch = self.ARCHITECTURES[hf_arch]
        self.config_path = config_path
        self.hparams: dict[str, Any] = {**config, **(config.get("text_config") or {})}
        hp = self.hparams
        self.n_layer = int(hparam(hp, "num_hidden_layers", config_path))  # the main model's blocks
        self.block_count = self.n_layer  # blocks written (MTP layers come after the main ones)
        self.hidden = int(hparam(hp, "hidden_size", config_path))
        self.heads = int(hparam(hp, "num_attention_heads", config_path))
        self.kv_heads = int(hp.get("num_key_value_heads") or self.heads)
        self.head_dim = int(hp.get("head_dim") or self.hidden // self.heads)
        self.vocab_size = int(hparam(hp, "vocab_size", config_path))
        self.tied = bool(hp.get("tie_word_embeddings", False))
        self.rope_theta = rope_theta(hp, config_path)
        if mtp and not self.SUPPORTS_MTP:
            raise UsageError(
                f"mtp=True, but architecture '{hf_arch}' has no multi-token-prediction layers", path=config_path, field="mtp"
            )

    @property
    def name(self) -> str:
        """The ``general.architecture`` value (``qwen3``, ``qwen35``)."""
        return names.arch_name(self.arch)

    def rule(self, hf_name: str, shape: tuple[int, ...], *, path: Path | None = None) -> TensorRule | None:
        """What ``hf_name`` becomes; ``None`` when it is left out. Unknown names raise InputError (naming ``path``)."""
        raise NotImplementedError

    def required(self) -> list[str]:
        """Every checkpoint tensor name the output needs."""
        raise NotImplementedError

    def add_hparams(self, writer: gguf.GGUFWriter) -> None:
        """The architecture's hyperparameter keys (what llama.cpp's ``TextModel.set_gguf_parameters`` writes)."""
        hp, path = self.hparams, self.config_path
        writer.add_context_length(int(hparam(hp, "max_position_embeddings", path)))
        writer.add_embedding_length(self.hidden)
        writer.add_block_count(self.block_count)
        writer.add_feed_forward_length(int(hparam(hp, "intermediate_size", path)))
        writer.add_head_count(self.heads)
        writer.add_head_count_kv(self.kv_heads)
        writer.add_rope_freq_base(self.rope_theta)
        writer.add_layer_norm_rms_eps(float(hparam(hp, "rms_norm_eps", path)))
        writer.add_key_length(self.head_dim)
        writer.add_value_length(self.head_dim)


class DenseQwenSpec(ArchSpec):
    """Qwen2 and Qwen3: names from ``names``' tables, every tensor copied as it is."""

    ARCHITECTURES: ClassVar[dict[str, gguf.MODEL_ARCH]] = dict(names.ARCHITECTURES)

    def rule(self, hf_name: str, shape: tuple[int, ...], *, path: Path | None = None) -> TensorRule | None:
        if names.is_skipped(hf_name) or (self.tied and hf_name == "lm_head.weight"):
            return None  # tied: llama.cpp reuses token_embd
        mapped = names.gguf_name(self.arch, hf_name, block_count=self.block_count, path=path)
        return TensorRule(hf_name, mapped.gguf_name, tuple(shape))

    def required(self) -> list[str]:
        return names.expected_names(self.arch, self.block_count, tied=self.tied)
