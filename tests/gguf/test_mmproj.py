"""gguf.mmproj: the vision projector of the tiny Qwen3.5, against llama.cpp's own converter and loader.

The reference is ``convert_hf_to_gguf.py --mmproj`` from the llama.cpp source of the pinned
llama-cpp-python (``gguf.llama_source``), run in a subprocess with that source's own gguf-py; the
file it writes is compared with ours tensor by tensor and key by key. Then llama.cpp's ``mtmd``
(clip) loader, through llama-cpp-python, loads our projector beside the text model's GGUF and
encodes an image with it into the embeddings transformers' vision tower computes.
"""

from __future__ import annotations

import json
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
from apto_release.testing.models import QWEN35_VISION_CONFIG, build_tiny_qwen35

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


# The loader: llama.cpp's mtmd (clip) through llama-cpp-python, in its own process (llama.cpp aborts on errors).
MTMD_WORKER = r"""
import ctypes, json, math, sys
import llama_cpp.llama_cpp as lib
import llama_cpp.mtmd_cpp as mtmd

text, projector, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
lib.llama_backend_init()
model = lib.llama_model_load_from_file(text.encode(), lib.llama_model_default_params())
params = mtmd.mtmd_context_params_default()
params.use_gpu, params.n_threads, params.warmup = False, 2, False
ctx = mtmd.mtmd_init_from_file(projector.encode(), model, params)
out = {"loaded": bool(ctx)}
if ctx:
    out["vision"] = bool(mtmd.mtmd_support_vision(ctx))
    pixels = bytes((x * 7 + y * 3 + c * 50) % 256 for y in range(size) for x in range(size) for c in range(3))
    bitmap = mtmd.mtmd_bitmap_init(size, size, (ctypes.c_uint8 * len(pixels)).from_buffer_copy(pixels))
    chunks = mtmd.mtmd_input_chunks_init()
    prompt = mtmd.mtmd_input_text()
    prompt.text = mtmd.mtmd_default_marker() + " この画像は何ですか？".encode()
    prompt.text_len, prompt.add_special, prompt.parse_special = len(prompt.text), True, True
    out["tokenize"] = mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(prompt), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1)
    for i in range(mtmd.mtmd_input_chunks_size(chunks)):
        chunk = mtmd.mtmd_input_chunks_get(chunks, i)
        if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
            n, width = mtmd.mtmd_input_chunk_get_n_tokens(chunk), lib.llama_model_n_embd(model)
            out["encode"] = mtmd.mtmd_encode_chunk(ctx, chunk)
            embd = mtmd.mtmd_get_output_embd(ctx)
            values = [embd[j] for j in range(n * width)]
            out.update(image_tokens=n, width=width, finite=all(math.isfinite(v) for v in values), values=values)
print(json.dumps(out))
"""


def image(size: int):
    """The worker's test image: (size, size, 3) uint8, a pattern that differs by row, column and channel."""
    import numpy as np

    return np.array([[[(x * 7 + y * 3 + c * 50) % 256 for c in range(3)] for x in range(size)] for y in range(size)], dtype=np.uint8)


def transformers_image_embeddings(model: Path, size: int):
    """The tiny Qwen3.5's vision tower (transformers, float32) on the worker's image, preprocessed by the
    checkpoint's own image processor without resizing (llama.cpp keeps a 128 x 128 image as it is)."""
    import torch
    from transformers import AutoImageProcessor, Qwen3_5ForConditionalGeneration

    batch = AutoImageProcessor.from_pretrained(model)(images=[image(size)], do_resize=False, return_tensors="pt")
    vlm = Qwen3_5ForConditionalGeneration.from_pretrained(model, dtype=torch.float32).eval()
    with torch.no_grad():
        return vlm.model.visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"]).pooler_output.numpy()


def run_mtmd(text: Path, projector: Path, size: int = 128) -> dict:
    pytest.importorskip("llama_cpp")
    done = subprocess.run([sys.executable, "-c", MTMD_WORKER, str(text), str(projector), str(size)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


#: Bounds on llama.cpp's image embeddings against transformers', as max |difference| / max |reference|
#: (measured: F16 6e-4, Q8_0 1.7e-2; a projector with the two layer norms of its block swapped: 0.29).
EMBEDDING_BOUNDS = {"F16": 5e-3, "Q8_0": 5e-2}


def test_llama_cpps_mtmd_loads_the_projector_and_encodes_an_image_as_transformers_does(models, tmp_path):
    import numpy as np

    text = convert(models["f32"], tmp_path, quant="F16").path
    reference = transformers_image_embeddings(models["f32"], 128)
    for quant, bound in EMBEDDING_BOUNDS.items():
        projector = convert_mmproj(models["f32"], tmp_path, quant=quant).path
        result = run_mtmd(text, projector)
        # 128 x 128 pixels: 8 x 8 patches of 16, merged 2 x 2 into 16 tokens of the text model's width
        merge = QWEN35_VISION_CONFIG["spatial_merge_size"] * QWEN35_VISION_CONFIG["patch_size"]
        assert result == {**result, "loaded": True, "vision": True, "tokenize": 0, "encode": 0,
                          "image_tokens": (128 // merge) ** 2, "width": 64, "finite": True}
        embeddings = np.array(result["values"], dtype=np.float32).reshape(result["image_tokens"], result["width"])
        assert embeddings.shape == reference.shape
        error = np.abs(embeddings - reference).max() / np.abs(reference).max()
        assert error <= bound, f"{quant}: llama.cpp's image embeddings differ from transformers' by {error:.2e} of their scale"


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
