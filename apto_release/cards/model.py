"""The model cards of a release: the merged model, the LoRA adapter and the GGUF files, rendered.

Each card is a ``README.md``: YAML metadata built with ``huggingface_hub``'s ``ModelCardData``
(and ``EvalResult`` for the ``model-index``), then a body in Japanese and English rendered from
the Jinja2 templates in ``model_cards/`` (``model.md.j2``, ``adapter.md.j2``, ``gguf.md.j2`` and
the shared macros of ``_shared.md.j2``). What the cards say comes from the release manifest
(``release.toml``), the adapter's ``training_summary.json`` (``train.summary``) and
``loss_curve.png``, the model's evaluation results file (``evals.results``) and the GGUF files
themselves; ``cards.context`` turns these into the templates' context.

Every card is checked offline before anything is written (``cards.check.check_card``); a card
that fails raises ``CardError`` (nothing is written).

Provenance: every card ends with a small table naming the toolkit version and the training data's
SHA-256 (from ``training_summary.json``). ``provenance`` arguments (and ``build_cards``'
``provenance`` hook) add rows to it: the adapter, merged and GGUF hashes, the manifest's commit.

Nothing heavy is imported at module level: ``huggingface_hub``, ``jinja2``, ``yaml`` and ``gguf``
are imported by the functions that need them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apto_release.cards.check import EXPECTED_VALUES, check_card
from apto_release.cards.context import (
    COMMON_TAGS, GGUF_ORDER, KIND_TAGS, LANGUAGES, base_provenance, common_context, eval_results, gguf_context, gguf_imatrix, gguf_provenance,
    mmproj_rows, public_datasets, tuned_model_context,
)
from apto_release.errors import BuildError, InputError
from apto_release.evals.chart import CHART_NAME  # the chart module imports matplotlib only when it draws
from apto_release.evals.results import Evaluation, load_evaluation
from apto_release.io import human_size
from apto_release.train.summary import LOSS_CURVE_NAME, TrainingSummary, load_training_summary

if TYPE_CHECKING:  # the release hands cards its manifest; cards never import the release
    from apto_release.release.manifest import Manifest, ModelTarget

#: The files a model card brings into its folder besides README.md.
CARD_ASSETS = (LOSS_CURVE_NAME, CHART_NAME)

CARD_NAME = "README.md"
_KIND_NAMES = {"model": "model", "adapter": "adapter", "gguf": "GGUF"}
TEMPLATES = {"model": "model.md.j2", "adapter": "adapter.md.j2", "gguf": "gguf.md.j2"}


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
# Inputs: the GGUF files


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


def find_mmproj(model: ModelTarget, sha256: Callable[[Path], str] | None = None) -> tuple[GGUFFile, ...]:
    """The vision projector(s) of ``model`` in its ``gguf_folder`` (``mmproj-<Model>-<TYPE>.gguf``,
    companion files of the GGUF repo), with sizes and hashes; none for a text-only model."""
    from apto_release.gguf.output import companion_files
    from apto_release.hub.filerules import check_file
    from apto_release.io import sha256_file

    found = [p for p in companion_files(model.gguf_folder, model.name) if p.suffix == ".gguf" and p.name.startswith("mmproj-")]
    for p in found:
        check_file(model.gguf_folder, p)
    return tuple(GGUFFile(p, p.stat().st_size, (sha256 or sha256_file)(p)) for p in found)


# ---------------------------------------------------------------------------------------------
# Formatting


def human_count(n: int) -> str:
    """27.3B, 812M, 4.1K, 12."""
    for factor, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= factor:
            return f"{n / factor:.1f}{suffix}"
    return str(n)


#: The templates' own filters: sizes, parameter counts, numbers as written.
_FILTERS = {
    "size": human_size,
    "count": human_count,
    "num": lambda x: f"{x:g}" if isinstance(x, float) else str(x),
}


# ---------------------------------------------------------------------------------------------
# Rendering


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


def _finish(kind: str, model: ModelTarget, data, context: dict[str, Any], *, dest: Path, strict: bool,
            assets: dict[str, Path] | None = None, repo: str) -> RenderedCard:
    from apto_release.cards.templates import render

    text = render("model_cards", TEMPLATES[kind], {"card_data": data.to_yaml(), **context}, _FILTERS)
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


def _chart_asset(evaluation: Evaluation | None) -> dict[str, Path]:
    """The evaluation chart, copied next to the merged model's and the adapter's cards."""
    return {CHART_NAME: evaluation.chart} if evaluation is not None and evaluation.chart is not None else {}


def _render_tuned(
    kind: str, manifest: Manifest, model: ModelTarget, summary: TrainingSummary, evaluation: Evaluation | None, *,
    repo: str, folder: Path, assets: dict[str, Path], provenance: Mapping[str, str] | None, year: int | None, strict: bool,
) -> RenderedCard:
    """The merged model's or the adapter's card: the same sections, with its kind's metadata and assets."""
    _check_evaluation_model(evaluation, model)
    data = _card_data(
        kind, base_model=model.base_model, license_=manifest.license, datasets=public_datasets(manifest),
        tags=(*COMMON_TAGS, *KIND_TAGS[kind]), model_name=repo, results=eval_results(evaluation),
    )
    context = tuned_model_context(manifest, model, summary, evaluation, provenance=provenance, year=year)
    return _finish(kind, model, data, context, dest=folder / CARD_NAME, strict=strict,
                   assets={**assets, **_chart_asset(evaluation)}, repo=repo)


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
    assets = {LOSS_CURVE_NAME: summary.loss_curve} if summary.loss_curve else {}
    return _render_tuned("model", manifest, model, summary, evaluation, repo=model.repo, folder=model.merged,
                         assets=assets, provenance=provenance, year=year, strict=strict)


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
    return _render_tuned("adapter", manifest, model, summary, evaluation, repo=model.adapter_repo, folder=model.adapter,
                         assets={}, provenance=provenance, year=year, strict=strict)


def render_gguf_card(
    manifest: Manifest,
    model: ModelTarget,
    outputs: Sequence[GGUFOutput],
    summary: TrainingSummary | None = None,
    *,
    evaluation: Evaluation | None = None,
    provenance: Mapping[str, str] | None = None,
    year: int | None = None,
    strict: bool = True,
    mmproj: Sequence[GGUFFile] | None = None,
) -> RenderedCard:
    """The GGUF repo's card (``<gguf_folder>/README.md``): the files, which to pick, how to run them,
    and (from ``evaluation``'s ``quants``) each file's safety against the tuned model as served.
    ``mmproj``: the vision projector's file(s) (default: ``find_mmproj``), listed and shown with image input.

    Raises:
        InputError: ``evaluation`` is of another model.
        CardError: the card fails ``check_card`` (with ``strict``).
    """
    _check_evaluation_model(evaluation, model)
    if not outputs:
        raise InputError(f"the model '{model.name}' has no GGUF types in the manifest", path=manifest.path)
    data = _card_data(
        "gguf", base_model=model.repo, license_=manifest.license, datasets=public_datasets(manifest),
        tags=(*COMMON_TAGS, *KIND_TAGS["gguf"]),
    )
    context = {
        **common_context(manifest, model, year=year,
                         provenance={**base_provenance(summary), **gguf_provenance(outputs), **(provenance or {})}),
        **gguf_context(outputs, evaluation),
        "sampling_defaults": _sampling_defaults(model.gguf_folder),
        "mmproj": mmproj_rows(find_mmproj(model) if mmproj is None else mmproj),
        "imatrix": gguf_imatrix(outputs),
    }
    return _finish("gguf", model, data, context, dest=model.gguf_folder / CARD_NAME, strict=strict, repo=model.gguf_repo)


def _sampling_defaults(folder: Path) -> str | None:
    """The sampling defaults the GGUF repo's Ollama ``params`` file carries, in words (the files'
    ``general.sampling.*`` keys hold the same, from one ``generation_config.json``), or None."""
    import json

    from apto_release.gguf.sampling import OLLAMA_PARAMS

    path = folder / OLLAMA_PARAMS
    if not path.is_file():
        return None
    try:
        params = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not valid JSON: {exc}", path=path) from None
    settings = [f"{key} {value}" for key, value in params.items() if key != "stop"] if isinstance(params, dict) else []
    return ", ".join(settings) or None


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
            cards.append(render_gguf_card(manifest, model, outputs, summary, evaluation=evaluation, provenance=extra("gguf"),
                                          year=year, strict=strict, mmproj=find_mmproj(model, sha256)))
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
