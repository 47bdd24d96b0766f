"""Hugging Face tensor names -> GGUF tensor names, per architecture, as llama.cpp's converter writes them.

The GGUF names come from gguf-py's own tables (``gguf.TENSOR_NAMES``, keyed by
``gguf.MODEL_TENSOR``), so they follow the llama.cpp version the pinned ``gguf`` package was cut
from; the Hugging Face side is that of ``transformers``' modelling code (the same names as
gguf-py's ``tensor_mapping.py``). Each table entry says which architecture(s) it is for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import gguf

from apto_release.errors import InputError

MT = gguf.MODEL_TENSOR

#: ``config.json`` ``architectures[0]`` -> the gguf-py architecture.
ARCHITECTURES: dict[str, gguf.MODEL_ARCH] = {
    "Qwen3ForCausalLM": gguf.MODEL_ARCH.QWEN3,  # qwen3 (convert_hf_to_gguf.py: Qwen3Model)
    "Qwen2ForCausalLM": gguf.MODEL_ARCH.QWEN2,  # qwen2 (convert_hf_to_gguf.py: Qwen2Model)
}

# Tensors outside the blocks: HF name -> (GGUF tensor, suffix).
_GLOBAL: dict[gguf.MODEL_ARCH, dict[str, tuple[gguf.MODEL_TENSOR, str]]] = {}
# Tensors of block N: HF name after "model.layers.N." -> (GGUF tensor, suffix).
_BLOCK: dict[gguf.MODEL_ARCH, dict[str, tuple[gguf.MODEL_TENSOR, str]]] = {}

_COMMON_GLOBAL = {
    "model.embed_tokens.weight": (MT.TOKEN_EMBD, "weight"),  # qwen2, qwen3 -> token_embd
    "model.norm.weight": (MT.OUTPUT_NORM, "weight"),  # qwen2, qwen3 -> output_norm
    "lm_head.weight": (MT.OUTPUT, "weight"),  # qwen2, qwen3 -> output (absent when tied)
}
_COMMON_BLOCK = {
    "input_layernorm.weight": (MT.ATTN_NORM, "weight"),  # qwen2, qwen3 -> blk.N.attn_norm
    "self_attn.q_proj.weight": (MT.ATTN_Q, "weight"),  # qwen2, qwen3 -> blk.N.attn_q
    "self_attn.k_proj.weight": (MT.ATTN_K, "weight"),  # qwen2, qwen3 -> blk.N.attn_k
    "self_attn.v_proj.weight": (MT.ATTN_V, "weight"),  # qwen2, qwen3 -> blk.N.attn_v
    "self_attn.o_proj.weight": (MT.ATTN_OUT, "weight"),  # qwen2, qwen3 -> blk.N.attn_output
    "post_attention_layernorm.weight": (MT.FFN_NORM, "weight"),  # qwen2, qwen3 -> blk.N.ffn_norm
    "mlp.gate_proj.weight": (MT.FFN_GATE, "weight"),  # qwen2, qwen3 -> blk.N.ffn_gate
    "mlp.up_proj.weight": (MT.FFN_UP, "weight"),  # qwen2, qwen3 -> blk.N.ffn_up
    "mlp.down_proj.weight": (MT.FFN_DOWN, "weight"),  # qwen2, qwen3 -> blk.N.ffn_down
}

_GLOBAL[gguf.MODEL_ARCH.QWEN2] = dict(_COMMON_GLOBAL)
_BLOCK[gguf.MODEL_ARCH.QWEN2] = {
    **_COMMON_BLOCK,
    "self_attn.q_proj.bias": (MT.ATTN_Q, "bias"),  # qwen2 (attention bias on q, k, v) -> blk.N.attn_q.bias
    "self_attn.k_proj.bias": (MT.ATTN_K, "bias"),  # qwen2 -> blk.N.attn_k.bias
    "self_attn.v_proj.bias": (MT.ATTN_V, "bias"),  # qwen2 -> blk.N.attn_v.bias
}
_GLOBAL[gguf.MODEL_ARCH.QWEN3] = dict(_COMMON_GLOBAL)
_BLOCK[gguf.MODEL_ARCH.QWEN3] = {
    **_COMMON_BLOCK,
    "self_attn.q_norm.weight": (MT.ATTN_Q_NORM, "weight"),  # qwen3 (per-head QK norm) -> blk.N.attn_q_norm
    "self_attn.k_norm.weight": (MT.ATTN_K_NORM, "weight"),  # qwen3 -> blk.N.attn_k_norm
}

# Tensors llama.cpp's converter drops (recomputed at load time).
_SKIPPED = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")
_BLOCK_NAME = re.compile(r"^model\.layers\.(\d+)\.(.+)$")

# The table's own consistency with gguf-py: every GGUF tensor used is one llama.cpp knows for the arch.
for _arch, _table in (*_GLOBAL.items(), *_BLOCK.items()):
    for _tensor, _ in _table.values():
        assert _tensor in gguf.MODEL_TENSORS[_arch], (_arch, _tensor)


@dataclass(frozen=True)
class Mapped:
    """One tensor's GGUF name, and whether llama.cpp keeps it in float32 (norms, biases: 1-D tensors)."""

    hf_name: str
    gguf_name: str
    tensor: gguf.MODEL_TENSOR


def arch_name(arch: gguf.MODEL_ARCH) -> str:
    """``gguf.MODEL_ARCH.QWEN3`` -> ``"qwen3"`` (the ``general.architecture`` value)."""
    return gguf.MODEL_ARCH_NAMES[arch]


def is_skipped(hf_name: str) -> bool:
    """Whether llama.cpp's converter leaves this tensor out of the GGUF file."""
    return bool(_SKIPPED.match(hf_name))


def gguf_name(arch: gguf.MODEL_ARCH, hf_name: str, *, block_count: int, path=None) -> Mapped:
    """The GGUF name of the Hugging Face tensor ``hf_name`` for ``arch``.

    Raises:
        InputError: the name is not one this architecture's table knows, or its block number is
            outside ``block_count``.
    """
    entry = _GLOBAL[arch].get(hf_name)
    bid = None
    if entry is None and (match := _BLOCK_NAME.match(hf_name)):
        bid = int(match.group(1))
        entry = _BLOCK[arch].get(match.group(2))
        if entry is not None and bid >= block_count:
            raise InputError(f"tensor '{hf_name}' belongs to block {bid}, but the config has {block_count} blocks", path=path)
    if entry is None:
        raise InputError(
            f"unknown tensor '{hf_name}' for architecture '{arch_name(arch)}': no GGUF name for it",
            path=path,
            hint="the checkpoint has tensors this converter does not know; is it a merged full model (not an adapter)?",
        )
    tensor, suffix = entry
    base = gguf.TENSOR_NAMES[tensor].format(bid=bid) if bid is not None else gguf.TENSOR_NAMES[tensor]
    return Mapped(hf_name, f"{base}.{suffix}", tensor)


def expected_names(arch: gguf.MODEL_ARCH, block_count: int, *, tied: bool) -> list[str]:
    """Every HF tensor name a checkpoint of ``arch`` with ``block_count`` blocks must have."""
    out = [n for n in _GLOBAL[arch] if not (tied and n == "lm_head.weight")]
    for bid in range(block_count):
        out += [f"model.layers.{bid}.{leaf}" for leaf in _BLOCK[arch]]
    return out
