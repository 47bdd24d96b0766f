"""Tiny Qwen3.5 and Qwen3 checkpoints, written in the real checkpoints' layout, in about a second.

The training, merge and GGUF stages read checkpoints the way the Hub stores them: sharded
safetensors named ``model-0000i-of-0000N.safetensors`` with a ``model.safetensors.index.json``,
the real tensor names (``model.language_model.layers.*``, ``model.visual.*``, ``lm_head.weight``
and, for Qwen3.5, the multi-token-prediction head under ``mtp.*`` that transformers does not build),
``config.json``, ``generation_config.json`` and the tokenizer files. These builders write such a
folder for a model small enough to run on a CPU in milliseconds.

What makes the tiny Qwen3.5 worth testing against (each one a way a converter can go wrong):

- Gated DeltaNet (``linear_attention``) layers and gated full-attention layers mixed as in the real
  models (three linear, then one full: ``full_attention_interval`` 4);
- fewer linear key heads than linear value heads (2 and 4), as in every real Qwen3.5;
- partial rotary embeddings with interleaved M-RoPE sections;
- random norm weights: Qwen3.5's RMSNorm computes ``x * (1 + weight)`` (stored zero-centred), but
  the gated norm inside the linear attention computes ``x * weight``; with all-zero (or all-one)
  weights a converter that adds 1 in the wrong place would go unnoticed;
- random ``A_log`` and ``dt_bias``;
- weights drawn with a ``1/sqrt(fan_in)`` scale, so that activations stay of order one through the
  layers and a wrong tensor changes the logits visibly.

Every tensor comes from one ``torch.Generator`` seeded with ``seed``, drawn in a fixed order, so
the same arguments give the same bytes (with the same torch version).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apto_release.io import current_umask
from apto_release.testing.tokenizer import (
    ENDOFTEXT,
    IM_END,
    VISION_TOKENS,
    _check_fresh,
    _fresh_dir,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedConfig, PreTrainedTokenizerFast

__all__ = [
    "QWEN3_CONFIG",
    "QWEN35_TEXT_CONFIG",
    "QWEN35_VISION_CONFIG",
    "build_tiny_qwen3",
    "build_tiny_qwen35",
]

#: The tiny Qwen3.5 text model (``Qwen3_5TextConfig``); the vocabulary size and token ids come
#: from the tokenizer. Qwen3.5-27B's values for comparison in the comments.
QWEN35_TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 64,  # 5120
    "intermediate_size": 128,  # 17408
    "num_hidden_layers": 4,  # 64
    # transformers derives layer_types from full_attention_interval only when layer_types is
    # absent: layer i is full attention when (i + 1) % interval == 0. The real config.json carries
    # both, and converters read either, so both are written.
    "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"],
    "full_attention_interval": 4,
    # Gated full attention: q_proj yields queries and an output gate (2 * heads * head_dim rows).
    "num_attention_heads": 4,  # 24
    "num_key_value_heads": 2,  # 4
    "head_dim": 64,  # 256
    # Gated DeltaNet: fewer key heads than value heads, as in the real models (16 and 48).
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 16,  # 128
    "linear_value_head_dim": 16,  # 128
    "linear_conv_kernel_dim": 4,  # 4
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 4096,  # 262144
    # Rotary on head_dim * partial_rotary_factor = 16 dimensions, i.e. 8 frequencies; the M-RoPE
    # sections (temporal, height, width) must cover them: 2 * sum(mrope_section) == 16.
    # (The real model: 256 * 0.25 = 64 dimensions, sections [11, 11, 10].)
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 10_000_000.0,
        "partial_rotary_factor": 0.25,
        "mrope_section": [3, 3, 2],
        "mrope_interleaved": True,
    },
    "tie_word_embeddings": False,  # the 27B's are untied; untied keeps lm_head.weight in the files
}

#: The tiny vision tower (``Qwen3_5VisionConfig``): one block; ``out_hidden_size`` is set to the
#: text model's hidden size. ``num_position_embeddings`` must be a square (an 8 x 8 grid here).
QWEN35_VISION_CONFIG: dict[str, Any] = {
    "depth": 1,  # 27
    "hidden_size": 32,  # 1152
    "intermediate_size": 64,  # 4304
    "num_heads": 2,  # 16
    "hidden_act": "gelu_pytorch_tanh",
    "in_channels": 3,
    "patch_size": 16,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "num_position_embeddings": 64,  # 2304
}

#: The sampling settings in the tiny Qwen3.5's ``generation_config.json``: Qwen3.5's model card's
#: recommended thinking-mode settings (temperature 1.0, top_p 0.95, top_k 20). The real file's
#: values could not be read from here; the GGUF files and Ollama's ``params`` carry whatever it has.
QWEN35_SAMPLING: dict[str, Any] = {"do_sample": True, "temperature": 1.0, "top_k": 20, "top_p": 0.95}

#: The image preprocessing of a Qwen3.5 with its vision tower (``preprocessor_config.json``, as
#: Qwen3-VL's: the processor normalises to [-1, 1] with mean and std 0.5; llama.cpp's converter
#: reads ``image_mean`` and ``image_std`` from it for the mmproj). The patch sizes are the vision
#: config's.
QWEN35_PREPROCESSOR: dict[str, Any] = {
    "image_processor_type": "Qwen2VLImageProcessorFast",
    "processor_class": "Qwen3VLProcessor",
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "patch_size": QWEN35_VISION_CONFIG["patch_size"],
    "temporal_patch_size": QWEN35_VISION_CONFIG["temporal_patch_size"],
    "merge_size": QWEN35_VISION_CONFIG["spatial_merge_size"],
    "size": {"longest_edge": 16777216, "shortest_edge": 65536},
}

#: The tiny plain Qwen3 (``Qwen3Config``).
QWEN3_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 4096,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
    "tie_word_embeddings": False,
}

_DTYPES = ("float32", "bfloat16")

# How a parameter is drawn, by the class of the module that owns it (see _draw).
_CENTRED_NORMS = frozenset({"Qwen3_5RMSNorm"})  # x * (1 + w): w around 0
_SCALE_NORMS = frozenset({"Qwen3_5RMSNormGated", "Qwen3RMSNorm", "LayerNorm"})  # x * w: w around 1


def build_tiny_qwen35(
    out_dir: str | Path,
    *,
    tokenizer: PreTrainedTokenizerFast | None = None,
    seed: int = 0,
    num_shards: int = 3,
    dtype: str = "float32",
    vision: bool = True,
    mtp: bool = True,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write a tiny random Qwen3.5 checkpoint folder in the real checkpoints' layout.

    With ``vision`` (the default) the folder holds a ``Qwen3_5ForConditionalGeneration`` (config
    ``Qwen3_5Config`` with ``text_config`` and ``vision_config``; tensors
    ``model.language_model.*``, ``model.visual.*``, ``lm_head.weight``) and its image
    preprocessing (``preprocessor_config.json``), as the Hub's Qwen3.5 checkpoints do. Without, a text-only ``Qwen3_5ForCausalLM`` (config ``Qwen3_5TextConfig``;
    tensors ``model.*``, ``lm_head.weight``). With ``mtp`` the shards also carry a
    multi-token-prediction head as the real checkpoints do (``mtp.fc.weight``,
    ``mtp.layers.0.*`` shaped like a full-attention decoder layer, ``mtp.norm.weight``,
    ``mtp.pre_fc_norm_embedding.weight``, ``mtp.pre_fc_norm_hidden.weight``), all in the last
    shard; transformers does not build these and skips them on load.

    Args:
        out_dir: the folder to create (it must not exist, or be empty).
        tokenizer: the tokenizer to save with the model and take the vocabulary from; by default
            ``build_japanese_tokenizer(seed=seed)``. It needs ``<|endoftext|>`` and ``<|im_end|>``.
        seed: seeds every weight (and the default tokenizer).
        num_shards: how many safetensors files; 1 writes a single ``model.safetensors`` and no
            index, as ``save_pretrained`` does for a small model.
        dtype: the stored dtype, ``"float32"`` or ``"bfloat16"``.
        vision: include the (one-block) vision tower.
        mtp: include the ``mtp.*`` tensors.
        config: overrides of ``QWEN35_TEXT_CONFIG`` (e.g. ``{"hidden_size": 256,
            "intermediate_size": 512}`` for rows that split into llama.cpp's 256-value K-quant blocks).

    Returns:
        ``Path(out_dir)``.

    Example:
        >>> from transformers import AutoModelForImageTextToText
        >>> path = build_tiny_qwen35("tiny-qwen35")
        >>> model = AutoModelForImageTextToText.from_pretrained(path)
    """
    import torch
    from transformers import (
        Qwen3_5Config,
        Qwen3_5ForCausalLM,
        Qwen3_5ForConditionalGeneration,
        Qwen3_5TextConfig,
    )

    _check_dtype(dtype)
    _check_fresh(out_dir)
    tokenizer = _tokenizer_or_default(tokenizer, seed)
    ids = _token_ids(tokenizer)

    text = dict(QWEN35_TEXT_CONFIG, **(config or {}), vocab_size=len(tokenizer), eos_token_id=ids["eos"], pad_token_id=ids["pad"])
    if mtp:
        text["mtp_num_hidden_layers"] = 1  # the real config.json says so; transformers ignores it
    if vision:
        vision_ids = {
            key: ids[token]
            for key, token in zip(
                ("vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id"),
                VISION_TOKENS,
                strict=True,
            )
            if token in ids
        }
        vision_config = dict(QWEN35_VISION_CONFIG, out_hidden_size=text["hidden_size"])
        config = Qwen3_5Config(
            text_config=text, vision_config=vision_config, tie_word_embeddings=False, **vision_ids
        )
        model_class = Qwen3_5ForConditionalGeneration
        text_prefix = "model.language_model."
    else:
        config = Qwen3_5TextConfig(**text)
        model_class = Qwen3_5ForCausalLM
        text_prefix = "model."

    generator = torch.Generator().manual_seed(seed)
    tensors = _random_state_dict(model_class, config, generator)
    _condition_linear_attention(tensors, config.get_text_config())
    if mtp:
        tensors.update(_mtp_tensors(tensors, text_prefix, config.get_text_config(), generator))
    return _write_checkpoint(
        out_dir, config, model_class, tensors, tokenizer, ids, num_shards=num_shards, dtype=dtype,
        last_shard_prefix="mtp." if mtp else None, sampling=QWEN35_SAMPLING,
        extra_json={"preprocessor_config.json": QWEN35_PREPROCESSOR} if vision else None,
    )


def build_tiny_qwen3(
    out_dir: str | Path,
    *,
    tokenizer: PreTrainedTokenizerFast | None = None,
    seed: int = 0,
    num_shards: int = 2,
    dtype: str = "float32",
    config: dict[str, Any] | None = None,
) -> Path:
    """Write a tiny random ``Qwen3ForCausalLM`` checkpoint folder (2 layers, hidden size 64).

    The same conventions as ``build_tiny_qwen35``: sharded safetensors with the index, config,
    generation config, tokenizer; random norm weights (Qwen3's RMSNorm computes ``x * weight``,
    so they are drawn around 1); deterministic bytes. ``config`` overrides entries of
    ``QWEN3_CONFIG`` (e.g. ``{"hidden_size": 256, "intermediate_size": 512}`` for rows that split
    into the 256-value super-blocks of llama.cpp's K-quants).

    Returns:
        ``Path(out_dir)``.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    _check_dtype(dtype)
    _check_fresh(out_dir)
    tokenizer = _tokenizer_or_default(tokenizer, seed)
    ids = _token_ids(tokenizer)
    config = Qwen3Config(
        **{**QWEN3_CONFIG, **(config or {})}, vocab_size=len(tokenizer), eos_token_id=ids["eos"], pad_token_id=ids["pad"]
    )
    generator = torch.Generator().manual_seed(seed)
    tensors = _random_state_dict(Qwen3ForCausalLM, config, generator)
    return _write_checkpoint(
        out_dir, config, Qwen3ForCausalLM, tensors, tokenizer, ids, num_shards=num_shards, dtype=dtype
    )


# ---------------------------------------------------------------------------------------------
# Weights


def _random_state_dict(model_class: type, config: PreTrainedConfig, generator: torch.Generator) -> dict:
    """Every persistent tensor of ``model_class(config)``, in state-dict order, drawn at random.

    The model is built on the meta device only for its names, shapes and module classes, so its
    own initialisation costs nothing and does not touch the global random state.
    """
    import torch

    with torch.device("meta"):
        model = model_class(config)
    owners = {name: type(module).__name__ for name, module in model.named_modules()}
    tensors = {}
    for name, meta in model.state_dict().items():
        module_name, _, leaf = name.rpartition(".")
        tensors[name] = _draw(owners[module_name], leaf, tuple(meta.shape), generator)
    return tensors


def _draw(owner: str, leaf: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """One float32 tensor, drawn as suits the parameter ``leaf`` of a module of class ``owner``."""
    import torch

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.empty(shape).uniform_(low, high, generator=generator)

    def normal(std: float) -> torch.Tensor:
        return torch.empty(shape).normal_(0.0, std, generator=generator)

    if owner in _CENTRED_NORMS:
        return uniform(-0.5, 0.5)
    if owner in _SCALE_NORMS:
        return uniform(0.5, 1.5) if leaf == "weight" else normal(0.1)
    if leaf == "A_log":
        # transformers initialises log(uniform(0, 16)); decays of up to exp(-16) per token make the
        # tiny model's linear attention forget at once and its outputs ill-conditioned (see
        # _condition_linear_attention), so the tiny model keeps A in (0.01, 1).
        return uniform(0.01, 1.0).log_()
    if leaf == "dt_bias":
        return uniform(0.0, 2.0)
    if leaf == "bias":
        return normal(0.1)
    if owner == "Embedding":
        return normal(1.0)
    # Linear, Conv1d (depthwise, (channels, 1, kernel)), Conv3d: scaled by the fan-in.
    return normal(1.0 / math.sqrt(math.prod(shape[1:])))


def _condition_linear_attention(tensors: dict, text_config: PreTrainedConfig, alignment: float = 0.1) -> None:
    """Align each Gated DeltaNet layer's query projection with its key projection, in place.

    With independent random projections a token's query and key are nearly orthogonal, so the
    linear attention's output (a sum of values weighted by query-key products near zero) has a tiny
    norm and a random sign, and the gated RMSNorm after it blows rounding errors up: llama.cpp's
    float16 or bfloat16 activations then move the logits far more than in a trained model, where
    queries and keys are correlated. Keys become ``queries + alignment * their own draw``, in the
    projection and in the convolution's kernels.
    """
    query_rows = text_config.linear_num_key_heads * text_config.linear_key_head_dim
    for name, weight in tensors.items():
        # The projection, and the causal convolution after it (its channels: queries, keys, values).
        if name.endswith(("linear_attn.in_proj_qkv.weight", "linear_attn.conv1d.weight")):
            keys = weight[query_rows : 2 * query_rows]
            keys.mul_(alignment).add_(weight[:query_rows])


def _mtp_tensors(
    tensors: dict, text_prefix: str, text_config: PreTrainedConfig, generator: torch.Generator
) -> dict:
    """The multi-token-prediction head of the real Qwen3.5 checkpoints, at random.

    The layout follows vLLM's and SGLang's Qwen3.5 MTP loaders: ``fc`` maps the concatenated
    (normed embedding, normed hidden state) back to the hidden size; one decoder layer shaped like
    a full-attention layer of the main model; three zero-centred RMSNorms.
    """
    hidden = text_config.hidden_size
    full = text_config.layer_types.index("full_attention")
    layer_prefix = f"{text_prefix}layers.{full}."
    out = {"mtp.fc.weight": _draw("Linear", "weight", (hidden, 2 * hidden), generator)}
    for name, tensor in tensors.items():
        if name.startswith(layer_prefix):
            leaf_name = name[len(layer_prefix) :]
            owner = "Qwen3_5RMSNorm" if "norm" in leaf_name else "Linear"
            out[f"mtp.layers.0.{leaf_name}"] = _draw(owner, "weight", tuple(tensor.shape), generator)
    for norm in ("norm", "pre_fc_norm_embedding", "pre_fc_norm_hidden"):
        out[f"mtp.{norm}.weight"] = _draw("Qwen3_5RMSNorm", "weight", (hidden,), generator)
    return out


# ---------------------------------------------------------------------------------------------
# Files


def _write_checkpoint(
    out_dir: str | Path,
    config: PreTrainedConfig,
    model_class: type,
    tensors: dict,
    tokenizer: PreTrainedTokenizerFast,
    ids: dict[str, int],
    *,
    num_shards: int,
    dtype: str,
    last_shard_prefix: str | None = None,
    sampling: dict[str, Any] | None = None,
    extra_json: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write shards, index, config, generation config (with ``sampling``), tokenizer and the
    ``extra_json`` files (name -> content) into a fresh ``out_dir``."""
    import json

    import torch
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    from apto_release.merge.shards import INDEX_NAME, shard_file_name, write_index

    torch_dtype = getattr(torch, dtype)
    tensors = {name: tensor.to(torch_dtype).contiguous() for name, tensor in tensors.items()}
    names = list(tensors)
    chunks = _split_names(names, [tensors[n].nbytes for n in names], num_shards, last_shard_prefix)

    config.architectures = [model_class.__name__]
    config.dtype = dtype
    generation_config = GenerationConfig(eos_token_id=[ids["eos"], ids["pad"]], pad_token_id=ids["pad"], **(sampling or {}))

    with _fresh_dir(out_dir) as tmp:
        weight_map = {}
        for i, chunk in enumerate(chunks, start=1):
            filename = shard_file_name(i, num_shards)
            save_file({n: tensors[n] for n in chunk}, tmp / filename, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(chunk, filename))
        if num_shards > 1:  # like save_pretrained: one file needs no index
            write_index(
                tmp / INDEX_NAME,
                dict(sorted(weight_map.items())),
                total_size=sum(t.nbytes for t in tensors.values()),
                metadata={"total_parameters": sum(t.numel() for t in tensors.values())},
            )
        for shard in tmp.glob("*.safetensors"):  # safetensors creates them 0600, unlike open()
            shard.chmod(0o666 & ~current_umask())
        config.save_pretrained(tmp)
        generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name, content in (extra_json or {}).items():
            (tmp / name).write_text(json.dumps(content, indent=2) + "\n", "utf-8")
    return Path(out_dir)


def _split_names(
    names: list[str], sizes: list[int], num_shards: int, last_shard_prefix: str | None
) -> list[list[str]]:
    """Cut ``names`` (in order) into ``num_shards`` non-empty runs of about equal bytes.

    Names starting with ``last_shard_prefix`` must come last and all land in the last run.
    """
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive integer, not {num_shards!r}")
    # The last run must start at or before the first name that has to be in it.
    latest_last_start = next(
        (i for i, n in enumerate(names) if last_shard_prefix and n.startswith(last_shard_prefix)), len(names) - 1
    )
    if num_shards > latest_last_start + 1:
        raise ValueError(f"num_shards must be at most {latest_last_start + 1} for this model, not {num_shards}")
    total = sum(sizes)
    cumulative = [0]
    for size in sizes:
        cumulative.append(cumulative[-1] + size)
    starts = [0]
    for k in range(1, num_shards):
        # The first name whose bytes start at or past k/num_shards of the total, kept inside the
        # range that leaves every run non-empty.
        start = next((i for i in range(len(names)) if cumulative[i] >= total * k / num_shards), len(names))
        low = starts[-1] + 1
        high = latest_last_start - (num_shards - 1 - k)
        starts.append(min(max(start, low), high))
    bounds = [*starts, len(names)]
    return [names[bounds[k] : bounds[k + 1]] for k in range(num_shards)]


def _check_dtype(dtype: str) -> None:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}")


def _tokenizer_or_default(tokenizer, seed: int):
    if tokenizer is not None:
        return tokenizer
    from apto_release.testing.tokenizer import build_japanese_tokenizer

    return build_japanese_tokenizer(seed=seed)


def _token_ids(tokenizer) -> dict[str, int]:
    """The ids of the tokens the configs name: ``eos``, ``pad`` and any vision tokens present."""
    vocab = tokenizer.get_vocab()
    missing = [token for token in (ENDOFTEXT, IM_END) if token not in vocab]
    if missing:
        raise ValueError(f"the tokenizer lacks {', '.join(missing)}; use build_japanese_tokenizer()")
    ids = {"eos": vocab[IM_END], "pad": vocab[ENDOFTEXT]}
    ids.update({token: vocab[token] for token in VISION_TOKENS if token in vocab})
    return ids
