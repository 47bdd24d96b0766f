"""Local stand-ins for what a release is made from: a tokenizer and tiny Qwen checkpoints.

Nothing can be downloaded at test time, so the tests of the training, merge and GGUF stages, the
demo and the benchmarks build what they need here, in seconds, on a CPU. Importing this package
is cheap: torch, transformers and tokenizers are imported inside the builders.
"""

from apto_release.testing.models import build_tiny_qwen3, build_tiny_qwen35
from apto_release.testing.qwen35_tokenizer import build_qwen35_tokenizer
from apto_release.testing.tokenizer import CHAT_TEMPLATE, build_japanese_tokenizer

__all__ = ["CHAT_TEMPLATE", "build_japanese_tokenizer", "build_qwen35_tokenizer", "build_tiny_qwen3", "build_tiny_qwen35"]
