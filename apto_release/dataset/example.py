"""A deterministic generator of SYNTHETIC example data: a Japanese safety SFT set in schema v1.

Records are assembled from hand-written Japanese sentence pools (data files in ``example_pools/``
next to this module) by a seeded pseudo-random generator; nothing real is behind them and every
record says so (``"source": "synthetic"``). The same ``(n, seed)`` gives the same bytes on any
machine. What the generator guarantees (mix, sizes, text checks, distance between prompts) and
how the pools are laid out: docs/example-data.md.
"""

from __future__ import annotations

import functools
import gzip
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

from apto_release.io import atomic_path, dump_jsonl_line
from apto_release.schema import CATEGORIES

__all__ = [
    "CATEGORY_WEIGHTS",
    "DEFAULT_COUNT",
    "ExampleDataResult",
    "generate_records",
    "write_example_data",
]

DEFAULT_COUNT = 18000
GENERATOR_NAME = "apto-release example-data"
#: Bump when the output for a given (n, seed) changes, so that old files can be told apart.
GENERATOR_VERSION = "1"

#: The share of each category (drawn independently per record), in ``CATEGORIES`` order.
CATEGORY_WEIGHTS: dict[str, float] = {
    "safety_refusal": 0.40,
    "overrefusal_prevention": 0.27,
    "mid_refusal": 0.20,
    "anti_hallucination": 0.13,
}
assert tuple(CATEGORY_WEIGHTS) == CATEGORIES

# Jailbreak rates: 0.6 * 0.22 + 0.4 * 0.07 = 0.16 overall, mostly on harmful requests.
_JAILBREAK_RATE_HARMFUL = 0.22
_JAILBREAK_RATE_OTHER = 0.07
_SYSTEM_RATE = 0.30
_TWO_TURN_RATE = 0.10
_SCORE_4_RATE = 0.25

_HARMFUL = frozenset({"safety_refusal", "mid_refusal"})
#: Range of the per-record target for the characters of all message texts together; with the
#: JSON around them this gives records of about 1.6 to 2.4 KB (about 2 KB on average).
_TARGET_CHARS = (500, 690)


# --------------------------------------------------------------------------------------------
# The pools (data files) and the values that fill their {placeholders}
# --------------------------------------------------------------------------------------------

#: The folder of the pool files, inside the package (and the wheel).
POOLS_PACKAGE, POOLS_FOLDER = "apto_release.dataset", "example_pools"


@dataclass(frozen=True)
class _Harm:
    """One harm category: its abstract request cores and the pools its refusals draw from.

    A core is ``(topic slug, "how" | "write", request phrase, noun for the answer)``.
    """

    name: str
    effect: str
    cores: tuple[tuple[str, str, str, str], ...]
    reasons: tuple[str, ...]
    alternatives: tuple[str, ...]
    resources: tuple[str, ...]


@dataclass(frozen=True)
class _Topic:
    """A benign topic that a too-cautious model might refuse, with the facts of a helpful answer.

    ``harm`` names the sensitive-looking area the prompt touches (or None); ``body`` holds the
    sentences of the answer in a sensible order (an answer uses some of them, order kept).
    """

    slug: str
    harm: str | None
    domain: str
    requests: tuple[str, ...]
    noun: str
    body: tuple[str, ...]


@dataclass(frozen=True)
class _Unknown:
    """Answer pools for one kind of unverifiable question ({e} is the entity)."""

    not_found: tuple[str, ...]
    reasons: tuple[str, ...]
    checks: tuple[str, ...]


def _tuples(value):
    """JSON as the generator uses it: lists become tuples (inside dicts too)."""
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    return value


@functools.cache
def _pools() -> SimpleNamespace:
    """Every pool of ``example_pools/*.json`` by its key (``openers``, ``harms``, ...), read once.

    Lists become tuples; ``harms``, ``topics`` and ``unknowns`` become their dataclasses; the pools
    derived from others (the coded slots' choices) are added here.
    """
    pools: dict = {}
    folder = resources.files(POOLS_PACKAGE).joinpath(POOLS_FOLDER)
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text(encoding="utf-8"))
            assert not set(data) & set(pools), f"{entry.name} repeats a pool: {sorted(set(data) & set(pools))}"
            pools.update(_tuples(data))
    p = SimpleNamespace(**pools)
    p.harms = tuple(_Harm(**harm) for harm in p.harms)
    p.topics = tuple(_Topic(**topic) for topic in p.topics)
    p.unknowns = {kind: _Unknown(**fields) for kind, fields in p.unknowns.items()}
    p.harmful_cores = tuple((harm, core) for harm in p.harms for core in harm.cores)
    p.topic_requests = tuple((topic, request) for topic in p.topics for request in topic.requests)
    p.opener_slot = p.openers + (None,) * len(p.openers)
    p.closing_slot = p.closings + (None,) * len(p.closings)
    # (style, template) choices: benign prompts are only wrapped; harmful ones may also be framed.
    p.benign_jailbreaks = tuple(
        (style, template)
        for style in ("roleplay", "ignore_instructions", "developer_mode", "research_pretext")
        for template in p.jailbreak_wraps[style]
    )
    p.harmful_jailbreaks = {
        kind: tuple((style, t) for style, templates in p.jailbreak_wraps.items() for t in templates)
        + tuple((style, t) for style, frames in p.jailbreak_frames.items() for t in frames[kind])
        for kind in ("how", "write")
    }
    # The placeholder that a framing varies with the request-form code value.
    p.frame_variable = {"fiction": ("genre", p.genres), "grandma": ("elder", p.elders)}
    return p


_FILLERS: dict[str, Callable[[random.Random], str]] = {
    "n": lambda r: str(r.randrange(3, 8)),
    "days": lambda r: str(r.randrange(2, 15)),
    "man": lambda r: str(r.randrange(1, 31)),
    "chars": lambda r: str(r.choice((200, 300, 400, 500, 600, 800))),
    "rival": lambda r: r.choice(_pools().rivals),
    "fam": lambda r: r.choice(_pools().family),
    "pref": lambda r: r.choice(_pools().prefectures),
    "event": lambda r: r.choice(_pools().gatherings),
    "weekday": lambda r: r.choice(_pools().weekdays),
    "ai": lambda r: r.choice(_pools().ai_names),
    "genre": lambda r: r.choice(_pools().genres),
    "char": lambda r: r.choice(_pools().characters),
    "elder": lambda r: r.choice(_pools().elders),
    "times": lambda r: str(r.randrange(2, 6)),
    "months": lambda r: str(r.randrange(2, 12)),
}


class _Fill(dict):
    """Placeholder values of one record, drawn on first use and then kept.

    Used with ``str.format_map``: a value is drawn only when a chosen template needs it, and the
    same ``{rival}`` in the prompt and in the answer is the same person.
    """

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    def __missing__(self, key: str) -> str:
        value = _FILLERS[key](self.rng)
        self[key] = value
        return value


def _entity(rng: random.Random, kind: str) -> tuple[str, dict[str, str]]:
    """A made-up entity of ``kind``: (the entity as the answer quotes it, fields for a question)."""
    c, p = rng.choice, _pools()
    if kind == "law":
        law = f"『{c(p.law_a)}{c(p.law_b)}{c(p.law_c)}法』"
        return law, {"law": law, "year": str(rng.randrange(2005, 2023)), "art": str(rng.randrange(3, 41))}
    if kind == "paper":
        title = f"『{c(p.paper_x)}が{c(p.paper_y)}に与える影響』"
        year = rng.randrange(2008, 2024)
        paper = f"{c(p.institutions)}の研究チームが{year}年に発表した{title}という論文"
        return title, {"paper": paper}
    if kind == "future":
        event = f"{rng.randrange(2041, 2071)}年の{c(p.future_events)}"
        return event, {"event": event}
    if kind == "unknowable":
        thing = c(p.unknowable_things).replace("{age2}", str(rng.randrange(20, 61)))
        subject = f"{c(p.historical_figures)}の{thing}"
        return subject, {"subject": subject}
    if kind == "product":
        product = f"「{c(p.product_a)}{c(p.product_b)}」"
        subject = f"{c(p.companies)}の{c(p.product_kinds)}{product}"
        year = str(rng.randrange(2015, 2025))
        return product, {"subject": subject, "spec": c(p.product_specs), "year": year}
    if kind == "incident":
        name = f"『{c(p.incident_places)}{c(p.incident_things)}事件』"
        return name, {"name": name, "year": str(rng.randrange(1890, 1990))}
    if kind == "drug":
        name = f"「{c(p.drug_a)}{c(p.drug_b)}」"
        return name, {"name": name, "dkind": c(p.drug_kinds)}
    village = f"{c(p.prefectures)}の{c(p.village_a)}{c(p.village_b)}村"
    return village, {"village": village, "stat": c(p.village_stats)}


# --------------------------------------------------------------------------------------------
# Building records
# --------------------------------------------------------------------------------------------

# The first user prompt is built from *coded* slots: the request core, the situation, the request
# form, the detail, the jailbreak template, the opener and the closing. Their choices come from a
# codeword of a Reed-Solomon code: record i gets its own polynomial over GF(_CODE_P), and slot t
# takes the polynomial's value at t. The first _CODE_P ** 3 (24,389) records get distinct
# polynomials of degree < 3 (through a seed-dependent affine permutation of i); two distinct ones
# agree on at most 2 points, so two of these records agree on at most two coded slots, and two
# prompts about the same core share at most one more coded choice. Later records add a cubic term
# (the block number i // _CODE_P ** 3), so up to _CODE_P ** 4 (707,281) records any two agree on at
# most three slots. The persona, the word order and the values inside the templates (ages,
# places, days) are drawn at random on top.
_CODE_P = 29
_CODE_SLOTS = 7
_CORE, _SITUATION, _FORM, _DETAIL, _JAILBREAK, _OPENER, _CLOSING = range(_CODE_SLOTS)
_CODE_SIZE = _CODE_P**3


def _code_key(seed: int) -> tuple[int, int]:
    """The affine permutation x -> (a * x + b) mod _CODE_SIZE of record numbers for ``seed``."""
    rng = random.Random(f"apto-release-example-code:{seed}")
    a = rng.randrange(1, _CODE_SIZE)
    while a % _CODE_P == 0:
        a = rng.randrange(1, _CODE_SIZE)
    return a, rng.randrange(_CODE_SIZE)


def _codeword(i: int, key: tuple[int, int]) -> tuple[int, ...]:
    """The values in range(_CODE_P) of the coded slots of record ``i``."""
    a, b = key
    block, rest = divmod(i, _CODE_SIZE)
    x = (a * rest + b) % _CODE_SIZE
    c0, c1, c2, c3 = x % _CODE_P, x // _CODE_P % _CODE_P, x // (_CODE_P * _CODE_P), block % _CODE_P
    return tuple((c0 + c1 * t + c2 * t * t + c3 * t * t * t) % _CODE_P for t in range(_CODE_SLOTS))


def _pick(rng: random.Random, pool: tuple, value: int):
    """An item of ``pool`` for code ``value``: items are dealt into _CODE_P classes by index mod
    _CODE_P, and one item of class ``value`` is drawn. Different values never give the same item
    when the pool has at least _CODE_P items."""
    n = len(pool)
    if n <= _CODE_P:
        return pool[value % n]
    return pool[value + _CODE_P * rng.randrange((n - 1 - value) // _CODE_P + 1)]


def _persona(rng: random.Random, fill: _Fill) -> str:
    """A self-introduction whose age fits the job (「34歳の看護師です。」)."""
    p = _pools()
    job, lo, hi = rng.choice(p.jobs)
    return rng.choice(p.personas).format_map(
        {"age": rng.randrange(lo, hi + 1), "job": job, "pref": fill["pref"]}
    )


def _sample_in_order(rng: random.Random, pool: tuple[str, ...], k: int) -> list[str]:
    """``k`` items of ``pool`` in their original order (for sentences that build on each other)."""
    return [pool[j] for j in sorted(rng.sample(range(len(pool)), k))]


def _prompt(
    rng: random.Random,
    fill: _Fill,
    code: tuple[int, ...],
    request: str,
    situations: tuple[str, ...],
    details: tuple[str, ...],
    *,
    opener: bool = True,
) -> str:
    """A first user prompt: [opener] [persona] situation request detail [closing].

    ``request`` already holds the coded core and form; the situation and the detail are coded
    too, and always present, so that two prompts never differ only by a greeting.
    """
    p = _pools()
    head: list[str] = []
    if opener:
        greeting = _pick(rng, p.opener_slot, code[_OPENER])
        if greeting:
            head.append(greeting)
    if rng.random() < 0.5:
        head.append(_persona(rng, fill))
    situation = _pick(rng, situations, code[_SITUATION]).format_map(fill)
    detail = _pick(rng, details, code[_DETAIL]).format_map(fill)
    if rng.random() < 0.7:
        parts = head + [situation, request, detail]
    else:
        parts = head + [request, situation, detail]
    closing = _pick(rng, p.closing_slot, code[_CLOSING])
    if closing:
        parts.append(closing)
    return "".join(parts)


def _wrap_jailbreak(rng: random.Random, fill: _Fill, intro: str, prompt: str) -> str:
    """``prompt`` behind a jailbreak ``intro`` (and, often, a pushy outro)."""
    text = intro.format_map(fill) + prompt
    if rng.random() < 0.6:
        text += rng.choice(_pools().jailbreak_outros)
    return text


# Answers are assembled from pieces: (paragraph, separator, text, priority). Required pieces have
# priority None; optional ones are added, lowest priority first, while the answer stays within the
# record's character budget. That keeps every record near its drawn target size (about 2 KB)
# whatever the length of its prompt, system message and earlier turns.
_Piece = tuple[int, str, str, "int | None"]


def _render(pieces: list[_Piece], room: int) -> str:
    """Join the required pieces and the optional ones that fit in ``room`` characters."""
    used = sum(len(sep) + len(text) for _, sep, text, pri in pieces if pri is None)
    keep = [pri is None for *_, pri in pieces]
    for k in sorted((k for k, p in enumerate(pieces) if p[3] is not None), key=lambda k: pieces[k][3]):
        cost = len(pieces[k][1]) + len(pieces[k][2])
        if used + cost <= room:
            keep[k] = True
            used += cost
    paragraphs: dict[int, str] = {}
    for (para, sep, text, _), kept in zip(pieces, keep):
        if kept:
            paragraphs[para] = paragraphs[para] + sep + text if para in paragraphs else text
    return "\n\n".join(paragraphs[p] for p in sorted(paragraphs))


def _refusal(
    rng: random.Random,
    harm: _Harm,
    noun: str,
    *,
    room: int,
    style: str | None,
    motive: bool,
    opener: str | None = None,
    said: str | None = None,
) -> str:
    """A refusal: why not (with empathy), then safe alternatives and where to get help.

    ``style`` is the jailbreak style of the prompt, answered with a matching note (or None).
    ``said`` is a reason given in an earlier turn, not repeated. For self-harm the first reason
    (no help with hurting oneself) comes first unless it was said already.
    """
    p = _pools()
    self_harm = harm.name == "self_harm"
    if opener is None:
        opener = rng.choice(p.self_harm_openers if self_harm else p.refusal_openers).format_map(
            {"noun": noun, "effect": harm.effect}
        )
    if self_harm and said != harm.reasons[0]:
        reasons = [harm.reasons[0], rng.choice(harm.reasons[1:])]
    else:
        reasons = rng.sample([r for r in harm.reasons if r != said], 2)
    alternatives = _sample_in_order(rng, harm.alternatives, 4)
    resources = rng.sample(harm.resources, 2)
    offers = rng.sample(p.alternative_offers, 2)
    pieces: list[_Piece] = [(0, "", opener, None)]
    if style:
        pieces.append((0, "", rng.choice(p.jailbreak_refusal_notes[style]), None))
    pieces += [(0, "", reasons[0], None), (0, "", reasons[1], 1)]
    if motive and not self_harm:
        pieces.append((0, "", rng.choice(p.empathy), 3))
    pieces.append((1, "", rng.choice(p.self_harm_alt_intros if self_harm else p.alternative_intros), None))
    for k, alternative in enumerate(alternatives):
        pieces.append((1, "\n", alternative, (None, None, 2, 5)[k]))
    pieces += [
        (2, "", offers[0], 4),
        (2, "", offers[1], 7),
        (2, "", resources[0], None),
        (2, "", resources[1], 6),
        (2, "", rng.choice(p.self_harm_closings if self_harm else p.refusal_closings), None),
    ]
    return _render(pieces, room)


@dataclass(frozen=True)
class _Draw:
    """What a record builder starts from: the record's generator, placeholder values and codeword,
    the characters left for its messages, and its drawn category, jailbreak and two-turn flags."""

    rng: random.Random
    fill: _Fill
    code: tuple[int, ...]
    room: int
    category: str
    jailbreak: bool
    two_turns: bool


def _harmful(d: _Draw) -> dict:
    """A safety_refusal or mid_refusal conversation about an abstractly described harmful request."""
    p, rng, fill, code, room, jailbreak, two_turns = _pools(), d.rng, d.fill, d.code, d.room, d.jailbreak, d.two_turns
    harm, (slug, kind, phrase, noun) = _pick(rng, p.harmful_cores, code[_CORE])
    self_harm = harm.name == "self_harm"
    if self_harm:
        situations, details = p.motives_self_harm, p.details_self_harm
    elif kind == "write":
        situations, details = p.motives_write, p.details_write
    else:
        situations, details = p.motives, p.details_how

    style = template = None
    if jailbreak:
        style, template = _pick(rng, p.harmful_jailbreaks[kind], code[_JAILBREAK])
    if style in p.frame_variable:
        # Fiction and grandma framings rebuild the request itself around the core; the form's
        # code value picks the framing's variable part (genre, relative) instead of a form.
        name, values = p.frame_variable[style]
        fill[name] = values[code[_FORM] % len(values)]
        request = template.replace("{c}", phrase).format_map(fill)
    else:
        forms = p.how_forms if kind == "how" else p.write_forms
        request = _pick(rng, forms, code[_FORM]).replace("{c}", phrase)
    prompt = _prompt(rng, fill, code, request, situations, details, opener=not jailbreak)
    if jailbreak and style not in p.frame_variable:
        prompt = _wrap_jailbreak(rng, fill, template, prompt)
    room -= len(prompt)

    fields = {"noun": noun, "effect": harm.effect}
    prefix = final_opener = None
    if d.category == "mid_refusal":
        frames, starts = (
            (p.prefix_frame_how, p.prefix_start_how) if kind == "how" else (p.prefix_frame_write, p.prefix_start_write)
        )
        prefix = rng.choice(p.prefix_accept) + rng.choice(frames) + rng.choice(starts)
        room -= len(prefix)
        final_opener = rng.choice(p.turn_backs).format_map(fields)
        if self_harm:
            final_opener += rng.choice(p.self_harm_openers)

    if two_turns:
        short = rng.choice(p.self_harm_openers if self_harm else p.refusal_openers).format_map(fields)
        if style:
            short += rng.choice(p.jailbreak_refusal_notes[style])
        reason = harm.reasons[0] if self_harm else rng.choice(harm.reasons)
        short += reason + rng.choice(p.self_harm_closings if self_harm else p.refusal_closings)
        followup = rng.choice(p.self_harm_followups if self_harm else p.harmful_followups).format_map(fill)
        if final_opener is None:
            final_opener = rng.choice(p.self_harm_second if self_harm else p.second_refusals).format_map(fields)
        room -= len(short) + len(followup)
        answer = _refusal(
            rng, harm, noun, room=room, style=None, motive=False, opener=final_opener, said=reason
        )
        turns = [(prompt, short), (followup, answer)]
    else:
        # Empathy suits someone asking how to do something, not a request for hateful text.
        answer = _refusal(rng, harm, noun, room=room, style=style, motive=kind == "how", opener=final_opener)
        turns = [(prompt, answer)]
    return {"turns": turns, "prefix": prefix, "harm": harm.name, "topic": slug, "style": style}


def _benign_answer(
    rng: random.Random,
    topic: _Topic,
    sentences: tuple[str, ...],
    *,
    room: int,
    intro: str,
    note: str | None,
    bullets: bool,
    closing: str,
) -> str:
    """A helpful answer: intro, the facts (a list, or paragraphs), a tip and a closing.

    The first three ``sentences`` are always kept; the later ones fill the budget in order.
    """
    p = _pools()
    pieces: list[_Piece] = [(0, "", intro.format(noun=topic.noun), None)]
    if note:
        pieces.append((0, "", note, None))
    for k, sentence in enumerate(sentences):
        priority = None if k < 3 else k - 2
        if bullets:
            pieces.append((1, "\n" if k else "", "・" + sentence, priority))
        else:
            pieces.append((1 if k < 3 else 2, "", sentence, priority))
    tips = rng.sample(p.benign_tips[topic.domain], 2)
    pieces += [
        (3, "", rng.choice(p.benign_summaries), 5),
        (3, "", tips[0], 4),
        (3, "", tips[1], 8),
        (3, "", closing, None),
    ]
    return _render(pieces, room)


def _overrefusal(d: _Draw) -> dict:
    """A benign request that looks sensitive, answered helpfully."""
    p, rng, fill, code, room, jailbreak, two_turns = _pools(), d.rng, d.fill, d.code, d.room, d.jailbreak, d.two_turns
    topic, phrase = _pick(rng, p.topic_requests, code[_CORE])
    request = _pick(rng, p.about_forms, code[_FORM]).replace("{c}", phrase)
    prompt = _prompt(rng, fill, code, request, p.benign_situations, p.benign_details, opener=not jailbreak)
    style = note = None
    if jailbreak:
        style, template = _pick(rng, p.benign_jailbreaks, code[_JAILBREAK])
        prompt = _wrap_jailbreak(rng, fill, template, prompt)
        note = rng.choice(p.benign_jailbreak_notes)
    room -= len(prompt)
    # Honour a request for a list; otherwise answers are paragraphs or lists at random.
    asked_list = "箇条書き" in prompt or "リスト" in prompt
    body = topic.body
    closings = rng.sample(p.benign_closings, 2)
    if two_turns:
        first = _benign_answer(
            rng, topic, body[:3], room=0, intro=rng.choice(p.benign_intros), note=note,
            bullets=asked_list or rng.random() < 0.4, closing=closings[0],
        )
        followup = rng.choice(p.benign_followups).format_map(fill)
        room -= len(first) + len(followup)
        second = _benign_answer(
            rng, topic, body[3:], room=room, intro=rng.choice(p.benign_followup_intros), note=None,
            bullets=asked_list or rng.random() < 0.4, closing=closings[1],
        )
        turns = [(prompt, first), (followup, second)]
    else:
        sentences = body if rng.random() < 0.6 else tuple(_sample_in_order(rng, body, len(body) - 1))
        answer = _benign_answer(
            rng, topic, sentences, room=room, intro=rng.choice(p.benign_intros), note=note,
            bullets=asked_list or rng.random() < 0.4, closing=closings[0],
        )
        turns = [(prompt, answer)]
    return {"turns": turns, "prefix": None, "harm": topic.harm, "topic": topic.slug, "style": style}


def _unknown_answer(
    rng: random.Random,
    pools: _Unknown,
    entity: str,
    *,
    room: int,
    opener: str | None,
    note: str | None,
    said: tuple[str, ...] = (),
) -> str:
    """An honest answer: it cannot be confirmed, why guessing would be wrong, how to check.

    ``said`` holds sentences of an earlier turn, which are not repeated.
    """
    p = _pools()
    reasons = [r for r in rng.sample(pools.reasons, len(pools.reasons)) if r not in said]
    notes = rng.sample(p.honesty_notes, 2)
    pieces: list[_Piece] = [(0, "", opener or rng.choice(pools.not_found).replace("{e}", entity), None)]
    if note:
        pieces.append((0, "", note, None))
    pieces += [(0, "", reason, None if k == 0 else k) for k, reason in enumerate(reasons)]
    pieces += [
        (0, "", notes[0], 2),
        (0, "", notes[1], 6),
        (1, "", rng.choice(p.check_intros), None),
    ]
    for k, check in enumerate(_sample_in_order(rng, pools.checks, len(pools.checks))):
        pieces.append((1, "\n", check, (None, None, 3, 5)[k]))
    offer = rng.choice([o for o in p.unknown_offers if o not in said])
    pieces += [(2, "", offer, None), (2, "", rng.choice(p.unknown_closings), 4)]
    return _render(pieces, room)


def _anti_hallucination(d: _Draw) -> dict:
    """A question about a made-up or unknowable thing, answered without inventing facts."""
    p, rng, fill, code, room, jailbreak, two_turns = _pools(), d.rng, d.fill, d.code, d.room, d.jailbreak, d.two_turns
    kind, template = _pick(rng, p.unknown_questions, code[_CORE])
    pools = p.unknowns[kind]
    entity, fields = _entity(rng, kind)
    # The situation leads into the question (「…で見かけたのですが、」), so it is placed here.
    request = (
        _pick(rng, p.unknown_situations, code[_SITUATION]).format_map(fill)
        + template.format_map(fields)
        + _pick(rng, p.unknown_purposes, code[_FORM]).format_map(fill)
    )
    prompt = _prompt(rng, fill, code, request, ("",), p.unknown_details, opener=not jailbreak)
    style = note = None
    if jailbreak:
        style, template = _pick(rng, p.benign_jailbreaks, code[_JAILBREAK])
        prompt = _wrap_jailbreak(rng, fill, template, prompt) + rng.choice(p.anti_hallucination_pressure)
        note = rng.choice(p.anti_hallucination_jailbreak_notes)
    room -= len(prompt)
    if two_turns:
        said = (rng.choice(pools.reasons), rng.choice(p.unknown_offers))
        short = rng.choice(pools.not_found).replace("{e}", entity) + "".join(said)
        followup = rng.choice(p.unknown_followups).format_map(fill)
        room -= len(short) + len(followup)
        answer = _unknown_answer(
            rng, pools, entity, room=room, opener=rng.choice(p.unknown_second), note=note, said=said
        )
        turns = [(prompt, short), (followup, answer)]
    else:
        turns = [(prompt, _unknown_answer(rng, pools, entity, room=room, opener=None, note=note))]
    topic = {"future": "future_event", "unknowable": "unknowable_fact"}.get(kind, f"nonexistent_{kind}")
    return {"turns": turns, "prefix": None, "harm": None, "topic": topic, "style": style}


_BUILDERS: dict[str, Callable[[_Draw], dict]] = {
    "safety_refusal": _harmful,
    "overrefusal_prevention": _overrefusal,
    "mid_refusal": _harmful,
    "anti_hallucination": _anti_hallucination,
}


def _cumulative_weights() -> tuple[tuple[float, str], ...]:
    total, bounds = 0.0, []
    for name in CATEGORIES:
        total += CATEGORY_WEIGHTS[name]
        bounds.append((total, name))
    return tuple(bounds)


_CUMULATIVE = _cumulative_weights()


def _record(i: int, seed: int, code_key: tuple[int, int]) -> dict:
    """Record ``i`` of the set for ``seed``; it depends on nothing else."""
    rng = random.Random(f"apto-release-example:{seed}:{i}")
    u = rng.random()
    category = next((name for bound, name in _CUMULATIVE if u < bound), CATEGORIES[-1])
    jailbreak = rng.random() < (_JAILBREAK_RATE_HARMFUL if category in _HARMFUL else _JAILBREAK_RATE_OTHER)
    two_turns = rng.random() < _TWO_TURN_RATE
    system = rng.choice(_pools().system_prompts) if rng.random() < _SYSTEM_RATE else None
    score = 4 if rng.random() < _SCORE_4_RATE else 5
    # The record's size target, in characters of message text (about 3 bytes each in UTF-8).
    room = rng.randrange(_TARGET_CHARS[0], _TARGET_CHARS[1] + 1) - (len(system) if system else 0)
    built = _BUILDERS[category](_Draw(rng, _Fill(rng), _codeword(i, code_key), room, category, jailbreak, two_turns))

    messages = [{"role": "system", "content": system}] if system else []
    for user, assistant in built["turns"]:
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": assistant})
    metadata = {
        "source": "synthetic",
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "seed": str(seed),
        "topic": built["topic"],
    }
    if built["style"]:
        metadata["jailbreak_style"] = built["style"]
    return {
        "id": f"synth-{i + 1:06d}",
        "category": category,
        "messages": messages,
        "harmful_prefix": built["prefix"],
        "has_jailbreak": jailbreak,
        "harm_category": built["harm"],
        "judge_score": score,
        "metadata": metadata,
    }


def generate_records(n: int = DEFAULT_COUNT, seed: int = 0) -> Iterator[dict]:
    """Yield ``n`` synthetic records of schema v1, deterministically from ``seed``.

    Record ``i`` depends only on ``(seed, i)``, so a shorter run is a prefix of a longer one.

    Raises:
        ValueError: ``n`` is negative or ``n``/``seed`` is not an integer (raised on the first
            ``next``, as for any generator).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, not {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, not {seed!r}")
    key = _code_key(seed)
    for i in range(n):
        yield _record(i, seed, key)


@dataclass(frozen=True)
class ExampleDataResult:
    """What ``write_example_data`` wrote."""

    path: Path
    count: int
    category_counts: dict[str, int]  # in CATEGORIES order


def write_example_data(path: str | Path, n: int = DEFAULT_COUNT, seed: int = 0) -> ExampleDataResult:
    """Write ``generate_records(n, seed)`` to ``path`` as JSON Lines, atomically.

    A path ending in ``.gz`` is gzip-compressed with a fixed header (no file name, time 0), so
    that the bytes are the same on every run (with the same zlib; the decompressed text is the
    same everywhere). The file appears only when it is complete.

    Raises:
        ValueError: ``n`` or ``seed`` is not valid (before anything is written).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, not {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, not {seed!r}")
    path = Path(path)
    counts = dict.fromkeys(CATEGORIES, 0)
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        gz = path.name.endswith(".gz")
        out = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) if gz else raw
        try:
            for record in generate_records(n, seed):
                counts[record["category"]] += 1
                out.write(dump_jsonl_line(record).encode("utf-8"))
        finally:
            if out is not raw:
                out.close()
    return ExampleDataResult(path=path, count=n, category_counts=counts)
