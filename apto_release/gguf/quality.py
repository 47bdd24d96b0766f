"""The quality pass of ``gguf verify``: each file against the F16 (or BF16) file of the same model, in llama.cpp.

Both files run through llama-cpp-python (``_llama_worker.load_model``, in a subprocess of its own
as ``verify``'s worker) on a held-out Japanese text shipped with the package (``heldout_ja.txt``:
written for this purpose, no record of the release and not drawn by ``gguf calibration``), tokenized
once by the F16 file. Reported per file: mean ``KL(F16 || file)`` of the next-token distributions over
the positions, in nats (what ``llama-perplexity --kl-divergence`` reports), its 99th percentile, and
top-1 agreement (the share of positions whose argmax is the F16's). See docs/verify.md.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from importlib.resources import files as package_files
from pathlib import Path
from typing import Any

from apto_release.errors import BuildError, UsageError

HELDOUT = "heldout_ja.txt"
_ROWS = 64  # positions per block when computing the distributions


def heldout_text() -> str:
    """The held-out Japanese text (package data)."""
    return package_files("apto_release.gguf").joinpath(HELDOUT).read_text("utf-8")


@dataclass
class Quality:
    """One file's distance from the F16 file on the held-out text."""

    file: str
    kl_mean: float
    kl_p99: float
    top1: float
    tokens: int
    against: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def recorded(self) -> dict[str, Any]:
        """What the build record keeps (``gguf.provenance``): the figures and the F16 file's name."""
        return {k: v for k, v in self.to_dict().items() if k != "file"}

    def to_text(self) -> str:
        return (f"{self.file}: KL(F16 || file) mean {self.kl_mean:.3g}, p99 {self.kl_p99:.3g} nats; "
                f"top-1 agreement {self.top1:.1%} ({self.tokens} tokens)")


def measure_quality(files: list[str | Path], f16: str | Path, *, threads: int | None = None,
                    timeout: float | None = None, text: str | None = None) -> list[Quality]:
    """KL and top-1 agreement of each of ``files`` against ``f16`` on the held-out text, through llama.cpp.

    Args:
        text: another text to measure on instead of the held-out text (the imatrix benchmark's
            held-out records); it must not be a text the files were calibrated on.

    Raises:
        UsageError: a file that does not exist; files whose vocabulary or tokenization differs from the F16's.
        BuildError: llama.cpp failed (its last log lines in the message).
    """
    from apto_release.gguf.verify import default_threads, require_llama_cpp, run_llama_module

    paths = [Path(p) for p in (f16, *files)]
    for p in paths:
        if not p.is_file():
            raise UsageError(f"{p}: no such GGUF file", field="against-f16" if p == paths[0] else "files")
    require_llama_cpp()
    threads = threads or default_threads()
    with tempfile.TemporaryDirectory(prefix="apto-quality-") as tmp:
        work = Path(tmp)
        request = {"f16": str(paths[0]), "files": [str(p) for p in paths[1:]], "text": heldout_text() if text is None else text, "threads": threads}
        data, status, log = run_llama_module("apto_release.gguf.quality", request, work, threads=threads, timeout=timeout,
                                             what=f"the quality pass against {paths[0].name}")
    if data is None:
        raise BuildError(f"the quality pass against {paths[0].name} failed (status {status}): " + "\n".join(log[-8:]))
    if "error" in data:
        raise UsageError(data["error"], field="against-f16")
    return [Quality(**q, against=paths[0].name) for q in data["files"]]


def _log_probs(llm, ids: list[int]):
    import numpy as np

    llm.reset()
    llm.eval(ids)
    scores = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
    scores -= scores.max(axis=1, keepdims=True)
    return (scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))).astype(np.float32)


def compare(reference, other) -> tuple[Any, Any]:
    """Per-position ``KL(reference || other)`` (nats) and argmax agreement of two log-probability arrays."""
    import numpy as np

    kl, agree = [], []
    for start in range(0, len(reference), _ROWS):
        p, q = reference[start:start + _ROWS].astype(np.float64), other[start:start + _ROWS].astype(np.float64)
        kl.append(np.maximum((np.exp(p) * (p - q)).sum(axis=1), 0.0))
        agree.append(p.argmax(axis=1) == q.argmax(axis=1))
    return np.concatenate(kl), np.concatenate(agree)


def _worker(request: dict[str, Any], out: Path) -> None:
    import numpy as np

    from apto_release.gguf._llama_worker import load_model

    text, threads = request["text"], int(request["threads"])

    def load(path: str, n_ctx: int):
        return load_model(path, n_ctx=n_ctx, threads=threads)

    probe = load(request["f16"], 64)
    ids = probe.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    n_vocab = probe.n_vocab()
    del probe
    n_ctx = 64 * -(-(len(ids) + 16) // 64)
    llm = load(request["f16"], n_ctx)
    reference = _log_probs(llm, ids)
    del llm
    results = []
    for path in request["files"]:
        llm = load(path, n_ctx)
        if llm.n_vocab() != n_vocab or llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) != ids:
            out.write_text(json.dumps({"error": f"{Path(path).name} is not of the same model as {Path(request['f16']).name} "
                                                f"(its vocabulary or tokenization differs)"}), "utf-8")
            return
        kl, agree = compare(reference, _log_probs(llm, ids))
        del llm
        results.append({"file": Path(path).name, "kl_mean": float(kl.mean()), "kl_p99": float(np.percentile(kl, 99)),
                        "top1": float(agree.mean()), "tokens": len(ids)})
    out.write_text(json.dumps({"files": results}), "utf-8")


if __name__ == "__main__":
    _request_path = Path(sys.argv[1])
    _worker(json.loads(_request_path.read_text("utf-8")), _request_path.parent / "result.json")
