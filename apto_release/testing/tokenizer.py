"""A small Japanese byte-level BPE tokenizer, trained locally in about a second.

Nothing can be downloaded at test time, so the training, merge and GGUF stages (and the demo and
the benchmarks) need a tokenizer that behaves like Qwen's without Qwen's files. This one copies the
parts of Qwen's tokenizer that the pipeline depends on and shrinks the rest:

- the same pipeline: NFC normalizer, Qwen's pre-tokenizer regex (``Split``), then ``ByteLevel``
  (no prefix space, no regex of its own), ``ByteLevel`` decoder, a BPE model without ``unk``;
- special tokens after the ordinary vocabulary, in Qwen's order: ``<|endoftext|>`` (pad),
  ``<|im_start|>``, ``<|im_end|>`` (eos, the chat end of turn), then the four vision tokens that
  Qwen3.5's config points at (``<|vision_start|>``, ``<|vision_end|>``, ``<|image_pad|>``,
  ``<|video_pad|>``);
- a ChatML chat template (``CHAT_TEMPLATE``).

The merges are learnt from the message texts of the synthetic example data
(``apto_release.dataset.example``) plus a little English, code and digits, so that Japanese text
takes a realistic number of tokens and ASCII still round-trips.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "CHAT_TEMPLATE",
    "ENDOFTEXT",
    "IM_END",
    "IM_START",
    "SPECIAL_TOKENS",
    "VISION_TOKENS",
    "build_japanese_tokenizer",
]

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
#: The tokens Qwen3.5's config names (``vision_start_token_id`` and so on), so that the tiny
#: model's config points at real tokens instead of ids past the end of the vocabulary.
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
#: Every special token, in id order (they follow the ordinary vocabulary, as in Qwen's).
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, *VISION_TOKENS)

#: A ChatML template: ``<|im_start|>{role}\n{content}<|im_end|>\n`` per message and, with
#: ``add_generation_prompt``, ``<|im_start|>assistant\n``.
#:
#: For plain-text messages this is the text Qwen's templates give, with three simplifications that
#: keep it small: no tools, no image/video content parts (``content`` must be a string), and no
#: ``<think>`` blocks (Qwen3's and Qwen3.5's templates put reasoning, or an empty
#: ``<think>\n\n</think>\n\n``, at the start of some assistant turns; this one never does). It has
#: no ``{% generation %}`` markers either, because Qwen's have none: code that builds loss masks
#: must not rely on ``return_assistant_tokens_mask``.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

# Qwen2/Qwen3/Qwen3.5's pre-tokenizer pattern (transformers' tokenization_qwen3_5.py): letters and
# marks in runs (a Japanese sentence without spaces is one run), digits one by one, punctuation
# runs, newlines, spaces.
_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"""
    r"""| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

#: How many synthetic records feed the training; their message texts are about 0.8 M characters.
_TRAINING_RECORDS = 1500

# English, code and digits, so that ASCII gets a few merges of its own; repeated so that the
# merges pass min_frequency.
_ASCII_TEXT = (
    "The quick brown fox jumps over the lazy dog.",
    "system user assistant: the roles of a chat, as in <|im_start|>user and <|im_start|>assistant.",
    "This is a small tokenizer for tests. It is not a real model's tokenizer.",
    "Please answer the question politely and safely, in Japanese or in English.",
    "I'm sorry, but I can't help with that request. Here is a safer alternative.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14 -7 1,000,000 50%",
    "def main(argv: list[str]) -> int:\n    return 0\n",
    "for i in range(10):\n    print(i, i * i)\n",
    "import json\nwith open('data.jsonl') as f:\n    rows = [json.loads(line) for line in f]\n",
    'if __name__ == "__main__":\n    raise SystemExit(main())\n',
    "<html><body><p>Hello, world!</p></body></html>",
    "SELECT id, name FROM users WHERE score >= 4 ORDER BY id;",
    "https://huggingface.co/datasets/example/sample (CC BY 4.0)",
    "kill -9 1234; ps aux | grep python; ls -la ~/.cache",
    "{\"role\": \"user\", \"content\": \"Hello\"}",
)


@contextlib.contextmanager
def _fresh_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out_dir`` when the block succeeds.

    ``out_dir`` must not exist or must be empty: a builder never replaces anything else.
    """
    from apto_release.io import atomic_dir

    _check_fresh(out_dir)
    with atomic_dir(out_dir, overwrite=True) as tmp:
        yield tmp


def _check_fresh(out_dir: str | Path) -> None:
    """Raise ``FileExistsError`` unless ``out_dir`` is missing or an empty folder."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: exists and is not an empty folder; pick a new one")


def _training_texts(seed: int) -> list[str]:
    from apto_release.dataset.example import generate_records

    texts = [
        message["content"]
        for record in generate_records(_TRAINING_RECORDS, seed=seed)
        for message in record["messages"]
    ]
    return texts + list(_ASCII_TEXT) * 20


def build_japanese_tokenizer(
    out_dir: str | Path | None = None, *, vocab_size: int = 3000, seed: int = 0
) -> PreTrainedTokenizerFast:
    """Train a Qwen-style byte-level BPE tokenizer on synthetic Japanese text.

    Deterministic: the same ``vocab_size`` and ``seed`` give the same ``tokenizer.json`` bytes.
    Text round-trips exactly after NFC normalization (``decode(encode(x)) == NFC(x)``), since every
    byte has a token.

    Args:
        out_dir: where to ``save_pretrained`` (a folder that does not exist yet or is empty);
            ``None`` saves nothing.
        vocab_size: the size of the whole vocabulary, special tokens included (``len(tokenizer)``);
            at least 300 (256 bytes, the special tokens, a few merges).
        seed: the seed of the synthetic records the merges are learnt from.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with ``chat_template=CHAT_TEMPLATE``, eos
        ``<|im_end|>`` and pad ``<|endoftext|>`` (no bos, as in Qwen's).

    Example:
        >>> tok = build_japanese_tokenizer()
        >>> tok.decode(tok.encode("こんにちは"))
        'こんにちは'
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 300:
        raise ValueError(f"vocab_size must be an integer of at least 300, not {vocab_size!r}")

    if out_dir is not None:
        _check_fresh(out_dir)
    tokenizer = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    # The trainer breaks ties between equally frequent pairs by token id, and the byte alphabet
    # gets its ids in sorted order, so the merges do not depend on hash order: same input, same
    # tokenizer.json (checked across processes in tests/testing/test_tiny.py).
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(_training_texts(seed), trainer=trainer)
    # Added after training, so that they take the ids after the ordinary vocabulary, as in Qwen's.
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        # Qwen's tokenizer_config lists these as additional special tokens: all_special_tokens
        # (and so skip_special_tokens) covers them.
        extra_special_tokens=[IM_START, IM_END, *VISION_TOKENS],
        unk_token=None,
        bos_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    if out_dir is not None:
        with _fresh_dir(out_dir) as tmp:
            fast.save_pretrained(tmp)
    return fast
