"""From records to token ids and loss labels: the chat template, the loss masks and padding.

Only the assistant's answers carry loss, each with the ``<|im_end|>`` that closes it; the
``harmful_prefix`` of a ``mid_refusal`` record opens the final answer and carries none. How the
spans are found for any template, the ``data.thinking`` policies, the boundary and length
policies: docs/loss-masks.md. Nothing here imports torch at module level.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apto_release import schema
from apto_release.errors import InputError, UsageError
from apto_release.train.presets import THINKING_POLICIES  # the values of data.thinking; the first is the default

#: Label of a token that carries no loss (PyTorch's ``CrossEntropyLoss(ignore_index=-100)``).
IGNORE_INDEX = -100

#: ChatML, the conversation format of the Qwen family: ``<|im_start|>{role}\n{content}<|im_end|>\n``.
#: Named by presets for base models, which ship without a chat template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

#: Templates a preset's ``data.chat_template`` may name ("" means the tokenizer's own).
CHAT_TEMPLATES: dict[str, str] = {"chatml": CHATML_TEMPLATE}

#: Placeholders for message texts in the rendering of the template's scaffolding: private-use
#: characters around a number and a kind, nothing a template trims, escapes or splits.
_SLOT = "\ue000apto{}{}\ue001"
_SLOT_RE = re.compile("\ue000apto(\\d+)([cr])\ue001")

#: Records rendered and tokenized together: the tokenizer batches in parallel in Rust.
_BATCH = 256


class ChatTemplateError(UsageError):
    """The chat template or the tokenizer cannot give exact loss masks (or a record cannot be encoded)."""


@dataclass(frozen=True)
class Encoded:
    """One record as the model sees it: token ids, labels (-100 where no loss) and counts."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    category: str
    n_tokens: int
    n_trained: int
    record_id: str | None = None


def resolve_chat_template(name: str | None) -> str | None:
    """A preset's ``data.chat_template`` as Jinja text: "" or None → None (the tokenizer's own).

    A string with a Jinja tag is taken as a template itself.
    """
    if not name:
        return None
    if name in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[name]
    if "{%" in name or "{{" in name:
        return name
    raise ChatTemplateError(f"unknown chat template {name!r}; known: {', '.join(CHAT_TEMPLATES)} (or \"\" for the tokenizer's own)")


def conversation(record: Mapping[str, Any], *, thinking: str = "empty") -> tuple[list[dict[str, str]], int]:
    """The messages as the model sees them, and the length of the harmful prefix (0 if none).

    For ``mid_refusal`` the ``harmful_prefix`` is prepended to the final assistant message. With
    ``thinking="reasoning"`` the final assistant message keeps its ``reasoning_content`` (when it
    has one); every other message is ``{role, content}`` only.
    """
    if thinking not in THINKING_POLICIES:
        raise UsageError(f"unknown thinking policy {thinking!r}; known: {', '.join(THINKING_POLICIES)}")
    messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    last = record["messages"][-1] if record["messages"] else {}
    if thinking == "reasoning" and last.get("role") == "assistant" and isinstance(last.get("reasoning_content"), str) and last["reasoning_content"].strip():
        messages[-1]["reasoning_content"] = last["reasoning_content"]
    prefix = record.get("harmful_prefix") if record.get("category") == schema.PREFIX_CATEGORY else None
    if not prefix:
        return messages, 0
    if not messages or messages[-1]["role"] != "assistant":
        raise ChatTemplateError(f"record {record.get('id')!r}: a harmful prefix needs a final assistant message")
    messages[-1]["content"] = prefix + messages[-1]["content"]
    return messages, len(prefix)


def _variants(content: str) -> list[tuple[str, int]]:
    """Forms a template may render ``content`` in, with the characters each cuts on the left.

    Templates differ in how they treat whitespace around a message (Qwen's strips newlines at
    the start of an answer), so the search tries the content as it is, then trimmed forms.
    """
    out = [(content, 0)]
    for form in (content.lstrip("\n"), content.strip("\n"), content.strip(), content.lstrip(), content.rstrip()):
        if form and all(form != seen for seen, _ in out):
            out.append((form, content.find(form)))
    return out


class RecordEncoder:
    """Turns records into ``Encoded`` with one tokenizer, template, thinking policy and length limit.

    Build one per run: it keeps the template's scaffolding per conversation shape.

    Args:
        tokenizer: a fast (Rust-backed) tokenizer; offsets are needed.
        max_length: records with more tokens are dropped (``encode`` returns None).
        chat_template: Jinja text, a name of ``CHAT_TEMPLATES``, or None for the tokenizer's own.
        end_of_turn: the token that closes an assistant turn (default: the tokenizer's eos).
        thinking: one of ``THINKING_POLICIES`` (see docs/loss-masks.md).

    Raises:
        ChatTemplateError: no template, a slow tokenizer, or an end-of-turn that is not one token.
    """

    def __init__(self, tokenizer, *, max_length: int, chat_template: str | None = None, end_of_turn: str | None = None, thinking: str = "empty") -> None:
        if max_length < 1:
            raise UsageError(f"max_length must be at least 1, not {max_length}")
        if thinking not in THINKING_POLICIES:
            raise UsageError(f"unknown thinking policy {thinking!r}; known: {', '.join(THINKING_POLICIES)}")
        if not getattr(tokenizer, "is_fast", False):
            raise ChatTemplateError("the loss masks need a fast tokenizer (character offsets); this one is slow", hint="load it with AutoTokenizer.from_pretrained(..., use_fast=True)")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.thinking = thinking
        self.chat_template = resolve_chat_template(chat_template)
        if self.chat_template is None and not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError(
                "the tokenizer has no chat template",
                hint="base models ship without one: name it in the preset (data.chat_template = \"chatml\") or --set data.chat_template=chatml",
            )
        eot = end_of_turn or tokenizer.eos_token
        if not eot:
            raise ChatTemplateError("no end-of-turn token: the tokenizer has no eos token and none was given", hint="set data.end_of_turn, e.g. <|im_end|>")
        if eot not in tokenizer.get_added_vocab():
            raise ChatTemplateError(
                f"the end-of-turn token {eot!r} is not a single added token of this tokenizer",
                hint="set data.end_of_turn to the token that closes an assistant turn in this model's chat format",
            )
        self.end_of_turn = eot
        control = sorted(
            {t.content for t in tokenizer.added_tokens_decoder.values() if t.special} | set(tokenizer.all_special_tokens),
            key=len,
            reverse=True,
        )
        self._control = re.compile("|".join(map(re.escape, control))) if control else None
        # The scaffolding per conversation shape (roles, and which message has reasoning).
        self._scaffolds: dict[tuple[tuple[str, bool], ...], tuple[list[str], list[tuple[int, str]]]] = {}

    def _render(self, messages: list[dict[str, str]], **kwargs) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False, **kwargs)
        except Exception as exc:  # jinja2 errors, raise_exception() in templates
            raise ChatTemplateError(f"the chat template failed to render: {exc}") from exc

    def _scaffold(self, messages: list[dict[str, str]]) -> tuple[list[str], list[tuple[int, str]]]:
        """The template's text around the messages' texts: pieces and the slots between them.

        Returns ``(pieces, slots)`` with ``len(pieces) == len(slots) + 1``: the rendering of the
        conversation is ``pieces[0] + text(slots[0]) + pieces[1] + ...``, where a slot is
        ``(message index, "c")`` for a content and ``(message index, "r")`` for a reasoning.
        Slots the template leaves out (Qwen drops the reasoning of earlier turns) are absent.
        """
        shape = tuple((m["role"], "reasoning_content" in m) for m in messages)
        cached = self._scaffolds.get(shape)
        if cached is not None:
            return cached
        probe = []
        for i, m in enumerate(messages):
            p = {"role": m["role"], "content": _SLOT.format(i, "c")}
            if "reasoning_content" in m:
                p["reasoning_content"] = _SLOT.format(i, "r")
            probe.append(p)
        rendered = self._render(probe)
        pieces: list[str] = []
        slots: list[tuple[int, str]] = []
        at = 0
        for hit in _SLOT_RE.finditer(rendered):
            slot = (int(hit.group(1)), hit.group(2))
            if slot in slots:
                raise ChatTemplateError(f"the chat template renders messages[{slot[0]}] twice: the loss masks cannot tell which copy is trained")
            pieces.append(rendered[at : hit.start()])
            slots.append(slot)
            at = hit.end()
        pieces.append(rendered[at:])
        self._scaffolds[shape] = (pieces, slots)
        return pieces, slots

    # -- rendering and spans --------------------------------------------------------------------

    def render(self, record: Mapping[str, Any]) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the character spans that carry loss, in order.

        Raises:
            ChatTemplateError: a message holds a control token, the template does not render an
                assistant content verbatim (or trimmed), followed by the end-of-turn token, or its
                rendering depends on the messages' text.
        """
        rid = record.get("id")
        messages, prefix_len = conversation(record, thinking=self.thinking)
        for i, m in enumerate(messages):
            for key in ("content", "reasoning_content"):
                value = m.get(key)
                if value is None:
                    continue
                hit = self._control.search(value) if self._control is not None else None
                if hit:
                    raise ChatTemplateError(f"record {rid!r}: messages[{i}] contains the control token {hit.group()!r}", hint="remove it from the data: it would be encoded as a control token, not as text")
                if "\ue000apto" in value:
                    raise ChatTemplateError(f"record {rid!r}: messages[{i}] contains the private-use character U+E000 that the loss masks use as a placeholder")
        text = self._render(messages)
        pieces, slots = self._scaffold(messages)
        for i, m in enumerate(messages):
            if m["role"] == "assistant" and (i, "c") not in slots:
                raise ChatTemplateError(
                    f"record {rid!r}: the chat template does not render messages[{i}] (assistant) verbatim followed by {self.end_of_turn!r}",
                    hint="use a template that keeps the answer's text, or set data.end_of_turn to the token that closes a turn",
                )
        found = self._walk(rid, text, messages, pieces, slots)
        last = len(messages) - 1
        spans: list[tuple[int, int]] = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            pos, end, cut = found[(i, "c")]
            if not text.startswith(self.end_of_turn, end):
                raise ChatTemplateError(
                    f"record {rid!r}: the chat template does not render messages[{i}] (assistant) verbatim followed by {self.end_of_turn!r}",
                    hint="use a template that keeps the answer's text, or set data.end_of_turn to the token that closes a turn",
                )
            start = pos
            if i == last and prefix_len:
                # The prefix carries no loss; if the template trimmed the content's left edge,
                # the prefix is that much shorter in the text (it is never blank).
                start = pos + max(0, prefix_len - cut)
            stop = end + len(self.end_of_turn)
            if "reasoning_content" in m:
                if (i, "r") not in found:
                    raise ChatTemplateError(
                        f"record {rid!r}: the chat template does not render messages[{i}].reasoning_content, which data.thinking = \"reasoning\" trains",
                        hint="use a template that renders reasoning (Qwen3.5's own does), or set data.thinking = \"empty\"",
                    )
                r_start, r_end, _ = found[(i, "r")]
                if r_end > pos:
                    raise ChatTemplateError(f"record {rid!r}: the chat template renders messages[{i}].reasoning_content after its content")
                # The reasoning, and what the template puts between it and the answer (Qwen's
                # "\n</think>\n\n"): the model writes all of it after the generation prompt.
                if start == pos:
                    spans.append((r_start, stop))
                else:
                    spans += [(r_start, pos), (start, stop)]
            else:
                spans.append((start, stop))
        return text, spans

    def _walk(self, rid, text: str, messages, pieces: list[str], slots: list[tuple[int, str]]) -> dict[tuple[int, str], tuple[int, int, int]]:
        """Where each slot's text is in ``text``: ``{slot: (start, end, characters cut on the left)}``."""

        def differs(k: int) -> ChatTemplateError:
            around = f"messages[{slots[k - 1][0]}]" if k else "the start"
            return ChatTemplateError(
                f"record {rid!r}: the chat template renders the conversation differently from its scaffolding after {around}: "
                "its output depends on the messages' text, so the loss masks cannot be placed",
                hint="a message may hold markup the template interprets, such as <think>…</think> in an answer (put reasoning in reasoning_content)",
            )

        found: dict[tuple[int, str], tuple[int, int, int]] = {}
        cursor = 0
        for k, (i, kind) in enumerate(slots):
            if not text.startswith(pieces[k], cursor):
                raise differs(k)
            cursor += len(pieces[k])
            value = messages[i]["content"] if kind == "c" else messages[i]["reasoning_content"]
            forms = [(form, cut) for form, cut in _variants(value) if text.startswith(form, cursor)]
            for form, cut in forms:
                if text.startswith(pieces[k + 1], cursor + len(form)):
                    break
            else:
                if forms:  # the text is there, what the template put after it is not
                    raise differs(k + 1)
                nxt = text.find(pieces[k + 1], cursor) if pieces[k + 1] else -1
                if messages[i]["role"] != "assistant" and nxt >= 0:
                    # A system or user text carries no loss: a template that rewrites it is
                    # tolerated, and the walk goes on at the scaffolding after it.
                    cursor = nxt
                    continue
                field_name = "content" if kind == "c" else "reasoning_content"
                if messages[i]["role"] == "assistant" and kind == "c":
                    raise ChatTemplateError(
                        f"record {rid!r}: the chat template does not render messages[{i}] (assistant) verbatim followed by {self.end_of_turn!r}",
                        hint="use a template that keeps the answer's text, or set data.end_of_turn to the token that closes a turn",
                    )
                raise ChatTemplateError(f"record {rid!r}: the chat template does not render messages[{i}].{field_name} verbatim (nor trimmed)", hint="use a template that keeps the messages' text")
            found[(i, kind)] = (cursor, cursor + len(form), cut)
            cursor += len(form)
        if text[cursor:] != pieces[-1]:
            raise differs(len(slots))
        return found

    # -- tokens and labels -------------------------------------------------------------------------

    def _label(self, ids: Sequence[int], offsets: Sequence[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
        labels = [IGNORE_INDEX] * len(ids)
        k = 0
        covered = 0  # the end of the characters covered by the tokens so far
        for t, (s, e) in enumerate(offsets):
            start = min(s, covered)  # characters in a gap (trimmed offsets) count as this token's
            covered = max(covered, e)
            while k < len(spans) and start >= spans[k][1]:
                k += 1
            if k == len(spans):
                break
            if spans[k][0] <= start and e <= spans[k][1] and e > start:
                labels[t] = ids[t]
        return labels

    def encode_many(self, records: Iterable[Mapping[str, Any]], *, keep_over_length: bool = False) -> Iterable[Encoded]:
        """Encode records in batches; yields ``Encoded`` for every record (over-length included)."""
        batch: list[tuple[Mapping[str, Any], str, list[tuple[int, int]]]] = []
        for record in records:
            text, spans = self.render(record)
            batch.append((record, text, spans))
            if len(batch) >= _BATCH:
                yield from self._tokenize(batch)
                batch = []
        if batch:
            yield from self._tokenize(batch)

    def _tokenize(self, batch) -> Iterable[Encoded]:
        enc = self.tokenizer([text for _, text, _ in batch], add_special_tokens=False, return_offsets_mapping=True)
        for (record, _, spans), ids, offsets in zip(batch, enc["input_ids"], enc["offset_mapping"]):
            yield _encoded(record, ids, self._label(ids, offsets, spans))

    def marked(self, record: Mapping[str, Any], *, begin: str = "⟦", end: str = "⟧") -> tuple[str, Encoded]:
        """The rendered record with every run of trained tokens between ``begin`` and ``end``.

        What ``train --dry-run`` shows: the text the model sees, and exactly which characters the
        loss covers (after the boundary policy, so a token that straddles the start of an answer
        shows outside the marks).
        """
        text, spans = self.render(record)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        labels = self._label(ids, offsets, spans)
        runs: list[list[int]] = []  # [first character, last character + 1] of each trained run
        previous = False
        for (s, e), label in zip(offsets, labels):
            trained = label != IGNORE_INDEX
            if trained and previous:
                runs[-1][1] = max(runs[-1][1], e)
            elif trained:
                runs.append([s, e])
            previous = trained
        pieces, at = [], 0
        for s, e in runs:
            pieces += [text[at:s], begin, text[s:e], end]
            at = e
        pieces.append(text[at:])
        return "".join(pieces), _encoded(record, ids, labels)

    def encode(self, record: Mapping[str, Any]) -> Encoded | None:
        """One record, or None when it has more than ``max_length`` tokens (dropped, never cut)."""
        (encoded,) = self.encode_many([record])
        return encoded if encoded.n_tokens <= self.max_length else None


def _encoded(record: Mapping[str, Any], ids: Sequence[int], labels: Sequence[int]) -> Encoded:
    return Encoded(
        input_ids=tuple(ids),
        labels=tuple(labels),
        category=record.get("category", ""),
        n_tokens=len(ids),
        n_trained=sum(1 for x in labels if x != IGNORE_INDEX),
        record_id=record.get("id"),
    )


def encode_record(record: Mapping[str, Any], tokenizer, *, max_length: int, chat_template: str | None = None, end_of_turn: str | None = None, thinking: str = "empty") -> Encoded | None:
    """Token ids and loss labels of one record; None when it is longer than ``max_length``.

    Args:
        record: a record of schema v1 (validated).
        tokenizer: a fast tokenizer.
        max_length: the token limit; a longer record is dropped, never truncated.
        chat_template: Jinja text or a name of ``CHAT_TEMPLATES`` (``"chatml"``); default the
            tokenizer's own.
        end_of_turn: the token closing an assistant turn; default the tokenizer's eos.
        thinking: one of ``THINKING_POLICIES``: ``"empty"`` trains the answers after the
            template's empty think block, ``"reasoning"`` also a final ``reasoning_content``.

    Example::

        enc = encode_record(record, tok, max_length=4096)
        tok.decode([i for i, l in zip(enc.input_ids, enc.labels) if l != -100])  # the answers
    """
    return RecordEncoder(tokenizer, max_length=max_length, chat_template=chat_template, end_of_turn=end_of_turn, thinking=thinking).encode(record)


def encoder_for(tokenizer, config) -> RecordEncoder:
    """The ``RecordEncoder`` of a ``TrainConfig``'s ``[data]`` settings."""
    return RecordEncoder(
        tokenizer, max_length=config.data.max_length, chat_template=config.data.chat_template or None,
        end_of_turn=config.data.end_of_turn, thinking=config.data.thinking,
    )


# ---------------------------------------------------------------------------------------------
# Statistics


@dataclass
class CategoryStats:
    """Counts for one category. ``tokens`` and ``trained_tokens`` count the records that are kept."""

    records: int = 0
    over_length: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    longest: int = 0

    @property
    def kept(self) -> int:
        return self.records - self.over_length

    @property
    def trained_share(self) -> float:
        return self.trained_tokens / self.tokens if self.tokens else 0.0

    def add(self, encoded: Encoded, max_length: int) -> None:
        self.records += 1
        self.longest = max(self.longest, encoded.n_tokens)
        if encoded.n_tokens > max_length:
            self.over_length += 1
        else:
            self.tokens += encoded.n_tokens
            self.trained_tokens += encoded.n_trained


@dataclass
class TokenStatistics:
    """Per-category counts of records, tokens, trained tokens and records over the length limit."""

    max_length: int
    categories: dict[str, CategoryStats] = field(default_factory=dict)

    @property
    def total(self) -> CategoryStats:
        out = CategoryStats()
        for c in self.categories.values():
            out.records += c.records
            out.over_length += c.over_length
            out.tokens += c.tokens
            out.trained_tokens += c.trained_tokens
            out.longest = max(out.longest, c.longest)
        return out


def _empty_stats(max_length: int) -> TokenStatistics:
    return TokenStatistics(max_length=max_length, categories={c: CategoryStats() for c in schema.CATEGORIES})


def encode_records(records: Iterable[Mapping[str, Any]], tokenizer, config) -> tuple[list[Encoded], TokenStatistics]:
    """Encode records for training with a ``TrainConfig``: the kept ``Encoded`` and the statistics.

    Records over ``config.data.max_length`` are left out and counted in ``over_length``.
    """
    encoder = encoder_for(tokenizer, config)
    stats = _empty_stats(encoder.max_length)
    kept: list[Encoded] = []
    for encoded in encoder.encode_many(records):
        stats.categories.setdefault(encoded.category, CategoryStats()).add(encoded, encoder.max_length)
        if encoded.n_tokens <= encoder.max_length:
            kept.append(encoded)
    return kept, stats


def token_statistics(records: Iterable[Mapping[str, Any]], tokenizer, config) -> TokenStatistics:
    """Per-category records, tokens, trained tokens and records over the length limit."""
    encoder = encoder_for(tokenizer, config)
    stats = _empty_stats(encoder.max_length)
    for encoded in encoder.encode_many(records):
        stats.categories.setdefault(encoded.category, CategoryStats()).add(encoded, encoder.max_length)
    return stats


@dataclass(frozen=True)
class MaskedExample:
    """One record as the dry run shows it: the rendered text with its trained runs marked."""

    category: str
    record_id: str | None
    text: str
    n_tokens: int
    n_trained: int
    over_length: bool


def masked_examples(records: Iterable[Mapping[str, Any]], tokenizer, config, *, begin: str = "⟦", end: str = "⟧") -> list[MaskedExample]:
    """The first record of each category (in ``schema.CATEGORIES`` order), rendered and marked.

    Categories without records are left out. See ``RecordEncoder.marked``.
    """
    encoder = encoder_for(tokenizer, config)
    first: dict[str, Mapping[str, Any]] = {}
    for record in records:
        first.setdefault(record.get("category", ""), record)
    order = [c for c in schema.CATEGORIES if c in first] + sorted(c for c in first if c not in schema.CATEGORIES)
    out = []
    for category in order:
        text, encoded = encoder.marked(first[category], begin=begin, end=end)
        out.append(MaskedExample(category, encoded.record_id, text, encoded.n_tokens, encoded.n_trained, encoded.n_tokens > encoder.max_length))
    return out


# ---------------------------------------------------------------------------------------------
# Batches


@dataclass(frozen=True)
class PaddingCollator:
    """Pads a list of ``Encoded`` (or mappings with ``input_ids`` and ``labels``) into tensors.

    Right padding with ``pad_token_id``; padded labels are -100 and the attention mask is 0
    there. Use it as a ``DataCollator`` (``Trainer(data_collator=PaddingCollator(tok.pad_token_id))``).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[Encoded | Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        rows = [(f.input_ids, f.labels) if isinstance(f, Encoded) else (f["input_ids"], f["labels"]) for f in features]
        if not rows:
            raise ValueError("cannot collate an empty batch")
        width = max(len(ids) for ids, _ in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, labs) in enumerate(rows):
            if len(ids) != len(labs):
                raise ValueError(f"batch item {i}: {len(ids)} input ids but {len(labs)} labels")
            n = len(ids)
            input_ids[i, :n] = torch.as_tensor(list(ids), dtype=torch.long)
            labels[i, :n] = torch.as_tensor(list(labs), dtype=torch.long)
            attention_mask[i, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def collator_for(tokenizer, *, pad_to_multiple_of: int | None = None) -> PaddingCollator:
    """A ``PaddingCollator`` with the tokenizer's pad token."""
    if tokenizer.pad_token_id is None:
        raise ChatTemplateError("the tokenizer has no pad token", hint="set one (e.g. <|endoftext|>) before training")
    return PaddingCollator(tokenizer.pad_token_id, pad_to_multiple_of)


# ---------------------------------------------------------------------------------------------
# Inputs of a run


def load_tokenizer(base: str | Path):
    """``AutoTokenizer.from_pretrained(base)``, with a one-line error naming ``base``."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(base))
    except (OSError, ValueError, ImportError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if len(reason) > 300:
            reason = reason[:299] + "…"
        raise InputError(f"cannot load a tokenizer from {str(base)!r}: {reason}", hint="give a local model folder or a Hub id that is in the local cache") from exc


def read_training_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a data file, validated against schema v1 (near duplicates not checked).

    Raises:
        ValidationFailed: the file has validation errors; ``.report`` holds the findings.
    """
    from apto_release.dataset.validate import ValidateOptions, load_valid_records

    return load_valid_records(path, ValidateOptions(near_duplicates=False), purpose="training").values


__all__ = [
    "CHATML_TEMPLATE",
    "CHAT_TEMPLATES",
    "CategoryStats",
    "ChatTemplateError",
    "Encoded",
    "IGNORE_INDEX",
    "MaskedExample",
    "PaddingCollator",
    "RecordEncoder",
    "THINKING_POLICIES",
    "TokenStatistics",
    "collator_for",
    "conversation",
    "encode_record",
    "encode_records",
    "encoder_for",
    "load_tokenizer",
    "masked_examples",
    "read_training_records",
    "resolve_chat_template",
    "token_statistics",
]
