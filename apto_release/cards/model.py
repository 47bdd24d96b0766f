"""The model cards of a release: the merged model, the LoRA adapter and the GGUF files.

Each card is a ``README.md``: YAML metadata built with ``huggingface_hub``'s ``ModelCardData``
(and ``EvalResult`` for the ``model-index``), then a body in Japanese and English rendered from
the Jinja2 templates in ``model_cards/`` (``model.md.j2``, ``adapter.md.j2``, ``gguf.md.j2`` and
the shared macros of ``_shared.md.j2``). What the cards say comes from the release manifest
(``release.toml``), the adapter's ``training_summary.json`` and ``loss_curve.png``, the model's
evaluation results file (``evals.results``) and the GGUF files themselves.

Every card is checked offline before anything is written (``check_card``): the YAML parses, the
keys its kind needs are there with the right values, the ``model-index`` parses back into
``EvalResult``s and round-trips, and the metadata round-trips through ``ModelCard(text).data``.
A card that fails raises ``CardError`` (nothing is written).

Provenance: every card ends with a small table naming the toolkit version and the training data's
SHA-256 (from ``training_summary.json``). ``provenance`` arguments (and ``build_cards``'
``provenance`` hook) add rows to it: the adapter, merged and GGUF hashes, the manifest's commit.

Nothing heavy is imported at module level: ``huggingface_hub``, ``jinja2``, ``yaml`` and ``gguf``
are imported by the functions that need them.
"""

from __future__ import annotations

import datetime
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apto_release import __version__
from apto_release.errors import BuildError, InputError
from apto_release.evals.chart import CHART_NAME  # the chart module imports matplotlib only when it draws
from apto_release.evals.metrics import BENCHMARKS as EVAL_BENCHMARKS
from apto_release.evals.results import Evaluation, Metric, load_evaluation
from apto_release.train.trainer import LOSS_CURVE_NAME, SUMMARY_NAME  # the trainer imports nothing heavy at module level

if TYPE_CHECKING:  # the release hands cards its manifest; cards never import the release
    from apto_release.release.manifest import Manifest, ModelTarget

#: The files a model card brings into its folder besides README.md.
CARD_ASSETS = (LOSS_CURVE_NAME, CHART_NAME)

CARD_NAME = "README.md"
KINDS = ("model", "adapter", "gguf")
_KIND_NAMES = {"model": "model", "adapter": "adapter", "gguf": "GGUF"}
TEMPLATES = {"model": "model.md.j2", "adapter": "adapter.md.j2", "gguf": "gguf.md.j2"}

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

LANGUAGES = ["ja", "en"]
COMMON_TAGS = ("safety", "alignment", "japanese", "llm-safety", "refusal", "apto-release")
KIND_TAGS = {
    "model": ("sft", "lora", "merged"),
    "adapter": ("peft", "lora", "sft"),
    "gguf": ("gguf", "llama.cpp", "quantized"),
}

#: GGUF types from the most faithful to the smallest (the card's table order).
GGUF_ORDER = ("BF16", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q3_K_M", "Q2_K")
#: The type the usage examples use: the first of these that the release has.
GGUF_DEFAULT_PREFERENCE = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q6_K", "Q8_0", "Q3_K_M", "Q2_K", "BF16", "F16")
#: When to choose each type: (Japanese, English).
GGUF_GUIDANCE: dict[str, tuple[str, str]] = {
    "BF16": ("量子化なし（元の bfloat16）。自分で量子化するときの元データ向け", "unquantized (the original bfloat16): a source for your own quantizations"),
    "F16": ("量子化なし（float16）。自分で量子化するときの元データ向け", "unquantized (float16): a source for your own quantizations"),
    "Q8_0": ("元のモデルとほぼ同じ品質。メモリに余裕がある場合に", "practically the original quality, for when memory allows"),
    "Q6_K": ("ほぼ劣化なし。品質を重視する場合に", "near-lossless, for quality first"),
    "Q5_K_M": ("Q4_K_M より高品質で、やや大きい", "better than Q4_K_M, somewhat larger"),
    "Q5_K_S": ("Q5_K_M よりやや小さい", "a little smaller than Q5_K_M"),
    "Q4_K_M": ("**推奨**。品質とサイズのバランスがよく、ほとんどの用途に", "**recommended**: the best balance of quality and size for most uses"),
    "Q4_K_S": ("Q4_K_M よりやや小さく、品質もやや低い", "a little smaller than Q4_K_M, a little lower quality"),
    "Q3_K_M": ("メモリが少ない環境向け。品質の低下が目立つ", "for little memory; a noticeable loss of quality"),
    "Q2_K": ("メモリが非常に少ない環境向け。品質の低下が大きい", "for very little memory; a large loss of quality"),
}

#: Japanese labels and links of the benchmarks the release evaluates on (others use the file's own).
BENCHMARKS: dict[str, dict[str, str]] = {
    "AnswerCarefully": {"url": "https://huggingface.co/datasets/llm-jp/AnswerCarefully", "by": "LLM-jp"},
    "SORRY-Bench": {"url": "https://sorry-bench.github.io", "by": "Xie et al., ICLR 2025"},
    "MultiJail": {"url": "https://github.com/DAMO-NLP-SG/multilingual-safety-for-LLMs", "by": "Deng et al., ICLR 2024"},
    "MT-Bench-ja": {"url": "https://github.com/Stability-AI/FastChat/tree/jp-stable/fastchat/llm_judge", "by": "Stability AI"},
    "JMMLU": {"url": "https://github.com/nlp-waseda/JMMLU", "by": "Waseda University"},
}
#: The Japanese label of each metric that eval summarize computes, for a file that gives none.
METRIC_LABELS_JA: dict[tuple[str, str], str] = {(b.name, m.id): m.label_ja for b in EVAL_BENCHMARKS for m in b.metrics}
AGREEMENT_LEVELS_JA = {"nominal": "名義尺度", "ordinal": "順序尺度", "interval": "間隔尺度"}


class CardError(BuildError):
    """A rendered card failed its offline check; nothing was written."""

    def __init__(self, kind: str, model: str, problems: Sequence[str], *, path: str | Path | None = None) -> None:
        super().__init__(
            f"the {_KIND_NAMES.get(kind, kind)} card of {model} fails its check: {'; '.join(problems)}",
            path=path,
            hint="this is a bug in the card templates or their inputs; run 'apto-release cards --check' to see every card",
        )
        self.kind = kind
        self.model = model
        self.problems = list(problems)


@dataclass
class RenderedCard:
    """One card, rendered and checked: where it goes and what goes with it."""

    kind: str  # "model", "adapter" or "gguf"
    model: str  # the manifest's model name
    repo: str
    path: Path  # the README.md to write
    text: str
    #: Files to put next to the card: file name -> source (the loss curve).
    assets: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Inputs: the training summary and the GGUF files


@dataclass(frozen=True)
class TrainingSummary:
    """What the cards show of ``training_summary.json`` (the whole file stays in ``raw``)."""

    path: Path
    raw: Mapping[str, Any]
    preset: str
    config: Mapping[str, Any]
    data_sha256: str
    records: int
    categories: list[dict[str, Any]]  # name, records, kept, tokens, trained_tokens
    toolkit_version: str | None
    loss_curve: Path | None

    def setting(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)


def load_training_summary(adapter_dir: str | Path) -> TrainingSummary:
    """Read the adapter's ``training_summary.json`` (written by ``apto-release train``).

    Raises:
        InputError: the file is missing, not JSON, or lacks a value the cards show.
    """
    from apto_release.io import read_json_object

    adapter_dir = Path(adapter_dir)
    path = adapter_dir / SUMMARY_NAME
    if not path.is_file():
        raise InputError(
            f"no {SUMMARY_NAME} in the adapter folder", path=adapter_dir,
            hint="give the folder 'apto-release train' wrote (the manifest's 'adapter')",
        )
    raw = read_json_object(path, "the training summary")

    def need(container: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
        if not isinstance(container, Mapping) or key not in container:
            raise InputError(f"the training summary has no '{where}'", path=path, field=where)
        value = container[key]
        if not isinstance(value, kind) or isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise InputError(f"the training summary's '{where}' is {value!r}", path=path, field=where)
        return value

    preset = need(raw, "preset", "preset", str)
    config = need(raw, "config", "config", dict)
    for key, kind in (("lora.r", int), ("lora.alpha", (int, float)), ("lora.target_modules", list),
                      ("train.learning_rate", (int, float)), ("train.epochs", (int, float))):
        need(config, key, f"config.{key}", kind)
    data = need(raw, "data", "data", dict)
    sha = need(data, "sha256", "data.sha256", str)
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise InputError(f"the training summary's 'data.sha256' is not a SHA-256: {sha!r}", path=path, field="data.sha256")
    records = need(data, "records", "data.records", int)
    per_category = need(need(raw, "tokens", "tokens", dict), "per_category", "tokens.per_category", dict)
    categories = []
    for name, stats in per_category.items():
        if not isinstance(stats, Mapping):
            raise InputError(f"the training summary's 'tokens.per_category.{name}' is not an object", path=path, field=f"tokens.per_category.{name}")
        n = int(stats.get("records", 0))
        categories.append({
            "name": name,
            "records": n,
            "kept": int(stats.get("kept", n - int(stats.get("over_length", 0)))),
            "tokens": int(stats.get("tokens", 0)),
            "trained_tokens": int(stats.get("trained_tokens", 0)),
        })
    curve = adapter_dir / LOSS_CURVE_NAME
    return TrainingSummary(
        path=path, raw=raw, preset=preset, config=config, data_sha256=sha, records=records, categories=categories,
        toolkit_version=raw.get("apto_release_version") if isinstance(raw.get("apto_release_version"), str) else None,
        loss_curve=curve if curve.is_file() else None,
    )


@dataclass(frozen=True)
class GGUFFile:
    """One file of a GGUF output."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class GGUFOutput:
    """One GGUF type of the release: one file or a split set, with its parameter count."""

    type: str
    files: tuple[GGUFFile, ...]
    parameters: int

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def bits_per_weight(self) -> float:
        """File bytes × 8 / parameters, over the whole set."""
        return self.size * 8 / self.parameters if self.parameters else 0.0


def gguf_parameter_count(path: str | Path) -> int:
    """The number of weights in a GGUF file's tensors (one file of a split set: its own tensors)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as exc:
        raise InputError(f"not a readable GGUF file: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", path=path) from None
    return sum(int(t.n_elements) for t in reader.tensors)


def find_gguf_outputs(model: ModelTarget, sha256: Callable[[Path], str] | None = None) -> list[GGUFOutput]:
    """The manifest's GGUF types of ``model`` in its ``gguf_folder``: sizes, hashes, parameter counts.

    ``sha256`` hashes a file (default ``io.sha256_file``; the release command's answers from its cache).

    Raises:
        InputError: a listed type has no file, or an incomplete split set.
    """
    from apto_release.gguf.output import find_output
    from apto_release.io import sha256_file
    from apto_release.hub.filerules import check_file

    folder = model.gguf_folder
    if not folder.is_dir():
        raise InputError("the GGUF folder does not exist", path=folder, hint="run 'apto-release gguf convert' first, or fix the manifest's gguf_folder")
    outputs = []
    for type_ in sorted(model.gguf, key=lambda t: GGUF_ORDER.index(t) if t in GGUF_ORDER else len(GGUF_ORDER)):
        found = find_output(folder, f"{model.name}-{type_}", type_)
        for p in found:  # the push's rule: only regular files inside the folder (a FIFO is never opened)
            check_file(folder, p)
        files = tuple(GGUFFile(p, p.stat().st_size, (sha256 or sha256_file)(p)) for p in found)
        outputs.append(GGUFOutput(type_, files, sum(gguf_parameter_count(p) for p in found)))
    return outputs


# ---------------------------------------------------------------------------------------------
# Formatting


def human_size(n: int) -> str:
    """Decimal units, as the Hub shows them: 812 B, 4.20 KB, 16.54 GB, 123.4 GB."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            return f"{value:.2f} {unit}" if value < 100 else f"{value:.1f} {unit}"
    return f"{n} B"  # pragma: no cover


def human_count(n: int) -> str:
    """27.3B, 812M, 4.1K, 12."""
    for factor, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= factor:
            return f"{n / factor:.1f}{suffix}"
    return str(n)


def _decimals(*values: float) -> int:
    """Decimals to show: those the values were written with, 1 to 2."""
    most = 0
    for v in values:
        text = repr(float(v))
        if "e" in text:
            return 2
        most = max(most, len(text.split(".")[1].rstrip("0")) if "." in text else 0)
    return min(2, max(1, most))


def _fmt(value: float, decimals: int, *, signed: bool = False) -> str:
    value = round(value, decimals) + 0.0  # no "-0.0"
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def metric_rows(evaluation: Evaluation | None, *, categories: bool = False) -> list[dict[str, Any]]:
    """The results table: each overall metric's labels, before, after, change and interval as text.

    With ``categories``, the per-category rows instead (each with its ``category`` and ``n``).
    """
    if evaluation is None:
        return []
    return [_metric_row(m) for m in (evaluation.by_category if categories else evaluation.overall)]


def _metric_row(m: Metric) -> dict[str, Any]:
    d = _decimals(m.before, m.after, *(m.ci95 or ()))
    unit_ja, unit_en = ("ポイント", "pt") if m.unit == "%" else ("", "")
    return {
        "metric": m,
        "benchmark": m.benchmark,
        "category": m.category.replace("|", "\\|") if m.category else None,  # a cell of a Markdown table
        "label_en": m.label,
        "label_ja": m.label_ja or METRIC_LABELS_JA.get((m.benchmark, m.metric), m.label),
        "unit": m.unit,
        "arrow": "↑" if m.higher_is_better else "↓",
        "before": _fmt(m.before, d) + m.unit,
        "after": _fmt(m.after, d) + m.unit,
        "change": _fmt(m.change, d, signed=True),
        "change_unit_ja": unit_ja,
        "change_unit_en": unit_en,
        "ci95": f"[{_fmt(m.ci95[0], d, signed=True)}, {_fmt(m.ci95[1], d, signed=True)}]" if m.ci95 else "",
        "significant": m.significant,
        "improved": m.improved,
        "n": f"{m.n:,}" if m.n else "",
        "judges": [
            {"judge": v.judge, "before": _fmt(v.before, d) + m.unit, "after": _fmt(v.after, d) + m.unit,
             "change": _fmt(v.after - v.before, d, signed=True)}
            for v in m.per_judge
        ],
    }


def _agreement_rows(evaluation: Evaluation | None) -> list[dict[str, Any]]:
    """Each benchmark's agreement between judges, as text (the value None: not defined)."""
    if evaluation is None:
        return []
    return [
        {"benchmark": a.benchmark, "value": None if a.value is None else _fmt(a.value, 2), "level": a.level,
         "level_ja": AGREEMENT_LEVELS_JA[a.level], "judges": len(a.judges), "units": f"{a.units:,}"}
        for a in evaluation.agreement
    ]


def eval_results(evaluation: Evaluation | None) -> list:
    """The ``model-index`` results: each overall metric's value for the tuned model (``after``)."""
    from huggingface_hub import EvalResult

    if evaluation is None:
        return []
    return [
        EvalResult(
            task_type="text-generation",
            task_name="Text Generation",
            dataset_type=m.dataset_id or _slug(m.benchmark),
            dataset_name=m.benchmark,
            metric_type=m.metric,
            metric_value=m.after,
            metric_name=m.label,
        )
        for m in evaluation.overall
    ]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "benchmark"


# ---------------------------------------------------------------------------------------------
# Checking


_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.DOTALL)


def check_card(text: str, kind: str) -> list[str]:
    """The problems of a card's text (empty: fine), checked offline.

    The YAML front matter parses to a mapping; the keys ``REQUIRED_KEYS[kind]`` are present and
    not empty, with the values of ``EXPECTED_VALUES[kind]``; a ``model-index`` parses into
    ``EvalResult``s and round-trips; the metadata round-trips through ``ModelCard(text).data``;
    the body is not empty and holds no unrendered template syntax.
    """
    import yaml
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

    if kind not in KINDS:
        raise ValueError(f"unknown card kind {kind!r}; expected one of {', '.join(KINDS)}")
    match = _FRONT_MATTER.match(text)
    if not match:
        return ["no YAML metadata block (the card must start with '---', the metadata, then '---')"]
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        return [f"the YAML metadata does not parse: {' '.join(str(exc).split())}"]
    if not isinstance(meta, dict):
        return [f"the YAML metadata is not a mapping but {type(meta).__name__}"]

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

    body = text[match.end():]
    if not body.strip():
        problems.append("the card has no body")
    for marker in ("{{", "{%", "{#"):
        if marker in body:
            problems.append(f"the body holds unrendered template syntax ({marker!r})")
            break
    return problems


# ---------------------------------------------------------------------------------------------
# Rendering


def _environment():
    from apto_release.templates import environment

    env = environment("model_cards")
    env.filters["size"] = human_size
    env.filters["count"] = human_count
    env.filters["num"] = lambda x: f"{x:g}" if isinstance(x, float) else str(x)
    return env


def _card_data(kind: str, *, base_model: str, license_: str, tags: Iterable[str], datasets: Sequence[str] = (),
               model_name: str | None = None, results: Sequence = ()):
    from huggingface_hub import ModelCardData

    meta = {
        "model": {"library_name": "transformers"},
        "adapter": {"library_name": "peft"},
        "gguf": {},
    }[kind]
    return ModelCardData(
        base_model=base_model,
        base_model_relation=EXPECTED_VALUES[kind]["base_model_relation"],
        pipeline_tag="text-generation",
        language=list(LANGUAGES),
        license=license_,
        datasets=list(datasets) or None,
        tags=list(dict.fromkeys(tags)),
        model_name=model_name if results else None,
        eval_results=list(results) or None,
        **meta,
    )


def public_datasets(manifest: Manifest) -> list[str]:
    """The manifest's dataset repos that are public (the sample): the cards' ``datasets``."""
    return [d.repo for d in manifest.datasets.values() if not d.private]


def base_provenance(summary: TrainingSummary | None) -> dict[str, str]:
    """The provenance rows every card has: the toolkit version and the training data's hash."""
    rows = {"apto-release": __version__}
    if summary is not None:
        if summary.toolkit_version:
            rows["apto-release (training)"] = summary.toolkit_version
        rows["training data SHA-256"] = summary.data_sha256
        rows["training records"] = f"{summary.records:,}"
    return rows


def _training_context(summary: TrainingSummary) -> dict[str, Any]:
    s = summary.setting
    per_device, accumulation = s("train.per_device_batch_size"), s("train.gradient_accumulation_steps")
    training = summary.raw.get("training") if isinstance(summary.raw.get("training"), Mapping) else {}
    world = training.get("world_size") or 1
    batch = per_device * accumulation * world if isinstance(per_device, int) and isinstance(accumulation, int) else None
    cats = summary.categories
    return {
        "preset": summary.preset,
        "r": s("lora.r"),
        "alpha": s("lora.alpha"),
        "dropout": s("lora.dropout"),
        "rslora": s("lora.use_rslora"),
        "targets": list(s("lora.target_modules")),
        "learning_rate": s("train.learning_rate"),
        "scheduler": s("train.lr_scheduler"),
        "warmup_ratio": s("train.warmup_ratio"),
        "epochs": s("train.epochs"),
        "batch": batch,
        "precision": s("train.precision"),
        "max_length": s("data.max_length"),
        "steps": training.get("steps"),
        "final_loss": training.get("final_loss"),
        "world_size": training.get("world_size"),
        # No training time: it differs between two runs of the same release, and the card is published.
        "records": summary.records,
        "categories": cats,
        "total": {
            "records": sum(c["records"] for c in cats),
            "kept": sum(c["kept"] for c in cats),
            "tokens": sum(c["tokens"] for c in cats),
            "trained_tokens": sum(c["trained_tokens"] for c in cats),
        },
        "data_sha256": summary.data_sha256,
    }


def _common_context(manifest: Manifest, model: ModelTarget, *, provenance: Mapping[str, str], year: int | None) -> dict[str, Any]:
    org = manifest.organisation
    return {
        "name": model.name,
        "organisation": org,
        "version": manifest.version,
        "tag": manifest.tag,
        "license": manifest.license,
        "base_model": model.base_model,
        "variant": model.variant,
        "repo": model.repo,
        "gguf_repo": model.gguf_repo if model.gguf else None,
        "adapter_repo": model.adapter_repo,
        "datasets": public_datasets(manifest),
        "provenance": dict(provenance),
        "toolkit_version": __version__,
        "year": year or datetime.datetime.now(datetime.timezone.utc).year,
        "citation_key": re.sub(r"[^a-z0-9]+", "_", model.name.lower()).strip("_"),
        "benchmarks": BENCHMARKS,
    }


def _evaluation_context(evaluation: Evaluation | None) -> dict[str, Any]:
    """What the evaluation sections show (``ev``), and the benchmarks the attribution credits."""
    rows = metric_rows(evaluation)
    methods = {m.method for m in evaluation.metrics} if evaluation else set()
    return {
        "evaluation": evaluation,
        "ev": {
            "rows": rows,
            "has_ci": any(r["ci95"] for r in rows),
            "has_significance": any(r["significant"] is not None for r in rows),
            "judges": list(evaluation.judges) if evaluation else [],
            "judge_rows": [r for r in rows if r["judges"]],
            "category_rows": metric_rows(evaluation, categories=True),
            "agreement": _agreement_rows(evaluation),
            "mcnemar": "mcnemar" in methods,
            "bootstrap": "bootstrap" in methods,
            "resamples": f"{evaluation.bootstrap_resamples:,}" if evaluation and evaluation.bootstrap_resamples else None,
            "chart": CHART_NAME if evaluation and evaluation.chart else None,
        },
        "evaluated_benchmarks": list(dict.fromkeys(r["benchmark"] for r in rows)),
    }


def _finish(kind: str, model: ModelTarget, data, context: dict[str, Any], *, dest: Path, strict: bool,
            assets: dict[str, Path] | None = None, repo: str) -> RenderedCard:
    text = _environment().get_template(TEMPLATES[kind]).render(card_data=data.to_yaml(), **context)
    text = text.rstrip("\n") + "\n"
    problems = check_card(text, kind)
    if problems and strict:
        raise CardError(kind, model.name, problems, path=dest)
    return RenderedCard(kind, model.name, repo, dest, text, dict(assets or {}), problems)


def _check_evaluation_model(evaluation: Evaluation | None, model: ModelTarget) -> None:
    if evaluation is not None and evaluation.model not in (model.name, model.repo):
        raise InputError(
            f"the evaluation results are of '{evaluation.model}', not of '{model.name}'", path=evaluation.path, field="model",
            hint="give each model its own results file in the manifest",
        )


def _tuned_model_context(
    manifest: Manifest, model: ModelTarget, summary: TrainingSummary, evaluation: Evaluation | None, *,
    provenance: Mapping[str, str] | None, year: int | None,
) -> dict[str, Any]:
    """What the merged model's and the adapter's cards both show: results, training, loss curve."""
    return {
        **_common_context(manifest, model, provenance={**base_provenance(summary), **(provenance or {})}, year=year),
        **_evaluation_context(evaluation),
        "training": _training_context(summary),
        "loss_curve": LOSS_CURVE_NAME if summary.loss_curve else None,
    }


def _chart_asset(evaluation: Evaluation | None) -> dict[str, Path]:
    """The evaluation chart, copied next to the merged model's and the adapter's cards."""
    return {CHART_NAME: evaluation.chart} if evaluation is not None and evaluation.chart is not None else {}


def render_model_card(
    manifest: Manifest,
    model: ModelTarget,
    summary: TrainingSummary,
    evaluation: Evaluation | None = None,
    *,
    provenance: Mapping[str, str] | None = None,
    year: int | None = None,
    strict: bool = True,
) -> RenderedCard:
    """The merged model's card (``<merged>/README.md``), with the loss curve as an asset.

    Raises:
        InputError: the merged folder has no ``config.json``; the results are of another model.
        CardError: the card fails ``check_card`` (with ``strict``; otherwise see ``problems``).
    """
    from apto_release.io import read_json_object

    read_json_object(model.merged / "config.json", "the merged model's config")  # the merged folder is there
    _check_evaluation_model(evaluation, model)
    data = _card_data(
        "model", base_model=model.base_model, license_=manifest.license, datasets=public_datasets(manifest),
        tags=(*COMMON_TAGS, *KIND_TAGS["model"]), model_name=model.repo, results=eval_results(evaluation),
    )
    context = _tuned_model_context(manifest, model, summary, evaluation, provenance=provenance, year=year)
    assets = {LOSS_CURVE_NAME: summary.loss_curve} if summary.loss_curve else {}
    return _finish("model", model, data, context, dest=model.merged / CARD_NAME, strict=strict,
                   assets={**assets, **_chart_asset(evaluation)}, repo=model.repo)


def render_adapter_card(
    manifest: Manifest,
    model: ModelTarget,
    summary: TrainingSummary,
    evaluation: Evaluation | None = None,
    *,
    provenance: Mapping[str, str] | None = None,
    year: int | None = None,
    strict: bool = True,
) -> RenderedCard:
    """The LoRA adapter's card (``<adapter>/README.md``), for a model with an adapter repo.

    Raises:
        InputError: the adapter folder has no ``adapter_config.json``, or no adapter repo is set.
        CardError: the card fails ``check_card`` (with ``strict``).
    """
    from apto_release.io import read_json_object

    if model.adapter_repo is None:
        raise InputError(f"the model '{model.name}' has no adapter repo (push_adapter is false)", path=manifest.path)
    read_json_object(model.adapter / "adapter_config.json", "the adapter's config")
    _check_evaluation_model(evaluation, model)
    data = _card_data(
        "adapter", base_model=model.base_model, license_=manifest.license, datasets=public_datasets(manifest),
        tags=(*COMMON_TAGS, *KIND_TAGS["adapter"]), model_name=model.adapter_repo, results=eval_results(evaluation),
    )
    context = _tuned_model_context(manifest, model, summary, evaluation, provenance=provenance, year=year)
    return _finish("adapter", model, data, context, dest=model.adapter / CARD_NAME, strict=strict,
                   assets=_chart_asset(evaluation), repo=model.adapter_repo)


def render_gguf_card(
    manifest: Manifest,
    model: ModelTarget,
    outputs: Sequence[GGUFOutput],
    summary: TrainingSummary | None = None,
    *,
    provenance: Mapping[str, str] | None = None,
    year: int | None = None,
    strict: bool = True,
) -> RenderedCard:
    """The GGUF repo's card (``<gguf_folder>/README.md``): the files, which to pick, how to run them.

    Raises:
        CardError: the card fails ``check_card`` (with ``strict``).
    """
    if not outputs:
        raise InputError(f"the model '{model.name}' has no GGUF types in the manifest", path=manifest.path)
    data = _card_data(
        "gguf", base_model=model.repo, license_=manifest.license, datasets=public_datasets(manifest),
        tags=(*COMMON_TAGS, *KIND_TAGS["gguf"]),
    )
    types = [o.type for o in outputs]
    default = next(t for t in (*GGUF_DEFAULT_PREFERENCE, *types) if t in types)
    files = []
    for o in outputs:
        for i, f in enumerate(o.files):
            files.append({
                "name": f.path.name, "type": o.type, "size": f.size, "sha256": f.sha256, "bpw": f"{o.bits_per_weight:.2f}",
                "part": i + 1, "parts": len(o.files),
            })
    context = {
        **_common_context(manifest, model, provenance={**base_provenance(summary), **(provenance or {})}, year=year),
        "outputs": [
            {"type": o.type, "size": o.size, "bpw": f"{o.bits_per_weight:.2f}", "first": o.files[0].path.name,
             "parts": len(o.files), "ja": GGUF_GUIDANCE.get(o.type, ("", ""))[0], "en": GGUF_GUIDANCE.get(o.type, ("", ""))[1]}
            for o in outputs
        ],
        "files": files,
        "has_split": any(len(o.files) > 1 for o in outputs),
        "parameters": max(o.parameters for o in outputs),
        "default_type": default,
        "default_output": next(o for o in outputs if o.type == default),
    }
    return _finish("gguf", model, data, context, dest=model.gguf_folder / CARD_NAME, strict=strict, repo=model.gguf_repo)


# ---------------------------------------------------------------------------------------------
# The whole release


ProvenanceHook = Callable[["ModelTarget", str], Mapping[str, str]]


def build_cards(
    manifest: Manifest,
    *,
    only: Sequence[str] = (),
    provenance: ProvenanceHook | None = None,
    strict: bool = True,
    year: int | None = None,
    sha256: Callable[[Path], str] | None = None,
) -> list[RenderedCard]:
    """Render (and check) every card of the manifest's models, or of the models named in ``only``.

    Per model: the merged model's card; the adapter's when the manifest has an adapter repo; the
    GGUF card when the model has GGUF types. ``provenance(model, kind)`` adds rows to a card's
    provenance table. ``sha256``: see ``find_gguf_outputs``. Nothing is written (see ``write_card``).

    Raises:
        UsageError: a name in ``only`` is not a model of the manifest.
        InputError: a missing or bad input (training summary, evaluation file, GGUF file).
        CardError: a card fails its check (with ``strict``).
    """
    models = [manifest.model(name) for name in dict.fromkeys(only)] if only else list(manifest.models)
    cards: list[RenderedCard] = []
    for model in models:
        summary = load_training_summary(model.adapter)
        evaluation = load_evaluation(model.evaluation) if model.evaluation else None

        def extra(kind: str, model: ModelTarget = model) -> Mapping[str, str]:
            return provenance(model, kind) if provenance else {}

        cards.append(render_model_card(manifest, model, summary, evaluation, provenance=extra("model"), year=year, strict=strict))
        if model.adapter_repo:
            cards.append(render_adapter_card(manifest, model, summary, evaluation, provenance=extra("adapter"), year=year, strict=strict))
        if model.gguf:
            outputs = find_gguf_outputs(model, sha256)
            cards.append(render_gguf_card(manifest, model, outputs, summary, provenance=extra("gguf"), year=year, strict=strict))
    return cards


def write_card(card: RenderedCard) -> Path:
    """Write the card and its assets, each atomically. Refuses a card with problems."""
    from apto_release.io import atomic_path, write_text

    if card.problems:
        raise CardError(card.kind, card.model, card.problems, path=card.path)
    for name, source in card.assets.items():
        dest = card.path.parent / name
        if dest.resolve() != Path(source).resolve():
            with atomic_path(dest) as tmp:
                shutil.copyfile(source, tmp)
    return write_text(card.path, card.text)
