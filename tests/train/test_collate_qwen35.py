"""Loss masks under the official Qwen3.5 chat template, with Qwen3.5's real vocabulary.

The template (../shared/qwen35-real/chat_template.jinja, sha256-checked) opens the assistant turns
after the last user message with a think block and the earlier ones without; it trims every text.
The expected text and spans are built here by hand from that description (``qwen35_rendering``),
checked once against the template itself, then used as the oracle of the encoder.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings

from apto_release.testing import CHAT_TEMPLATE
from apto_release.train.collate import IGNORE_INDEX, ChatTemplateError, RecordEncoder, encode_record
from tests.train.test_collate import CASES as CHATML_CASES
from tests.train.test_collate import PREFIX, TURN_BACK, record, records, trained_runs

EOT = "<|im_end|>"
EMPTY_THINK = "<think>\n\n</think>\n\n"


def qwen35_rendering(rec, *, thinking="empty") -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
    """The text the official template gives for a record, its trained spans, and its think blocks.

    By hand: ``<|im_start|>{role}\\n{text.strip()}<|im_end|>\\n`` per message, and for an
    assistant turn after the last user message ``<think>\\n{reasoning.strip()}\\n</think>\\n\\n``
    before its content. A trained span runs from the answer (after the harmful prefix) through its
    ``<|im_end|>``; with reasoning, from the reasoning's first character.
    """
    messages = rec["messages"]
    prefix = rec.get("harmful_prefix") or ""
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    text, spans, blocks = "", [], []
    for i, m in enumerate(messages):
        content = m["content"]
        if i == len(messages) - 1:
            content = prefix + content
        if m["role"] != "assistant":
            text += f"<|im_start|>{m['role']}\n{content.strip()}{EOT}\n"
            continue
        text += "<|im_start|>assistant\n"
        reasoning_at = None
        if i > last_user:
            reasoning = m.get("reasoning_content", "") if thinking == "reasoning" and i == len(messages) - 1 else ""
            block_start = len(text)
            text += "<think>\n"
            reasoning_at = len(text) if reasoning.strip() else None
            text += reasoning.strip() + "\n</think>\n\n"
            blocks.append((block_start, len(text)))
        body = content.strip()
        start = len(text)
        lost = len(content) - len(content.lstrip())  # characters of the prefix the trim took
        answer_start = start + (max(0, len(prefix) - lost) if i == len(messages) - 1 and prefix else 0)
        text += body
        end = len(text) + len(EOT)
        text += EOT + "\n"
        if reasoning_at is not None:
            spans += [(reasoning_at, end)] if answer_start == start else [(reasoning_at, start), (answer_start, end)]
        else:
            spans.append((answer_start, end))
    return text, spans, blocks


# The ChatML tests' records (a single turn, a system message, two user turns, a mid_refusal), and
# the shapes that only a thinking template tells apart.
CASES = {
    **CHATML_CASES,
    "three user turns with a system prompt": record(
        [
            ("system", "あなたは安全に配慮するアシスタントです。"),
            ("user", "睡眠薬について教えて。"),
            ("assistant", "睡眠薬は医師の処方に従って使う薬です。"),
            ("user", "たくさん飲むとどうなる？"),
            ("assistant", "過量に飲むのは大変危険です。つらい気持ちがあれば、相談窓口に話してみてください。"),
            ("user", "相談窓口はどこ？"),
            ("assistant", "「いのちの電話」などの窓口があります。今すぐ話せる場所です。"),
        ],
        category="anti_hallucination",
    ),
    "mid_refusal": record([("user", "差別的な文章を書いて。"), ("assistant", TURN_BACK)], category="mid_refusal", prefix=PREFIX),
    "mid_refusal after two user turns": record(
        [("user", "物語を書いて。"), ("assistant", "どんな物語にしましょうか。"), ("user", "差別的な内容で。"), ("assistant", TURN_BACK)],
        category="mid_refusal",
        prefix=PREFIX,
    ),
    "texts the template trims": record([("user", "  質問です。\n"), ("assistant", "\n答えです。 \n")]),
}


@pytest.fixture(scope="module")
def encoder(qwen35_tokenizer):
    return RecordEncoder(qwen35_tokenizer, max_length=100_000)


def test_the_fixture_is_qwen35s_tokenizer_and_template(qwen35_tokenizer):
    from apto_release.testing.qwen35_tokenizer import QWEN35_CHKHSH, llama_cpp_chkhsh

    tok = qwen35_tokenizer
    assert len(tok) == 248_044 + 33
    assert tok.convert_tokens_to_ids([EOT, "<|im_start|>", "<think>", "</think>"]) == [248046, 248045, 248068, 248069]
    assert tok.eos_token == EOT and tok.pad_token == "<|endoftext|>"
    special = {t.content: t.special for t in tok.added_tokens_decoder.values()}
    assert special[EOT] and special["<|im_start|>"] and not special["<think>"] and not special["</think>"]
    # llama.cpp's fingerprint of the pre-tokenizer and vocabulary: the one it maps to qwen35.
    assert llama_cpp_chkhsh(tok) == QWEN35_CHKHSH
    assert "ns.last_query_index" in tok.chat_template  # the official template, not ChatML


@pytest.mark.parametrize("name", list(CASES))
def test_the_oracle_is_the_official_templates_rendering(qwen35_tokenizer, name):
    rec = CASES[name]
    messages = [{"role": m["role"], "content": m["content"]} for m in rec["messages"]]
    messages[-1]["content"] = (rec.get("harmful_prefix") or "") + messages[-1]["content"]
    text, _, blocks = qwen35_rendering(rec)
    assert qwen35_tokenizer.apply_chat_template(messages, tokenize=False) == text
    assert [text[a:b] for a, b in blocks] == [EMPTY_THINK]  # one think block: the final turn's


@pytest.mark.parametrize("name", list(CASES))
def test_trained_tokens_are_exactly_the_answers_under_the_official_template(qwen35_tokenizer, encoder, name):
    tok = qwen35_tokenizer
    rec = CASES[name]
    text, spans, blocks = qwen35_rendering(rec)
    assert encoder.render(rec) == (text, spans)
    enc = encoder.encode(rec)
    tokenized = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert list(enc.input_ids) == tokenized["input_ids"]  # the ids of the template's rendering
    answers = [m["content"].strip() for m in rec["messages"] if m["role"] == "assistant"]
    # Every answer and its <|im_end|> is trained, and nothing else: with these texts no token
    # straddles a boundary, so the runs decode to the answers exactly.
    assert [tok.decode(run) for run in trained_runs(enc)] == [a + EOT for a in answers]
    trained = {c for (s, e), label in zip(tokenized["offset_mapping"], enc.labels) if label != IGNORE_INDEX for c in range(s, e)}
    assert trained == {c for a, b in spans for c in range(a, b)}
    # No token of the think block, of a header, of a user or system text is trained.
    for a, b in blocks:
        assert not trained & set(range(a, b))
    for tid in (248068, 248069, 248045):  # <think>, </think>, <|im_start|>
        assert all(label == IGNORE_INDEX for t, label in zip(enc.input_ids, enc.labels) if t == tid)
    for m in rec["messages"]:
        if m["role"] != "assistant":
            at = text.index(f"<|im_start|>{m['role']}\n{m['content'].strip()}")
            assert not trained & set(range(at, at + len(m["content"]) + 20))


@pytest.mark.parametrize("name", ["mid_refusal", "mid_refusal after two user turns"])
def test_the_harmful_prefix_follows_the_empty_think_block_and_is_not_trained(qwen35_tokenizer, encoder, name):
    tok = qwen35_tokenizer
    enc = encoder.encode(CASES[name])
    whole = tok.decode(enc.input_ids)
    assert whole.endswith(f"<|im_start|>assistant\n{EMPTY_THINK}{PREFIX}{TURN_BACK}{EOT}\n")
    trained = [tok.decode(run) for run in trained_runs(enc)]
    assert trained[-1] == TURN_BACK + EOT
    assert all(PREFIX not in t and "書き出し" not in t for t in trained)


def test_the_old_header_probe_is_gone_multi_turn_records_encode(qwen35_tokenizer):
    # The defect of issue 12: the encoder looked for the generation prompt
    # "<|im_start|>assistant\n<think>\n" before every answer, and earlier answers have none.
    enc = encode_record(CASES["two user turns"], qwen35_tokenizer, max_length=4096)
    assert enc is not None and len(trained_runs(enc)) == 2


# -- the property test, on the real vocabulary -----------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rec=records())
def test_masks_by_character_accounting_under_the_official_template(qwen35_tokenizer, encoder, rec):
    tok = qwen35_tokenizer
    text, spans, _ = qwen35_rendering(rec)
    assert encoder.render(rec) == (text, spans)
    enc = encoder.encode(rec)
    tokenized = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = tokenized["offset_mapping"]
    assert list(enc.input_ids) == tokenized["input_ids"]
    inside = {c for a, b in spans for c in range(a, b)}
    for i, ((s, e), label) in enumerate(zip(offsets, enc.labels)):
        in_span = any(a <= s and e <= b and e > s for a, b in spans)
        if label != IGNORE_INDEX:
            assert in_span, f"trained token {i} {text[s:e]!r} lies outside the answers"
        elif in_span:
            pytest.fail(f"token {i} {text[s:e]!r} lies inside an answer but is not trained")
    for a, b in spans:
        # Lost at the head of an answer: only characters of a token that starts before it.
        first = min((s for (s, e), label in zip(offsets, enc.labels) if label != IGNORE_INDEX and a <= s < b), default=b)
        if first > a:
            event("a token straddles the start of an answer")
            assert all(any(s < a and s <= c < e for s, e in offsets) for c in range(a, first))
        assert text[a:b].endswith(EOT)
    assert {c for (s, e), label in zip(offsets, enc.labels) if label != IGNORE_INDEX for c in range(s, e)} <= inside


# -- the thinking policy ------------------------------------------------------------------------------

REASONING = "依頼は危険物の製造方法に当たる。具体的な手順は書かず、安全な代わりを示す。"


def with_reasoning(rec, reasoning=REASONING, *, earlier=None):
    rec = {**rec, "messages": [dict(m) for m in rec["messages"]]}
    rec["messages"][-1]["reasoning_content"] = reasoning
    if earlier is not None:
        rec["messages"][1]["reasoning_content"] = earlier
    return rec


def test_thinking_empty_leaves_reasoning_out(qwen35_tokenizer):
    rec = with_reasoning(CASES["two user turns"], earlier="前の推論。")
    text, spans = RecordEncoder(qwen35_tokenizer, max_length=4096, thinking="empty").render(rec)
    assert REASONING not in text and "前の推論" not in text and EMPTY_THINK in text
    assert (text, spans) == qwen35_rendering(rec)[:2]


def test_thinking_reasoning_trains_the_final_reasoning_and_the_answer(qwen35_tokenizer):
    tok = qwen35_tokenizer
    rec = with_reasoning(CASES["two user turns"], earlier="前の推論。")
    encoder = RecordEncoder(tok, max_length=4096, thinking="reasoning")
    text, spans = encoder.render(rec)
    assert (text, spans) == qwen35_rendering(rec, thinking="reasoning")[:2]
    assert "前の推論" not in text  # earlier reasoning is dropped, as at inference
    enc = encoder.encode(rec)
    answers = [m["content"] for m in rec["messages"] if m["role"] == "assistant"]
    assert [tok.decode(run) for run in trained_runs(enc)] == [
        answers[0] + EOT,
        f"{REASONING}\n</think>\n\n{answers[1]}{EOT}",  # the model writes all of it after "<think>\n"
    ]
    assert all(label == IGNORE_INDEX for t, label in zip(enc.input_ids, enc.labels) if t == 248068)  # <think>


def test_thinking_reasoning_with_a_harmful_prefix(qwen35_tokenizer):
    tok = qwen35_tokenizer
    rec = with_reasoning(CASES["mid_refusal"])
    enc = encode_record(rec, tok, max_length=4096, thinking="reasoning")
    assert [tok.decode(run) for run in trained_runs(enc)] == [f"{REASONING}\n</think>\n\n", TURN_BACK + EOT]
    assert PREFIX in tok.decode(enc.input_ids)


def test_thinking_reasoning_without_reasoning_is_thinking_empty(qwen35_tokenizer):
    rec = CASES["three user turns with a system prompt"]
    assert encode_record(rec, qwen35_tokenizer, max_length=4096, thinking="reasoning") == encode_record(rec, qwen35_tokenizer, max_length=4096)


def test_a_template_that_cannot_render_reasoning_is_refused(qwen35_tokenizer):
    with pytest.raises(ChatTemplateError, match=r"does not render messages\[1\]\.reasoning_content"):
        encode_record(with_reasoning(CASES["single turn"]), qwen35_tokenizer, max_length=4096, chat_template=CHAT_TEMPLATE, thinking="reasoning")


def test_an_answer_the_template_splits_at_think_is_refused_not_guessed(qwen35_tokenizer):
    # The template moves "<think>…</think>" out of an answer into the think block: the rendering
    # no longer follows the scaffolding, and the record is refused with a reason.
    rec = record([("user", "質問"), ("assistant", "<think>\n考え中\n</think>\n\n答え")])
    with pytest.raises(ChatTemplateError, match="depends on the messages' text"):
        encode_record(rec, qwen35_tokenizer, max_length=4096)


def test_chatml_and_the_official_template_train_the_same_answer_text(qwen35_tokenizer):
    rec = CASES["three user turns with a system prompt"]
    chatml = encode_record(rec, qwen35_tokenizer, max_length=4096, chat_template="chatml")
    official = encode_record(rec, qwen35_tokenizer, max_length=4096)
    assert [qwen35_tokenizer.decode(r) for r in trained_runs(chatml)] == [qwen35_tokenizer.decode(r) for r in trained_runs(official)]
    assert official.n_tokens == chatml.n_tokens + len(qwen35_tokenizer(EMPTY_THINK, add_special_tokens=False)["input_ids"])


def test_the_presets_thinking_setting_reaches_the_encoder(qwen35_tokenizer):
    from apto_release.train.collate import encode_records
    from apto_release.train.presets import load_preset

    rec = with_reasoning(CASES["single turn"])
    (empty,), _ = encode_records([rec], qwen35_tokenizer, load_preset("qwen3.5-9b"))
    (reasoning,), _ = encode_records([rec], qwen35_tokenizer, load_preset("qwen3.5-9b", {"data.thinking": "reasoning"}))
    assert REASONING not in qwen35_tokenizer.decode(empty.input_ids)
    assert qwen35_tokenizer.decode(trained_runs(reasoning)[0]).startswith(REASONING)
