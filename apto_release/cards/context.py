"""What the model, adapter and GGUF cards say, as template context: the tables and the values shared by all three.

The cards' tags, languages and benchmark links; the GGUF types' order, the default the usage
examples pick and when to choose each; the results table (``metric_rows``), the judges'
agreement and the ``model-index`` (``eval_results``); the training section (from
``train.summary.TrainingSummary``) and the provenance rows. ``cards.model`` renders the cards
from these; the release's pipeline reads the tags and public datasets of the manifest's repos.

Nothing heavy is imported at module level: ``huggingface_hub`` is imported by ``eval_results``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from apto_release import __version__
from apto_release.evals.chart import CHART_NAME  # the chart module imports matplotlib only when it draws
from apto_release.evals.metrics import BENCHMARKS as EVAL_BENCHMARKS
from apto_release.evals.results import Evaluation, Metric, Served
from apto_release.gguf.memory import CARD_CONTEXTS, MemoryEstimate, estimates
from apto_release.train.summary import LOSS_CURVE_NAME, TrainingSummary

if TYPE_CHECKING:  # the release hands cards its manifest; cards never import the release
    from apto_release.cards.model import GGUFFile, GGUFOutput
    from apto_release.release.manifest import Manifest, ModelTarget

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


# ---------------------------------------------------------------------------------------------
# The evaluation: results table, agreement, model-index


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


def agreement_rows(evaluation: Evaluation | None) -> list[dict[str, Any]]:
    """Each benchmark's agreement between judges, as text (the value None: not defined)."""
    if evaluation is None:
        return []
    return [
        {"benchmark": a.benchmark, "value": None if a.value is None else _fmt(a.value, 2), "level": a.level,
         "level_ja": AGREEMENT_LEVELS_JA[a.level], "judges": len(a.judges), "units": f"{a.units:,}"}
        for a in evaluation.agreement
    ]


#: How the cards name a model side in the notes on unreadable judgements: (Japanese, English).
SIDE_NAMES = {"before": ("ベースモデル", "base model"), "after": ("本モデル", "this model")}
QUANT_REFERENCE_NAMES = ("チューニング済みモデル", "the tuned model")  # "after", in the GGUF card


def unparseable_notes(evaluation: Evaluation | None, sides: Mapping[str, tuple[str, str]],
                      benchmark: str | None = None) -> list[dict[str, Any]]:
    """The results' counts of unreadable judgements of ``sides`` (side -> its names, ja and en), as text."""
    if evaluation is None:
        return []
    return [
        {"benchmark": u.benchmark, "ja": sides[u.model][0], "en": sides[u.model][1], "judge": u.judge,
         "count": f"{u.count:,}", "judgements": f"{u.judgements:,}"}
        for u in evaluation.unparseable if u.model in sides and benchmark in (None, u.benchmark)
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
# The sections of the cards


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


def gguf_provenance(outputs: Sequence[GGUFOutput]) -> dict[str, str]:
    """The GGUF card's provenance rows: which llama.cpp quantized and verified the files, from
    ``gguf convert``'s record beside them (``gguf.provenance``) when it covers every file unchanged."""
    from apto_release.gguf.provenance import recorded

    entries = recorded([f.path for o in outputs for f in o.files]) or {}
    try:
        builds = sorted({"ggml {ggml}, commit {commit}, llama-cpp-python {llama_cpp_python}".format(**e["llama_cpp"])
                         for e in entries.values()})
    except (KeyError, TypeError):
        entries = {}
    if not entries:
        return {"llama.cpp": "not recorded (the files were written by another tool, or changed since)"}

    def every(o: GGUFOutput, test) -> bool:
        return all(test(entries[f.path.name]) for f in o.files)

    quantized = [o.type for o in outputs if every(o, lambda e: e.get("written_by") == "llama.cpp's quantizer")]
    verified = [o.type for o in outputs if every(o, lambda e: e.get("verified") is True)]
    return {"llama.cpp": "; ".join(builds), **({"quantized by llama.cpp": ", ".join(quantized)} if quantized else {}),
            "verified in llama.cpp": ", ".join(verified) or "none"}


def gguf_imatrix(outputs: Sequence[GGUFOutput]) -> dict[str, Any] | None:
    """How the importance matrix of the files quantized with one was made (``gguf.imatrix``), from
    the build record when it covers every file unchanged and the imatrix beside them is the one
    recorded; None otherwise. ``calibration_in_repo``: the calibration text beside them is the one recorded."""
    from apto_release.gguf.provenance import recorded
    from apto_release.io import sha256_file

    entries = recorded([f.path for o in outputs for f in o.files]) or {}
    made = {o.type: entries[o.files[0].path.name].get("imatrix") for o in outputs if entries}
    made = {t: m for t, m in made.items() if isinstance(m, dict) and m.get("sha256")}
    if not made or len({m["sha256"] for m in made.values()}) > 1:
        return None
    first = next(iter(made.values()))
    folder = outputs[0].files[0].path.parent

    def present(name: Any, sha256: Any) -> bool:
        path = folder / str(name)
        return isinstance(name, str) and path.is_file() and sha256_file(path) == sha256

    if not present(first.get("file"), first["sha256"]):
        return None
    calibration = first.get("calibration") if isinstance(first.get("calibration"), dict) else {}
    return {"types": list(made), "file": first.get("file"), "sha256": first["sha256"], "chunks": first.get("chunks"),
            "context": first.get("context"), "given": bool(first.get("given")), "calibration": calibration,
            "calibration_in_repo": bool(calibration) and present(calibration.get("file"), calibration.get("sha256"))}


def training_context(summary: TrainingSummary) -> dict[str, Any]:
    """The training section: the LoRA and optimiser settings, the steps, the data per category."""
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


def common_context(manifest: Manifest, model: ModelTarget, *, provenance: Mapping[str, str], year: int | None) -> dict[str, Any]:
    """What every card of ``model`` shows: names, repos, licence, datasets, provenance, citation."""
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
        "details_repo": model.eval.details_repo if model.eval else None,  # the private details dataset
        "datasets": public_datasets(manifest),
        "provenance": dict(provenance),
        "toolkit_version": __version__,
        "year": year or datetime.datetime.now(datetime.timezone.utc).year,
        "citation_key": re.sub(r"[^a-z0-9]+", "_", model.name.lower()).strip("_"),
        "benchmarks": BENCHMARKS,
    }


def evaluation_context(evaluation: Evaluation | None) -> dict[str, Any]:
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
            "agreement": agreement_rows(evaluation),
            "mcnemar": "mcnemar" in methods,
            "bootstrap": "bootstrap" in methods,
            "resamples": f"{evaluation.bootstrap_resamples:,}" if evaluation and evaluation.bootstrap_resamples else None,
            "chart": CHART_NAME if evaluation and evaluation.chart else None,
            "unparseable": unparseable_notes(evaluation, SIDE_NAMES),
        },
        "evaluated_benchmarks": list(dict.fromkeys(r["benchmark"] for r in rows)),
    }


def tuned_model_context(
    manifest: Manifest, model: ModelTarget, summary: TrainingSummary, evaluation: Evaluation | None, *,
    provenance: Mapping[str, str] | None, year: int | None,
) -> dict[str, Any]:
    """What the merged model's and the adapter's cards both show: results, training, loss curve."""
    return {
        **common_context(manifest, model, provenance={**base_provenance(summary), **(provenance or {})}, year=year),
        **evaluation_context(evaluation),
        "training": training_context(summary),
        "loss_curve": LOSS_CURVE_NAME if summary.loss_curve else None,
    }



#: The benchmark and metrics of the GGUF card's per-file safety table.
QUANT_SAFETY = ("AnswerCarefully", ("acceptable_rate", "violation_rate"))


def quant_safety_rows(outputs: Sequence[GGUFOutput], evaluation: Evaluation | None) -> list[dict[str, Any]]:
    """Per GGUF file of the release that has results: AnswerCarefully's acceptable and violation
    rates, the tuned model's and the file's, with the change and its interval (``metric_rows``' cells)."""
    if evaluation is None:
        return []
    benchmark, metrics = QUANT_SAFETY
    rows = []
    for o in outputs:
        found = next((q for q in evaluation.quants if q.type == o.type), None)
        cells = [found.metric(benchmark, m) for m in metrics] if found else [None]
        if all(cells):
            acceptable, violation = (_metric_row(m) for m in cells)
            rows.append({"type": o.type, "acceptable": acceptable, "violation": violation,
                         "n": acceptable["n"] if acceptable["n"] == violation["n"] else ""})
    return rows


def gguf_context(outputs: Sequence[GGUFOutput], evaluation: Evaluation | None = None) -> dict[str, Any]:
    """What the GGUF card shows of its files: each type and file, the largest parameter count, the
    default type, and each file's safety against the tuned model as served (``quant_safety``, ``quant_reference``)."""
    types = [o.type for o in outputs]
    default = next(t for t in (*GGUF_DEFAULT_PREFERENCE, *types) if t in types)
    quant_safety = quant_safety_rows(outputs, evaluation)
    memory = {o.type: estimates([f.path for f in o.files], CARD_CONTEXTS) for o in outputs}  # each file's metadata read once
    files = []
    for o in outputs:
        for i, f in enumerate(o.files):
            files.append({
                "name": f.path.name, "type": o.type, "size": f.size, "sha256": f.sha256, "bpw": f"{o.bits_per_weight:.2f}",
                "part": i + 1, "parts": len(o.files),
            })
    return {
        "outputs": [
            {"type": o.type, "size": o.size, "bpw": f"{o.bits_per_weight:.2f}", "first": o.files[0].path.name,
             "parts": len(o.files), "ja": GGUF_GUIDANCE.get(o.type, ("", ""))[0], "en": GGUF_GUIDANCE.get(o.type, ("", ""))[1],
             "memory": [m.total for m in memory[o.type]], **gguf_quality(o)}
            for o in outputs
        ],
        "quality_against": sorted({q["against"] for o in outputs if (q := _recorded_quality(o))}),
        "memory_contexts": [f"{n_ctx // 1024}k" for n_ctx in CARD_CONTEXTS],
        "memory_parts": _memory_parts(memory[outputs[0].type][-1]),
        "files": files,
        "has_split": any(len(o.files) > 1 for o in outputs),
        "parameters": max(o.parameters for o in outputs),
        "default_type": default,
        "default_output": next(o for o in outputs if o.type == default),
        "quant_safety": quant_safety,
        "quant_unparseable": unparseable_notes(
            evaluation, {"after": QUANT_REFERENCE_NAMES, **{q["type"]: (q["type"], q["type"]) for q in quant_safety}},
            QUANT_SAFETY[0]) if quant_safety else [],
        "quant_reference": _quant_reference(quant_safety, evaluation),
    }


def _recorded_quality(output: GGUFOutput) -> dict[str, Any] | None:
    from apto_release.gguf.provenance import recorded

    entries = recorded([f.path for f in output.files]) or {}
    found = entries.get(output.files[0].path.name, {}).get("quality")
    return found if isinstance(found, dict) and {"kl_mean", "top1", "against"} <= found.keys() else None


def gguf_quality(output: GGUFOutput) -> dict[str, str]:
    """The which-file table's KL and top-1 cells of one output, from ``gguf convert``'s record when it
    covers the output's files unchanged (``gguf.quality``); "–" when not measured."""
    found = _recorded_quality(output)
    if found is None:
        return {"kl": "–", "top1": "–"}
    return {"kl": f"{found['kl_mean']:.2g}", "top1": f"{100 * found['top1']:.1f}%"}


def mmproj_rows(files: Sequence[GGUFFile]) -> list[dict[str, Any]]:
    """The GGUF card's rows for the vision projector (``mmproj-<Model>-<TYPE>.gguf``): name, type, size,
    SHA-256, and ``check``: llama.cpp's check of it (``gguf.projector_check``: ``error``, ``image_tokens``)
    when the build record says it passed and the file is unchanged since, else None."""
    from apto_release.gguf.provenance import recorded

    def check(f: GGUFFile) -> dict[str, Any] | None:
        entry = (recorded([f.path]) or {}).get(f.path.name, {})
        found = entry.get("check")
        return found if entry.get("verified") is True and isinstance(found, dict) and "error" in found else None

    return [{"name": f.path.name, "type": f.path.stem.rsplit("-", 1)[-1], "size": f.size, "sha256": f.sha256, "check": check(f)}
            for f in files]


def _memory_parts(part: MemoryEstimate) -> dict[str, Any]:
    """The context-dependent parts of the memory at the largest card context, the same for every
    file (the KV cache, the recurrent state, the compute buffer), for the table's note."""
    return {"context": f"{part.n_ctx // 1024}k", "kv_cache": part.kv_cache, "recurrent": part.recurrent,
            "compute": part.compute}


def _quant_reference(rows: Sequence[Mapping[str, Any]], evaluation: Evaluation | None) -> Served | None:
    """What served the tuned model the table's files are compared with, when every row names the same."""
    shown = {q.reference for q in (evaluation.quants if evaluation else ()) if any(r["type"] == q.type for r in rows)}
    return shown.pop() if len(shown) == 1 else None
