"""Findings: what validation says about records, as data (never as exceptions).

Every finding names a rule from ``RULES``. A rule has a default severity, says whether it is one of
the *structural* rules that the published JSON Schema also expresses (the differential test holds
the validator and the schema to the same verdict on those), and carries a one-line description
that ``validate --format text`` and the README show.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Rule:
    name: str
    severity: Severity
    description: str
    structural: bool = False
    personal_data: bool = False


_RULES = [
    # Reading: a line that cannot become a record at all.
    Rule("invalid_utf8", "error", "the line is not valid UTF-8"),
    Rule("invalid_json", "error", "the line is not valid JSON"),
    Rule("not_an_object", "error", "the line is JSON but not an object", structural=True),
    Rule("record_too_large", "error", "the record is larger than the size limit"),
    Rule("bom", "warning", "the file starts with a UTF-8 byte-order mark"),
    # Structure (the JSON Schema says the same).
    Rule("missing_field", "error", "a required field is missing", structural=True),
    Rule("wrong_type", "error", "a field has the wrong type", structural=True),
    Rule("invalid_id", "error", "the id does not match the id pattern", structural=True),
    Rule("unknown_category", "error", "the category is not one of the four", structural=True),
    Rule("unknown_role", "error", "a message role is not system, user or assistant", structural=True),
    Rule("bad_message_keys", "error", "a message has missing or extra keys", structural=True),
    Rule("bad_role_order", "error", "the roles are not [system] user assistant user assistant ...", structural=True),
    Rule("too_many_turns", "error", "the conversation has more user turns than the schema allows", structural=True),
    Rule("empty_content", "error", "a message content is empty after stripping", structural=True),
    Rule("harmful_prefix_mismatch", "error", "harmful_prefix is set although the category is not mid_refusal, or missing for mid_refusal", structural=True),
    Rule("missing_harm_category", "error", "harm_category is required for safety_refusal and mid_refusal", structural=True),
    Rule("empty_string", "error", "an optional string field is set but empty", structural=True),
    Rule("judge_score_out_of_range", "error", "judge_score is not an integer from 1 to 5", structural=True),
    Rule("unknown_field", "warning", "a top-level field that the schema does not know", structural=True),
    # Release rules.
    Rule("judge_score_below_gate", "error", "judge_score is below the release gate"),
    Rule("judge_score_not_integer_literal", "warning", "judge_score is written as a float (4.0); write an integer"),
    Rule("unknown_harm_category", "error", "harm_category is not in the taxonomy given with --taxonomy"),
    Rule("duplicate_id", "error", "the id appears on an earlier line"),
    Rule("duplicate_conversation", "error", "the same conversation (all message contents) appears under another id"),
    Rule("benchmark_contamination", "error", "a prompt or answer equals or nearly equals a benchmark item"),
    # Text.
    Rule("control_character", "error", "text contains a control character other than newline and tab"),
    Rule("lone_surrogate", "error", "text contains half of a UTF-16 surrogate pair (\\ud800), which is not valid Unicode"),
    Rule("not_japanese", "warning", "text is mostly not Japanese"),
    Rule("halfwidth_katakana", "warning", "text contains half-width katakana"),
    Rule("zero_width_character", "warning", "text contains a zero-width or invisible formatting character"),
    Rule("mojibake", "warning", "text contains typical mojibake or the replacement character"),
    Rule("near_duplicate_prompt", "warning", "the first user prompt nearly equals another record's (one finding per record of a cluster but its first)"),
    # Personal data (warnings in the full set; the sampler leaves such records out).
    Rule("pii_email", "warning", "text contains an e-mail address", personal_data=True),
    Rule("pii_phone", "warning", "text contains a Japanese phone number", personal_data=True),
    Rule("pii_my_number", "warning", "text contains a 12-digit My Number with a valid check digit", personal_data=True),
    Rule("pii_card_number", "warning", "text contains a card number that passes the Luhn check", personal_data=True),
    # The set as a whole.
    Rule("unexpected_count", "warning", "the record count is far from --expected-count"),
]
RULES: dict[str, Rule] = {rule.name: rule for rule in _RULES}
STRUCTURAL_RULES = frozenset(r.name for r in _RULES if r.structural)
PERSONAL_DATA_RULES = frozenset(r.name for r in _RULES if r.personal_data)


@dataclass(frozen=True)
class ClusterRef:
    """The near-duplicate cluster a record belongs to: its number (1, 2, ... in the order of the
    clusters' first lines), its size in records, and its representative (its first record)."""

    number: int
    size: int
    representative: str
    representative_line: int


@dataclass(frozen=True)
class Finding:
    """One problem with one record (or, with ``line`` None, with the file as a whole)."""

    rule: str
    severity: Severity
    message: str
    line: int | None = None
    id: str | None = None
    field: str | None = None
    related: tuple[str, ...] = ()
    cluster: ClusterRef | None = None  # near_duplicate_prompt only

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["related"] = list(self.related)
        if self.cluster is None:
            del data["cluster"]
        return data


@dataclass
class ValidationReport:
    """Everything ``validate`` found in one file."""

    path: str
    records: int = 0
    findings: list[Finding] = field(default_factory=list)
    category_counts: dict[str, int] = field(default_factory=dict)
    strict: bool = False

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when the file passes: no errors, and no warnings either under ``strict``."""
        return not any(f.severity == "error" or self.strict for f in self.findings)

    @property
    def status(self) -> str:
        """PASSED, PASSED with warnings, or FAILED (twine's words)."""
        if not self.ok:
            return "FAILED"
        return "PASSED with warnings" if self.findings else "PASSED"

    def failure_summary(self) -> str:
        """What makes the report fail, in words: "3 validation errors" (and warnings under strict)."""
        text = f"{len(self.errors)} validation error{'s' if len(self.errors) != 1 else ''}"
        if self.strict and self.warnings:
            text += f" and {len(self.warnings)} warning{'s' if len(self.warnings) != 1 else ''} (--strict)"
        return text

    def counts_by_rule(self) -> dict[str, int]:
        return dict(Counter(f.rule for f in self.findings).most_common())

    def near_duplicate_clusters(self) -> dict[int, ClusterRef]:
        """The near-duplicate clusters that the findings name, by number."""
        return {f.cluster.number: f.cluster for f in self.findings if f.cluster is not None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "strict": self.strict,
            "records": self.records,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "counts_by_rule": self.counts_by_rule(),
            "category_counts": self.category_counts,
            "findings": [f.to_dict() for f in self.findings],
        }
