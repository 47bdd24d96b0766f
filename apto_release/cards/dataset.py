"""The dataset card (``README.md``) of a release folder: YAML metadata and a bilingual body.

The YAML front matter is a ``huggingface_hub.DatasetCardData``: language, licence, task, tags,
the size bucket, the ``configs`` that tell the Hub and ``datasets.load_dataset`` which Parquet
files make up which config, the ``dataset_info`` of every config (features, split sizes, written
with ``datasets``' own serializer so that ``load_dataset`` accepts it) and the Hub's gating form
(``extra_gated_prompt``, ``extra_gated_fields``). The body is the Jinja2 template
``dataset_cards/README.md.j2``, in Japanese and in English.

Nothing heavy is imported at module level: ``datasets`` and ``huggingface_hub`` are imported by
the functions that need them.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from apto_release import schema
from apto_release.errors import UsageError

TEMPLATE_NAME = "README.md.j2"

DEFAULT_GATED_PROMPT = (
    "このデータセットには、安全性の研究・評価のために作成された有害な依頼文（攻撃プロンプト）が含まれます。"
    "利用は研究および安全性評価の目的に限られ、有害なモデルの学習や、データの再配布・転載は禁止します。"
    "以下の情報を入力し、利用条件に同意してください。\n\n"
    "This dataset contains harmful requests (attack prompts) written for safety research and evaluation. "
    "It may be used only for research and safety evaluation; training models to be harmful and "
    "redistributing or republishing the data are prohibited. Please fill in the form below and agree "
    "to these terms."
)

DEFAULT_GATED_FIELDS: dict[str, Any] = {
    "Name / 氏名": "text",
    "Affiliation / 所属": "text",
    "Country / 国・地域": "country",
    "Intended use / 利用目的": {
        "type": "select",
        "options": [
            "Safety research / 安全性の研究",
            "Safety evaluation of models / モデルの安全性評価",
            "Safety alignment (SFT) of models / モデルの安全性アライメント（SFT）",
            "Education / 教育",
            {"label": "Other / その他", "value": "other"},
        ],
    },
    "I agree to use this dataset only for research and safety evaluation / "
    "研究・安全性評価の目的に限って利用することに同意します": "checkbox",
}

DEFAULT_TAGS: tuple[str, ...] = (
    "safety",
    "alignment",
    "red-teaming",
    "japanese",
    "sft",
    "refusal",
    "over-refusal",
    "hallucination",
    "llm-safety",
)

#: The Hub's size buckets: (upper bound exclusive, label); anything larger is ``n>1T``.
SIZE_BUCKETS: tuple[tuple[int, str], ...] = (
    (10**3, "n<1K"),
    (10**4, "1K<n<10K"),
    (10**5, "10K<n<100K"),
    (10**6, "100K<n<1M"),
    (10**7, "1M<n<10M"),
    (10**8, "10M<n<100M"),
    (10**9, "100M<n<1B"),
    (10**10, "1B<n<10B"),
    (10**11, "10B<n<100B"),
    (10**12, "100B<n<1T"),
)
SIZE_LARGEST = "n>1T"

#: What each category teaches, in both languages (the card explains them in this order).
CATEGORY_TEXT: dict[str, dict[str, str]] = {
    "safety_refusal": {
        "ja": "有害な依頼に対して、理由を簡潔に示して断り、可能な範囲で安全な代替案（一般的な安全情報、相談窓口など）を示す応答。",
        "en": "A harmful request answered with a refusal that briefly says why and, where possible, "
        "offers a safe alternative (general safety information, where to get help).",
    },
    "overrefusal_prevention": {
        "ja": "一見センシティブに見えるが実際には無害な依頼（医療・法律・歴史・防犯の知識など）に対して、断らずに役立つ回答をする応答。過剰拒否を防ぐためのデータです。",
        "en": "A benign request that only looks sensitive (medicine, law, history, crime prevention, ...) "
        "answered helpfully instead of refused, to prevent over-refusal.",
    },
    "mid_refusal": {
        "ja": "有害な依頼と、有害な回答の書き出し（`harmful_prefix`）を与え、最終応答がその途中から方向転換して断る応答。Decoupled Refusal Training（DeRTa）の考え方に基づき、回答の途中からでも安全な応答に戻れるように学習させます。",
        "en": "A harmful request together with the start of an unsafe answer (`harmful_prefix`); the final "
        "answer turns back from it and refuses. Following Decoupled Refusal Training (DeRTa), this teaches "
        "the model to recover a safe answer at any point of a response.",
    },
    "anti_hallucination": {
        "ja": "存在しない事物や、知り得ない事柄についての質問に対して、もっともらしい作り話をせず、分からないことを正直に伝える応答。",
        "en": "A question about something that does not exist or cannot be known, answered with honest "
        "uncertainty instead of a plausible invention.",
    },
}


@dataclass(frozen=True)
class CardOptions:
    """What the dataset card says about the release (everything else comes from the data)."""

    #: The Hub repository, used in the loading examples and the citation.
    repo_id: str = "apto/japanese-safety-sft-sample"
    pretty_name: str = "Apto Japanese Safety SFT (sample)"
    #: A Hub licence identifier.
    license: str = "cc-by-nc-sa-4.0"
    version: str = "0.1.0"
    #: The text above the Hub's access form; None leaves it out of the card.
    gated_prompt: str | None = DEFAULT_GATED_PROMPT
    #: The Hub's ``extra_gated_fields`` (label → type, or → {"type": "select", "options": [...]});
    #: empty leaves it out of the card.
    gated_fields: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_GATED_FIELDS))
    tags: tuple[str, ...] = DEFAULT_TAGS
    #: Extra paragraphs after the summary, in Japanese and in English (Markdown; optional).
    description_ja: str | None = None
    description_en: str | None = None
    #: BibTeX: key, author list (BibTeX syntax) and year (None: the current year).
    citation_key: str = "apto_japanese_safety_sft"
    citation_authors: str = "{Apto}"
    citation_year: int | None = None
    #: Where to ask questions or report problems (optional).
    contact: str | None = None
    #: How the annotations (category, has_jailbreak, harm_category, judge_score) and the text
    #: were made, in the Hub's terms: the prompts, labels and exemplary answers were written by
    #: people who know the policies; the harmful prefixes come from model answers and the judge
    #: scores from an LLM judge (checked by people). See the README's dataset section.
    annotations_creators: tuple[str, ...] = ("expert-generated", "machine-generated")
    language_creators: tuple[str, ...] = ("expert-generated", "machine-generated")
    #: Rows of the card's provenance table (item, value): the hashes and versions that lead
    #: back to what the release was cut from; empty leaves the section out.
    provenance: tuple[tuple[str, str], ...] = ()


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket of ``n`` rows.

    A bucket's lower bound is inclusive: 999 is ``n<1K``, 1,000 is ``1K<n<10K``.
    """
    if n < 0:
        raise ValueError(f"a row count cannot be negative: {n}")
    for upper, label in SIZE_BUCKETS:
        if n < upper:
            return label
    return SIZE_LARGEST


def config_names(categories_present: Sequence[str]) -> list[str]:
    """``default`` and the present categories, in the fixed category order."""
    present = set(categories_present)
    return ["default"] + [c for c in schema.CATEGORIES if c in present]


def configs_metadata(categories_present: Sequence[str]) -> list[dict[str, Any]]:
    """The ``configs`` YAML field: ``default`` over every file, then one config per category."""
    configs: list[dict[str, Any]] = [
        {
            "config_name": "default",
            "default": True,
            "data_files": [{"split": "train", "path": "data/*/*.parquet"}],
        }
    ]
    for name in config_names(categories_present)[1:]:
        configs.append({"config_name": name, "data_files": [{"split": "train", "path": f"data/{name}/*.parquet"}]})
    return configs


# --- the distribution table -------------------------------------------------------------------


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise UsageError(
            f"the distribution report has no {key!r} in {where}",
            hint="pass the distribution.json written by 'apto-release sample'",
        )
    return mapping[key]


def distribution_context(
    rows_per_category: Mapping[str, int], distribution: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What the template needs for the distribution table.

    With a sampler report: per category the full-set count and share, the sample's count and share
    and the difference in points, plus the total variation distance. The report must describe
    this very sample: its per-category sample counts must equal ``rows_per_category``.
    Without one: the count and share of each category in the records themselves.
    """
    total = sum(rows_per_category.values())
    if distribution is None:
        rows = [
            {"category": c, "count": n, "percent": 100.0 * n / total if total else 0.0}
            for c, n in rows_per_category.items()
            if n
        ]
        return {"kind": "own", "total": total, "rows": rows}

    categories = _require(distribution, "categories", "the report")
    if not isinstance(categories, Sequence) or isinstance(categories, (str, bytes)):
        raise UsageError("the distribution report's 'categories' is not a list")
    rows = []
    for i, entry in enumerate(categories):
        where = f"categories[{i}]"
        name = _require(entry, "category", where)
        rows.append({
            "category": name,
            "full_count": int(_require(entry, "full_count", where)),
            "full_percent": 100.0 * float(_require(entry, "full_share", where)),
            "sample_count": int(_require(entry, "sample_count", where)),
            "sample_percent": 100.0 * float(_require(entry, "sample_share", where)),
            "diff_points": float(_require(entry, "diff_points", where)),
        })
    order = {c: i for i, c in enumerate(schema.CATEGORIES)}
    rows.sort(key=lambda r: (order.get(r["category"], len(order)), str(r["category"])))

    reported = {r["category"]: r["sample_count"] for r in rows if r["sample_count"]}
    actual = {c: n for c, n in rows_per_category.items() if n}
    if reported != actual:
        raise UsageError(
            f"the distribution report does not describe these records: it counts {reported} "
            f"per category in the sample, the records have {actual}",
            hint="pass the distribution.json written together with this sample",
        )
    full_count = int(_require(distribution, "full_count", "the report"))
    sample_count = int(_require(distribution, "sample_count", "the report"))
    tvd = distribution.get("total_variation_distance")
    if tvd is None:
        tvd = 0.5 * sum(abs(r["sample_percent"] - r["full_percent"]) for r in rows) / 100.0
    max_diff = distribution.get("max_abs_diff_points")
    if max_diff is None:
        max_diff = max((abs(r["diff_points"]) for r in rows), default=0.0)
    return {
        "kind": "sample",
        "full_count": full_count,
        "sample_count": sample_count,
        "seed": distribution.get("seed"),
        "by": list(distribution.get("by") or ["category"]),
        "rows": rows,
        "total_variation_distance": float(tvd),
        "max_abs_diff_points": float(max_diff),
    }


# --- the YAML metadata ------------------------------------------------------------------------


def card_data(
    rows_per_category: Mapping[str, int],
    *,
    options: CardOptions = CardOptions(),
    features=None,
    split_sizes: Mapping[str, Mapping[str, int]] | None = None,
):
    """The ``huggingface_hub.DatasetCardData`` of the release.

    ``split_sizes`` maps each config name to ``{"num_examples", "num_bytes", "download_size"}``
    of its ``train`` split; with ``features`` (a ``datasets.Features``) it becomes the
    ``dataset_info`` field. Without them the card has no ``dataset_info`` (the Hub and
    ``datasets`` then infer it).
    """
    from huggingface_hub import DatasetCardData

    total = sum(rows_per_category.values())
    present = [c for c in schema.CATEGORIES if rows_per_category.get(c)]
    extra: dict[str, Any] = {}
    if options.gated_prompt:
        extra["extra_gated_prompt"] = options.gated_prompt
    if options.gated_fields:
        extra["extra_gated_fields"] = dict(options.gated_fields)
    data = DatasetCardData(
        pretty_name=options.pretty_name,
        language=["ja"],
        license=options.license,
        annotations_creators=list(options.annotations_creators),
        language_creators=list(options.language_creators),
        multilinguality=["monolingual"],
        source_datasets=["original"],
        task_categories=["text-generation"],
        # multi-turn chats to fine-tune a chat model on (huggingface.js' text-generation subtasks)
        task_ids=["dialogue-modeling"],
        size_categories=[size_category(total)],
        tags=list(options.tags),
        **extra,
        configs=configs_metadata(present),
    )
    if features is not None and split_sizes is not None:
        from datasets import DatasetInfo, SplitDict, SplitInfo
        from datasets.info import DatasetInfosDict

        infos = DatasetInfosDict()
        for name in config_names(present):
            sizes = split_sizes[name]
            splits = SplitDict()
            splits.add(SplitInfo(name="train", num_bytes=int(sizes["num_bytes"]), num_examples=int(sizes["num_examples"])))
            infos[name] = DatasetInfo(
                features=features,
                splits=splits,
                download_size=int(sizes["download_size"]),
                dataset_size=int(sizes["num_bytes"]),
            )
        infos.to_dataset_card_data(data)
    return data


# --- the body ---------------------------------------------------------------------------------

_TYPE_TEXT = {
    "id": ("string", "文字列"),
    "category": ("ClassLabel (4 names)", "ClassLabel（4 値）"),
    "messages": ("list of {role: string, content: string}", "{role: 文字列, content: 文字列} のリスト"),
    "harmful_prefix": ("string, nullable", "文字列または null"),
    "has_jailbreak": ("bool", "真偽値"),
    "harm_category": ("string, nullable", "文字列または null"),
    "judge_score": ("int8", "int8"),
    "metadata": ("struct of strings (each nullable)", "文字列の struct（各キー null 可）"),
}


#: The template's own filters: shares and differences in points.
_FILTERS = {"pct": lambda x: f"{float(x):.2f}", "signed": lambda x: f"{float(x) + 0.0:+.2f}"}


def render_dataset_card(
    rows_per_category: Mapping[str, int],
    *,
    options: CardOptions = CardOptions(),
    distribution: Mapping[str, Any] | None = None,
    metadata_keys: Sequence[str] = (),
    features=None,
    split_sizes: Mapping[str, Mapping[str, int]] | None = None,
) -> str:
    """The text of ``README.md``: YAML front matter (see ``card_data``), then the bilingual body.

    ``rows_per_category`` is the number of records per category (categories with no record get
    no config); ``distribution`` the sampler's report (see ``distribution_context``);
    ``metadata_keys`` the fields of the ``metadata`` struct (empty: no such column).

    Raises:
        UsageError: ``distribution`` is malformed or describes other records.
    """
    counts = {c: int(rows_per_category.get(c, 0)) for c in schema.CATEGORIES}
    unknown = sorted(set(rows_per_category) - set(schema.CATEGORIES))
    if unknown:
        raise UsageError(f"unknown categories: {', '.join(unknown)}", hint=f"use {', '.join(schema.CATEGORIES)}")
    total = sum(counts.values())
    present = [c for c in schema.CATEGORIES if counts[c]]
    data = card_data(counts, options=options, features=features, split_sizes=split_sizes)

    fields = ["id", "category", "messages", "harmful_prefix", "has_jailbreak", "harm_category", "judge_score"]
    if metadata_keys:
        fields.append("metadata")
    context = {
        "card_data": data.to_yaml(),
        "options": options,
        "repo_id": options.repo_id,
        "pretty_name": options.pretty_name,
        "total": total,
        "size_category": size_category(total),
        "categories": [
            {"name": c, "count": counts[c], "ja": CATEGORY_TEXT[c]["ja"], "en": CATEGORY_TEXT[c]["en"]}
            for c in schema.CATEGORIES
        ],
        "present": present,
        "configs": [{"name": n, "count": total if n == "default" else counts[n]} for n in config_names(present)],
        "distribution": distribution_context(counts, distribution),
        "fields": [{"name": f, "type_en": _TYPE_TEXT[f][0], "type_ja": _TYPE_TEXT[f][1]} for f in fields],
        "metadata_keys": list(metadata_keys),
        "category_names": list(schema.CATEGORIES),
        "judge_min": schema.JUDGE_SCORE_MIN,
        "judge_max": schema.JUDGE_SCORE_MAX,
        "judge_gate": schema.DEFAULT_MIN_JUDGE_SCORE,
        "max_turns": schema.MAX_TURNS,
        "year": options.citation_year or datetime.datetime.now(datetime.timezone.utc).year,
        "gated": bool(options.gated_prompt or options.gated_fields),
    }
    from apto_release.cards.templates import render

    return render("dataset_cards", TEMPLATE_NAME, context, _FILTERS)
