"""K-quants (Q4_K_M, Q5_K_M, Q6_K, ...) and i-quants (IQ4_XS, ...) with llama.cpp's own quantizer.

gguf-py writes F16, BF16 and Q8_0 itself; the K-quants' mixes (which tensors get more bits, the
super-block formats) live in llama.cpp's ``llama_model_quantize``, which we call through the
pinned ``llama-cpp-python``. It runs in a subprocess (``python -m apto_release.gguf.quantize``)
because llama.cpp aborts the whole process on an internal assert, and writes into a staging folder
from which the finished file (or split set: ``keep_split`` keeps the input's files) is moved into
place (``output.publish``).

The input is a high-precision GGUF written by ``convert``: F16, or BF16 for checkpoints stored in
bfloat16 (converting bfloat16 to F16 would round the weights once more before quantizing).
Tensors whose rows do not split into 256-value super-blocks get llama.cpp's fallback type
(Q5_0, Q5_1 or Q8_0, else F16): llama.cpp prints how many; the result's ``tensor_types`` says
what was written.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from apto_release.errors import BuildError, UsageError
from apto_release.gguf import IMATRIX_REQUIRED, IQ_TYPES, K_QUANT_TYPES, output

#: Our type name -> the ``llama_ftype`` constant of llama.cpp (``include/llama.h``): LLAMA_FTYPE_MOSTLY_<name>.
K_QUANTS: dict[str, str] = {name: f"LLAMA_FTYPE_MOSTLY_{name}" for name in K_QUANT_TYPES + IQ_TYPES}

_STDERR_TAIL = 12  # lines of llama.cpp's log quoted when it fails


def quantize(
    source: str | Path,
    out_dir: str | Path,
    stem: str,
    quant: str,
    *,
    threads: int | None = None,
    overwrite: bool = False,
    imatrix: str | Path | None = None,
    llama_cpp: str | Path | None = None,
) -> output.Written:
    """Quantize the GGUF ``source`` (a file, or the first file of a split set) to ``out_dir/<stem>.gguf``.

    A split input gives a split output with the same tensors in each file. With an ``imatrix``
    (a GGUF imatrix from ``gguf.imatrix``) the quantizer is llama.cpp's ``llama-quantize`` built
    from the same source (``gguf.tools``, or the one in ``llama_cpp``): llama-cpp-python exposes
    the imatrix only as a C array, and reading llama.cpp's imatrix format is llama.cpp's job.

    Raises:
        UsageError: ``quant`` is not a type this module knows, or needs an imatrix and has none;
            the output exists (without ``overwrite``).
        BuildError: llama.cpp failed or crashed; nothing is left in ``out_dir``.
    """
    started = time.monotonic()
    quant = quant.upper()
    if quant not in K_QUANTS:
        raise UsageError(f"unknown quantization type '{quant}'; choose one of {', '.join(K_QUANTS)}", field="quant")
    check_imatrix([quant], imatrix)
    source = Path(source)
    out_dir = Path(out_dir)
    output.check_free(out_dir, stem, overwrite=overwrite)
    split = bool(re.fullmatch(r".+-00001-of-\d{5}\.gguf", source.name))
    with output.staging(out_dir, stem) as staged:
        # llama.cpp names split outputs "<prefix>-00001-of-0000N.gguf" from the prefix it is given.
        target = staged / (stem if split else f"{stem}.gguf")
        request = {
            "source": str(source),
            "target": str(target),
            "ftype": K_QUANTS[quant],
            "threads": threads or os.cpu_count() or 1,
            "keep_split": split,
        }
        if imatrix is not None:
            _run_quantize_tool(request, quant, Path(imatrix), llama_cpp)
        else:
            _run_worker(request, quant)
        paths = output.publish(staged, out_dir, stem)
    return output.Written(quant, paths, sum(p.stat().st_size for p in paths), time.monotonic() - started, tensor_types(paths))


def tensor_types(paths: tuple[Path, ...]) -> dict[str, int]:
    """GGML type name -> number of tensors of that type, over the files of one output (reads headers only)."""
    import gguf

    counts: dict[str, int] = {}
    for path in paths:
        for tensor in gguf.GGUFReader(path).tensors:
            counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    return counts


def check_imatrix(quants: list[str], imatrix: object) -> None:
    """Refuse, before any work, the types llama.cpp will not make without an importance matrix.

    Raises:
        UsageError: one of ``quants`` is in ``IMATRIX_REQUIRED`` and ``imatrix`` is None.
    """
    needing = [q for q in quants if q in IMATRIX_REQUIRED]
    if needing and imatrix is None:
        raise UsageError(
            f"{', '.join(needing)} cannot be made without an importance matrix: llama.cpp's quantizer refuses to, "
            "because at 1-2 bits per weight the rounding must be weighted by how much each weight is used",
            field="quant", hint="add --imatrix auto (computed from a calibration text) or --imatrix FILE",
        )


def _run_quantize_tool(request: dict, quant: str, imatrix: Path, llama_cpp: str | Path | None) -> None:
    """``llama-quantize --imatrix``, in the imatrix's folder: the GGUF records the name it is given, not a local path."""
    from apto_release.gguf.tools import find_tool, run_tool

    if not imatrix.is_file():
        raise UsageError("the imatrix file does not exist", path=imatrix, field="imatrix")
    command = [str(find_tool("llama-quantize", llama_cpp)), "--imatrix", imatrix.name]
    if request["keep_split"]:
        command.append("--keep-split")
    command += [str(Path(request["source"]).resolve()), str(Path(request["target"]).resolve()), quant, str(request["threads"])]
    run_tool(command, f"making {quant} from {request['source']}", cwd=imatrix.resolve().parent)


def _run_worker(request: dict, quant: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "apto_release.gguf.quantize", json.dumps(request)],
        capture_output=True, text=True, errors="replace",
    )
    if proc.returncode == 0:
        return
    tail = "\n".join(proc.stderr.strip().splitlines()[-_STDERR_TAIL:])
    if proc.returncode < 0:
        how = f"crashed with {signal.Signals(-proc.returncode).name}"
    else:
        how = f"failed (exit {proc.returncode})"
    raise BuildError(f"llama.cpp's quantizer {how} making {quant} from {request['source']}:\n{tail}", path=request["source"])


def _worker(request: dict) -> int:
    """The subprocess side: one ``llama_model_quantize`` call. Returns its status (0 on success)."""
    import ctypes

    import llama_cpp.llama_cpp as llama

    llama.llama_backend_init()
    params = llama.llama_model_quantize_default_params()
    params.ftype = getattr(llama, request["ftype"])
    params.nthread = int(request["threads"])
    params.keep_split = bool(request["keep_split"])
    params.allow_requantize = False
    status = llama.llama_model_quantize(request["source"].encode(), request["target"].encode(), ctypes.byref(params))
    llama.llama_backend_free()
    return int(status)


if __name__ == "__main__":
    sys.exit(_worker(json.loads(sys.argv[1])))
