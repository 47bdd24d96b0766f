"""Qwen3.5 dense text models as llama.cpp's ``qwen35`` architecture.

What llama.cpp's converter (``conversion/qwen.py``: ``Qwen3_5TextModel`` and its bases
``Qwen3NextModel``, ``_LinearAttentionVReorderBase``, ``_QwenMtpMixin``, ``_Qwen35MRopeMixin``)
writes, and its loader (``src/models/qwen35.cpp``) expects, one tensor at a time:

- Checkpoints: ``Qwen3_5ForConditionalGeneration`` (text under ``model.language_model.``; the
  vision tower ``model.visual.*`` belongs in a separate mmproj file and is left out; the
  hyperparameters in ``text_config``) or ``Qwen3_5ForCausalLM`` (``model.*``, flat config).
- Zero-centred RMSNorms: Qwen3.5's RMSNorm computes ``x * (1 + w)``, llama.cpp ``x * w``, so every
  norm weight gets +1, except the gated norm inside the linear attention
  (``linear_attn.norm.weight``), which already computes ``x * w``.
- Gated DeltaNet (``linear_attention``) layers: ``A_log`` is stored as ``A = -exp(A_log)``
  (``ssm_a``), ``dt_bias`` as ``ssm_dt.bias``, the depthwise ``conv1d`` weight (channels, 1,
  kernel) squeezed to (channels, kernel) and kept float32.
- Value heads in tiled order. With fewer key heads (``nk``) than value heads (``nv = nk * r``) the
  checkpoint groups the value heads by key head, ``[k0: v0..v(r-1), k1: ...]``; llama.cpp
  broadcasts the keys with ``ggml_repeat``, which tiles, ``[k0, k1, ..., k0, k1, ...]``, so the
  value heads are reordered to ``[g0v0, g1v0, ..., g0v1, g1v1, ...]`` everywhere they appear: the
  V rows of ``in_proj_qkv``, the rows of ``in_proj_z``, ``in_proj_a``, ``in_proj_b``, ``A_log``
  and ``dt_bias``, the V channels of ``conv1d`` and the columns of ``out_proj``.
- Multi-token prediction: the ``mtp.*`` head becomes extra blocks after the main ones
  (``mtp.layers.i.*`` -> ``blk.{n_layer + i}.*`` like a full-attention block; ``fc``,
  ``pre_fc_norm_embedding``, ``pre_fc_norm_hidden``, ``norm`` -> ``blk.{n_layer}.nextn.eh_proj``,
  ``enorm``, ``hnorm``, ``shared_head_norm``), ``block_count`` counts them and
  ``nextn_predict_layers`` says how many. Written completely or not at all.

The installed gguf-py (0.19) predates two things llama.cpp 0.3.36 reads for ``qwen35``: the
``nextn`` tensors in its ``MODEL_TENSORS[QWEN35]`` (their names are in ``TENSOR_NAMES``) and the
``{arch}.attention.recurrent_layers`` key (``llama-arch.cpp``: ``LLM_KV_ATTENTION_RECURRENT_LAYERS``),
written here by its name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, ClassVar

import gguf

from apto_release.errors import InputError, UsageError
from apto_release.gguf.archs import ArchSpec, TensorRule, hparam, rope_parameters

MT = gguf.MODEL_TENSOR

#: llama.cpp's key for the per-layer recurrent flags (not in gguf-py 0.19's ``Keys``).
RECURRENT_LAYERS_KEY = "{arch}.attention.recurrent_layers"
#: What llama.cpp writes when the config has no ``mrope_section`` (``_Qwen35MRopeMixin``).
DEFAULT_MROPE_SECTION = (11, 11, 10, 0)
#: llama.cpp's default when the config has no ``partial_rotary_factor``.
DEFAULT_PARTIAL_ROTARY_FACTOR = 0.25

# How a tensor is transformed (see _Qwen35Transforms).
_PLUS_ONE = "plus_one"  # zero-centred RMSNorm weight: + 1
_QKV = "qkv"  # V rows of in_proj_qkv reordered
_V_ROWS = "v_rows"  # rows in value-head order (head_dim = linear_value_head_dim)
_HEAD_ROWS = "head_rows"  # one row per value head
_A = "a"  # -exp(A_log), value-head order
_CONV = "conv"  # squeeze, V channels reordered
_V_COLS = "v_cols"  # columns in value-head order

# name after the text prefix -> (GGUF tensor, suffix, transform)
_Entry = tuple[gguf.MODEL_TENSOR, str, str | None]
_GLOBAL: dict[str, _Entry] = {
    "embed_tokens.weight": (MT.TOKEN_EMBD, ".weight", None),
    "norm.weight": (MT.OUTPUT_NORM, ".weight", _PLUS_ONE),
}
_LM_HEAD = "lm_head.weight"  # outside the text prefix in both layouts
_COMMON_BLOCK: dict[str, _Entry] = {
    "input_layernorm.weight": (MT.ATTN_NORM, ".weight", _PLUS_ONE),
    "post_attention_layernorm.weight": (MT.ATTN_POST_NORM, ".weight", _PLUS_ONE),  # qwen35 has no ffn_norm
    "mlp.gate_proj.weight": (MT.FFN_GATE, ".weight", None),
    "mlp.up_proj.weight": (MT.FFN_UP, ".weight", None),
    "mlp.down_proj.weight": (MT.FFN_DOWN, ".weight", None),
}
_FULL_BLOCK: dict[str, _Entry] = {
    **_COMMON_BLOCK,
    "self_attn.q_proj.weight": (MT.ATTN_Q, ".weight", None),  # queries and output gate: 2 * heads * head_dim rows
    "self_attn.k_proj.weight": (MT.ATTN_K, ".weight", None),
    "self_attn.v_proj.weight": (MT.ATTN_V, ".weight", None),
    "self_attn.o_proj.weight": (MT.ATTN_OUT, ".weight", None),
    "self_attn.q_norm.weight": (MT.ATTN_Q_NORM, ".weight", _PLUS_ONE),
    "self_attn.k_norm.weight": (MT.ATTN_K_NORM, ".weight", _PLUS_ONE),
}
_LINEAR_BLOCK: dict[str, _Entry] = {
    **_COMMON_BLOCK,
    "linear_attn.in_proj_qkv.weight": (MT.ATTN_QKV, ".weight", _QKV),
    "linear_attn.in_proj_z.weight": (MT.ATTN_GATE, ".weight", _V_ROWS),
    "linear_attn.in_proj_a.weight": (MT.SSM_ALPHA, ".weight", _HEAD_ROWS),
    "linear_attn.in_proj_b.weight": (MT.SSM_BETA, ".weight", _HEAD_ROWS),
    "linear_attn.A_log": (MT.SSM_A, "", _A),
    "linear_attn.dt_bias": (MT.SSM_DT, ".bias", _HEAD_ROWS),
    "linear_attn.conv1d.weight": (MT.SSM_CONV1D, ".weight", _CONV),
    "linear_attn.norm.weight": (MT.SSM_NORM, ".weight", None),  # gated norm: x * w, no + 1
    "linear_attn.out_proj.weight": (MT.SSM_OUT, ".weight", _V_COLS),
}
# The MTP head's own tensors (block n_layer); its layers are _FULL_BLOCK.
_MTP_HEAD: dict[str, _Entry] = {
    "fc.weight": (MT.NEXTN_EH_PROJ, ".weight", None),
    "pre_fc_norm_embedding.weight": (MT.NEXTN_ENORM, ".weight", _PLUS_ONE),
    "pre_fc_norm_hidden.weight": (MT.NEXTN_HNORM, ".weight", _PLUS_ONE),
    "norm.weight": (MT.NEXTN_SHARED_HEAD_NORM, ".weight", _PLUS_ONE),
}
_F32_TENSORS = frozenset({MT.SSM_CONV1D})  # llama.cpp keeps these float32 whatever the file type

_BLOCK_NAME = re.compile(r"^layers\.(\d+)\.(.+)$")
_VISION_PREFIXES = ("model.visual.", "visual.")
_MTP_PREFIXES = ("mtp.", "model.mtp.")

# The tables against gguf-py: every tensor has a name, and all but the nextn ones (see above) are
# ones gguf-py lists for qwen35.
for _table in (_GLOBAL, _FULL_BLOCK, _LINEAR_BLOCK, _MTP_HEAD):
    for _tensor, _, _ in _table.values():
        assert _tensor in gguf.TENSOR_NAMES, _tensor
        assert _tensor in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.QWEN35] or _table is _MTP_HEAD, _tensor


def value_head_order(num_k_heads: int, num_v_heads: int) -> list[int]:
    """The tiled order of the value heads: output head ``j * nk + g`` is checkpoint head ``g * r + j``."""
    r = num_v_heads // num_k_heads
    return [g * r + j for j in range(r) for g in range(num_k_heads)]


class Qwen35Spec(ArchSpec):
    """Qwen3.5 dense (``qwen35``): see the module docstring."""

    ARCHITECTURES: ClassVar[dict[str, gguf.MODEL_ARCH]] = {
        "Qwen3_5ForConditionalGeneration": gguf.MODEL_ARCH.QWEN35,  # text model only; vision -> mmproj
        "Qwen3_5ForCausalLM": gguf.MODEL_ARCH.QWEN35,
    }
    SUPPORTS_MTP = True

    def __init__(
        self, hf_arch: str, config: dict[str, Any], config_path: Path, tensor_names: Collection[str], *, mtp: bool | None = None
    ) -> None:
        super().__init__(hf_arch, config, config_path, tensor_names, mtp=mtp)
        hp, path = self.hparams, config_path
        self.prefix = "model.language_model." if hf_arch.endswith("ForConditionalGeneration") else "model."
        self.nk = int(hparam(hp, "linear_num_key_heads", path))
        self.nv = int(hparam(hp, "linear_num_value_heads", path))
        self.dk = int(hparam(hp, "linear_key_head_dim", path))
        self.dv = int(hparam(hp, "linear_value_head_dim", path))
        self.conv_kernel = int(hparam(hp, "linear_conv_kernel_dim", path))
        if self.nv % self.nk:
            raise InputError(
                f"linear_num_value_heads ({self.nv}) is not a multiple of linear_num_key_heads ({self.nk})",
                path=path, field="linear_num_value_heads",
            )
        if self.dk != self.dv:  # src/models/qwen35.cpp: head_v_dim = head_k_dim = ssm_d_state
            raise UsageError(
                f"llama.cpp's qwen35 needs linear_key_head_dim == linear_value_head_dim, not {self.dk} and {self.dv}",
                path=path, field="linear_value_head_dim",
            )
        self.interval = int(hp.get("full_attention_interval") or 4)
        layer_types = hp.get("layer_types")
        if layer_types is None:
            layer_types = ["full_attention" if (i + 1) % self.interval == 0 else "linear_attention" for i in range(self.n_layer)]
        if len(layer_types) != self.n_layer or not set(layer_types) <= {"linear_attention", "full_attention"}:
            raise InputError(
                f"layer_types must list {self.n_layer} entries of 'linear_attention' / 'full_attention'", path=path, field="layer_types"
            )
        self.recurrent = [t == "linear_attention" for t in layer_types]
        rope = rope_parameters(hp)
        factor = rope.get("partial_rotary_factor", hp.get("partial_rotary_factor", DEFAULT_PARTIAL_ROTARY_FACTOR))
        self.rope_dims = int(self.head_dim * float(factor))
        section = list(rope.get("mrope_section") or hp.get("mrope_section") or DEFAULT_MROPE_SECTION)
        self.rope_sections = [int(s) for s in (section + [0] * 4)[:4]]
        self._transforms = _Transforms(self.nk, self.nv, self.dk, self.dv)

        self.mtp_prefix = "mtp."
        self.n_mtp = self._mtp_layers(tensor_names, mtp)
        self.block_count = self.n_layer + self.n_mtp

    # -- multi-token prediction --------------------------------------------------------------

    @staticmethod
    def _mtp_leaf(name: str) -> str | None:
        """``mtp.X`` (also stored as ``model.mtp.X``) -> ``X``; other names -> None."""
        for prefix in _MTP_PREFIXES:
            if name.startswith(prefix):
                return name[len(prefix) :]
        return None

    def _mtp_required(self, n_mtp: int) -> list[str]:
        leaves = [*_MTP_HEAD, *(f"layers.{i}.{leaf}" for i in range(n_mtp) for leaf in _FULL_BLOCK)]
        return [self.mtp_prefix + leaf for leaf in leaves]

    def _mtp_layers(self, tensor_names: Collection[str], mtp: bool | None) -> int:
        """How many MTP layers to write: all the checkpoint has, or none; never a partial set."""
        present = [n for n in tensor_names if self._mtp_leaf(n) is not None]
        if present:
            self.mtp_prefix = next(p for p in _MTP_PREFIXES if present[0].startswith(p))
        if mtp is False:
            return 0
        if not present:
            if mtp:
                raise UsageError(
                    "mtp=True, but the checkpoint has no multi-token-prediction tensors (mtp.*)",
                    path=self.config_path.parent, field="mtp", hint="leave mtp unset (or pass --no-mtp)",
                )
            return 0
        indices = {int(m.group(1)) for n in present if (m := _BLOCK_NAME.match(self._mtp_leaf(n) or ""))}
        n_mtp = int(self.hparams.get("mtp_num_hidden_layers") or 0) or (max(indices) + 1 if indices else 1)
        have = set(present)
        missing = [n for n in self._mtp_required(n_mtp) if n not in have]
        if missing:
            more = f" ({len(missing)} MTP tensors missing in all)" if len(missing) > 1 else ""
            raise InputError(
                f"the checkpoint's multi-token-prediction (MTP) tensors are incomplete: '{missing[0]}' is missing{more}",
                path=self.config_path.parent, hint="pass mtp=False (CLI --no-mtp) to convert without the MTP layers",
            )
        return n_mtp

    # -- tensors ------------------------------------------------------------------------------

    def _block_table(self, bid: int) -> dict[str, _Entry]:
        if bid >= self.n_layer:
            return _FULL_BLOCK  # MTP layers are full-attention blocks
        return _LINEAR_BLOCK if self.recurrent[bid] else _FULL_BLOCK

    def _lookup(self, hf_name: str, path: Path | None) -> tuple[_Entry, int | None] | None:
        """The table entry and block of ``hf_name``; None for an MTP tensor left out."""
        if hf_name == _LM_HEAD:
            return (MT.OUTPUT, ".weight", None), None
        if (leaf := self._mtp_leaf(hf_name)) is not None:
            if self.n_mtp == 0:
                return None
            if leaf in _MTP_HEAD:
                return _MTP_HEAD[leaf], self.n_layer
            m = _BLOCK_NAME.match(leaf)
            if m and int(m.group(1)) < self.n_mtp and m.group(2) in _FULL_BLOCK:
                return _FULL_BLOCK[m.group(2)], self.n_layer + int(m.group(1))
            raise InputError(
                f"unknown multi-token-prediction tensor '{hf_name}' (the config has {self.n_mtp} MTP layer(s))",
                path=path, hint="pass mtp=False (CLI --no-mtp) to convert without the MTP layers",
            )
        rest = hf_name[len(self.prefix) :] if hf_name.startswith(self.prefix) else None
        if rest in _GLOBAL:
            return _GLOBAL[rest], None
        m = _BLOCK_NAME.match(rest or "")
        if m and int(m.group(1)) >= self.n_layer:
            raise InputError(f"tensor '{hf_name}' belongs to block {m.group(1)}, but the config has {self.n_layer} blocks", path=path)
        if m and (entry := self._block_table(int(m.group(1))).get(m.group(2))) is not None:
            return entry, int(m.group(1))
        where = f" in a {'linear' if self.recurrent[int(m.group(1))] else 'full'}-attention layer" if m else ""
        raise InputError(
            f"unknown tensor '{hf_name}'{where} for architecture '{self.hf_arch}': no GGUF name for it",
            path=path,
            hint="the checkpoint has tensors this converter does not know; is it a merged full model (not an adapter)?",
        )

    def rule(self, hf_name: str, shape: tuple[int, ...], *, path: Path | None = None) -> TensorRule | None:
        if hf_name.startswith(_VISION_PREFIXES) or hf_name.endswith(".rotary_emb.inv_freq"):
            return None  # the vision tower goes to an mmproj file; inv_freq is recomputed
        if self.tied and hf_name == _LM_HEAD:
            return None  # tied: llama.cpp reuses token_embd
        found = self._lookup(hf_name, path)
        if found is None:
            return None  # MTP left out
        (tensor, suffix, kind), bid = found
        base = gguf.TENSOR_NAMES[tensor]
        gguf_name = (base.format(bid=bid) if bid is not None else base) + suffix
        out_shape, transform = self._transforms.get(kind, tuple(shape), hf_name, path)
        keep_f32 = tensor in _F32_TENSORS or gguf_name.endswith("_norm.weight")
        return TensorRule(hf_name, gguf_name, out_shape, transform, keep_f32)

    def required(self) -> list[str]:
        out = [self.prefix + leaf for leaf in _GLOBAL]
        if not self.tied:
            out.append(_LM_HEAD)
        for bid in range(self.n_layer):
            out += [f"{self.prefix}layers.{bid}.{leaf}" for leaf in self._block_table(bid)]
        return out + (self._mtp_required(self.n_mtp) if self.n_mtp else [])

    # -- metadata -----------------------------------------------------------------------------

    def add_hparams(self, writer: gguf.GGUFWriter) -> None:
        super().add_hparams(writer)  # block_count includes the MTP layers, as llama.cpp's
        writer.add_rope_dimension_count(self.rope_dims)
        writer.add_rope_dimension_sections(self.rope_sections)
        writer.add_ssm_conv_kernel(self.conv_kernel)
        writer.add_ssm_state_size(self.dk)
        writer.add_ssm_group_count(self.nk)
        writer.add_ssm_time_step_rank(self.nv)
        writer.add_ssm_inner_size(self.dv * self.nv)
        writer.add_array(RECURRENT_LAYERS_KEY.format(arch=self.name), [*self.recurrent, *([False] * self.n_mtp)])
        writer.add_full_attention_interval(self.interval)
        if self.n_mtp:
            writer.add_nextn_predict_layers(self.n_mtp)


class _Transforms:
    """The tensor transforms, by kind: each returns (output shape, function or None)."""

    def __init__(self, nk: int, nv: int, dk: int, dv: int) -> None:
        self.nk, self.nv, self.dk, self.dv = nk, nv, dk, dv
        self.heads = value_head_order(nk, nv)
        self.identity = self.heads == list(range(nv))

    def _index(self, head_dim: int, offset: int = 0):
        """Row indices putting ``nv`` heads of ``head_dim`` rows, starting at ``offset``, in tiled order."""
        import torch

        heads = torch.tensor(self.heads, dtype=torch.long)
        rows = (heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)
        return torch.cat([torch.arange(offset), offset + rows])

    def _reorder(self, head_dim: int, dim: int = 0, offset: int = 0) -> Callable[[Any], Any]:
        def apply(t):
            if self.identity:
                return t
            return t.index_select(dim, self._index(head_dim, offset))

        return apply

    def get(self, kind: str | None, shape: tuple[int, ...], hf_name: str, path: Path | None) -> tuple[tuple[int, ...], Callable[[Any], Any] | None]:
        nk, nv, dk, dv = self.nk, self.nv, self.dk, self.dv
        expected: tuple[int, ...] | None = None
        if kind is None:
            return shape, None
        if kind == _PLUS_ONE:
            return shape, _plus_one
        if kind == _QKV:
            expected = (2 * nk * dk + nv * dv, shape[-1])
            fn = self._reorder(dv, 0, 2 * nk * dk)
        elif kind == _V_ROWS:
            expected = (nv * dv, shape[-1])
            fn = self._reorder(dv)
        elif kind == _HEAD_ROWS:
            expected = (nv, *shape[1:])
            fn = self._reorder(1)
        elif kind == _A:
            expected = (nv,)
            reorder = self._reorder(1)

            def fn(t):
                import torch

                return -torch.exp(reorder(t))
        elif kind == _CONV:
            expected = (2 * nk * dk + nv * dv, 1, shape[-1])
            reorder = self._reorder(dv, 0, 2 * nk * dk)

            def fn(t):
                return reorder(t.reshape(t.shape[0], t.shape[-1]))

            if tuple(shape) != expected:
                raise _bad_shape(hf_name, shape, expected, path)
            return (shape[0], shape[-1]), fn
        elif kind == _V_COLS:
            expected = (shape[0], nv * dv)
            fn = self._reorder(dv, 1)
        else:  # pragma: no cover - the tables use only the kinds above
            raise AssertionError(kind)
        if tuple(shape) != expected:
            raise _bad_shape(hf_name, shape, expected, path)
        return shape, fn


def _plus_one(t):
    return t + 1


def _bad_shape(hf_name: str, shape: tuple[int, ...], expected: tuple[int, ...], path: Path | None) -> InputError:
    return InputError(
        f"tensor '{hf_name}' has shape {list(shape)}, but the config's linear-attention sizes give {list(expected)}",
        path=path, hint="config.json and the shards do not belong together",
    )
