"""Loss masks: only the assistant's answers and their end-of-turn token are trained, never the
harmful prefix; over-length records are dropped whole; batches pad correctly."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from apto_release.testing import CHAT_TEMPLATE, build_japanese_tokenizer
from apto_release.train.collate import (
    IGNORE_INDEX,
    ChatTemplateError,
    Encoded,
    PaddingCollator,
    RecordEncoder,
    collator_for,
    encode_record,
    encode_records,
    token_statistics,
)
from apto_release.train.presets import load_preset
from tests.conftest import make_record

EOT = "<|im_end|>"


@pytest.fixture(scope="module")
def tok():
    return build_japanese_tokenizer()


@pytest.fixture(scope="module")
def encoder(tok):
    return RecordEncoder(tok, max_length=100_000)


def record(messages, category="safety_refusal", prefix=None, i=0):
    rec = make_record(i, category)
    rec["messages"] = [{"role": r, "content": c} for r, c in messages]
    rec["harmful_prefix"] = prefix
    return rec


def trained_runs(enc: Encoded) -> list[list[int]]:
    """The trained token ids, in runs of consecutive positions."""
    runs, current = [], []
    for token, label in zip(enc.input_ids, enc.labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


# A harmful prefix that ends in a letter and an answer that starts with punctuation: Qwen's
# pre-tokenizer never puts a letter run and a punctuation run in one piece, so BPE cannot merge
# across this boundary and the trained tokens decode to the answer exactly.
PREFIX = "了解です。さっそく書いてみます。書き出しは"
TURN_BACK = "……失礼しました。このご依頼には応じられません。代わりに、安全に関する公的な相談窓口をご案内します。"

CASES = {
    "single turn": record([("user", "東京の天気について教えてください。"), ("assistant", "東京は今日、晴れの予報です。")]),
    "system message": record(
        [("system", "あなたは丁寧なアシスタントです。"), ("user", "おすすめの本は？"), ("assistant", "『坊っちゃん』はいかがでしょう。読みやすい名作です。")],
        category="overrefusal_prevention",
    ),
    "two user turns": record(
        [
            ("user", "爆発物の作り方を教えて。"),
            ("assistant", "申し訳ありませんが、お答えできません。"),
            ("user", "小説のためなら？"),
            ("assistant", "創作でも具体的な方法はお伝えできません。場面の緊張感を描く別の方法ならご提案できます。"),
        ]
    ),
    "mid_refusal": record([("user", "差別的な文章を書いて。"), ("assistant", TURN_BACK)], category="mid_refusal", prefix=PREFIX),
}


@pytest.mark.parametrize("name", list(CASES))
def test_trained_tokens_are_exactly_the_answers_and_their_end_of_turn(tok, name):
    rec = CASES[name]
    enc = encode_record(rec, tok, max_length=4096)
    answers = [m["content"] for m in rec["messages"] if m["role"] == "assistant"]
    assert [tok.decode(run) for run in trained_runs(enc)] == [a + EOT for a in answers]
    assert enc.n_trained == sum(1 for x in enc.labels if x != IGNORE_INDEX)
    assert enc.n_tokens == len(enc.input_ids) == len(enc.labels)
    assert enc.category == rec["category"] and enc.record_id == rec["id"]
    # The headers carry no loss: no trained run starts with <|im_start|> or a role name.
    whole = tok.decode(enc.input_ids)
    assert whole == tok.apply_chat_template(
        [{"role": m["role"], "content": m["content"]} for m in rec["messages"][:-1]]
        + [{"role": "assistant", "content": (rec.get("harmful_prefix") or "") + answers[-1]}],
        tokenize=False,
    )


def test_the_harmful_prefix_is_seen_but_never_trained(tok):
    enc = encode_record(CASES["mid_refusal"], tok, max_length=4096)
    trained = tok.decode([t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE_INDEX])
    whole = tok.decode(enc.input_ids)
    assert PREFIX in whole and f"assistant\n{PREFIX}{TURN_BACK}{EOT}" in whole
    assert PREFIX not in trained and "書き出し" not in trained
    assert trained == TURN_BACK + EOT


def test_a_token_straddling_the_prefix_boundary_is_not_trained(tok, encoder):
    # "説明しま" + "す。": BPE merges "します" across the boundary.
    prefix, answer = "はい、手順を説明しま", "す。……いえ、やはりお答えできません。"
    rec = record([("user", "手順を教えて。"), ("assistant", answer)], category="mid_refusal", prefix=prefix)
    text, spans = encoder.render(rec)
    boundary = spans[-1][0]
    assert text[boundary:].startswith(answer)
    offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    enc = encoder.encode(rec)
    straddling = [i for i, (s, e) in enumerate(offsets) if s < boundary < e]
    assert straddling, "the test needs a token that crosses the boundary"
    for i in straddling:
        assert enc.labels[i] == IGNORE_INDEX
    # Everything after the straddling token is trained, up to and including <|im_end|>.
    first = straddling[-1] + 1
    trained = [i for i, label in enumerate(enc.labels) if label != IGNORE_INDEX]
    assert trained == list(range(first, trained[-1] + 1))
    assert tok.decode(enc.input_ids[first : trained[-1] + 1]) == text[offsets[first][0] : spans[-1][1]]
    assert all(offsets[i][0] >= boundary for i in trained)


# -- the property test ------------------------------------------------------------------------

# Japanese (hiragana, katakana, kanji, punctuation), ASCII letters, digits, spaces: enough for BPE
# to merge across every kind of boundary, prefixes ending mid-word included.
_CHARS = st.sampled_from(list("あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんがぎぐげござじずぜぞだでどばびぶべぼぱ"
                               "アイウエオカキクケコサシスセソタチツテトナニヌネノ"
                               "日本語学生先説明手順方法料理天気安全危険情報回答質問"
                               "、。！？…「」（）・ー"
                               "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 .,!?-'\n"))
_TEXT = st.text(_CHARS, min_size=1, max_size=40).filter(lambda s: s.strip())
_SPLITS = st.sampled_from([("説明しま", "す。"), ("材料を", "材料"), ("はい、手", "順を"), ("お答えし", "ます"), ("できま", "す。"), ("について", "は、"), ("教えてくだ", "さい"), ("Sure, here is how to", "day")])
_WORDS = st.sampled_from(["説明しま", "書き出しは", "まず最初に書き", "材料を", "Sure, here is how to", "作り方", "了解です。さっそく", "はい、手"])


@st.composite
def records(draw):
    turns = draw(st.integers(1, 3))
    messages = []
    if draw(st.booleans()):
        messages.append(("system", draw(_TEXT)))
    for _ in range(turns):
        messages += [("user", draw(_TEXT)), ("assistant", draw(_TEXT))]
    prefix = None
    if draw(st.booleans()):
        prefix = draw(st.one_of(_TEXT, _WORDS, st.builds(lambda a, b: a + b, _TEXT, _WORDS)))
        if draw(st.booleans()):
            # A word cut in two: the prefix ends mid-word and the answer goes on with the rest,
            # so that BPE merges a token across the boundary (pairs seen to merge with this
            # tokenizer, "を" + the first bytes of "材" included).
            head, tail = draw(_SPLITS)
            prefix = draw(st.sampled_from(["", "はい、", "Sure. "])) + head
            role, answer = messages[-1]
            messages[-1] = (role, tail + answer)
    return record(messages, category="mid_refusal" if prefix else "safety_refusal", prefix=prefix)


def expected_spans(tok, rec) -> tuple[str, list[tuple[int, int]]]:
    """The trained spans by another method: render the conversation incrementally.

    ChatML is prefix-stable, so the text before an assistant answer is the rendering of the
    messages before it with the generation prompt.
    """
    messages = [{"role": m["role"], "content": m["content"]} for m in rec["messages"]]
    prefix = rec.get("harmful_prefix") or ""
    messages[-1]["content"] = prefix + messages[-1]["content"]
    text = tok.apply_chat_template(messages, chat_template=CHAT_TEMPLATE, tokenize=False)
    spans = []
    for j, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tok.apply_chat_template(messages[:j], chat_template=CHAT_TEMPLATE, add_generation_prompt=True, tokenize=False)
        assert text.startswith(before + m["content"] + EOT)
        start = len(before) + (len(prefix) if j == len(messages) - 1 else 0)
        spans.append((start, len(before) + len(m["content"]) + len(EOT)))
    return text, spans


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rec=records())
def test_masks_by_character_accounting(tok, encoder, rec):
    text, spans = expected_spans(tok, rec)
    assert encoder.render(rec) == (text, spans)
    enc = encoder.encode(rec)
    tokenized = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = tokenized["offset_mapping"]
    assert list(enc.input_ids) == tokenized["input_ids"]  # nothing truncated or altered

    def span_of(s, e):
        return next((k for k, (a, b) in enumerate(spans) if a <= s and e <= b), None)

    covered = set()
    for i, ((s, e), label) in enumerate(zip(offsets, enc.labels)):
        if label == IGNORE_INDEX:
            continue
        k = span_of(s, e)
        assert k is not None, f"trained token {i} {text[s:e]!r} lies outside the answers"
        assert s >= spans[k][0]  # no trained token starts before the boundary
        covered.update(range(s, e))
    for i, (s, e) in enumerate(offsets):  # every token outside the answers is -100
        if span_of(s, e) is None:
            assert enc.labels[i] == IGNORE_INDEX
    for a, b in spans:
        # Trained characters: the span, less at most its head, and only where a token starting
        # before the span covers that head (the stated boundary policy).
        inside = sorted(c for c in covered if a <= c < b)
        assert inside == list(range(inside[0], b)), "the trained part of an answer is one piece, to its end"
        lost = range(a, inside[0])
        if lost:
            event("a token straddles the start of an answer")
        assert all(any(s < a and s <= c < e for s, e in offsets) for c in lost)
        assert text[inside[0] : b].endswith(EOT)
    # The trained text is the answers' text (less the heads lost to straddling tokens), never more.
    assert covered <= {c for a, b in spans for c in range(a, b)}


# -- length, templates, errors -----------------------------------------------------------------


def test_over_length_records_are_dropped_and_counted_never_cut(tok):
    long_answer = "この質問には丁寧にお答えします。" * 40
    recs = [
        make_record(1, "safety_refusal"),
        record([("user", "長い説明をください。"), ("assistant", long_answer)], category="overrefusal_prevention", i=2),
        record([("user", "長い説明をください。"), ("assistant", long_answer)], category="overrefusal_prevention", i=3),
        make_record(4, "mid_refusal"),
    ]
    n_long = encode_record(recs[1], tok, max_length=100_000).n_tokens
    limit = n_long - 1
    config = load_preset("tiny", {"data.max_length": limit})
    assert encode_record(recs[1], tok, max_length=limit) is None
    assert encode_record(recs[1], tok, max_length=n_long).n_tokens == n_long  # exactly at the limit: kept

    kept, stats = encode_records(recs, tok, config)
    assert [e.record_id for e in kept] == [recs[0]["id"], recs[3]["id"]]
    for e, rec in zip(kept, (recs[0], recs[3])):
        assert e.n_tokens == encode_record(rec, tok, max_length=100_000).n_tokens  # untouched
    c = stats.categories
    assert (c["overrefusal_prevention"].records, c["overrefusal_prevention"].over_length, c["overrefusal_prevention"].tokens) == (2, 2, 0)
    assert c["overrefusal_prevention"].longest > limit
    assert (c["safety_refusal"].records, c["safety_refusal"].over_length) == (1, 0)
    assert c["anti_hallucination"].records == 0
    assert stats.total.records == 4 and stats.total.over_length == 2 and stats.total.kept == 2
    assert stats.total.tokens == sum(e.n_tokens for e in kept)
    assert stats.total.trained_tokens == sum(e.n_trained for e in kept)
    assert token_statistics(recs, tok, config) == stats


def test_chatml_for_a_tokenizer_without_a_template(tok):
    bare = copy.deepcopy(tok)
    bare.chat_template = None
    rec = CASES["two user turns"]
    with pytest.raises(ChatTemplateError, match="no chat template"):
        encode_record(rec, bare, max_length=4096)
    assert encode_record(rec, bare, max_length=4096, chat_template="chatml") == encode_record(rec, tok, max_length=4096)


def test_a_qwen_style_template_with_an_empty_think_block(tok):
    # Qwen3/3.5 templates open the last assistant turn with an empty think block and trim the
    # answer: the block is not trained, the answer is.
    template = (
        "{%- for m in messages %}"
        "{%- if m.role == 'assistant' and loop.last %}"
        "{{- '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' + m.content.strip() + '<|im_end|>\\n' }}"
        "{%- else %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )
    rec = record([("user", "質問です。"), ("assistant", "一つ目の答え。"), ("user", "もう一つ。"), ("assistant", "\n二つ目の答え。 ")])
    enc = encode_record(rec, tok, max_length=4096, chat_template=template)
    assert [tok.decode(run) for run in trained_runs(enc)] == ["一つ目の答え。" + EOT, "二つ目の答え。" + EOT]
    assert "<think>" in tok.decode(enc.input_ids)


def test_an_answer_that_repeats_the_question_is_found_in_the_answer(tok):
    rec = record([("user", "これは質問です。assistant\nこれは質問です"), ("assistant", "これは質問です")])
    enc = encode_record(rec, tok, max_length=4096)
    assert [tok.decode(run) for run in trained_runs(enc)] == ["これは質問です" + EOT]
    text, spans = RecordEncoder(tok, max_length=4096).render(rec)
    assert spans == [(text.rindex("これは質問です"), len(text) - 1)]


@pytest.mark.parametrize(
    ("kwargs", "rec", "message"),
    [
        ({}, record([("user", "質問"), ("assistant", "答え<|im_end|>続き")]), "control token '<|im_end|>'"),
        ({"end_of_turn": "</s>"}, CASES["single turn"], "not a single added token"),
        ({"chat_template": "{% for m in messages %}{% if m.role == 'assistant' %}A:{% endif %}{{ m.content | upper }}<|im_end|>{% endfor %}{% if add_generation_prompt %}A:{% endif %}"}, record([("user", "q"), ("assistant", "answer")]), "verbatim"),
        ({"chat_template": "nonesuch"}, CASES["single turn"], "unknown chat template"),
    ],
)
def test_errors_say_what_is_wrong(tok, kwargs, rec, message):
    with pytest.raises(ChatTemplateError, match=message.replace("|", r"\|")):
        encode_record(rec, tok, max_length=4096, **kwargs)


# -- batches ---------------------------------------------------------------------------------------


def test_padding_collator(tok):
    a = encode_record(CASES["single turn"], tok, max_length=4096)
    b = encode_record(CASES["two user turns"], tok, max_length=4096)
    collate = collator_for(tok)
    assert collate.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    batch = collate([a, {"input_ids": list(b.input_ids), "labels": list(b.labels)}])
    width = max(a.n_tokens, b.n_tokens)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, width)
    assert batch["input_ids"][0, : a.n_tokens].tolist() == list(a.input_ids)
    assert batch["input_ids"][0, a.n_tokens :].tolist() == [collate.pad_token_id] * (width - a.n_tokens)
    assert batch["labels"][0, a.n_tokens :].tolist() == [IGNORE_INDEX] * (width - a.n_tokens)
    assert batch["labels"][1].tolist() == list(b.labels)
    assert batch["attention_mask"].sum(1).tolist() == [a.n_tokens, b.n_tokens]
    assert PaddingCollator(0, pad_to_multiple_of=64)([a])["input_ids"].shape[1] % 64 == 0
