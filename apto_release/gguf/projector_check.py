"""The vision projector's check: llama.cpp encodes an image with the ``mmproj`` file into the
embeddings that transformers' vision tower computes from the checkpoint.

llama.cpp's side: its ``mtmd`` library (the loader of ``llama-mtmd-cli`` and ``llama-server``),
through llama-cpp-python, in a subprocess of its own (llama.cpp aborts its process on a bad file),
loads the projector beside a text GGUF file of the same model, tokenizes a prompt holding one
image and encodes the image chunk. The reference: ``Qwen3_5VisionModel`` of transformers, built
from the checkpoint's ``vision_config`` and only its ``model.visual.*`` tensors (a vision tower is
under a billion parameters, so float32 costs a few GB even for Qwen3.5-27B), on the same image,
preprocessed by the checkpoint's own image processor without resizing.

The image is 128 x 96 pixels of a fixed pattern: both sides multiples of patch x merge (32), so
neither side resizes it; not square, so a grid read with its height and width swapped differs;
12 image tokens. Passed when llama.cpp makes as many image tokens as transformers, all finite, and
``max |llama.cpp - transformers| / max |transformers|`` is within the bound of the projector's
type (``BOUNDS``; measured on the tiny Qwen3.5: F16 about 6e-4, Q8_0 about 2e-2).
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from apto_release.errors import InputError, UsageError

#: The largest ``max |difference| / max |reference|`` passed, by the projector's type.
BOUNDS = {"F32": 5e-3, "F16": 5e-3, "BF16": 3e-2, "Q8_0": 5e-2}
WIDTH, HEIGHT = 128, 96
PROMPT = " この画像は何ですか？"


@dataclass
class ProjectorCheck:
    """What the check found for one projector file."""

    file: str
    ok: bool
    detail: str  # why it failed, or "" when it passed
    error: float | None = None
    bound: float | None = None
    image_tokens: int | None = None
    text_model: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def recorded(self) -> dict[str, Any]:
        """What the build record keeps: the figures and the text file it was loaded beside."""
        return {k: v for k, v in self.to_dict().items() if k not in ("file", "ok", "detail") and v is not None}

    def to_text(self) -> str:
        head = f"{self.file}: vision projector, loaded by llama.cpp's mtmd beside {self.text_model}"
        if self.error is None:
            return f"{head}: FAILED: {self.detail}"
        figures = (f"{self.image_tokens} image tokens, max |llama.cpp - transformers| {self.error:.1e} of their scale "
                   f"(bound {self.bound:g})")
        return f"{head}: {figures}: " + ("ok" if self.ok else f"FAILED: {self.detail}")


def is_projector(path: str | Path) -> bool:
    """Whether the GGUF file ``path`` is a vision projector (``general.type`` mmproj, as ``gguf.mmproj`` writes);
    False for a missing file (the text checks name it).

    Raises:
        InputError: not a readable GGUF file.
    """
    import gguf

    path = Path(path)
    if not path.is_file():
        return False
    try:
        field = gguf.GGUFReader(path).fields.get("general.type")
    except (ValueError, OSError, IndexError) as exc:
        raise InputError(f"not a readable GGUF file: {exc}", path=path) from exc
    return field is not None and field.contents() == "mmproj"


def pattern_image(width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """The check's image: ``height`` rows of ``width`` RGB pixels, a pattern that differs by row, column and channel."""
    return bytes((x * 7 + y * 3 + c * 50) % 256 for y in range(height) for x in range(width) for c in range(3))


def reference_embeddings(model_dir: str | Path, width: int = WIDTH, height: int = HEIGHT):
    """The image's embeddings by transformers' vision tower of ``model_dir`` (float32), as a numpy array (tokens, width).

    Raises:
        InputError: no ``vision_config`` or no ``model.visual.*`` tensors, or the image processor cannot be loaded.
    """
    import numpy as np
    import torch
    from transformers import AutoImageProcessor
    from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5VisionConfig, Qwen3_5VisionModel

    from apto_release.gguf.mmproj import PREFIXES
    from apto_release.io import read_json_object
    from apto_release.merge.shards import CheckpointIndex, ShardReader

    model_dir = Path(model_dir)
    config = read_json_object(model_dir / "config.json", "the model's config").get("vision_config")
    if not isinstance(config, dict):
        raise InputError("the checkpoint has no vision_config: there is no vision tower to check a projector against",
                         path=model_dir / "config.json", field="vision_config")
    index = CheckpointIndex.from_dir(model_dir)
    names = [n for n in index.weight_map if n.startswith(PREFIXES)]
    if not names:
        raise InputError("the checkpoint has no model.visual.* tensors", path=model_dir)
    tower = Qwen3_5VisionModel._from_config(Qwen3_5VisionConfig(**config), dtype=torch.float32).eval()
    state: dict[str, Any] = {}
    for shard in index.shards:
        wanted = [n for n in names if index.weight_map[n] == shard]
        if wanted:
            with ShardReader(index.headers[shard]) as reader:
                for name in wanted:
                    prefix = next(p for p in PREFIXES if name.startswith(p))
                    state[name.removeprefix(prefix)] = reader.get_tensor(name).float()
    missing, unexpected = tower.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"the vision tensors do not fit transformers' vision tower (missing {missing[:3]}, unexpected {unexpected[:3]})",
                         path=model_dir)
    try:
        processor = AutoImageProcessor.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise InputError(f"the image processor cannot be loaded: {exc}", path=model_dir,
                         hint="the checkpoint needs its preprocessor_config.json") from exc
    pixels = np.frombuffer(pattern_image(width, height), dtype=np.uint8).reshape(height, width, 3)
    batch = processor(images=[pixels], do_resize=False, return_tensors="pt")
    with torch.no_grad():
        return tower(batch["pixel_values"], grid_thw=batch["image_grid_thw"]).pooler_output.numpy()


def check_projector(projector: str | Path, text_model: str | Path, model_dir: str | Path, *, threads: int | None = None,
                    timeout: float | None = 600) -> ProjectorCheck:
    """Check the ``mmproj`` file ``projector``, loaded by llama.cpp beside the text GGUF ``text_model``,
    against the vision tower of the checkpoint ``model_dir``.

    Raises:
        UsageError: a file is missing, or llama-cpp-python is not installed.
        InputError: the checkpoint has no vision tower (``reference_embeddings``).
        BuildError: llama.cpp ran past ``timeout`` seconds.
    """
    import numpy as np

    from apto_release.gguf.verify import default_threads, file_type_name, require_llama_cpp, run_llama_module

    projector, text_model = Path(projector), Path(text_model)
    for path, field in ((projector, "files"), (text_model, "files")):
        if not path.is_file():
            raise UsageError(f"{path}: no such GGUF file", field=field)
    require_llama_cpp()
    quant = file_type_name(projector) or "F16"
    bound = BOUNDS.get(quant, BOUNDS["Q8_0"])
    reference = reference_embeddings(model_dir)
    threads = threads or default_threads()

    def failed(detail: str, **figures: Any) -> ProjectorCheck:
        return ProjectorCheck(projector.name, False, detail, bound=bound, text_model=text_model.name, **figures)

    with tempfile.TemporaryDirectory(prefix="apto-mmproj-") as tmp:
        work = Path(tmp)
        request = {"text": str(text_model), "projector": str(projector), "width": WIDTH, "height": HEIGHT, "threads": threads}
        result, status, log = run_llama_module("apto_release.gguf.projector_check", request, work, threads=threads, timeout=timeout,
                                               what=f"llama.cpp's check of {projector.name}")
        if result is None:
            return failed(f"llama.cpp failed (status {status}): " + " | ".join(log[-4:]))
        if "error" in result:
            return failed(result["error"])
        got = np.load(work / "embeddings.npy")
    if got.shape != reference.shape:
        return failed(f"llama.cpp made {got.shape[0]} image tokens of width {got.shape[1]}, transformers "
                      f"{reference.shape[0]} of width {reference.shape[1]}", image_tokens=int(got.shape[0]))
    if not np.isfinite(got).all():
        return failed("llama.cpp's image embeddings are not all finite", image_tokens=int(got.shape[0]))
    error = float(np.abs(got - reference).max() / max(float(np.abs(reference).max()), 1e-30))
    ok = error <= bound
    return ProjectorCheck(projector.name, ok, "" if ok else f"the embeddings differ by {error:.1e} of their scale, over {bound:g}",
                          error=error, bound=bound, image_tokens=int(got.shape[0]), text_model=text_model.name)


def _worker(request: dict[str, Any], work: Path) -> None:
    """Runs in its own process: load, tokenize the prompt with the image, encode it, save the embeddings."""
    import ctypes

    import llama_cpp.llama_cpp as lib
    import llama_cpp.mtmd_cpp as mtmd
    import numpy as np

    def give(result: dict[str, Any]) -> None:
        (work / "result.json").write_text(json.dumps(result), "utf-8")

    lib.llama_backend_init()
    params = lib.llama_model_default_params()
    params.use_extra_bufts = False  # the AMX path crashes on some CPUs (see gguf._llama_worker)
    model = lib.llama_model_load_from_file(request["text"].encode(), params)
    if not model:
        return give({"error": f"llama.cpp cannot load the text model {Path(request['text']).name}"})
    context_params = mtmd.mtmd_context_params_default()
    context_params.use_gpu, context_params.n_threads, context_params.warmup = False, int(request["threads"]), False
    ctx = mtmd.mtmd_init_from_file(request["projector"].encode(), model, context_params)
    if not ctx:
        return give({"error": "llama.cpp's mtmd cannot load the projector beside this text model (see its log)"})
    if not mtmd.mtmd_support_vision(ctx):
        return give({"error": "llama.cpp loads the projector, but not as a vision projector"})
    width, height = int(request["width"]), int(request["height"])
    pixels = pattern_image(width, height)
    bitmap = mtmd.mtmd_bitmap_init(width, height, (ctypes.c_uint8 * len(pixels)).from_buffer_copy(pixels))
    chunks = mtmd.mtmd_input_chunks_init()
    prompt = mtmd.mtmd_input_text()
    prompt.text = mtmd.mtmd_default_marker() + PROMPT.encode()
    prompt.text_len, prompt.add_special, prompt.parse_special = len(prompt.text), True, True
    status = mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(prompt), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1)
    if status != 0:
        return give({"error": f"llama.cpp cannot tokenize a prompt with the image (status {status})"})
    for i in range(mtmd.mtmd_input_chunks_size(chunks)):
        chunk = mtmd.mtmd_input_chunks_get(chunks, i)
        if mtmd.mtmd_input_chunk_get_type(chunk) != mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
            continue
        n, n_embd = mtmd.mtmd_input_chunk_get_n_tokens(chunk), lib.llama_model_n_embd(model)
        status = mtmd.mtmd_encode_chunk(ctx, chunk)
        if status != 0:
            return give({"error": f"llama.cpp cannot encode the image (status {status})"})
        values = np.ctypeslib.as_array(mtmd.mtmd_get_output_embd(ctx), shape=(n * n_embd,))
        np.save(work / "embeddings.npy", values.reshape(n, n_embd).astype(np.float32))
        return give({"image_tokens": int(n)})
    give({"error": "llama.cpp's tokenization of the prompt holds no image chunk"})


if __name__ == "__main__":
    _request_path = Path(sys.argv[1])
    _worker(json.loads(_request_path.read_text("utf-8")), _request_path.parent)
