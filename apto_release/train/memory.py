"""Per-GPU memory of a training run, estimated from the model's shape and the preset (``train --dry-run``).

One line per cost (base weights, what a sharded run gathers, LoRA states, activations with
checkpointing, logits and loss, a fixed allowance), for one GPU / DDP, FSDP2 full shard and
ZeRO-3. The shape comes from the base folder's ``config.json`` or, for the shipped presets, from
the real Qwen3.5 configs below. How each line is derived: docs/training-memory.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apto_release.errors import UsageError

GIB = 1 << 30

#: Qwen3.5's text decoder, as ``Qwen3_5TextConfig`` spells it. Where each value comes from (none
#: read from Qwen's own config.json, which is not reachable here; see docs/training-memory.md):
#: - 27B: the Hub model card (huggingface.co/Qwen/Qwen3.5-27B, README commit 3b29628: hidden 5120,
#:   64 layers laid out 16 x (3 x Gated DeltaNet + 1 x Gated Attention), vocabulary 248,320);
#:   THUDM/slime scripts/models/qwen3.5-27B.sh (24 query heads, 4 KV groups, head dim 256, FFN
#:   17408, untied embeddings); the linear-attention heads (16 QK, 48 V, dim 128, conv 4) from a
#:   transcription of the config.json in public code and docs.modular.com's Qwen3_5Config defaults.
#: - 9B: hidden 4096, 32 layers, FFN 12288, 16 query / 4 KV heads of 256, linear heads 16 QK / 32 V
#:   of 128, untied: config.json copies of Qwen/Qwen3.5-9B (huggingface.co/khtsly/Mini-Coder, a
#:   test fixture "the real Qwen3.5-9B config" in public code), fitmygpu.com's and aprender's
#:   pages (32 layers, 4096, 16/4 heads); 8.95B parameters, as the GGUF reviews report.
#: - 9B-Base: assumed to be the 9B's shape (same family and size; not confirmed).
_QWEN35_9B = {
    "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 32, "vocab_size": 248320,
    "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 256, "full_attention_interval": 4,
    "linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_key_head_dim": 128,
    "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4, "tie_word_embeddings": False,
}
KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    "Qwen/Qwen3.5-27B": {
        "hidden_size": 5120, "intermediate_size": 17408, "num_hidden_layers": 64, "vocab_size": 248320,
        "num_attention_heads": 24, "num_key_value_heads": 4, "head_dim": 256, "full_attention_interval": 4,
        "linear_num_key_heads": 16, "linear_num_value_heads": 48, "linear_key_head_dim": 128,
        "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4, "tie_word_embeddings": False,
    },
    "Qwen/Qwen3.5-9B": _QWEN35_9B,
    "Qwen/Qwen3.5-9B-Base": _QWEN35_9B,
}

#: The hardware each shipped preset's comments size it for: (GPUs, GiB each).
#: qwen3.5-27b: "sharded by FSDP ... 2 sequences of 4,096 tokens per GPU", "on the 4 GPUs of one
#: node", "an 80 GB GPU"; the 9B presets: "2 sequences of 4,096 tokens ... of an 80 GB GPU".
DOCUMENTED_HARDWARE: dict[str, tuple[int, int]] = {
    "qwen3.5-27b": (4, 80),
    "qwen3.5-9b": (1, 80),
    "qwen3.5-9b-base": (1, 80),
}

STRATEGIES: dict[str, str] = {"ddp": "one GPU / DDP", "fsdp2": "FSDP2 full shard", "zero3": "ZeRO-3"}

#: Bytes per (token x vocabulary entry) at the loss's peak. transformers' Qwen3.5 computes the
#: logits of every position at once (no chunking) and ``ForCausalLMLoss`` upcasts them to fp32:
#: the forward holds the bf16 logits (2), their fp32 copy (4) and the fp32 log-softmax kept for
#: the backward (4); the backward the saved log-softmax (4), the incoming fp32 gradient (4) and
#: the gradient it computes (4): 12 bytes, the larger of the two.
LOGIT_BYTES = 12
#: CUDA context, cuBLAS/NCCL workspaces and the caching allocator's fragmentation: a rule of
#: thumb, not a measurement.
ALLOWANCE = 4 * GIB
#: Bytes per fp32 LoRA parameter: the weight (4), its gradient (4), AdamW's two moments (8).
LORA_STATE_BYTES = 16


@dataclass(frozen=True)
class ModelShape:
    """The widths of a Qwen3.5 text decoder that decide its memory."""

    name: str
    source: str  # where the values came from, for the dry run
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    layer_types: tuple[str, ...]
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    linear_num_key_heads: int
    linear_num_value_heads: int
    linear_key_head_dim: int
    linear_value_head_dim: int
    linear_conv_kernel_dim: int
    tie_word_embeddings: bool = False
    attn_output_gate: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, name: str, source: str) -> ModelShape:
        """A shape from a ``config.json`` (its ``text_config`` when it has one).

        Raises:
            ValueError: not a Qwen3.5 config, or a width is missing.
        """
        tie = config.get("tie_word_embeddings")
        text = config.get("text_config") or config
        model_type = text.get("model_type", "qwen3_5_text")
        if model_type not in ("qwen3_5", "qwen3_5_text"):
            raise ValueError(f"the estimate covers Qwen3.5 (model_type qwen3_5_text), not {model_type!r}")
        layers = text.get("num_hidden_layers")
        interval = text.get("full_attention_interval", 4)
        types = text.get("layer_types") or (
            [("full_attention" if (i + 1) % interval == 0 else "linear_attention") for i in range(layers)] if layers else None
        )
        try:
            return cls(
                name=name, source=source, layer_types=tuple(types),
                hidden_size=int(text["hidden_size"]), intermediate_size=int(text["intermediate_size"]),
                vocab_size=int(text["vocab_size"]), num_attention_heads=int(text["num_attention_heads"]),
                num_key_value_heads=int(text["num_key_value_heads"]), head_dim=int(text["head_dim"]),
                linear_num_key_heads=int(text["linear_num_key_heads"]), linear_num_value_heads=int(text["linear_num_value_heads"]),
                linear_key_head_dim=int(text["linear_key_head_dim"]), linear_value_head_dim=int(text["linear_value_head_dim"]),
                linear_conv_kernel_dim=int(text.get("linear_conv_kernel_dim", 4)),
                tie_word_embeddings=bool(text.get("tie_word_embeddings", tie if tie is not None else False)),
                attn_output_gate=bool(text.get("attn_output_gate", True)),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"config.json lacks {exc}") from None

    # -- sizes ------------------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        return len(self.layer_types)

    @property
    def key_dim(self) -> int:
        return self.linear_num_key_heads * self.linear_key_head_dim

    @property
    def value_dim(self) -> int:
        return self.linear_num_value_heads * self.linear_value_head_dim

    def projections(self, kind: str) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one decoder layer of ``kind``, by name."""
        h, f = self.hidden_size, self.intermediate_size
        mlp = {"gate_proj": (h, f), "up_proj": (h, f), "down_proj": (f, h)}
        if kind == "full_attention":
            q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
            # q_proj yields the queries and, with attn_output_gate, the output gate.
            return {"q_proj": (h, q * (2 if self.attn_output_gate else 1)), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h)} | mlp
        return {
            "in_proj_qkv": (h, 2 * self.key_dim + self.value_dim), "in_proj_z": (h, self.value_dim),
            "in_proj_b": (h, self.linear_num_value_heads), "in_proj_a": (h, self.linear_num_value_heads),
            "out_proj": (self.value_dim, h),
        } | mlp

    def layer_parameters(self, kind: str) -> int:
        """Parameters of one decoder layer of ``kind`` (linear layers, norms, conv and decay)."""
        n = sum(i * o for i, o in self.projections(kind).values()) + 2 * self.hidden_size  # two RMSNorms
        if kind == "full_attention":
            return n + 2 * self.head_dim  # q_norm, k_norm
        conv = (2 * self.key_dim + self.value_dim) * self.linear_conv_kernel_dim
        return n + conv + 2 * self.linear_num_value_heads + self.linear_value_head_dim  # dt_bias, A_log; gated norm

    def parameters(self) -> int:
        """Parameters of the text decoder that ``AutoModelForCausalLM`` loads (no vision, no MTP)."""
        embed = self.vocab_size * self.hidden_size
        layers = sum(self.layer_parameters(kind) for kind in self.layer_types)
        return embed * (1 if self.tie_word_embeddings else 2) + layers + self.hidden_size

    def lora_parameters(self, r: int, targets: Sequence[str]) -> int:
        """LoRA parameters (A and B: ``r * (in + out)`` each adapted linear layer) over all layers."""
        chosen = set(targets)
        return sum(r * (i + o) for kind in self.layer_types for name, (i, o) in self.projections(kind).items() if name in chosen)

    def layer_activation_bytes(self, kind: str, *, dtype_bytes: int = 2, lora_r: int = 0,
                               lora_targets: Sequence[str] = (), lora_dropout: float = 0.0) -> int:
        """Bytes per token that autograd keeps for one decoder layer of ``kind`` (its full activations).

        Read from transformers' and PEFT's code and checked against what autograd saves on a CPU
        (tests/train/test_memory.py). Base layer (activations in ``dtype_bytes``): the two
        RMSNorms keep their fp32 inputs (2 x hidden x 4 B); the SwiGLU MLP keeps gate, up and
        their activation (3 x intermediate). Gated attention: the fp32 inputs of q_norm and
        k_norm, the attention's q, k, v and output, the output gate and the gated product.
        Gated DeltaNet with fla: the convolution's input and its activation's input (2 x conv
        width), the q, k, v that fla's chunk kernel keeps (conv width) with its 64-wide WY matrix
        per value head, and the gated norm's three fp32 copies and output (value width each); the
        PyTorch fallback keeps its per-chunk matrices on top of this (not counted). LoRA: every
        adapted projection keeps an fp32 copy of its input (PEFT casts it to the adapter's dtype),
        plus its rank-wide intermediate, plus a 1-byte dropout mask per input value when
        ``lora_dropout`` > 0 (CUDA's fused dropout; the CPU keeps an fp32 mask instead).
        """
        h, f, a = self.hidden_size, self.intermediate_size, dtype_bytes
        if kind == "full_attention":
            q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
            base = 4 * (2 * h + q + kv) + a * (4 * q + 2 * kv + 3 * f)
        else:
            conv, v = 2 * self.key_dim + self.value_dim, self.value_dim
            base = 4 * (2 * h + 3 * v) + a * (3 * conv + v + 64 * self.linear_num_value_heads + 3 * f)
        chosen = set(lora_targets) if lora_r else set()
        per_input = 4 + (1 if lora_dropout > 0 else 0)
        lora = sum(i * per_input + 4 * lora_r for name, (i, _) in self.projections(kind).items() if name in chosen)
        return base + lora


def known_shape(model_id: str) -> ModelShape | None:
    """The built-in shape of a real Qwen3.5 model id (``Qwen/Qwen3.5-9B``), or None."""
    config = KNOWN_SHAPES.get(model_id)
    if config is None:
        return None
    return ModelShape.from_config(config, name=model_id, source=f"the real {model_id} config (built in; docs/training-memory.md)")


def resolve_shape(base: str | Path, base_model: str) -> tuple[ModelShape | None, str]:
    """The shape for a run of ``base`` (a folder or Hub id) whose preset names ``base_model``.

    Looks, in order, at ``base/config.json``, the local Hub cache's ``config.json`` for ``base``
    (nothing is downloaded), then the built-in shapes of ``base`` and ``base_model``.

    Returns:
        (shape, "") or (None, why there is none).
    """
    candidates: list[tuple[Path, str]] = []
    folder = Path(str(base))
    if (folder / "config.json").is_file():
        candidates.append((folder / "config.json", f"{folder / 'config.json'}"))
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", str(base)) and not folder.exists():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(base), "config.json")
        except Exception:  # an odd id or cache: fall back to the built-in shapes
            cached = None
        if isinstance(cached, str):
            candidates.append((Path(cached), f"{base}'s config.json in the Hub cache"))
    problems = []
    for path, source in candidates:
        try:
            return ModelShape.from_config(json.loads(path.read_text("utf-8")), name=str(base), source=source), ""
        except (OSError, ValueError) as exc:
            problems.append(f"{source}: {exc}")
    for model_id in (str(base), base_model):
        shape = known_shape(model_id)
        if shape is not None:
            return shape, ""
    why = "; ".join(problems) or f"{base} has no config.json"
    return None, f"{why}, and neither it nor {base_model!r} is a known Qwen3.5 shape ({', '.join(KNOWN_SHAPES)})"


# -- the estimate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryLine:
    """One cost of the estimate: its label, bytes per GPU and how they were derived."""

    key: str
    label: str
    bytes: int
    how: str


@dataclass(frozen=True)
class MemoryEstimate:
    """The per-GPU memory of one strategy on ``gpus`` GPUs."""

    strategy: str
    gpus: int
    lines: tuple[MemoryLine, ...]

    @property
    def total(self) -> int:
        return sum(line.bytes for line in self.lines)

    def line(self, key: str) -> MemoryLine:
        return next(line for line in self.lines if line.key == key)


def estimate_memory(shape: ModelShape, config, *, gpus: int = 1, strategy: str = "ddp") -> MemoryEstimate:
    """The per-GPU memory of training ``config`` (a ``TrainConfig``) on ``shape`` over ``gpus`` GPUs.

    Every micro-batch is taken at its worst: ``train.per_device_batch_size`` sequences of
    ``data.max_length`` tokens (batches pad to their longest record, so most are smaller).

    Raises:
        ValueError: an unknown strategy or fewer than one GPU.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    if gpus < 1:
        raise ValueError("gpus must be at least 1")
    t = config.train
    wbytes = 2 if t.precision == "bf16" else 4
    wname = "bf16" if wbytes == 2 else "fp32"
    batch, seq = t.per_device_batch_size, config.data.max_length
    tokens = batch * seq
    sharded = strategy != "ddp"
    shard = gpus if sharded else 1
    params = shape.parameters()
    lines = [MemoryLine(
        "weights", f"base weights ({wname})", _ceil(params * wbytes, shard),
        f"{params:,} parameters x {wbytes} B" + (f" / {gpus} GPUs" if sharded and gpus > 1 else ""),
    )]
    if sharded:
        layer = max(shape.layer_parameters(kind) for kind in set(shape.layer_types))
        embed = shape.vocab_size * shape.hidden_size
        if strategy == "fsdp2":
            # The root unit (embeddings, lm_head, final norm) stays gathered from the forward into
            # the backward; the decoder layer computing and the one prefetched are gathered too.
            root = embed * (1 if shape.tie_word_embeddings else 2) + shape.hidden_size
            gathered, how = root + 2 * layer, "the root unit (embeddings, lm_head) + 2 decoder layers (computing, prefetched)"
        else:
            # ZeRO-3 gathers each module as it runs and prefetches the next: the largest module
            # (the embedding or lm_head) + 2 decoder layers; its stage3_max_live_parameters may keep more.
            gathered, how = embed + 2 * layer, "the largest module (embedding or lm_head) + 2 decoder layers"
        if gpus > 1:
            lines.append(MemoryLine("gathered", "gathered for compute", gathered * wbytes, f"{how}: {gathered:,} x {wbytes} B"))
        else:
            lines.append(MemoryLine("gathered", "gathered for compute", 0, "nothing: one GPU holds every weight"))
    lora = shape.lora_parameters(config.lora.r, config.lora.target_modules)
    lines.append(MemoryLine(
        "lora", "LoRA weights, grads, AdamW (fp32)", _ceil(lora * LORA_STATE_BYTES, shard),
        f"{lora:,} LoRA parameters (r = {config.lora.r}) x {LORA_STATE_BYTES} B (weight 4, gradient 4, AdamW 8)"
        + (f" / {gpus} GPUs" if sharded and gpus > 1 else ""),
    ))
    lora_set = config.lora
    per_layer = {
        kind: shape.layer_activation_bytes(kind, dtype_bytes=wbytes, lora_r=lora_set.r, lora_targets=lora_set.target_modules,
                                           lora_dropout=lora_set.dropout)
        for kind in set(shape.layer_types)
    }
    if t.gradient_checkpointing:
        lines.append(MemoryLine(
            "kept", "activations kept (checkpointing)", shape.num_layers * tokens * shape.hidden_size * wbytes,
            f"each layer's input: {shape.num_layers} layers x {batch} x {seq:,} tokens x {shape.hidden_size} x {wbytes} B",
        ))
        worst = max(per_layer.values())
        lines.append(MemoryLine(
            "recomputed", "one layer recomputed", tokens * worst,
            f"one layer's full activations in the backward: {batch} x {seq:,} tokens x {worst:,} B (the larger layer kind)",
        ))
    else:
        every = sum(per_layer[kind] for kind in shape.layer_types)
        lines.append(MemoryLine(
            "kept", "activations kept (no checkpointing)", tokens * every,
            f"every layer's full activations: {batch} x {seq:,} tokens x {every:,} B over {shape.num_layers} layers",
        ))
        lines.append(MemoryLine("recomputed", "one layer recomputed", 0, "nothing: no checkpointing"))
    lines.append(MemoryLine(
        "logits", "logits and loss (not chunked)", tokens * shape.vocab_size * LOGIT_BYTES,
        f"{batch} x {seq:,} tokens x {shape.vocab_size:,} vocabulary x {LOGIT_BYTES} B (fp32 log-softmax and its gradients)",
    ))
    lines.append(MemoryLine("allowance", "CUDA context, fragmentation", ALLOWANCE, "a fixed 4 GiB"))
    return MemoryEstimate(strategy=strategy, gpus=gpus, lines=tuple(lines))


def _ceil(n: int, d: int) -> int:
    return -(-n // d)


def preset_strategy(config) -> str:
    """The strategy a preset is written for: FSDP2 when it shards, else one GPU / DDP."""
    return "fsdp2" if config.train.fsdp else "ddp"


def parse_gpu_memory(text: str) -> int:
    """``80G``, ``80GB``, ``80GiB``, ``141g``, ``81920M`` or ``80`` (GiB) as bytes; G and M are binary.

    Raises:
        UsageError: not a size.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:([GgMmTt])(?:i?[Bb])?)?\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--gpu-memory {text!r} is not a size", hint="for example --gpu-memory 80G (GiB)")
    scale = {"t": 1 << 40, "g": GIB, "m": 1 << 20}[(m.group(2) or "g").lower()]
    return int(float(m.group(1)) * scale)


def gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def render_estimate(shape: ModelShape, config, *, gpus: int, gpu_memory: int | None, hardware_note: str = "") -> tuple[str, bool]:
    """The dry run's memory table for all strategies, the derivations and the verdict.

    Returns:
        (text, fits): ``fits`` is False when the preset's own strategy needs more than ``gpu_memory``.
    """
    chosen = preset_strategy(config)
    estimates = {s: estimate_memory(shape, config, gpus=gpus, strategy=s) for s in STRATEGIES}
    t = config.train
    where = f"{gpus} GPU{'s' if gpus > 1 else ''}" + (f" of {gib(gpu_memory)}" if gpu_memory else "")
    lines = [
        f"Memory per GPU (estimate): {where}{hardware_note}; micro-batch {t.per_device_batch_size} x "
        f"{config.data.max_length:,} tokens; shape {shape.name}, from {shape.source}",
    ]
    labels = {line.key: line.label for e in (estimates["fsdp2"], estimates[chosen]) for line in e.lines}
    width = max(len(label) for label in labels.values())
    heads = [STRATEGIES[s] + ("*" if s == chosen else "") for s in STRATEGIES]
    lines.append(f"  {'':<{width}}" + "".join(f"  {h:>17}" for h in heads))
    for key, label in labels.items():
        cells = []
        for e in estimates.values():
            found = [line for line in e.lines if line.key == key]
            cells.append(gib(found[0].bytes) if found else "-")
        lines.append(f"  {label:<{width}}" + "".join(f"  {c:>17}" for c in cells))
    lines.append(f"  {'total':<{width}}" + "".join(f"  {gib(e.total):>17}" for e in estimates.values()))
    lines.append(f"  * the preset's strategy (train.fsdp = {'true' if t.fsdp else 'false'}). How each line is derived:")
    for line in estimates[chosen].lines:
        lines.append(f"    {line.label}: {line.how}")
    other = [s for s in STRATEGIES if s != chosen and "gathered" in {line.key for line in estimates[s].lines}]
    for s in other[-1:] if gpus > 1 else []:
        lines.append(f"    gathered for compute ({STRATEGIES[s]}): {estimates[s].line('gathered').how}")
    total = estimates[chosen].total
    fits = gpu_memory is None or total <= gpu_memory
    if gpu_memory is None:
        lines.append("  (no GPU memory given: --gpu-memory 80G checks the fit)")
    elif fits:
        lines.append(f"  Fits: {gib(total)} of {gib(gpu_memory)} per GPU ({STRATEGIES[chosen]}).")
    else:
        better = [STRATEGIES[s] for s in STRATEGIES if s != chosen and estimates[s].total <= gpu_memory]
        lines.append(
            f"Warning: will not fit: {STRATEGIES[chosen]} needs about {gib(total)} per GPU, more than {gib(gpu_memory)}"
            + (f"; {' or '.join(better)} would fit" if better else "")
            + "; lower train.per_device_batch_size (raising train.gradient_accumulation_steps) or data.max_length, or use more GPUs."
        )
    return "\n".join(lines), fits


# -- the README's table ---------------------------------------------------------------------------


def readme_table() -> str:
    """The README's table: each shipped Qwen3.5 preset on its documented hardware (generated here)."""
    from apto_release.train.presets import load_preset

    rows = [
        "| preset | hardware, strategy | base weights | LoRA states | activations (kept + recomputed) | logits and loss | total per GPU |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, (gpus, memory) in DOCUMENTED_HARDWARE.items():
        config = load_preset(name)
        shape = known_shape(config.base_model)
        strategy = preset_strategy(config)
        e = estimate_memory(shape, config, gpus=gpus, strategy=strategy)
        weights = e.line("weights").bytes + (e.line("gathered").bytes if strategy != "ddp" else 0)
        params = shape.parameters()
        lora = shape.lora_parameters(config.lora.r, config.lora.target_modules)
        act = e.line("kept").bytes + e.line("recomputed").bytes
        t = config.train
        rows.append(
            f"| `{name}` | {gpus} x {memory} GiB, {STRATEGIES[strategy]} "
            f"| {gib(weights)} ({params / 1e9:.2f}B params{', sharded, + gathered' if strategy != 'ddp' else ''}) "
            f"| {gib(e.line('lora').bytes)} ({lora / 1e6:.1f}M at r = {config.lora.r}) "
            f"| {gib(act)} ({t.per_device_batch_size} x {config.data.max_length:,} tokens) "
            f"| {gib(e.line('logits').bytes)} | {gib(e.total)} of {memory} |"
        )
    return "\n".join(rows)


def documented_hardware(name: str) -> tuple[int, int | None]:
    """(GPUs, bytes each) a shipped preset is sized for; (1, None) for the others."""
    gpus, memory = DOCUMENTED_HARDWARE.get(name, (1, None))
    return gpus, (memory * GIB if memory else None)


def dry_run_memory(config, *, base: str | Path, gpus: int | None = None, gpu_memory: int | None = None) -> str:
    """The dry run's memory section: for ``gpus`` x ``gpu_memory``, or the preset's documented hardware.

    A missing option is taken from the documented hardware of a shipped preset (none for the
    others: 1 GPU, no fit check). Without a shape the section says why there is no estimate.
    """
    shape, why = resolve_shape(base, config.base_model)
    if shape is None:
        return f"Memory per GPU: no estimate: {why}."
    doc_gpus, doc_memory = documented_hardware(config.name)
    note = "" if gpus or gpu_memory else (" (the preset's documented hardware)" if config.name in DOCUMENTED_HARDWARE else "")
    text, _ = render_estimate(shape, config, gpus=gpus or doc_gpus, gpu_memory=gpu_memory or doc_memory, hardware_note=note)
    return text


if __name__ == "__main__":  # pragma: no cover - regenerates the README's table
    print(readme_table())


__all__ = [
    "DOCUMENTED_HARDWARE",
    "KNOWN_SHAPES",
    "MemoryEstimate",
    "MemoryLine",
    "ModelShape",
    "STRATEGIES",
    "documented_hardware",
    "dry_run_memory",
    "estimate_memory",
    "known_shape",
    "parse_gpu_memory",
    "readme_table",
    "render_estimate",
    "resolve_shape",
]
