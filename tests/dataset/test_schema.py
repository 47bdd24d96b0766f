"""The published JSON Schema and the hand-written validator give the same structural verdict."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apto_release import schema
from apto_release.dataset.findings import STRUCTURAL_RULES
from apto_release.dataset.validate import check_structure
from tests.conftest import make_record

VALIDATOR = jsonschema.Draft202012Validator(schema.json_schema())


def structural_ok(record) -> bool:
    found = []
    check_structure(record, lambda rule, message, field: found.append(rule))
    assert set(found) <= STRUCTURAL_RULES
    return not found


def test_published_file_is_the_generated_schema():
    assert schema.published_schema() == schema.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema.published_schema())


def test_schema_text_matches_committed_file():
    from importlib import resources

    text = resources.files("apto_release.schemas").joinpath("record-v1.schema.json").read_text("utf-8")
    assert text == schema.render_json_schema(), "regenerate with: apto-release schema -o apto_release/schemas/record-v1.schema.json"


json_scalars = st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
text_values = st.sampled_from(["", " ", "\n\t", "質問", "a", "回答です", "\u3000"])
roles = st.sampled_from(["system", "user", "assistant", "tool", "", "User"])


@st.composite
def messages(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    out = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 12))
        if kind == 0:
            out.append(draw(json_values))
            continue
        message = {"role": draw(roles), "content": draw(text_values)}
        if kind == 1:
            message["content"] = draw(json_values)
        elif kind == 2:
            del message[draw(st.sampled_from(["role", "content"]))]
        elif kind == 3:
            message["name"] = "x"
        elif kind == 4:  # allowed on assistant messages only, as a non-blank string
            message["reasoning_content"] = draw(text_values | json_values)
        out.append(message)
    # Bias towards well-formed alternation, so valid conversations are common too.
    if draw(st.booleans()):
        turns = draw(st.integers(1, 3))
        out = [{"role": r, "content": "内容"} for _ in range(turns) for r in ("user", "assistant")]
        if draw(st.booleans()):
            out.insert(0, {"role": "system", "content": "指示"})
        if draw(st.booleans()):
            out[-1]["reasoning_content"] = draw(text_values)
    return out


MUTATIONS = {
    "id": st.sampled_from(["ok-1", "", "-x", "a b", "a\n", "a" * 128, "a" * 129, "A.b:c_d-1", "日本"]) | json_values,
    "category": st.sampled_from(list(schema.CATEGORIES) + ["other", ""]) | json_values,
    "messages": messages(),
    "harmful_prefix": st.none() | text_values | json_values,
    "has_jailbreak": st.booleans() | json_values,
    "harm_category": st.none() | text_values | json_values,
    "judge_score": st.sampled_from([1, 3, 5, 0, 6, 4.0, 4.5, True, -1, "5", None]) | json_values,
    "metadata": st.dictionaries(st.text(max_size=4), st.text(max_size=4) | json_values, max_size=3) | json_values,
    "unknown_field": json_values,
}


@st.composite
def records(draw):
    category = draw(st.sampled_from(schema.CATEGORIES))
    record = make_record(draw(st.integers(0, 50)), category)
    for name in draw(st.lists(st.sampled_from(sorted(MUTATIONS)), max_size=3, unique=True)):
        action = draw(st.integers(0, 3))
        if action == 0 and name != "unknown_field":
            record.pop(name, None)
        else:
            record[name] = draw(MUTATIONS[name])
    return record


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_validator_agrees_with_json_schema(record):
    # Round-trip through JSON: the schema judges JSON, not Python objects.
    record = json.loads(json.dumps(record))
    assert structural_ok(record) == VALIDATOR.is_valid(record), (record, [e.message for e in VALIDATOR.iter_errors(record)])


@pytest.mark.parametrize(
    "record,valid",
    [
        (make_record(0), True),
        (make_record(0, "mid_refusal"), True),
        (make_record(0, "overrefusal_prevention", harm_category=..., harmful_prefix=..., metadata=...), True),
        (make_record(0, judge_score=4.0), True),  # JSON has one number type
        (make_record(0, id="abc\n"), False),  # "$" must not accept a final newline
        (make_record(0, messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}] * (schema.MAX_TURNS + 1)), False),
        (make_record(0, messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}] * schema.MAX_TURNS), True),
        (make_record(0, messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "考え"}]), True),
        (make_record(0, messages=[{"role": "user", "content": "q", "reasoning_content": "考え"}, {"role": "assistant", "content": "a"}]), False),
        (make_record(0, messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": " "}]), False),
        (make_record(0, messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": None}]), False),
    ],
)
def test_known_verdicts(record, valid):
    assert structural_ok(record) is valid
    assert VALIDATOR.is_valid(record) is valid


def test_reasoning_content_is_an_optional_field_of_assistant_messages_only():
    def findings(messages):
        found = []
        check_structure(make_record(0, messages=messages), lambda rule, message, field: found.append((rule, message, field)))
        return found

    assert findings([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "考え"}]) == []
    assert findings([{"role": "user", "content": "q", "reasoning_content": "考え"}, {"role": "assistant", "content": "a"}]) == [
        ("bad_message_keys", "messages[0] has unexpected reasoning_content; a message has exactly 'role' and 'content' (an assistant's may add 'reasoning_content')", "messages[0]")
    ]
    assert findings([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": 3}]) == [
        ("wrong_type", "messages[1].reasoning_content must be a string, not a number", "messages[1].reasoning_content")
    ]
    assert findings([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "\n"}])[0][0] == "empty_content"
    assert schema.json_schema()["$defs"]["assistant_message"]["properties"]["reasoning_content"] == {"type": "string", "pattern": r"\S"}
