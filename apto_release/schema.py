"""Record schema v1: the contract every dataset file of a release keeps.

One record is one JSON object (a line of JSON Lines, or a row of Parquet):

=================  ===========================  ==================================================
field              type                         rule
=================  ===========================  ==================================================
``id``             string                       required; unique in the file; ``ID_PATTERN``
``category``       string                       required; one of ``CATEGORIES``
``messages``       list of ``{role, content}``  required; optional ``system`` first, then strictly
                                                alternating ``user``/``assistant``, starting with
                                                ``user``, ending with ``assistant``; content is a
                                                string that is non-empty after stripping; no other
                                                keys, except an optional non-blank string
                                                ``reasoning_content`` on assistant messages; at
                                                most ``MAX_TURNS`` user turns
``harmful_prefix`` string or null               non-empty exactly when ``category`` is
                                                ``mid_refusal``; null (or absent) otherwise
``has_jailbreak``  bool                         required
``harm_category``  string or null               required and non-empty for ``safety_refusal`` and
                                                ``mid_refusal``; optional otherwise, and non-empty
                                                when it is a string
``judge_score``    integer 1-5                  required; the release gate (default 4) is checked
                                                by the validator, not by the schema
``metadata``       object of string to string   optional
=================  ===========================  ==================================================

Unknown top-level fields are outside the schema: the validator reports them as warnings (errors
with ``--strict``), and the published JSON Schema (``json_schema()``, shipped as
``apto_release/schemas/record-v1.schema.json``) says ``additionalProperties: false``.

The validator in ``dataset.validate`` implements these rules by hand, because it is many times
faster than a generic JSON Schema engine; a differential test keeps the two in agreement.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

SCHEMA_VERSION = 1
SCHEMA_ID = "https://github.com/apto-release/apto-release/schemas/record-v1.schema.json"

#: The four categories, in the fixed order used by the ``ClassLabel`` of the Hub dataset.
CATEGORIES: tuple[str, ...] = (
    "safety_refusal",
    "overrefusal_prevention",
    "mid_refusal",
    "anti_hallucination",
)
ROLES: tuple[str, ...] = ("system", "user", "assistant")

#: Categories whose records must name the harm they refuse.
HARM_CATEGORY_REQUIRED: frozenset[str] = frozenset({"safety_refusal", "mid_refusal"})
#: The category whose final answer starts from a harmful prefix (Decoupled Refusal Training).
PREFIX_CATEGORY = "mid_refusal"

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
#: ``$`` also matches before a final newline in Python, so the Python check uses fullmatch.
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

JUDGE_SCORE_MIN = 1
JUDGE_SCORE_MAX = 5
DEFAULT_MIN_JUDGE_SCORE = 4

#: A bound on conversation length, so that the alternation of roles can be written in JSON
#: Schema (which has no way to say "even positions are user" for arrays of any length).
MAX_TURNS = 64

REQUIRED_FIELDS: tuple[str, ...] = ("id", "category", "messages", "has_jailbreak", "judge_score")
OPTIONAL_FIELDS: tuple[str, ...] = ("harmful_prefix", "harm_category", "metadata")
KNOWN_FIELDS: frozenset[str] = frozenset(REQUIRED_FIELDS + OPTIONAL_FIELDS)
MESSAGE_KEYS: frozenset[str] = frozenset({"role", "content"})
#: Keys an assistant message may have besides ``MESSAGE_KEYS``: ``reasoning_content``, the
#: reasoning written before the answer (a non-blank string), which ``data.thinking = "reasoning"``
#: trains inside the think block of the final answer.
ASSISTANT_OPTIONAL_KEYS: frozenset[str] = frozenset({"reasoning_content"})

# JSON Schema's pattern keyword uses ECMA-262 semantics and jsonschema uses re.search: "\S"
# means "not empty after str.strip()" in both.
_NON_BLANK = r"\S"


def _message(role: str) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "role": {"const": role},
        "content": {"type": "string", "pattern": _NON_BLANK},
    }
    if role == "assistant":
        properties.update({key: {"type": "string", "pattern": _NON_BLANK} for key in sorted(ASSISTANT_OPTIONAL_KEYS)})
    return {
        "type": "object",
        "properties": properties,
        "required": ["role", "content"],
        "additionalProperties": False,
    }


def _conversation(with_system: bool) -> dict[str, Any]:
    prefix: list[dict[str, str]] = [{"$ref": "#/$defs/system_message"}] if with_system else []
    for _ in range(MAX_TURNS):
        prefix += [{"$ref": "#/$defs/user_message"}, {"$ref": "#/$defs/assistant_message"}]
    offset = 1 if with_system else 0
    # Ending with "assistant" means an even number of user/assistant messages.
    lengths = [offset + 2 * k for k in range(1, MAX_TURNS + 1)]
    return {"prefixItems": prefix, "items": False, "enum_lengths": lengths}


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one record, as published in the package."""
    conversations = []
    for with_system in (False, True):
        conv = _conversation(with_system)
        lengths = conv.pop("enum_lengths")
        conv["anyOf"] = [{"minItems": n, "maxItems": n} for n in lengths]
        conversations.append(conv)
    non_empty_string = {"type": "string", "pattern": _NON_BLANK}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "apto-release safety SFT record, schema v1",
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": ID_PATTERN.replace("$", "(?![\\s\\S])")},
            "category": {"enum": list(CATEGORIES)},
            "messages": {"type": "array", "oneOf": conversations},
            "harmful_prefix": {"anyOf": [non_empty_string, {"type": "null"}]},
            "has_jailbreak": {"type": "boolean"},
            "harm_category": {"anyOf": [non_empty_string, {"type": "null"}]},
            "judge_score": {"type": "integer", "minimum": JUDGE_SCORE_MIN, "maximum": JUDGE_SCORE_MAX},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": list(REQUIRED_FIELDS),
        "additionalProperties": False,
        "allOf": [
            {
                # mid_refusal: the harmful prefix is required and non-empty.
                "if": {"properties": {"category": {"const": PREFIX_CATEGORY}}, "required": ["category"]},
                "then": {"properties": {"harmful_prefix": non_empty_string}, "required": ["harmful_prefix"]},
                "else": {"properties": {"harmful_prefix": {"type": "null"}}},
            },
            {
                "if": {
                    "properties": {"category": {"enum": sorted(HARM_CATEGORY_REQUIRED)}},
                    "required": ["category"],
                },
                "then": {"properties": {"harm_category": non_empty_string}, "required": ["harm_category"]},
            },
        ],
        "$defs": {
            "system_message": _message("system"),
            "user_message": _message("user"),
            "assistant_message": _message("assistant"),
        },
    }


def published_schema() -> dict[str, Any]:
    """The JSON Schema file shipped in the package (kept equal to ``json_schema()`` by a test)."""
    text = resources.files("apto_release.schemas").joinpath("record-v1.schema.json").read_text("utf-8")
    return json.loads(text)


def render_json_schema() -> str:
    """``json_schema()`` as the text of the published file."""
    return json.dumps(json_schema(), ensure_ascii=False, indent=2) + "\n"
