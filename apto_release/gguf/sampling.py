"""The model's sampling defaults, from its ``generation_config.json``, where llama.cpp and Ollama
read them: ``general.sampling.*`` keys in every GGUF file (llama.cpp's tools take them as their
defaults), and Ollama's ``params`` file beside the files in the GGUF repo.

Only the keys the checkpoint has are written. A configuration that turns sampling off
(``"do_sample": false``) is greedy decoding in transformers whatever its temperature says, so it
becomes ``temp = 0`` (greedy in llama.cpp) and nothing else.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from apto_release.errors import InputError

GENERATION_CONFIG = "generation_config.json"
#: Ollama's per-repo defaults file (``ollama run hf.co/<repo>`` reads it; JSON, no extension).
OLLAMA_PARAMS = "params"  # one of gguf.output.COMPANION_FILES
#: transformers' name -> llama.cpp's (``general.sampling.<name>``, ``llama_model_meta_key``), and Ollama's.
KEYS = {
    "temperature": ("temp", "temperature"),
    "top_k": ("top_k", "top_k"),
    "top_p": ("top_p", "top_p"),
    "min_p": ("min_p", "min_p"),
    "repetition_penalty": ("penalty_repeat", "repeat_penalty"),
}
_INTEGER = {"top_k"}


def sampling_defaults(model_dir: str | Path) -> dict[str, float | int]:
    """The checkpoint's sampling defaults by llama.cpp's names (``{"temp": 1.0, "top_k": 20}``);
    empty without a ``generation_config.json`` or without sampling keys in it.

    Raises:
        InputError: the file is not a JSON object, or a value is not a number in range.
    """
    path = Path(model_dir) / GENERATION_CONFIG
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not valid JSON: {exc}", path=path) from None
    if not isinstance(config, dict):
        raise InputError("not a JSON object", path=path)
    defaults: dict[str, float | int] = {}
    for hf_name, (name, _) in KEYS.items():
        value = config.get(hf_name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InputError(f"{hf_name} must be a number of at least 0, not {value!r}", path=path, field=hf_name)
        if name in _INTEGER and value != int(value):
            raise InputError(f"{hf_name} must be a whole number, not {value!r}", path=path, field=hf_name)
        defaults[name] = int(value) if name in _INTEGER else float(value)
    if defaults and config.get("do_sample") is False:
        return {"temp": 0.0}
    return defaults


#: The order llama.cpp's converter writes them in (gguf-py's ``Metadata.set_gguf_meta_model``).
_GGUF_ORDER = ("top_k", "top_p", "min_p", "temp", "penalty_repeat")


def add_to_gguf(writer: Any, defaults: dict[str, float | int]) -> None:
    """Write ``defaults`` as ``general.sampling.*`` keys (gguf-py's ``add_sampling_<name>``), in llama.cpp's order."""
    for name in sorted(defaults, key=_GGUF_ORDER.index):
        getattr(writer, f"add_sampling_{name}")(defaults[name])


def ollama_params(defaults: dict[str, float | int], stop: list[str]) -> dict[str, Any]:
    """Ollama's ``params``: the stop strings, then the defaults under Ollama's option names."""
    ollama = {llama: name for llama, name in KEYS.values()}
    return {"stop": list(stop), **{ollama[name]: value for name, value in defaults.items()}}


def params_text(model_dir: str | Path, stop: list[str]) -> str:
    """The ``params`` file of the checkpoint in ``model_dir`` (the same checkpoint, the same text)."""
    return json.dumps(ollama_params(sampling_defaults(model_dir), stop), ensure_ascii=False, indent=2) + "\n"
