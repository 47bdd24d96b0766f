"""The llama.cpp side of ``gguf verify``: run one GGUF file through llama-cpp-python, in its own process.

``verify`` starts ``python -m apto_release.gguf._llama_worker REQUEST.json`` because llama.cpp
aborts (or crashes) the whole process on an internal error. The request names the file, the
texts to tokenize, the conversations to render, the token sequences to evaluate and a work folder.
The worker appends one JSON line per stage to ``progress.jsonl`` in that folder (``start``, then
``done`` with the results, or ``error``) and writes the logits of each sequence as ``logits-<i>.npy``,
so that after a crash the parent knows which stage was running and keeps what finished before it.
llama.cpp's own log goes to standard error, which the parent keeps for the failure message.

This module imports ``llama_cpp`` and ``numpy`` only; nothing of torch or transformers.

The model is loaded with llama.cpp's "extra" CPU buffer types turned off (``use_extra_bufts``,
which ``Llama(...)`` does not expose). On CPUs with AMX-INT8 those buffer types put Q4_0, Q4_1,
Q8_0, Q4_K, Q5_K, Q6_K and IQ4_XS weight matrices into the AMX buffer; in llama.cpp builds made
with GCC 12 the AMX matrix multiplication for batches of more than one token then loads an
invalid tile configuration (the compiler drops the stores that fill it) and the process dies with
SIGSEGV. The plain CPU kernels compute the same logits.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

STAGES = ("load", "tokenize", "template", "logits", "eot")


class _Progress:
    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", encoding="utf-8")  # open for the whole run

    def emit(self, stage: str, status: str, **data: Any) -> None:
        self._file.write(json.dumps({"stage": stage, "status": status, **data}, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def load_model(path: str, *, n_ctx: int, threads: int, extra_buffers: bool = False):
    """``llama_cpp.Llama`` for logits of every position, on ``threads`` CPU threads, without extra buffer types."""
    import llama_cpp
    import llama_cpp.llama_cpp as lib

    default_params = lib.llama_model_default_params

    def model_params():
        params = default_params()
        params.use_extra_bufts = extra_buffers
        return params

    # Llama.__init__ builds its llama_model_params from this function and loads the model at once.
    lib.llama_model_default_params = model_params
    try:
        return llama_cpp.Llama(
            model_path=path,
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            logits_all=True,
            seed=0,
            verbose=True,  # llama.cpp's log to stderr, quoted by the parent when something fails
        )
    finally:
        lib.llama_model_default_params = default_params


#: The sampling defaults ``gguf.sampling`` writes, by llama.cpp's ``llama_model_meta_key`` names.
SAMPLING_KEYS = ("temp", "top_k", "top_p", "min_p", "penalty_repeat")


def sampling_metadata(llm) -> dict[str, str]:
    """The ``general.sampling.*`` values the file holds, as llama.cpp reads them (text), looked up
    under the key names llama.cpp itself gives (``llama_model_meta_key_str``)."""
    import llama_cpp.llama_cpp as lib

    found = {}
    for name in SAMPLING_KEYS:
        key = lib.llama_model_meta_key_str(getattr(lib, f"LLAMA_MODEL_META_KEY_SAMPLING_{name.upper()}"))
        value = llm.metadata.get(key.decode("utf-8")) if key else None
        if value is not None:
            found[name] = value
    return found


def _stage(progress: _Progress, stage: str, run) -> Any:
    progress.emit(stage, "start")
    try:
        result = run()
    except Exception as exc:  # reported as the stage's failure; the next stages still run
        progress.emit(stage, "error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=3))
        return None
    progress.emit(stage, "done", **result)
    return result


def run(request: dict[str, Any]) -> int:
    import numpy as np

    work = Path(request["workdir"])
    progress = _Progress(work / "progress.jsonl")
    state: dict[str, Any] = {}

    def load() -> dict[str, Any]:
        import llama_cpp.llama_cpp as lib

        llm = load_model(
            request["path"], n_ctx=int(request["n_ctx"]), threads=int(request["threads"]),
            extra_buffers=bool(request.get("extra_buffers", False)),
        )
        state["llm"] = llm
        vocab = llm._model.vocab
        meta = llm.metadata
        return {
            "n_vocab": int(llm.n_vocab()),
            "architecture": meta.get("general.architecture"),
            "eos": int(lib.llama_vocab_eos(vocab)),
            "eot": int(lib.llama_vocab_eot(vocab)),
            "bos": int(lib.llama_vocab_bos(vocab)),
            "eot_is_eog": bool(lib.llama_vocab_is_eog(vocab, int(request["eot_id"]))),
            "sampling": sampling_metadata(llm),
        }

    if _stage(progress, "load", load) is None:
        progress.close()
        return 1
    llm = state["llm"]

    def tokenize() -> dict[str, Any]:
        return {"tokens": [llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) for text in request["texts"]]}

    def template() -> dict[str, Any]:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        source = llm.metadata.get("tokenizer.chat_template")
        if source is None:
            return {"rendered": None}
        # As Llama.__init__ builds the chat handler from the file's template (llama.py).
        eos_id, bos_id = llm.token_eos(), llm.token_bos()
        formatter = Jinja2ChatFormatter(
            template=source,
            eos_token=llm._model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=llm._model.token_get_text(bos_id) if bos_id != -1 else "",
            add_generation_prompt=True,
            stop_token_ids=[eos_id],
        )
        # Whole conversations (ending with the answer) are rendered as training sees them.
        whole = Jinja2ChatFormatter(
            template=source, eos_token=formatter.eos_token, bos_token=formatter.bos_token, add_generation_prompt=False, stop_token_ids=[eos_id]
        )
        return {
            "rendered": [formatter(messages=messages).prompt for messages in request["conversations"]],
            "rendered_complete": [whole(messages=messages).prompt for messages in request.get("complete_conversations", [])],
        }

    def logits() -> dict[str, Any]:
        files = []
        for i, ids in enumerate(request["sequences"]):
            llm.reset()
            llm.eval(ids)
            name = f"logits-{i}.npy"
            np.save(work / name, np.asarray(llm.scores[: len(ids)], dtype=np.float32))
            files.append(name)
        return {"files": files}

    def eot() -> dict[str, Any]:
        token = int(request["eot_id"])
        llm.reset()
        completion = llm.create_completion(
            list(request["eot_prompt"]), max_tokens=int(request.get("eot_max_tokens", 8)), temperature=0.0,
            logit_bias={token: 1000.0}, seed=0,
        )
        choice = completion["choices"][0]
        return {
            "text": choice["text"],
            "finish_reason": choice["finish_reason"],
            "completion_tokens": int(completion["usage"]["completion_tokens"]),
        }

    _stage(progress, "tokenize", tokenize)
    _stage(progress, "template", template)
    _stage(progress, "logits", logits)
    _stage(progress, "eot", eot)
    progress.close()
    return 0


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text("utf-8"))
    return run(request)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
