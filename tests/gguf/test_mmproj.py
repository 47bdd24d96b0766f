"""gguf.mmproj: the vision projector of the tiny Qwen3.5, against llama.cpp's own converter and loader.

The reference is ``convert_hf_to_gguf.py --mmproj`` from the llama.cpp source of the pinned
llama-cpp-python (``gguf.llama_source``), run in a subprocess with that source's own gguf-py; the
file it writes is compared with ours tensor by tensor and key by key. Then llama.cpp's ``mtmd``
(clip) loader, through llama-cpp-python (``gguf.projector_check``), loads our projector beside the text model's GGUF and
encodes an image with it into the embeddings transformers' vision tower computes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("torch")

from apto_release.errors import InputError, UsageError
from apto_release.gguf.convert import convert
from apto_release.gguf.mmproj import convert_mmproj, mmproj_name, vision_tower
from apto_release.gguf.output import companion_files
from apto_release.testing.models import build_tiny_qwen35

#: A model card in the checkpoint: its licence, sources, tags and languages become general.* keys.
CARD = """---
license: apache-2.0
base_model: Qwen/Qwen3.5-9B
tags:
- safety
language:
- ja
datasets:
- apto-ai/ja-safety-sample
---
# TinyVLCard
"""

#: Where our general.* keys legitimately differ from llama.cpp's converter (all from the model
#: card's sources, written by ``convert.add_general`` for the text files alike): llama.cpp makes a
#: title of a repo id's parts ("Qwen3.5 9B", "Ja Safety Sample", "Apto Ai"); we keep the Hub's own
#: spelling, and link a dataset at its Hub address (llama.cpp's lacks "/datasets/", a model URL).
CARD_DIFFERENCES = {
    "general.base_model.0.name": ("Qwen3.5-9B", "Qwen3.5 9B"),
    "general.dataset.0.name": ("ja-safety-sample", "Ja Safety Sample"),
    "general.dataset.0.organization": ("apto-ai", "Apto Ai"),
    "general.dataset.0.repo_url": ("https://huggingface.co/datasets/apto-ai/ja-safety-sample", "https://huggingface.co/apto-ai/ja-safety-sample"),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mmproj")
    carded = build_tiny_qwen35(root / "TinyVLCard", dtype="bfloat16", num_shards=2)
    (carded / "README.md").write_text(CARD, "utf-8")
    return {
        "f32": build_tiny_qwen35(root / "TinyVL"),
        "bf16": carded,
        "text": build_tiny_qwen35(root / "TinyText", vision=False, mtp=False, num_shards=1),
    }


def llama_cpp_mmproj(model: Path, out: Path, quant: str) -> Path:
    """llama.cpp's converter, from the pinned source, with its own gguf-py."""
    from apto_release.gguf.llama_source import source_dir

    source = source_dir()
    path = out / f"reference-{model.name}-{quant}.gguf"
    env = {**os.environ, "PYTHONPATH": str(source / "gguf-py"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(source / "convert_hf_to_gguf.py"), "--mmproj", str(model), "--outfile", str(path), "--outtype", quant.lower()],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return path


def key_values(reader) -> dict[str, tuple]:
    return {k: (tuple(f.types), f.contents()) for k, f in reader.fields.items() if not k.startswith("GGUF.")}


@pytest.mark.parametrize(("kind", "quant"), [("f32", "F16"), ("f32", "BF16"), ("bf16", "Q8_0")])
def test_the_projector_is_what_llama_cpps_converter_writes(models, tmp_path, kind, quant):
    # the text model's own keys, as build_gguf passes them, say nothing of the projector: ignored
    ours = convert_mmproj(models[kind], tmp_path, quant=quant, size_label="9B", mtp=True, pre="qwen35")
    reference = llama_cpp_mmproj(models[kind], tmp_path, quant)
    theirs = gguf.GGUFReader(reference)
    assert ours.path.name == f"mmproj-{models[kind].name}-{quant}.gguf"
    mine = gguf.GGUFReader(ours.path)

    # Tensor by tensor: names (in order), shapes, types and bytes.
    assert [t.name for t in mine.tensors] == [t.name for t in theirs.tensors]
    for a, b in zip(mine.tensors, theirs.tensors, strict=True):
        assert (a.name, a.tensor_type, list(a.shape)) == (b.name, b.tensor_type, list(b.shape))
        assert bytes(a.data.view("uint8")) == bytes(b.data.view("uint8")), a.name
    types = {t.name: t.tensor_type.name for t in mine.tensors}
    assert types["v.position_embd.weight"] == "F32" and types["v.blk.0.ln1.weight"] == "F32"
    assert types["v.patch_embd.weight"] == types["v.patch_embd.weight.1"] == ("F16" if quant == "F16" else "F32")
    assert types["mm.0.weight"] == quant and ours.tensor_types == dict(Counter(types.values()))

    # Key by key: the same keys, types and values, but for the model card's sources (see CARD_DIFFERENCES).
    kv_ours, kv_theirs = key_values(mine), key_values(theirs)
    assert set(kv_ours) == set(kv_theirs)
    differing = {k: (kv_ours[k][1], kv_theirs[k][1]) for k in kv_ours if kv_ours[k] != kv_theirs[k]}
    assert differing == (CARD_DIFFERENCES if kind == "bf16" else {})
    assert kv_ours["general.architecture"][1] == "clip" and kv_ours["general.type"][1] == "mmproj"
    assert kv_ours["clip.projector_type"][1] == "qwen3vl_merger"
    assert kv_ours["clip.vision.projection_dim"][1] == 64  # the text model's hidden size
    assert kv_ours["clip.vision.image_size"][1] == 128  # sqrt(64 position embeddings) * 16
    assert kv_ours["clip.vision.image_mean"][1] == [0.5, 0.5, 0.5]
    if kind == "f32":  # no card: the very same file
        assert ours.path.read_bytes() == reference.read_bytes()


def transformers_image_embeddings(model: Path):
    """The tiny Qwen3.5's vision tower as the whole model holds it (transformers, float32) on the check's
    image, preprocessed by the checkpoint's own image processor without resizing: a second road to
    ``reference_embeddings``, which builds the tower alone."""
    import numpy as np
    import torch
    from transformers import AutoImageProcessor, Qwen3_5ForConditionalGeneration

    from apto_release.gguf.projector_check import HEIGHT, WIDTH, pattern_image

    pixels = np.frombuffer(pattern_image(), dtype=np.uint8).reshape(HEIGHT, WIDTH, 3)
    batch = AutoImageProcessor.from_pretrained(model)(images=[pixels], do_resize=False, return_tensors="pt")
    vlm = Qwen3_5ForConditionalGeneration.from_pretrained(model, dtype=torch.float32).eval()
    with torch.no_grad():
        return vlm.model.visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"]).pooler_output.numpy()


def test_the_reference_is_the_vision_tower_of_the_whole_model(models):
    import numpy as np

    from apto_release.gguf.projector_check import reference_embeddings

    for model in (models["f32"], models["bf16"]):  # one shard, and two shards in bf16
        alone, whole = reference_embeddings(model), transformers_image_embeddings(model)
        # 128 x 96 pixels: 8 x 6 patches of 16, merged 2 x 2 into 12 tokens of the text model's width
        assert alone.shape == whole.shape == (12, 64)
        np.testing.assert_allclose(alone, whole, rtol=1e-5, atol=1e-6)


#: Measured: F16 6e-4, BF16 3e-3, Q8_0 1.6e-2 of the embeddings' scale; a projector with the two
#: layer norms of its block swapped: 0.29 (BOUNDS: 5e-3, 3e-2, 5e-2).
def test_llama_cpps_mtmd_encodes_an_image_with_the_projector_as_transformers_does(models, tmp_path):
    pytest.importorskip("llama_cpp")
    from apto_release.gguf.projector_check import BOUNDS, check_projector

    text = convert(models["f32"], tmp_path, quant="F16").path
    for quant in ("F16", "BF16", "Q8_0"):
        projector = convert_mmproj(models["f32"], tmp_path, quant=quant).path
        check = check_projector(projector, text, models["f32"], threads=2)
        assert check.ok and check.image_tokens == 12 and check.bound == BOUNDS[quant], check.to_text()
        assert 0 < check.error <= BOUNDS[quant] / 3, check.to_text()  # room under the bound
        assert check.to_text().endswith(": ok") and f"beside {text.name}" in check.to_text()


def test_a_projector_of_another_checkpoint_fails_the_check(models, tmp_path):
    pytest.importorskip("llama_cpp")
    from apto_release.gguf.projector_check import check_projector

    other = build_tiny_qwen35(tmp_path / "TinyVL", seed=1)  # same shapes, other weights
    text = convert(models["f32"], tmp_path / "out", quant="F16").path
    projector = convert_mmproj(other, tmp_path / "out").path
    check = check_projector(projector, text, models["f32"], threads=2)
    assert not check.ok and check.error > 0.1 and "differ by" in check.detail, check.to_text()
    assert "FAILED" in check.to_text()
    # the tensors of a text-only checkpoint make no reference at all
    with pytest.raises(InputError, match="no vision_config"):
        check_projector(projector, text, models["text"], threads=2)


def test_a_checkpoint_without_a_vision_tower_has_no_projector(models, tmp_path):
    assert vision_tower(models["f32"]) and not vision_tower(models["text"])
    with pytest.raises(UsageError, match="no vision tower") as info:
        convert_mmproj(models["text"], tmp_path)
    assert info.value.field == "vision_config"
    assert not list(tmp_path.iterdir())


def test_bad_projector_inputs_are_one_line_errors_and_leave_nothing(models, tmp_path):
    import shutil

    broken = tmp_path / "NoPreprocessor"
    shutil.copytree(models["f32"], broken)
    (broken / "preprocessor_config.json").unlink()
    with pytest.raises(InputError, match="'image_mean' .* is missing") as info:
        convert_mmproj(broken, tmp_path / "out")
    assert "preprocessor_config.json" in info.value.hint
    with pytest.raises(UsageError, match="the model name '../x' cannot be a file name"):
        convert_mmproj(models["f32"], tmp_path / "out", name="../x")
    with pytest.raises(UsageError, match="unknown mmproj type 'Q4_K_M'"):
        convert_mmproj(models["f32"], tmp_path / "out", quant="Q4_K_M")
    convert_mmproj(models["f32"], tmp_path / "out")
    with pytest.raises(UsageError, match="the output file exists"):
        convert_mmproj(models["f32"], tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [mmproj_name("TinyVL", "F16")]


def test_the_projector_is_a_companion_file_of_its_model(models, tmp_path):
    (tmp_path / "params").write_text("{}\n", "utf-8")
    convert_mmproj(models["f32"], tmp_path, name="Apto-VL")
    convert_mmproj(models["f32"], tmp_path, name="Other")
    assert [p.name for p in companion_files(tmp_path, "Apto-VL")] == ["params", "mmproj-Apto-VL-F16.gguf"]
    assert [p.name for p in companion_files(tmp_path)] == ["params", "mmproj-Apto-VL-F16.gguf", "mmproj-Other-F16.gguf"]


def test_a_failed_projector_check_stops_the_build_with_everything_recorded(models, tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp")
    from apto_release.errors import BuildError
    from apto_release.gguf import projector_check
    from apto_release.gguf.build import build_gguf
    from apto_release.gguf.provenance import read_record

    monkeypatch.setitem(projector_check.BOUNDS, "F16", 1e-9)  # no real projector is this close
    seen = []
    with pytest.raises(BuildError, match="llama.cpp's check of the vision projector failed: the embeddings differ") as info:
        build_gguf(models["f32"], tmp_path, ["Q8_0"], threads=2, on_mmproj=lambda item, check: seen.append(check))
    assert "apto-release gguf verify" in info.value.hint and str(models["f32"]) in info.value.hint
    (check,) = seen
    assert not check.ok and check.bound == 1e-9
    entries = read_record(tmp_path)["files"]
    assert entries["mmproj-TinyVL-F16.gguf"]["verified"] is False and entries["TinyVL-Q8_0.gguf"]["verified"] is True
    assert (tmp_path / "TinyVL-Q8_0.gguf").is_file() and (tmp_path / "mmproj-TinyVL-F16.gguf").is_file()
