"""The memory llama.cpp needs to run a GGUF file at a given context length, from the file's own
metadata, as llama.cpp allocates it (one sequence, its default batch sizes):

- **weights**: the file's bytes (llama.cpp maps the file; on a GPU every offloaded tensor is copied);
- **KV cache**: keys and values in F16 for each full-attention layer, ``n_ctx`` cells each
  (llama.cpp leaves the multi-token-prediction layers out of the cache);
- **recurrent state**: for each Gated DeltaNet layer, its convolution state and its delta-rule
  state, in F32, one per sequence, whatever the context length;
- **compute buffer**: without flash attention, the attention scores of one layer for a batch of
  ``n_ubatch`` tokens against the whole context and the mask (F32). With flash attention (llama.cpp's
  default on GPUs) it is far smaller, so this is the upper end.

``tests/gguf/test_memory.py`` checks each part against the sizes llama.cpp itself logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: llama.cpp's default physical batch (``n_ubatch``).
N_UBATCH = 512
#: The keys (after ``<architecture>.``) without which llama.cpp cannot size a context.
_REQUIRED = ("block_count", "attention.head_count", "embedding_length")
#: The context lengths the GGUF card's which-file table shows.
CARD_CONTEXTS = (8192, 32768)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes llama.cpp allocates for one sequence of ``n_ctx`` tokens, by part."""

    n_ctx: int
    weights: int
    kv_cache: int
    recurrent: int
    compute: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.recurrent + self.compute


@dataclass(frozen=True)
class ModelShape:
    """What the memory depends on, read from a GGUF file's metadata."""

    attention_layers: int
    recurrent_layers: int
    heads: int
    kv_heads: int
    key_length: int
    value_length: int
    conv_kernel: int = 0
    state_size: int = 0  # a Gated DeltaNet key head's size
    group_count: int = 0  # its key heads
    inner_size: int = 0  # value heads x value head size

    @classmethod
    def from_gguf(cls, path: str | Path) -> ModelShape:
        """The shape of the model in ``path`` (of a split set, the first file: it holds the metadata).

        Raises:
            InputError: the metadata lacks what llama.cpp needs to size a context.
        """
        import gguf

        reader = gguf.GGUFReader(str(path))
        fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("tokenizer.")}
        arch = fields["general.architecture"]

        def get(key: str, default=None):
            value = fields.get(f"{arch}.{key}", default)
            if value is None and key in _REQUIRED:
                from apto_release.errors import InputError

                raise InputError(f"the file's metadata has no {arch}.{key}, which llama.cpp needs to run it", path=path)
            return value

        blocks = int(get("block_count")) - int(get("nextn_predict_layers", 0))
        recurrent = [bool(x) for x in (get("attention.recurrent_layers") or [])][:blocks]
        heads, kv_heads = int(get("attention.head_count")), int(get("attention.head_count_kv") or get("attention.head_count"))
        key_length = int(get("attention.key_length") or int(get("embedding_length")) // heads)
        return cls(
            attention_layers=blocks - sum(recurrent), recurrent_layers=sum(recurrent), heads=heads, kv_heads=kv_heads,
            key_length=key_length, value_length=int(get("attention.value_length") or key_length),
            conv_kernel=int(get("ssm.conv_kernel", 0)), state_size=int(get("ssm.state_size", 0)),
            group_count=int(get("ssm.group_count", 0)), inner_size=int(get("ssm.inner_size", 0)),
        )

    def kv_cache(self, n_ctx: int) -> int:
        return self.attention_layers * n_ctx * self.kv_heads * (self.key_length + self.value_length) * 2

    def recurrent_state(self) -> int:
        conv = (self.conv_kernel - 1) * (self.inner_size + 2 * self.group_count * self.state_size)
        delta = self.state_size * self.inner_size
        return self.recurrent_layers * (conv + delta) * 4

    def compute(self, n_ctx: int, n_ubatch: int = N_UBATCH) -> int:
        return min(n_ubatch, n_ctx) * n_ctx * (self.heads + 1) * 4 if self.attention_layers else 0


def estimates(paths: list[Path] | tuple[Path, ...], contexts: tuple[int, ...], *, n_ubatch: int = N_UBATCH
              ) -> list[MemoryEstimate]:
    """The memory to run the GGUF output ``paths`` (a file, or a split set with its first file first)
    at each of ``contexts``; the metadata is read once."""
    shape = ModelShape.from_gguf(paths[0])
    weights = sum(Path(p).stat().st_size for p in paths)
    return [MemoryEstimate(n_ctx, weights, shape.kv_cache(n_ctx), shape.recurrent_state(), shape.compute(n_ctx, n_ubatch))
            for n_ctx in contexts]


def estimate(paths: list[Path] | tuple[Path, ...], n_ctx: int, *, n_ubatch: int = N_UBATCH) -> MemoryEstimate:
    """The memory to run the GGUF output ``paths`` at ``n_ctx`` (``estimates`` for one context)."""
    return estimates(paths, (n_ctx,), n_ubatch=n_ubatch)[0]
