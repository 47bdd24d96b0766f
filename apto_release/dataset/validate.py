"""``validate``: check every record of a file, and the file as a whole, against schema v1.

The structural rules are the JSON Schema's (``apto_release.schema``), written out by hand because
that is many times faster than a generic JSON Schema engine; a differential test keeps the two in
agreement. On top come what JSON Schema cannot say: the release gate, duplicates across records,
near-duplicate prompts, text damage, personal data and benchmark contamination.

Nothing here raises for a bad record: each problem is a ``Finding`` in the ``ValidationReport``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apto_release import schema
from apto_release.dataset import neardup, text
from apto_release.dataset.findings import RULES, ClusterRef, Finding, ValidationReport
from apto_release.dataset.records import DEFAULT_MAX_RECORD_BYTES, RawRecord, read_records
from apto_release.errors import InputError, ValidationFailed

#: With ``--expected-count``, a count more than this share away is reported.
DEFAULT_COUNT_TOLERANCE = 0.10


@dataclass(frozen=True)
class BenchmarkItems:
    """Texts of a benchmark that the release must not contain (``--against``)."""

    name: str
    ids: tuple[str, ...]
    texts: tuple[str, ...]


@dataclass(frozen=True)
class ValidateOptions:
    min_judge_score: int = schema.DEFAULT_MIN_JUDGE_SCORE
    strict: bool = False
    taxonomy: frozenset[str] | None = None
    expected_count: int | None = None
    count_tolerance: float = DEFAULT_COUNT_TOLERANCE
    against: tuple[BenchmarkItems, ...] = ()
    near_duplicates: bool = True
    threshold: float = neardup.DEFAULT_THRESHOLD
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES


@dataclass
class ValidationResult:
    """The report and, when asked for, the records that parsed as objects (with their lines)."""

    report: ValidationReport
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


Emit = Callable[[str, str, str | None], None]


def check_structure(rec: dict[str, Any], emit: Emit) -> None:
    """Emit (rule, message, field) for every structural problem of one record object."""
    for name in schema.REQUIRED_FIELDS:
        if name not in rec:
            emit("missing_field", f"field '{name}' is missing", name)

    rid = rec.get("id")
    if "id" in rec:
        if not isinstance(rid, str):
            emit("wrong_type", f"field 'id' must be a string, not {_json_type(rid)}", "id")
        elif not schema.ID_RE.fullmatch(rid):
            emit("invalid_id", f"id {_clip(rid)!r} does not match {schema.ID_PATTERN}", "id")

    category = rec.get("category")
    if not isinstance(category, str):  # a list or object here must not break the checks below
        category = None
    if "category" in rec and category not in schema.CATEGORIES:
        emit("unknown_category", f"unknown category {_clip(rec['category'])!r}; expected one of {', '.join(schema.CATEGORIES)}", "category")

    if "messages" in rec:
        _check_messages(rec["messages"], emit)

    if "has_jailbreak" in rec and not isinstance(rec["has_jailbreak"], bool):
        emit("wrong_type", f"field 'has_jailbreak' must be true or false, not {_json_type(rec['has_jailbreak'])}", "has_jailbreak")

    if "judge_score" in rec:
        score = rec["judge_score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            emit("wrong_type", f"field 'judge_score' must be an integer, not {_json_type(score)}", "judge_score")
        elif isinstance(score, float) and not score.is_integer():
            emit("judge_score_out_of_range", f"judge_score {score!r} is not an integer from 1 to 5", "judge_score")
        elif not schema.JUDGE_SCORE_MIN <= score <= schema.JUDGE_SCORE_MAX:
            emit("judge_score_out_of_range", f"judge_score {score!r} is not from 1 to 5", "judge_score")

    prefix = rec.get("harmful_prefix")
    if category == schema.PREFIX_CATEGORY:
        if prefix is None:
            emit("harmful_prefix_mismatch", "mid_refusal needs a non-empty 'harmful_prefix' (the unsafe start that the answer turns back from)", "harmful_prefix")
        elif not isinstance(prefix, str):
            emit("wrong_type", f"field 'harmful_prefix' must be a string, not {_json_type(prefix)}", "harmful_prefix")
        elif not prefix.strip():
            emit("harmful_prefix_mismatch", "mid_refusal needs a non-empty 'harmful_prefix', but it is blank", "harmful_prefix")
    elif prefix is not None:
        if isinstance(prefix, str):
            emit("harmful_prefix_mismatch", f"'harmful_prefix' must be null for category {_clip(category)!r}; only mid_refusal has one", "harmful_prefix")
        else:
            emit("wrong_type", f"field 'harmful_prefix' must be a string or null, not {_json_type(prefix)}", "harmful_prefix")

    harm = rec.get("harm_category")
    if harm is None:
        if category in schema.HARM_CATEGORY_REQUIRED:
            emit("missing_harm_category", f"category {category!r} needs a non-empty 'harm_category'", "harm_category")
    elif not isinstance(harm, str):
        emit("wrong_type", f"field 'harm_category' must be a string or null, not {_json_type(harm)}", "harm_category")
    elif not harm.strip():
        emit("empty_string", "'harm_category' is blank; use null or a name", "harm_category")

    if "metadata" in rec:
        metadata = rec["metadata"]
        if not isinstance(metadata, dict):
            emit("wrong_type", f"field 'metadata' must be an object, not {_json_type(metadata)}", "metadata")
        else:
            for key, value in metadata.items():
                if not isinstance(value, str):
                    emit("wrong_type", f"metadata value must be a string, not {_json_type(value)}", f"metadata.{key}")

    if len(rec) > len(schema.KNOWN_FIELDS) or not schema.KNOWN_FIELDS.issuperset(rec):
        for name in rec:
            if name not in schema.KNOWN_FIELDS:
                emit("unknown_field", f"unknown field {_clip(name)!r}", name)


def _check_messages(messages: Any, emit: Emit) -> None:
    if not isinstance(messages, list):
        emit("wrong_type", f"field 'messages' must be a list, not {_json_type(messages)}", "messages")
        return
    roles = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            emit("wrong_type", f"{where} must be an object, not {_json_type(message)}", where)
            roles.append(None)
            continue
        allowed = schema.MESSAGE_KEYS | (schema.ASSISTANT_OPTIONAL_KEYS if message.get("role") == "assistant" else frozenset())
        if message.keys() != schema.MESSAGE_KEYS and not (schema.MESSAGE_KEYS <= message.keys() <= allowed):
            missing = sorted(schema.MESSAGE_KEYS - message.keys())
            extra = sorted(k for k in message if k not in allowed)
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unexpected {', '.join(map(str, extra))}"] if extra else [])
            emit("bad_message_keys", f"{where} has {'; '.join(parts)}; a message has exactly 'role' and 'content' (an assistant's may add 'reasoning_content')", where)
        if "reasoning_content" in message and message.get("role") == "assistant":
            reasoning = message["reasoning_content"]
            if not isinstance(reasoning, str):
                emit("wrong_type", f"{where}.reasoning_content must be a string, not {_json_type(reasoning)}", f"{where}.reasoning_content")
            elif not reasoning.strip():
                emit("empty_content", f"{where}.reasoning_content is empty (leave it out instead)", f"{where}.reasoning_content")
        role = message.get("role")
        roles.append(role)
        if "role" in message and role not in schema.ROLES:
            emit("unknown_role", f"{where} has unknown role {_clip(role)!r}; expected system, user or assistant", f"{where}.role")
        if "content" in message:
            content = message["content"]
            if not isinstance(content, str):
                emit("wrong_type", f"{where}.content must be a string, not {_json_type(content)}", f"{where}.content")
            elif not content.strip():
                emit("empty_content", f"{where}.content is empty", f"{where}.content")
    problem = _role_order_problem(roles)
    if problem:
        emit("bad_role_order", problem, "messages")
    elif len(roles) // 2 > schema.MAX_TURNS:
        emit("too_many_turns", f"{len(roles) // 2} user turns; the schema allows at most {schema.MAX_TURNS}", "messages")


def _role_order_problem(roles: list[Any]) -> str | None:
    if not roles:
        return "messages is empty; it needs at least a user and an assistant message"
    start = 1 if roles[0] == "system" else 0
    for i in range(start, len(roles)):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if roles[i] != expected:
            if roles[i] == "system":
                return f"messages[{i}] is a system message; only the first message may be one"
            return f"messages[{i}] should be {expected}, not {_clip(roles[i])!r}"
    if len(roles) == start:
        return "messages has only a system message; it needs a user and an assistant message"
    if roles[-1] != "assistant":
        return f"the last message is {_clip(roles[-1])!r}; a record ends with the assistant's answer"
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _clip(value: Any, limit: int = 60) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 1] + "…"
    return value


def _text_fields(rec: dict[str, Any]) -> list[tuple[str, str]]:
    fields = []
    messages = rec.get("messages")
    if isinstance(messages, list):
        for i, m in enumerate(messages):
            if isinstance(m, dict) and isinstance(m.get("content"), str):
                fields.append((f"messages[{i}].content", m["content"]))
    for name in ("harmful_prefix", "harm_category"):
        if isinstance(rec.get(name), str):
            fields.append((name, rec[name]))
    metadata = rec.get("metadata")
    if isinstance(metadata, dict):
        fields.extend((f"metadata.{k}", v) for k, v in metadata.items() if isinstance(v, str))
    return fields


def check_text(rec: dict[str, Any], emit: Emit) -> None:
    """Emit findings for control characters, mojibake, invisible characters, language and PII."""
    fields = _text_fields(rec)
    if not fields:
        return
    blob = "\n".join(value for _, value in fields)
    if text.ODD_CHARACTER_RE.search(blob):
        for rule, pattern in (
            ("control_character", text.CONTROL_RE),
            ("lone_surrogate", text.LONE_SURROGATE_RE),
            ("mojibake", text.MOJIBAKE_RE),
            ("zero_width_character", text.ZERO_WIDTH_RE),
            ("halfwidth_katakana", text.HALFWIDTH_KATAKANA_RE),
        ):
            for name, value in fields:
                m = pattern.search(value)
                if m:
                    emit(rule, f"{name} has {_describe(m.group())} at character {m.start() + 1}", name)
    if text.may_hold_personal_data(blob):
        for name, value in fields:
            for rule, excerpt in text.personal_data(value):
                emit(rule, f"{name} contains {RULES[rule].description.split('contains ')[-1]} ({excerpt})", name)
    dialogue = "\n".join(v for n, v in fields if n.startswith("messages") and not _is_system(rec, n))
    share = text.mostly_not_japanese(dialogue)
    if share is not None:
        emit("not_japanese", f"only {share:.0%} of the letters are kana or kanji (threshold {text.JAPANESE_SHARE_MIN:.0%})", "messages")


def _is_system(rec: dict[str, Any], name: str) -> bool:
    return name == "messages[0].content" and rec["messages"][0].get("role") == "system"


def _describe(chars: str) -> str:
    return " ".join(f"U+{ord(c):04X}" for c in chars) if not chars.isprintable() or len(chars) == 1 else repr(chars)


def _first_user_prompt(rec: dict[str, Any]) -> str | None:
    for m in rec.get("messages") or ():
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
            return m["content"]
    return None


def _conversation_key(rec: dict[str, Any]) -> bytes | None:
    messages = rec.get("messages")
    if not isinstance(messages, list):
        return None
    contents = [m.get("content") if isinstance(m, dict) else None for m in messages]
    if not all(isinstance(c, str) for c in contents):
        return None
    return hashlib.blake2b("\x1e".join(contents).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def validate_records(
    raw_records: Iterable[RawRecord],
    options: ValidateOptions = ValidateOptions(),
    *,
    path: str = "<records>",
    keep_records: bool = False,
) -> ValidationResult:
    """Validate a stream of raw records (see ``records.read_records``)."""
    report = ValidationReport(path=path, strict=options.strict)
    result = ValidationResult(report)
    findings = report.findings
    category_counts = dict.fromkeys(schema.CATEGORIES, 0)
    first_line_of_id: dict[str, int] = {}
    first_of_conversation: dict[bytes, tuple[int, str]] = {}
    prompts: list[tuple[int, str, str]] = []  # (line, id, normalized first user prompt)
    dialogue: list[tuple[int, str, str]] = []  # (line, id, normalized text) for --against
    current: dict[str, Any] = {}

    def emit(rule: str, message: str, field_name: str | None) -> None:
        findings.append(Finding(rule, RULES[rule].severity, message, current.get("line"), current.get("id"), field_name))

    for raw in raw_records:
        if raw.finding is not None:
            findings.append(raw.finding)
            if raw.finding.rule != "bom":
                report.records += 1
            continue
        report.records += 1
        rec = raw.value
        current["line"], current["id"] = raw.line, None
        if not isinstance(rec, dict):
            emit("not_an_object", f"the line holds {_json_type(rec)}, not an object", None)
            continue
        rid = rec.get("id")
        current["id"] = rid if isinstance(rid, str) else None
        if keep_records:
            result.records.append((raw.line, rec))

        check_structure(rec, emit)
        check_text(rec, emit)

        category = rec.get("category")
        if isinstance(category, str) and category in category_counts:
            category_counts[category] += 1
        score = rec.get("judge_score")
        if isinstance(score, float) and score.is_integer():
            emit("judge_score_not_integer_literal", f"judge_score is written as {score!r}; write {int(score)}", "judge_score")
        if isinstance(score, (int, float)) and not isinstance(score, bool) and schema.JUDGE_SCORE_MIN <= score < options.min_judge_score:
            emit("judge_score_below_gate", f"judge_score {int(score)} is below the release gate of {options.min_judge_score}", "judge_score")
        harm = rec.get("harm_category")
        if options.taxonomy is not None and isinstance(harm, str) and harm.strip() and harm not in options.taxonomy:
            emit("unknown_harm_category", f"harm_category {_clip(harm)!r} is not in the taxonomy", "harm_category")

        if isinstance(rid, str):
            if rid in first_line_of_id:
                emit("duplicate_id", f"id {_clip(rid)!r} is already used on line {first_line_of_id[rid]}", "id")
            else:
                first_line_of_id[rid] = raw.line
        key = _conversation_key(rec)
        if key is not None:
            if key in first_of_conversation:
                line0, id0 = first_of_conversation[key]
                findings.append(Finding("duplicate_conversation", "error", f"the same conversation is on line {line0} (id {id0!r})", raw.line, current["id"], "messages", (id0,)))
            else:
                first_of_conversation[key] = (raw.line, current["id"] or f"line {raw.line}")
        prompt = _first_user_prompt(rec)
        if options.near_duplicates and prompt is not None:
            prompts.append((raw.line, current["id"] or "", neardup.normalize(prompt)))
        if options.against:
            for m in rec.get("messages") or ():
                if isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str):
                    dialogue.append((raw.line, current["id"] or "", neardup.normalize(m["content"])))

    if prompts:
        findings.extend(_near_duplicate_findings(prompts, options.threshold))
    if options.against:
        findings.extend(_contamination_findings(dialogue, options.against, options.threshold))
    if options.expected_count is not None:
        expected = options.expected_count
        if abs(report.records - expected) > options.count_tolerance * expected:
            findings.append(Finding("unexpected_count", "warning", f"{report.records:,} records; expected about {expected:,} (±{options.count_tolerance:.0%})"))
    findings.sort(key=lambda f: (f.line is not None, f.line or 0))
    report.category_counts = category_counts
    return result


def _near_duplicate_findings(prompts: list[tuple[int, str, str]], threshold: float) -> list[Finding]:
    """One finding per record of a near-duplicate cluster but its first: the cluster's number, size
    and first record, and the verified link that put the record there."""
    found = neardup.clusters([p for _, _, p in prompts], threshold=threshold)
    # Clusters are numbered in the order of their first records.
    firsts = sorted({r for i, r in enumerate(found.representative) if r != i})
    numbers = {first: number for number, first in enumerate(firsts, start=1)}
    out = []
    for i, (line, rid, _) in enumerate(prompts):
        first = found.representative[i]
        if first == i:
            continue
        number = numbers[first]
        first_line, first_id = prompts[first][0], prompts[first][1]
        link = found.links[i]
        link_line, link_id = prompts[link.other][0], prompts[link.other][1]
        size = found.size(i)
        if link.measure == neardup.IDENTICAL:
            how = f"equals the one on line {link_line} (id {link_id!r})"
        else:
            how = f"is {_percent(link.similarity)} similar ({neardup.MEASURE_NAMES[link.measure]}) to line {link_line} (id {link_id!r})"
        out.append(Finding(
            "near_duplicate_prompt", "warning",
            f"the first user prompt {how}; near-duplicate cluster {number} ({size:,} records, first on line {first_line}, id {first_id!r})",
            line, rid or None, "messages", (first_id,) if link_id == first_id else (first_id, link_id),
            ClusterRef(number, size, first_id, first_line),
        ))
    return out


def _percent(similarity: float) -> str:
    """A similarity as a whole percentage that never rounds a near duplicate up to 100%."""
    return f"{min(similarity, 0.99):.0%}" if similarity < 1 else "100%"


def _contamination_findings(dialogue: list[tuple[int, str, str]], against: Sequence[BenchmarkItems], threshold: float) -> list[Finding]:
    texts = [t for _, _, t in dialogue]
    groups = [0] * len(texts)
    owners: list[tuple[str, str]] = []
    for bench in against:
        for item_id, item_text in zip(bench.ids, bench.texts):
            texts.append(neardup.normalize(item_text))
            groups.append(1)
            owners.append((bench.name, item_id))
    seen = set()
    out = []
    for pair in neardup.similar_pairs(texts, threshold=threshold, groups=groups):
        line, rid, _ = dialogue[pair.left]
        bench_name, item_id = owners[pair.right - len(dialogue)]
        if (line, bench_name, item_id) in seen:
            continue
        seen.add((line, bench_name, item_id))
        if pair.measure == neardup.IDENTICAL:
            how = "equals"
        else:
            how = f"is {_percent(pair.similarity)} similar ({neardup.MEASURE_NAMES[pair.measure]}) to"
        out.append(Finding(
            "benchmark_contamination", "error",
            f"a message {how} item {item_id!r} of {bench_name}; remove the record (benchmark data must not be in the release)",
            line, rid or None, "messages", (item_id,),
        ))
    return out


def validate_file(path: str | Path, options: ValidateOptions = ValidateOptions(), *, keep_records: bool = False) -> ValidationResult:
    """Validate the records file at ``path`` (JSON Lines, gzip'd JSON Lines or Parquet).

    Raises:
        InputError: the file cannot be read at all (bad lines are findings, not errors).
    """
    return validate_records(
        read_records(path, max_record_bytes=options.max_record_bytes),
        options,
        path=str(path),
        keep_records=keep_records,
    )


@dataclass
class ValidRecords(ValidationResult):
    """Records that passed validation, with the file they came from and its SHA-256 (what a build
    marker names)."""

    path: Path = Path()
    sha256: str = ""

    @property
    def values(self) -> list[dict[str, Any]]:
        """The records, without their line numbers."""
        return [record for _, record in self.records]


def load_valid_records(path: str | Path, options: ValidateOptions, *, purpose: str) -> ValidRecords:
    """The records of ``path`` if it passes validation under ``options``; the one gate every stage
    that reads records goes through (sample, dataset build, train, the release's data jobs).

    The options are the caller's to state (no default): the stages differ on purpose, e.g. sampling
    and building skip near duplicates (warnings, checked by ``validate``), the CLI passes the
    user's judge gate. ``purpose`` ends the refusal's message: "fix them before {purpose}".

    The file's SHA-256 is taken before reading it, and the file must not change while it is read,
    so the hash names exactly the bytes that validated.

    Raises:
        ValidationFailed: the report is not ok (errors, or warnings under ``strict``); ``.report``
            holds the findings. Nothing is returned, so nothing can be built from the records.
        InputError: the file cannot be read, or it changed while it was validated.
    """
    from apto_release.io import sha256_file

    path = Path(path)
    before = _file_identity(path)
    sha256 = sha256_file(path) if before is not None else ""
    result = validate_file(path, options, keep_records=True)  # raises InputError for a missing file
    if _file_identity(path) != before:
        raise InputError("the file changed while it was validated", path=path, hint="run again once it is written")
    report = result.report
    if not report.ok:
        raise ValidationFailed(f"{report.failure_summary()}; fix them (see 'apto-release validate') before {purpose}",
                               path=path, report=report)
    return ValidRecords(report, result.records, path=path, sha256=sha256)


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# --- loading the option files -------------------------------------------------------------------

DEFAULT_AGAINST_FIELDS = ("prompt", "question", "input", "instruction", "text", "answer", "output", "response")


def load_taxonomy(path: str | Path) -> frozenset[str]:
    """Harm categories from a text file (one a line, ``#`` comments) or a JSON list."""
    path = Path(path)
    try:
        content = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the taxonomy: {exc}", path=path) from exc
    if path.suffix == ".json":
        try:
            names = json.loads(content)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON: {exc.msg}", path=path, line=exc.lineno) from exc
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError("a JSON taxonomy must be a list of strings", path=path)
    else:
        names = [line.split("#", 1)[0].strip() for line in content.splitlines()]
    taxonomy = frozenset(n for n in names if n)
    if not taxonomy:
        raise InputError("the taxonomy is empty", path=path)
    return taxonomy


def load_benchmark(path: str | Path, fields: Sequence[str] = ()) -> BenchmarkItems:
    """The texts of a benchmark file (JSON Lines, a JSON list, or Parquet) for ``--against``.

    Args:
        fields: the fields whose text is compared; by default the usual prompt and answer fields
            (``DEFAULT_AGAINST_FIELDS``) that the items have.
    """
    path = Path(path)
    if path.suffix == ".json":
        try:
            items = json.loads(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read the benchmark file: {exc}", path=path) from exc
        if isinstance(items, dict):
            items = next((v for v in items.values() if isinstance(v, list)), None)
        if not isinstance(items, list):
            raise InputError("a JSON benchmark file must hold a list of objects", path=path)
        rows = list(enumerate(items, start=1))
    else:
        rows = []
        for raw in read_records(path, max_record_bytes=1 << 30):
            if raw.finding is not None and raw.finding.rule != "bom":
                raise InputError(raw.finding.message, path=path, line=raw.line)
            if raw.finding is None:
                rows.append((raw.line, raw.value))
    ids, texts = [], []
    names = tuple(fields) or DEFAULT_AGAINST_FIELDS
    for line, item in rows:
        if not isinstance(item, dict):
            raise InputError("benchmark items must be objects", path=path, line=line)
        item_id = str(item.get("id", f"line {line}"))
        for name in names:
            value = item.get(name)
            if isinstance(value, str) and value.strip():
                ids.append(item_id)
                texts.append(value)
            elif fields and name not in item:
                raise InputError(f"benchmark item has no field '{name}'", path=path, line=line, field=name, hint="check --against-field")
    if not texts:
        raise InputError(f"no text found in fields {', '.join(names)}", path=path, hint="name the text fields with --against-field")
    return BenchmarkItems(name=path.name, ids=tuple(ids), texts=tuple(texts))
