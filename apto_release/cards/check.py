"""The offline check of a card's text: the one reader of a card's YAML header, and what each kind needs.

``check_card`` checks a model, adapter or GGUF card before it is written (``cards.model``);
``check_card_text`` is the push's check of any card it uploads, a dataset card included
(``check_dataset_card``: the Hub's dataset fields and their accepted values, the size bucket of the
row count). All return a list of problems (empty: fine) instead of raising.

Nothing heavy is imported at module level: ``yaml`` and ``huggingface_hub`` are imported by the
functions that need them.
"""

from __future__ import annotations

import re
from typing import Any

KINDS = ("model", "adapter", "gguf")

#: Keys each kind of card must have in its YAML metadata.
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("base_model", "base_model_relation", "library_name", "pipeline_tag", "language", "license", "tags"),
    "adapter": ("base_model", "base_model_relation", "library_name", "pipeline_tag", "language", "license", "tags"),
    "gguf": ("base_model", "base_model_relation", "pipeline_tag", "language", "license", "tags"),
}
#: Values the metadata of each kind must have.
EXPECTED_VALUES: dict[str, dict[str, str]] = {
    "model": {"base_model_relation": "finetune", "library_name": "transformers", "pipeline_tag": "text-generation"},
    "adapter": {"base_model_relation": "adapter", "library_name": "peft", "pipeline_tag": "text-generation"},
    "gguf": {"base_model_relation": "quantized", "pipeline_tag": "text-generation"},
}

# '---', the YAML, '---' at the very start; a byte-order mark and Windows line ends are accepted
# (what either of the two readers this one replaced accepted, the model cards' and the push's).
_FRONT_MATTER = re.compile(r"\A\ufeff?---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.DOTALL)


def read_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """A card's YAML metadata and its body (the text after the header).

    Raises:
        ValueError: there is no metadata block, its YAML does not parse, or it is not a mapping;
            the message says which.
    """
    import yaml

    match = _FRONT_MATTER.match(text)
    if not match:
        raise ValueError("no YAML metadata block (the card must start with '---', the metadata, then '---')")
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        raise ValueError(f"the YAML metadata does not parse: {' '.join(str(exc).split())}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"the YAML metadata is not a mapping but {type(meta).__name__}")
    return meta, text[match.end():]


def check_card(text: str, kind: str) -> list[str]:
    """The problems of a card's text (empty: fine), checked offline.

    The YAML front matter parses to a mapping; the keys ``REQUIRED_KEYS[kind]`` are present and
    not empty, with the values of ``EXPECTED_VALUES[kind]``; a ``model-index`` parses into
    ``EvalResult``s and round-trips; the metadata round-trips through ``ModelCard(text).data``;
    the body is not empty and holds no unrendered template syntax.
    """
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

    if kind not in KINDS:
        raise ValueError(f"unknown card kind {kind!r}; expected one of {', '.join(KINDS)}")
    try:
        meta, body = read_front_matter(text)
    except ValueError as exc:
        return [str(exc)]

    problems = []
    for key in REQUIRED_KEYS[kind]:
        if key not in meta:
            problems.append(f"metadata key '{key}' is missing")
        elif meta[key] in (None, "", [], {}):
            problems.append(f"metadata key '{key}' is empty")
    for key, expected in EXPECTED_VALUES[kind].items():
        if key in meta and meta[key] not in (None, "") and meta[key] != expected:
            problems.append(f"metadata key '{key}' is {meta[key]!r}, expected {expected!r} for a {kind} card")
    for key in ("language", "tags", "datasets"):
        if key in meta and meta[key] is not None and not (
            isinstance(meta[key], str) or isinstance(meta[key], list) and all(isinstance(x, str) for x in meta[key])
        ):
            problems.append(f"metadata key '{key}' must be a string or a list of strings")

    if "model-index" in meta:
        try:
            name, results = model_index_to_eval_results(meta["model-index"])
            if not results:
                problems.append("the model-index has no results")
            again = model_index_to_eval_results(eval_results_to_model_index(name, results))
            if again != (name, results):
                problems.append("the model-index does not round-trip through EvalResult")
            for r in results:
                if isinstance(r.metric_value, bool) or not isinstance(r.metric_value, (int, float)):
                    problems.append(f"the model-index value of {r.dataset_name} {r.metric_type} is not a number: {r.metric_value!r}")
        except Exception as exc:  # noqa: BLE001 - any failure to parse is the finding
            problems.append(f"the model-index does not parse into EvalResults: {type(exc).__name__}: {exc}")

    try:
        card = ModelCard(text, ignore_metadata_errors=False)
        if card.data.to_dict() != meta:
            problems.append("the metadata does not round-trip through ModelCard(text).data")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"huggingface_hub's ModelCard rejects the card: {type(exc).__name__}: {exc}")

    if not body.strip():
        problems.append("the card has no body")
    for marker in ("{{", "{%", "{#"):
        if marker in body:
            problems.append(f"the body holds unrendered template syntax ({marker!r})")
            break
    return problems


def check_card_text(text: str, kind: str, *, rows: int | None = None) -> list[str]:
    """The problems of a card the push uploads (empty: fine): ``check_card`` for model repos
    (``kind`` "model", "adapter" or "gguf"), ``check_dataset_card`` for "dataset" (``rows``: the
    row count of its Parquet files, when known); a "details" card (the private evaluation-details
    dataset) must parse into a mapping with ``configs``."""
    if kind == "dataset":
        return check_dataset_card(text, rows=rows)
    if kind != "details":
        return check_card(text, kind)
    try:
        meta, _ = read_front_matter(text)
    except ValueError as exc:
        return [str(exc)]
    return [] if meta.get("configs") else [NO_CONFIGS]


NO_CONFIGS = "the YAML metadata has no 'configs' (datasets would not find the data files)"
#: Keys a dataset card must have (``task_ids`` only where one applies: optional).
DATASET_REQUIRED_KEYS = ("pretty_name", "language", "license", "annotations_creators", "language_creators",
                         "multilinguality", "size_categories", "source_datasets", "task_categories")
#: The values the Hub accepts (huggingface_hub's ``DatasetCardData`` docstring, the Hub's dataset
#: card spec); ``source_datasets`` also takes ``extended|<dataset id>``.
DATASET_VALUES: dict[str, tuple[str, ...]] = {
    "annotations_creators": ("crowdsourced", "expert-generated", "found", "machine-generated", "no-annotation", "other"),
    "language_creators": ("crowdsourced", "expert-generated", "found", "machine-generated", "other"),
    "multilinguality": ("monolingual", "multilingual", "translation", "other"),
    "source_datasets": ("original", "extended"),
}
#: ``task_ids`` each text task category admits (huggingface.js packages/tasks/src/pipelines.ts);
#: the ids of a category not listed here are not checked.
TASK_SUBTASKS: dict[str, tuple[str, ...]] = {
    "text-generation": ("dialogue-modeling", "dialogue-generation", "conversational", "language-modeling"),
    "text2text-generation": ("text-simplification", "explanation-generation", "abstractive-qa",
                             "open-domain-abstractive-qa", "closed-domain-qa", "open-book-qa", "closed-book-qa"),
    "question-answering": ("extractive-qa", "open-domain-qa", "closed-domain-qa"),
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def card_rows(meta: dict[str, Any]) -> int | None:
    """The ``train`` rows of the card's default config in ``dataset_info``, if it has them."""
    infos = meta.get("dataset_info")
    for info in _as_list(infos) if infos else []:
        if isinstance(info, dict) and info.get("config_name", "default") == "default":
            for split in _as_list(info.get("splits") or []):
                if isinstance(split, dict) and split.get("name") == "train" and isinstance(split.get("num_examples"), int):
                    return split["num_examples"]
    return None


def check_dataset_card(text: str, *, rows: int | None = None) -> list[str]:
    """The problems of a dataset card's metadata (empty: fine), checked offline.

    It parses and round-trips through ``huggingface_hub.DatasetCard``; it has ``configs`` and
    ``DATASET_REQUIRED_KEYS``, with values the Hub accepts; ``task_ids`` belong to the
    ``task_categories``; ``size_categories`` is the Hub's bucket of the row count (``rows``, else
    the default config's ``num_examples`` in ``dataset_info``).
    """
    from huggingface_hub import DatasetCard

    from apto_release.cards.dataset import SIZE_BUCKETS, SIZE_LARGEST, size_category

    try:
        meta, _ = read_front_matter(text)
    except ValueError as exc:
        return [str(exc)]
    if not meta.get("configs"):
        return [NO_CONFIGS]
    problems = [f"metadata key '{key}' is missing" for key in DATASET_REQUIRED_KEYS if meta.get(key) in (None, "", [])]
    for key, accepted in DATASET_VALUES.items():
        for value in _as_list(meta.get(key) or []):
            if value not in accepted and not (key == "source_datasets" and str(value).startswith("extended|")):
                problems.append(f"{key} has {value!r}, which the Hub does not accept ({', '.join(accepted)})")
    sizes = _as_list(meta.get("size_categories") or [])
    labels = [label for _, label in SIZE_BUCKETS] + [SIZE_LARGEST, "other"]
    for value in sizes:
        if value not in labels:
            problems.append(f"size_categories has {value!r}, which the Hub does not accept "
                            f"({labels[0]}, {labels[1]}, ..., {SIZE_LARGEST}, other)")
    rows = card_rows(meta) if rows is None else rows
    if sizes and rows is not None and sizes != [size_category(rows)]:
        problems.append(f"size_categories is {sizes} but the dataset has {rows:,} rows: it must be {[size_category(rows)]}")
    categories = [c for c in _as_list(meta.get("task_categories") or []) if c in TASK_SUBTASKS]
    if categories:
        for task_id in _as_list(meta.get("task_ids") or []):
            if not any(task_id in TASK_SUBTASKS[c] for c in categories):
                problems.append(f"task_ids has {task_id!r}, which is no subtask of the task_categories ({', '.join(categories)})")
    try:
        if DatasetCard(text, ignore_metadata_errors=False).data.to_dict() != meta:
            problems.append("the metadata does not round-trip through DatasetCard(text).data")
    except Exception as exc:  # noqa: BLE001 - any failure to parse is the finding
        problems.append(f"huggingface_hub's DatasetCard rejects the card: {type(exc).__name__}: {exc}")
    return problems
