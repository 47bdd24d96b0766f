"""Model cards: metadata, bilingual body, evaluation table and model-index, GGUF table, the offline check."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from apto_release import __version__
from apto_release.errors import InputError
from apto_release.cards import model as cards
from apto_release.cards.check import check_card
from apto_release.cards.model import CardError, build_cards, find_gguf_outputs, render_gguf_card, write_card
from apto_release.evals.results import EvaluationError, load_evaluation, parse_evaluation
from apto_release.io import human_size
from apto_release.release.manifest import load_manifest

NAME = "Apto-Tiny-Safety"
DATA_SHA = "ab" * 32
ORG = "apto-ai"


def tiny_png() -> bytes:
    """A valid 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def training_summary() -> dict:
    """What apto_release.train.trainer writes (abridged where the cards do not look)."""
    per_category = {
        "safety_refusal": {"records": 40, "over_length": 1, "tokens": 12000, "trained_tokens": 6000, "longest": 700, "kept": 39},
        "overrefusal_prevention": {"records": 30, "over_length": 0, "tokens": 9000, "trained_tokens": 5000, "longest": 500, "kept": 30},
        "mid_refusal": {"records": 20, "over_length": 0, "tokens": 7000, "trained_tokens": 3000, "longest": 600, "kept": 20},
        "anti_hallucination": {"records": 10, "over_length": 0, "tokens": 2000, "trained_tokens": 1000, "longest": 300, "kept": 10},
    }
    return {
        "apto_release_version": "0.1.0",
        "preset": "qwen3.5-9b",
        "config": {
            "description": "tiny", "base_model": "Qwen/Qwen3.5-9B",
            "lora.r": 32, "lora.alpha": 64, "lora.dropout": 0.05, "lora.use_rslora": False,
            "lora.target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
            "train.learning_rate": 0.0002, "train.lr_scheduler": "cosine", "train.warmup_ratio": 0.03,
            "train.weight_decay": 0.0, "train.max_grad_norm": 1.0, "train.epochs": 2,
            "train.per_device_batch_size": 4, "train.gradient_accumulation_steps": 4, "train.precision": "bf16",
            "train.gradient_checkpointing": True, "train.fsdp": False, "train.seed": 0,
            "data.max_length": 4096, "data.chat_template": "", "data.end_of_turn": "<|im_end|>",
        },
        "base": "models/Qwen3.5-9B",
        "base_model_id": "Qwen/Qwen3.5-9B",
        "data": {"path": "data/train.jsonl", "sha256": DATA_SHA, "records": 100},
        "tokens": {"max_length": 4096, "per_category": per_category},
        "training": {"world_size": 2, "steps": 13, "epochs": 2.0, "resumed_from": None, "final_loss": 0.8123,
                     "loss_history": [{"step": 1, "loss": 2.0, "learning_rate": 0.0002}], "duration_seconds": 7200.0},
        "ranks": [{"rank": 0, "examples": 50, "record_ids": []}],
        "versions": {"apto_release": "0.1.0", "python": "3.11"},
    }


def evaluation(model: str = NAME) -> dict:
    return {
        "format": 1,
        "model": model,
        "metrics": [
            {"benchmark": "AnswerCarefully", "metric": "acceptable_rate", "label": "AC acceptable rate", "unit": "%",
             "higher_is_better": True, "before": 84.1, "after": 89.8, "ci95": [3.9, 7.5], "significant": True,
             "dataset_id": "llm-jp/AnswerCarefully", "n": 1000},
            {"benchmark": "AnswerCarefully", "metric": "violation_rate", "label": "AC violation rate", "unit": "%",
             "higher_is_better": False, "before": 6.2, "after": 2.9, "dataset_id": "llm-jp/AnswerCarefully"},
            {"benchmark": "MT-Bench-ja", "metric": "score", "label": "MT-Bench-ja", "unit": "",
             "higher_is_better": True, "before": 7.12, "after": 7.05},
        ],
        "judges": ["gpt-4.1", {"name": "human review"}],
    }


def write_gguf(path: Path, tensors: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    """A real GGUF file; each tensor is (type, shape) with type F16, F32, Q8_0 or Q4_K (zero blocks)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "qwen3")
    writer.add_block_count(1)  # what llama.cpp needs to size a context (gguf.memory), as in a real file
    writer.add_embedding_length(256)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    for name, (kind, shape) in tensors.items():
        n = int(np.prod(shape))
        if kind in ("F16", "F32"):
            writer.add_tensor(name, np.ones(shape, dtype=np.float16 if kind == "F16" else np.float32))
        elif kind == "Q8_0":
            q = gguf.quants.quantize(np.ones(shape, dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:  # Q4_K: 144 bytes per 256 weights
            raw = np.zeros((*shape[:-1], shape[-1] // 256 * 144), dtype=np.uint8)
            writer.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType.Q4_K)
        assert n
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


PARAMETERS = 8 * 256 + 256  # token_embd + attn_norm


def make_release(tmp_path: Path, *, with_evaluation: bool = True, push_adapter: bool = True, gguf: bool = True) -> Path:
    """A manifest with one model, and every input the cards read; returns the manifest's path."""
    adapter = tmp_path / "out/adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 32, "lora_alpha": 64, "base_model_name_or_path": "Qwen/Qwen3.5-9B"}))
    (adapter / "training_summary.json").write_text(json.dumps(training_summary(), indent=2))
    (adapter / "loss_curve.png").write_bytes(tiny_png())
    merged = tmp_path / "out/merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text(json.dumps({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"}))
    if gguf:
        folder = tmp_path / "out/gguf"
        folder.mkdir(parents=True)
        embd, norm = ("token_embd.weight", (8, 256)), ("blk.0.attn_norm.weight", (256,))
        write_gguf(folder / f"{NAME}-F16.gguf", {embd[0]: ("F16", embd[1]), norm[0]: ("F32", norm[1])})
        write_gguf(folder / f"{NAME}-Q4_K_M.gguf", {embd[0]: ("Q4_K", embd[1]), norm[0]: ("F32", norm[1])})
        # Q8_0 as a split set: one tensor per file
        write_gguf(folder / f"{NAME}-Q8_0-00001-of-00002.gguf", {embd[0]: ("Q8_0", embd[1])})
        write_gguf(folder / f"{NAME}-Q8_0-00002-of-00002.gguf", {norm[0]: ("F32", norm[1])})
    if with_evaluation:
        (tmp_path / "eval").mkdir()
        (tmp_path / "eval/tiny.json").write_text(json.dumps(evaluation()))
    manifest = f"""
        organisation = "{ORG}"
        version = "1.2.0"
        license = "apache-2.0"

        [dataset.sample]
        repo = "ja-safety-sft-500"
        folder = "out/dataset-sample"

        [dataset.full]
        repo = "ja-safety-sft"
        folder = "out/dataset-full"

        [[model]]
        name = "{NAME}"
        base_model = "Qwen/Qwen3.5-9B"
        preset = "qwen3.5-9b"
        adapter = "out/adapter"
        merged = "out/merged"
        push_adapter = {str(push_adapter).lower()}
    """
    if gguf:
        manifest += '    gguf = ["Q8_0", "F16", "Q4_K_M"]\n        gguf_folder = "out/gguf"\n'
    if with_evaluation:
        manifest += '        evaluation = "eval/tiny.json"\n'
    path = tmp_path / "release.toml"
    path.write_text(textwrap.dedent(manifest))
    return path


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.fixture
def release(tmp_path):
    path = make_release(tmp_path)
    return load_manifest(path), {c.kind: c for c in build_cards(load_manifest(path), year=2026)}


# --- the merged model's card -----------------------------------------------------------------


def test_model_card_metadata(release):
    from huggingface_hub.repocard_data import model_index_to_eval_results

    _, built = release
    meta = front_matter(built["model"].text)
    assert meta["base_model"] == "Qwen/Qwen3.5-9B"
    assert meta["base_model_relation"] == "finetune"
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-generation"
    assert meta["language"] == ["ja", "en"]
    assert meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["apto-ai/ja-safety-sft-500"]  # the public sample only
    assert {"safety", "japanese"} <= set(meta["tags"])
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == f"{ORG}/{NAME}"
    got = {(r.dataset_type, r.metric_type): (r.metric_value, r.dataset_name, r.task_type) for r in results}
    assert got == {
        ("llm-jp/AnswerCarefully", "acceptable_rate"): (89.8, "AnswerCarefully", "text-generation"),
        ("llm-jp/AnswerCarefully", "violation_rate"): (2.9, "AnswerCarefully", "text-generation"),
        ("mt-bench-ja", "score"): (7.05, "MT-Bench-ja", "text-generation"),
    }
    assert check_card(built["model"].text, "model") == []


def test_model_card_body(release):
    _, built = release
    card = built["model"]
    text = card.text
    for heading in ("## 日本語", "## English", "### 評価結果", "### Evaluation", "### 学習の詳細", "### Training details",
                    "### 制限事項", "### Limitations", "### ライセンス", "### License", "### 使い方", "### How to use",
                    "## 来歴 / Provenance", "## 引用 / Citation"):
        assert f"\n{heading}\n" in text, heading
    # before, after, change in points, the interval and the significance mark
    assert "| AnswerCarefully | AC acceptable rate ↑ | 84.1% | 89.8% | +5.7 pt \\* | [+3.9, +7.5] |" in text
    assert "| AnswerCarefully | AC 許容回答率 ↑ | 84.1% | 89.8% | +5.7 ポイント \\* | [+3.9, +7.5] |" in text
    assert "| AnswerCarefully | AC violation rate ↓ | 6.2% | 2.9% | -3.3 pt | — |" in text
    assert "| MT-Bench-ja | MT-Bench-ja ↑ | 7.12 | 7.05 | -0.07 | — |" in text  # a score: units, not points
    assert "SORRY-Bench" not in text.split("### 評価結果")[1].split("###")[0]  # not in the file, not in the table
    assert "Judged by gpt-4.1, human review." in text
    # training details from training_summary.json
    assert "| method | LoRA (rank 32, alpha 64, dropout 0.05) |" in text
    assert "| 手法 | LoRA（rank 32、alpha 64、dropout 0.05） |" in text
    assert "`q_proj`, `k_proj`, `v_proj`, `o_proj`" in text
    assert "| learning rate | 0.0002 (cosine, warm-up 0.03) |" in text
    assert "| epochs | 2 |" in text
    assert "| effective batch size | 32 |" in text  # 4 x 4 x 2 GPUs
    # The run's duration (an old summary has one) is not shown: it would make a rebuild's card differ.
    assert "training time" not in text and "学習時間" not in text
    assert "| `safety_refusal` | 40 | 39 | 12,000 | 6,000 |" in text
    assert "| **total** | 100 | 99 | 30,000 | 15,000 |" in text
    assert "![Training loss](loss_curve.png)" in text
    assert card.assets == {"loss_curve.png": card.path.parent.parent / "adapter/loss_curve.png"}
    # usage, links, provenance, citation
    assert f'model_id = "{ORG}/{NAME}"' in text
    assert f"vllm serve {ORG}/{NAME}" in text
    assert f"[{ORG}/{NAME}-GGUF](https://huggingface.co/{ORG}/{NAME}-GGUF)" in text
    assert f"| apto-release | `{__version__}` |" in text
    assert f"| training data SHA-256 | `{DATA_SHA}` |" in text
    assert "year         = {2026}," in text
    assert "[AnswerCarefully](https://huggingface.co/datasets/llm-jp/AnswerCarefully)" in text


def test_a_model_without_evaluation_says_so_and_has_no_model_index(tmp_path):
    built = build_cards(load_manifest(make_release(tmp_path, with_evaluation=False, push_adapter=False, gguf=False)))
    assert [c.kind for c in built] == ["model"]
    text = built[0].text
    assert "model-index" not in front_matter(text)
    assert "Evaluation results are not published yet" in text
    assert "評価結果はまだ公開していません" in text
    assert "-GGUF" not in text and "-LoRA" not in text
    assert check_card(text, "model") == []


# --- the adapter card ------------------------------------------------------------------------


def test_adapter_card(release):
    _, built = release
    card = built["adapter"]
    meta = front_matter(card.text)
    assert (meta["library_name"], meta["base_model_relation"], meta["base_model"]) == ("peft", "adapter", "Qwen/Qwen3.5-9B")
    assert meta["model-index"][0]["name"] == f"{ORG}/{NAME}-LoRA"
    assert card.path.name == "README.md" and card.path.parent.name == "adapter"
    assert card.repo == f"{ORG}/{NAME}-LoRA"
    assert f'AutoPeftModelForCausalLM.from_pretrained("{ORG}/{NAME}-LoRA"' in card.text
    assert "--max-lora-rank 32" in card.text
    assert "![学習損失](loss_curve.png)" in card.text
    assert check_card(card.text, "adapter") == []


def test_no_adapter_card_without_an_adapter_repo(tmp_path):
    built = build_cards(load_manifest(make_release(tmp_path, push_adapter=False)))
    assert [c.kind for c in built] == ["model", "gguf"]


# --- the GGUF card ---------------------------------------------------------------------------


def test_gguf_outputs_sizes_hashes_and_bits_per_weight(release):
    manifest, _ = release
    outputs = {o.type: o for o in find_gguf_outputs(manifest.models[0])}
    assert list(outputs) == ["F16", "Q8_0", "Q4_K_M"]  # most faithful first
    q8 = outputs["Q8_0"]
    assert [f.path.name for f in q8.files] == [f"{NAME}-Q8_0-00001-of-00002.gguf", f"{NAME}-Q8_0-00002-of-00002.gguf"]
    for o in outputs.values():
        assert o.parameters == PARAMETERS  # summed over the split set
        for f in o.files:
            assert f.sha256 == hashlib.sha256(f.path.read_bytes()).hexdigest()
            assert f.size == f.path.stat().st_size
        assert o.bits_per_weight == pytest.approx(sum(f.size for f in o.files) * 8 / PARAMETERS)


def test_gguf_card(release):
    manifest, built = release
    card = built["gguf"]
    meta = front_matter(card.text)
    assert (meta["base_model"], meta["base_model_relation"]) == (f"{ORG}/{NAME}", "quantized")
    assert "gguf" in meta["tags"] and "model-index" not in meta
    assert card.path == manifest.models[0].gguf_folder / "README.md"
    f16 = manifest.models[0].gguf_folder / f"{NAME}-F16.gguf"
    size = f16.stat().st_size
    bpw = f"{size * 8 / PARAMETERS:.2f}"
    sha = hashlib.sha256(f16.read_bytes()).hexdigest()
    assert f"| {human_size(size)} | {bpw} | `{sha}` |" in card.text
    assert f"[{NAME}-F16.gguf](https://huggingface.co/{ORG}/{NAME}-GGUF/blob/main/{NAME}-F16.gguf) | F16 |" in card.text
    assert f"{NAME}-Q8_0-00002-of-00002.gguf" in card.text
    assert f"llama-server -hf {ORG}/{NAME}-GGUF:Q4_K_M" in card.text
    # the which-file table: the memory llama.cpp allocates at 8k and 32k context (gguf.memory)
    from apto_release.gguf.memory import estimate

    at_8k, at_32k = (estimate([f16], n).total for n in (8192, 32768))
    assert at_32k > at_8k > size
    assert f"| F16 | {human_size(size)} | {human_size(at_8k)} | {human_size(at_32k)} |" in card.text
    assert "| type | size | memory at 8k | memory at 32k | KL | top-1 | use |" in card.text and "メモリ（32k）" in card.text
    assert f"ollama run hf.co/{ORG}/{NAME}-GGUF:Q4_K_M" in card.text
    assert "LM Studio" in card.text
    assert "**recommended**" in card.text
    assert check_card(card.text, "gguf") == []


def test_the_gguf_card_says_which_llama_cpp_quantized_and_verified_the_files(release):
    import os

    from apto_release.gguf.provenance import llama_cpp_build, record_files

    manifest, built = release
    model = manifest.models[0]
    assert "| llama.cpp | `not recorded" in built["gguf"].text  # no record: nothing claimed
    outputs = find_gguf_outputs(model)
    record_files(model.gguf_folder, {f.path: {"written_by": "llama.cpp's quantizer" if o.type == "Q4_K_M" else "gguf-py",
                                              "verified": o.type != "Q8_0"} for o in outputs for f in o.files})
    build = llama_cpp_build()
    assert build["ggml"] and build["commit"] and build["llama_cpp_python"] == "0.3.36"
    text = render_gguf_card(manifest, model, outputs).text
    assert f"| llama.cpp | `ggml {build['ggml']}, commit {build['commit']}, llama-cpp-python 0.3.36` |" in text
    assert "| quantized by llama.cpp | `Q4_K_M` |" in text and "| verified in llama.cpp | `F16, Q4_K_M` |" in text
    f16 = model.gguf_folder / f"{NAME}-F16.gguf"
    os.utime(f16, ns=(0, 0))  # a file changed since: the record no longer speaks for it
    assert "| llama.cpp | `not recorded" in render_gguf_card(manifest, model, outputs).text


def test_the_gguf_card_names_the_sampling_defaults_of_the_params_file(release, tmp_path):
    manifest, built = release
    model = manifest.models[0]
    assert "general.sampling" not in built["gguf"].text  # no params file: nothing said
    (model.gguf_folder / "params").write_text('{"stop": ["<|im_end|>"], "temperature": 1.0, "top_k": 20}\n', "utf-8")
    text = render_gguf_card(manifest, model, find_gguf_outputs(model)).text
    assert text.count("temperature 1.0, top_k 20") == 2 and text.count("`general.sampling.*`") == 2  # both languages
    assert check_card(text, "gguf") == []


def test_the_gguf_card_lists_the_vision_projector_and_shows_image_input(release):
    manifest, built = release
    model = manifest.models[0]
    assert "mmproj" not in built["gguf"].text  # a text-only model: nothing said
    projector = model.gguf_folder / f"mmproj-{NAME}-F16.gguf"
    write_gguf(projector, {"v.patch_embd.weight": ("F16", (32, 48))})
    write_gguf(model.gguf_folder / "mmproj-Other-F16.gguf", {"v.patch_embd.weight": ("F16", (32, 48))})  # another model's
    text = build_cards(manifest, year=2026)[-1].text
    sha = hashlib.sha256(projector.read_bytes()).hexdigest()
    url = f"https://huggingface.co/{ORG}/{NAME}-GGUF/blob/main/{projector.name}"
    for kind in ("画像エンコーダー（mmproj、F16）", "vision projector (mmproj, F16)"):  # the file table, both languages
        assert f"| [{projector.name}]({url}) | {kind} | {human_size(projector.stat().st_size)} | — | `{sha}` |" in text
    assert "mmproj-Other" not in text
    assert text.count(f"llama-server -hf {ORG}/{NAME}-GGUF:Q4_K_M") == 2  # fetches the projector itself
    assert text.count(f"llama-mtmd-cli -m {NAME}-Q4_K_M.gguf --mmproj {projector.name} --image photo.jpg") == 2
    assert "画像入力" in text and "Image input" in text
    assert f'--include "{NAME}-Q4_K_M*.gguf" "{projector.name}"' in text
    assert check_card(text, "gguf") == []
    assert "Checked in llama.cpp (mtmd)" not in text  # no record of a check: nothing claimed
    import os

    from apto_release.gguf.provenance import record_files

    record_files(model.gguf_folder, {projector: {"written_by": "gguf-py", "verified": True,
                                                 "check": {"error": 6.1e-4, "bound": 5e-3, "image_tokens": 12, "text_model": "x.gguf"}}})
    text = build_cards(manifest, year=2026)[-1].text
    assert "image embeddings it makes of a test image (12 tokens) differ from those of the checkpoint's vision tower run in " \
           "transformers by at most 6.1e-04 of their scale" in text
    assert "llama.cpp（mtmd）で確認済みです" in text and check_card(text, "gguf") == []
    os.utime(projector, ns=(0, 0))  # changed since: the record no longer speaks for it
    assert "Checked in llama.cpp (mtmd)" not in build_cards(manifest, year=2026)[-1].text


def test_a_missing_gguf_type_is_an_input_error(tmp_path):
    path = make_release(tmp_path)
    (tmp_path / f"out/gguf/{NAME}-Q4_K_M.gguf").unlink()
    with pytest.raises(InputError, match="no GGUF file for Q4_K_M") as info:
        build_cards(load_manifest(path))
    assert info.value.path == str(tmp_path / "out/gguf")


def test_an_incomplete_split_set_is_an_input_error(tmp_path):
    path = make_release(tmp_path)
    (tmp_path / f"out/gguf/{NAME}-Q8_0-00002-of-00002.gguf").unlink()
    with pytest.raises(InputError, match="incomplete"):
        build_cards(load_manifest(path))


# --- the check at render time ----------------------------------------------------------------


def test_a_failing_card_raises_a_card_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cards, "check_card", lambda text, kind: ["metadata key 'license' is missing"])
    manifest = load_manifest(make_release(tmp_path, gguf=False, push_adapter=False))
    with pytest.raises(CardError) as info:
        build_cards(manifest)
    assert "model card of Apto-Tiny-Safety fails its check: metadata key 'license' is missing" in str(info.value)
    assert "\n" not in str(info.value)
    lenient = build_cards(manifest, strict=False)
    assert lenient[0].problems == ["metadata key 'license' is missing"]
    with pytest.raises(CardError):
        write_card(lenient[0])
    assert not (tmp_path / "out/merged/README.md").exists()


def test_provenance_hook_adds_rows(tmp_path):
    manifest = load_manifest(make_release(tmp_path, gguf=False, push_adapter=False))
    built = build_cards(manifest, provenance=lambda model, kind: {"merged model SHA-256": f"{kind}-{model.name}"})
    assert f"| merged model SHA-256 | `model-{NAME}` |" in built[0].text


def test_write_card_copies_the_loss_curve(release):
    _, built = release
    card = built["model"]
    write_card(card)
    assert card.path.read_text("utf-8") == card.text
    assert (card.path.parent / "loss_curve.png").read_bytes() == tiny_png()
    write_card(built["adapter"])  # the curve is already there: not copied onto itself
    assert (built["adapter"].path.parent / "loss_curve.png").read_bytes() == tiny_png()


# --- inputs ----------------------------------------------------------------------------------


def test_a_missing_training_summary_is_an_input_error(tmp_path):
    path = make_release(tmp_path, gguf=False)
    (tmp_path / "out/adapter/training_summary.json").unlink()
    with pytest.raises(InputError, match="no training_summary.json") as info:
        build_cards(load_manifest(path))
    assert info.value.exit_code == 2


def test_a_training_summary_without_the_lora_rank(tmp_path):
    path = make_release(tmp_path, gguf=False)
    summary = training_summary()
    del summary["config"]["lora.r"]
    (tmp_path / "out/adapter/training_summary.json").write_text(json.dumps(summary))
    with pytest.raises(InputError, match="config.lora.r"):
        build_cards(load_manifest(path))


def test_evaluation_of_another_model_is_refused(tmp_path):
    path = make_release(tmp_path, gguf=False)
    (tmp_path / "eval/tiny.json").write_text(json.dumps(evaluation("Other-Model")))
    with pytest.raises(InputError, match="not of 'Apto-Tiny-Safety'"):
        build_cards(load_manifest(path))


def test_load_evaluation(tmp_path):
    path = tmp_path / "e.json"
    path.write_text(json.dumps(evaluation()))
    ev = load_evaluation(path)
    assert ev.model == NAME and ev.judges == ("gpt-4.1", "human review")
    ac = ev.metrics[0]
    assert (ac.before, ac.after, ac.ci95, ac.significant, ac.n) == (84.1, 89.8, (3.9, 7.5), True, 1000)
    assert ac.change == pytest.approx(5.7) and ac.improved is True
    assert ev.metrics[1].improved is True  # a violation rate going down


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format=2), "unsupported format 2"),
        (lambda d: d.pop("model"), "'model' is missing"),
        (lambda d: d["metrics"][1].update(after="high"), "'metrics[2].after' must be a number"),
        (lambda d: d["metrics"][0].update(unit="pts"), "'metrics[1].unit'"),
        (lambda d: d["metrics"][0].update(ci95=[5, 1]), "'metrics[1].ci95'"),
        (lambda d: d["metrics"][0].update(higer_is_better=True), "did you mean 'metrics[1].higher_is_better'"),
        (lambda d: d["metrics"].append(dict(d["metrics"][0])), "repeats AnswerCarefully acceptable_rate"),
        (lambda d: d.update(metrics=[]), "'metrics' must be a non-empty list"),
    ],
)
def test_bad_evaluation_files(edit, message):
    data = evaluation()
    edit(data)
    with pytest.raises(EvaluationError, match=re.escape(message)) as info:
        parse_evaluation(data, "eval/x.json")
    assert str(info.value).startswith("eval/x.json: ") and "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_an_evaluation_file_that_is_not_json(tmp_path):
    path = tmp_path / "e.json"
    path.write_text("{nope")
    with pytest.raises(EvaluationError, match="not valid JSON"):
        load_evaluation(path)
    with pytest.raises(EvaluationError, match="does not exist"):
        load_evaluation(tmp_path / "missing.json")


# --- results computed by eval summarize --------------------------------------------------------


def summarized_release(tmp_path: Path) -> Path:
    """The release of ``make_release`` with results that eval summarize computed from the hand-made judgements."""
    from apto_release.evals.summarize import summarize, write_results
    from tests.evals.judgement_fixtures import write_hand

    path = make_release(tmp_path, gguf=False)
    summary = summarize(write_hand(tmp_path / "judgements"), model=NAME, resamples=500)
    write_results(summary, tmp_path / "eval/tiny.json", chart=tmp_path / "eval/eval_chart.png")
    return path


def test_cards_show_the_summarized_results(tmp_path):
    built = {c.kind: c for c in build_cards(load_manifest(summarized_release(tmp_path)), year=2026)}
    text = built["model"].text
    en = text.split("### Evaluation\n")[1].split("\n### ")[0]
    ja = text.split("### 評価結果\n")[1].split("\n### ")[0]
    # the table: overall rows only, with the intervals; significance from McNemar or the bootstrap
    assert "| AnswerCarefully | AC acceptable rate ↑ | 33.3% | 66.7% | +33.4 pt | [-15.2, +64.6] |" in en
    assert "| SORRY-Bench | SORRY-Bench refusal rate ↑ | 25.0% | 75.0% | +50.0 pt | [-13.5, +78.9] |" in en
    assert "| MultiJail | MultiJail invalid rate ↓ | 25.0% | 25.0% | +0.0 pt |" in en
    assert "| MT-Bench-ja | MT-Bench-ja score ↑ | 6.0 | 7.5 | +1.5 \\* | [+1.5, +1.5] |" in en
    assert "| AnswerCarefully | AC 許容回答率 ↑ | 33.3% | 66.7% | +33.4 ポイント | [-15.2, +64.6] |" in ja
    assert "| JMMLU | JMMLU 正答率 ↑ | 33.3% | 100.0% | +66.7 ポイント |" in ja
    assert en.count("| AnswerCarefully | AC acceptable rate") == 1  # the categories are in the details
    # how the intervals were found, the chart, the judges and their agreement
    assert "exact McNemar test (p < 0.05)" in en and "paired bootstrap over items (500 resamples, percentile method)" in en
    assert "正確な McNemar 検定" in ja and "ブートストラップ（500 回" in ja
    assert "![The base model and this model, with the 95% interval of each change](eval_chart.png)" in en
    assert "![ベースモデルと本モデルの比較（変化の 95% 信頼区間つき）](eval_chart.png)" in ja
    assert "Judged by A, B, j1. Agreement between the judges (Krippendorff's α): SORRY-Bench 0.50 (nominal, 2 judges)." in en
    assert "判定モデル間の一致度（Krippendorff の α）：SORRY-Bench 0.50（名義尺度、2 モデル）。" in ja
    # per judge and per category, folded away
    assert "<summary>Results per judge</summary>" in en and "| SORRY-Bench refusal rate ↑ | A | 50.0% | 100.0% | +50.0 pt |" in en
    assert "<summary>Results per category</summary>" in en
    assert "| AnswerCarefully | x | AC acceptable rate ↑ | 3 | 33.3% | 100.0% | +66.7 pt | [" in en
    assert "| MT-Bench-ja | writing | MT-Bench-ja score ↑ | 2 | 6.0 | 7.5 | +1.5 \\* | [+1.5, +1.5] |" in en
    assert "<summary>カテゴリ別の結果</summary>" in ja and "<summary>判定モデル別の結果</summary>" in ja
    # the chart goes with the merged model's and the adapter's cards
    chart = tmp_path / "eval/eval_chart.png"
    assert built["model"].assets["eval_chart.png"] == chart and built["adapter"].assets == {"eval_chart.png": chart}
    assert "](eval_chart.png)" in built["adapter"].text
    assert check_card(text, "model") == [] and check_card(built["adapter"].text, "adapter") == []


def test_the_model_index_has_the_overall_results(tmp_path):
    from huggingface_hub.repocard_data import model_index_to_eval_results

    built = build_cards(load_manifest(summarized_release(tmp_path)), year=2026)
    _, results = model_index_to_eval_results(front_matter(built[0].text)["model-index"])
    assert [(r.dataset_type, r.dataset_name, r.metric_type, r.metric_value) for r in results] == [
        ("llm-jp/AnswerCarefully", "AnswerCarefully", "acceptable_rate", 66.7),
        ("llm-jp/AnswerCarefully", "AnswerCarefully", "violation_rate", 33.3),
        ("llm-jp/AnswerCarefully", "AnswerCarefully", "mean_score", 3.67),
        ("sorry-bench/sorry-bench-202406", "SORRY-Bench", "refusal_rate", 75.0),
        ("DAMO-NLP-SG/MultiJail", "MultiJail", "violation_rate", 0.0),
        ("DAMO-NLP-SG/MultiJail", "MultiJail", "invalid_rate", 25.0),
        ("mt-bench-ja", "MT-Bench-ja", "score", 7.5),
        ("nlp-waseda/JMMLU", "JMMLU", "accuracy", 100.0),
    ]


def test_write_card_copies_the_chart_into_the_pushed_folders(tmp_path):
    for card in build_cards(load_manifest(summarized_release(tmp_path)), year=2026):
        write_card(card)
    chart = (tmp_path / "eval/eval_chart.png").read_bytes()
    assert (tmp_path / "out/merged/eval_chart.png").read_bytes() == chart
    assert (tmp_path / "out/adapter/eval_chart.png").read_bytes() == chart


def test_a_results_file_whose_chart_is_missing(tmp_path):
    path = summarized_release(tmp_path)
    (tmp_path / "eval/eval_chart.png").unlink()
    with pytest.raises(EvaluationError, match="the chart 'eval_chart.png' that the results name does not exist"):
        build_cards(load_manifest(path))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["metrics"][0].update(method="wald"), "'metrics[1].method' must be one of mcnemar, bootstrap"),
        (lambda d: d["metrics"][0].update(p_value=1.5), "'metrics[1].p_value' must be a number from 0 to 1"),
        (lambda d: d["metrics"][0].update(category=""), "'metrics[1].category' must be a non-empty string"),
        (lambda d: d["metrics"][0].update(per_judge=[{"judge": "A", "before": 1, "afterr": 2}]),
         "unknown key 'metrics[1].per_judge[1].afterr' (did you mean 'metrics[1].per_judge[1].after'?)"),
        (lambda d: d["metrics"][0].update(per_judge=[{"judge": "A", "before": 1}]), "'metrics[1].per_judge[1].after' is missing"),
        (lambda d: d.update(agreement=[{"benchmark": "AC", "measure": "krippendorff_alpha", "level": "ratio", "value": 0.5,
                                        "judges": ["A", "B"], "units": 3}]), "'agreement[1].level' must be one of"),
        (lambda d: d.update(agreement=[{"benchmark": "AC", "measure": "krippendorff_alpha", "level": "nominal", "value": 0.5,
                                        "judges": ["A"], "units": 3}]), "'agreement[1].judges' must list two or more judges"),
        (lambda d: d.update(bootstrap={"resamples": 0, "seed": 0}), "'bootstrap.resamples' must be a positive integer"),
        # The Hub's rules, matched whole: a trailing newline or a '..' is not a dataset id.
        (lambda d: d["metrics"][0].update(dataset_id="llm-jp/AnswerCarefully\n"), "'metrics[1].dataset_id' must be a Hub dataset id"),
        (lambda d: d["metrics"][0].update(dataset_id="llm-jp/Answer..Carefully"), "'metrics[1].dataset_id' must be a Hub dataset id"),
        (lambda d: d["metrics"][0].update(dataset_id="AnswerCarefully"), "'metrics[1].dataset_id' must be a Hub dataset id"),
        (lambda d: d.update(chart="/tmp/chart.png"), "'chart' must be the relative path of a PNG file"),
        (lambda d: d.update(metrics=[{**m, "category": "x"} for m in d["metrics"]]), "per-category rows only"),
        (lambda d: d["metrics"].append({**d["metrics"][0], "category": "x"}) or d["metrics"].append({**d["metrics"][0], "category": "x"}),
         "repeats AnswerCarefully acceptable_rate of category 'x'"),
    ],
)
def test_bad_optional_evaluation_keys(edit, message):
    data = evaluation()
    edit(data)
    with pytest.raises(EvaluationError, match=re.escape(message)):
        parse_evaluation(data, "eval/x.json")


def test_optional_evaluation_keys_read(tmp_path):
    data = evaluation()
    data["metrics"][0].update(method="mcnemar", p_value=0.001, per_judge=[{"judge": "A", "before": 84.0, "after": 90.0, "n": 1000}])
    data["metrics"].append({**data["metrics"][0], "category": "差別", "per_judge": []})
    data.update(agreement=[{"benchmark": "AnswerCarefully", "measure": "krippendorff_alpha", "level": "ordinal", "value": None,
                            "judges": ["A", "B"], "units": 2000}], bootstrap={"resamples": 10000, "seed": 0}, chart="c.png")
    ev = parse_evaluation(data, tmp_path / "e.json")
    assert [m.category for m in ev.metrics] == [None, None, None, "差別"] and len(ev.overall) == 3 and len(ev.by_category) == 1
    assert (ev.metrics[0].method, ev.metrics[0].p_value, ev.metrics[0].per_judge[0].after) == ("mcnemar", 0.001, 90.0)
    assert ev.agreement[0].value is None and ev.bootstrap_resamples == 10000 and ev.chart == tmp_path / "c.png"


def test_a_damaged_gguf_build_record_claims_nothing(release):
    from apto_release.gguf.provenance import RECORD_NAME

    manifest, _ = release
    model = manifest.models[0]
    for damaged in ("{not json", '{"files": ["a list"]}', "[]"):
        (model.gguf_folder / RECORD_NAME).write_text(damaged, "utf-8")
        assert "| llama.cpp | `not recorded" in render_gguf_card(manifest, model, find_gguf_outputs(model)).text


def test_the_gguf_card_shows_kl_and_top1_from_the_build_record(release):
    import os

    from apto_release.gguf.provenance import record_files

    manifest, built = release
    model = manifest.models[0]
    assert "| KL | top-1 | use |" in built["gguf"].text and "| KL | 上位1一致 | 用途 |" in built["gguf"].text
    assert "measured in llama.cpp against" not in built["gguf"].text  # no record: every cell "–"
    outputs = find_gguf_outputs(model)
    quality = {"kl_mean": 0.0312, "kl_p99": 0.0839, "top1": 0.588, "tokens": 594, "against": f"{NAME}-F16.gguf"}
    record_files(model.gguf_folder, {f.path: {"written_by": "gguf-py", "verified": True, **({"quality": quality} if o.type == "Q8_0" else {})}
                                     for o in outputs for f in o.files})
    text = render_gguf_card(manifest, model, outputs).text
    q8_rows = [line for line in text.splitlines() if line.startswith("| Q8_0 |")]
    f16_rows = [line for line in text.splitlines() if line.startswith("| F16 |")]
    assert len(q8_rows) == 2 and all("| 0.031 | 58.8% |" in row for row in q8_rows), q8_rows
    assert f16_rows and all("| – | – |" in row for row in f16_rows), f16_rows
    assert f"measured in llama.cpp against {NAME}-F16.gguf" in text and f"{NAME}-F16.gguf に対して llama.cpp で測った値" in text
    q8 = next(o for o in outputs if o.type == "Q8_0")
    os.utime(q8.files[-1].path, ns=(0, 0))  # a file changed since: its figures are no longer shown
    assert not any("58.8%" in line for line in render_gguf_card(manifest, model, outputs).text.splitlines())
