"""An importance matrix (imatrix) from an F16/BF16 GGUF and a calibration text, with ``llama-imatrix``.

The flags are fixed so that the same inputs give the same file: the context (``-c``, also the
batch), the number of chunks, the threads, ``--parse-special`` (the calibration text is rendered
with the chat template, whose ``<|im_start|>`` must be the control tokens training saw),
``--no-ppl``, and ``--no-repack`` as ``verify`` loads models (``_llama_worker`` says why).
llama-imatrix records the calibration file's name in the imatrix (and llama-quantize the
imatrix's name in the GGUF): both run in the file's folder with the bare name, so no local path
is published. The output is written beside its destination and renamed into place.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from apto_release.errors import InputError, UsageError
from apto_release.gguf.tools import find_tool, run_tool
from apto_release.io import atomic_path

DEFAULT_CONTEXT = 512  # llama-imatrix's own default
DEFAULT_THREADS = 4


@dataclass
class Imatrix:
    """What ``compute_imatrix`` wrote."""

    path: Path
    chunks: int
    entries: int
    seconds: float


def compute_imatrix(
    model: str | Path,
    calibration: str | Path,
    dest: str | Path,
    *,
    context: int = DEFAULT_CONTEXT,
    chunks: int | None = None,
    threads: int | None = None,
    llama_cpp: str | Path | None = None,
) -> Imatrix:
    """Write the imatrix of the GGUF ``model`` over the text ``calibration`` to ``dest`` (GGUF format).

    Args:
        context: tokens per chunk; the text needs at least twice as many.
        chunks: at most this many chunks (default: all of the text).
        llama_cpp: a folder with llama.cpp's tools (``--llama-cpp``); default the cached build.

    Raises:
        InputError: the model or the text is missing, or the text is too short for one chunk.
        UsageError: a context below 16 or chunks below 1.
        BuildError: llama-imatrix failed (its output's tail quoted).
    """
    started = time.monotonic()
    model, calibration, dest = Path(model).resolve(), Path(calibration).resolve(), Path(dest)
    for path, what in ((model, "the GGUF model"), (calibration, "the calibration text")):
        if not path.is_file():
            raise InputError(f"{what} does not exist", path=path)
    if context < 16:
        raise UsageError(f"the context must be at least 16 tokens, not {context}", field="context")
    if chunks is not None and chunks < 1:
        raise UsageError(f"chunks must be at least 1, not {chunks}", field="chunks")
    tool = find_tool("llama-imatrix", llama_cpp)
    tokens = llama_token_count(model, calibration)
    if tokens < 2 * context:  # llama-imatrix's own rule; checked here because its log can be lost when it exits
        raise InputError(f"the calibration text is too short: {tokens} tokens, and llama-imatrix needs at least {2 * context} "
                         f"for a context of {context}", path=calibration, hint="give more text, or a smaller context")
    with atomic_path(dest) as tmp:
        command = [
            str(tool), "-m", str(model), "-f", calibration.name, "-o", str(Path(tmp).resolve()),
            "-c", str(context), "-b", str(context), "-ub", str(context), "--chunks", str(chunks or -1),
            "-t", str(threads or DEFAULT_THREADS), "--parse-special", "--no-ppl", "--output-frequency", "1000000",
            "-ngl", "0", "--no-repack",
        ]
        try:
            run_tool(command, f"computing the imatrix of {model.name}", cwd=calibration.parent)
        except Exception as exc:
            short = re.search(r"you need at least (\d+) tokens for a context of (\d+)", str(exc))
            if short:
                raise InputError(f"the calibration text is too short: llama-imatrix needs at least {short.group(1)} tokens "
                                 f"for a context of {short.group(2)}", path=calibration, hint="give more text, or a smaller context") from None
            raise
        if not Path(tmp).is_file():
            raise InputError("llama-imatrix wrote no imatrix (no chunk was processed)", path=calibration)
    chunk_count, entries = read_imatrix(dest)
    return Imatrix(dest, chunk_count, entries, time.monotonic() - started)


def llama_token_count(model: Path, text_path: Path) -> int:
    """The tokens of the text as llama.cpp tokenizes it for llama-imatrix (the model's vocabulary only, special tokens parsed)."""
    from llama_cpp import Llama

    try:
        text = text_path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("the calibration text is not UTF-8", path=text_path) from None
    vocab = Llama(str(model), vocab_only=True, verbose=False)
    try:
        return len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True))
    finally:
        vocab.close()


def read_imatrix(path: str | Path) -> tuple[int, int]:
    """``(chunks, entries)`` of an imatrix in GGUF format: how many chunks it was computed on, how many tensors it covers.

    Raises:
        InputError: the file is not a GGUF imatrix.
    """
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:
        raise InputError(f"not a GGUF imatrix: {exc}", path=path, hint="llama-imatrix writes one (the legacy .dat format is not read)") from None
    fields = reader.fields
    kind = fields.get("general.type")
    if kind is None or kind.contents() != "imatrix":
        raise InputError("not an imatrix (general.type is not 'imatrix')", path=path)
    chunks = fields.get("imatrix.chunk_count")
    entries = sum(1 for t in reader.tensors if t.name.endswith(".in_sum2"))
    return (int(chunks.contents()) if chunks is not None else 0), entries


# ---------------------------------------------------------------------------------------------
# For ``gguf convert --imatrix auto|FILE [--calibration RECORDS_OR_TEXT]``

IMATRIX_FILE = "imatrix.gguf"  # beside the GGUF files, published with them (output.COMPANION_FILES)
CALIBRATION_FILE = "calibration.txt"
RECORD_SUFFIXES = (".jsonl", ".json", ".parquet", ".gz")  # a records file in schema v1; anything else is text


def check_request(quants: list[str], imatrix: str | Path | None, calibration: str | Path | None, out_dir: str | Path,
                  *, overwrite: bool = False, llama_cpp: str | Path | None = None,
                  calibration_against: Sequence[str | Path] = (), calibration_general: str | Path | None = None) -> None:
    """Everything about ``--imatrix``/``--calibration``/``--llama-cpp`` that can be checked before any work.

    Raises:
        UsageError: a type that needs an imatrix without one; ``auto`` without a calibration, or
            a calibration without ``auto``; ``calibration_against``/``calibration_general``
            without a records calibration to draw; a missing file; an imatrix or calibration text already
            in ``out_dir`` (without ``overwrite``); a ``llama_cpp`` folder without the tools.
    """
    from apto_release.gguf.quantize import K_QUANTS, check_imatrix

    check_imatrix(quants, imatrix)
    if imatrix is None:
        _check_sources(None, calibration_against, calibration_general)
        if calibration is not None:
            raise UsageError("--calibration is only used with --imatrix auto", field="calibration")
        return
    if not any(q in K_QUANTS for q in quants):
        raise UsageError("an imatrix is used by llama.cpp's quantizer only, and no K- or i-quant is requested", field="imatrix")
    if llama_cpp is not None:
        for tool in ("llama-quantize", "llama-imatrix") if str(imatrix) == "auto" else ("llama-quantize",):
            find_tool(tool, llama_cpp)
    if str(imatrix) == "auto":
        if calibration is None:
            raise UsageError("--imatrix auto needs a calibration text", field="calibration",
                             hint="add --calibration RECORDS.jsonl (drawn as `gguf calibration` does) or --calibration TEXT.txt")
        if not Path(calibration).is_file():
            raise UsageError("the calibration file does not exist", path=calibration, field="calibration")
        _check_sources(calibration, calibration_against, calibration_general)
    else:
        _check_sources(None, calibration_against, calibration_general)
        if calibration is not None:
            raise UsageError("--calibration is only used with --imatrix auto (the given imatrix is used as it is)", field="calibration")
        read_imatrix(imatrix)  # a missing or wrong file fails here, before the conversions
    out_dir = Path(out_dir)
    for name in (IMATRIX_FILE, CALIBRATION_FILE):
        target = out_dir / name
        given = imatrix if name == IMATRIX_FILE else calibration
        if target.exists() and not overwrite and not (given is not None and str(given) != "auto" and _same(target, given)):
            raise UsageError(f"{target} exists", path=target, hint="use another output folder, or overwrite it (--overwrite)")


def _check_sources(calibration: str | Path | None, against: Sequence[str | Path], general: str | Path | None) -> None:
    """``--calibration-against``/``--calibration-general`` shape a draw from records, so need one."""
    for option, given in (("--calibration-against", against), ("--calibration-general", general)):
        if given and (calibration is None or not Path(calibration).name.lower().endswith(RECORD_SUFFIXES)):
            raise UsageError(f"{option} is used when --imatrix auto draws the calibration text from a records file",
                             field=option.lstrip("-"), hint="give --calibration RECORDS.jsonl, or leave the option out")
    for path in against:
        if not Path(path).is_file():
            raise UsageError("the benchmark file does not exist", path=path, field="calibration-against")
    if general is not None and not Path(general).is_file():
        raise UsageError("the general text does not exist", path=general, field="calibration-general")


def _same(a: Path, b: str | Path) -> bool:
    try:
        return a.resolve() == Path(b).resolve()
    except OSError:
        return False


def prepare_imatrix(
    imatrix: str | Path,
    calibration: str | Path | None,
    source: Path,
    model_dir: Path,
    out_dir: Path,
    *,
    threads: int | None = None,
    llama_cpp: str | Path | None = None,
    context: int = DEFAULT_CONTEXT,
    calibration_against: Sequence[str | Path] = (),
    calibration_general: str | Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """``out_dir/imatrix.gguf``: the given imatrix copied there, or (``auto``) computed from ``source``
    over ``out_dir/calibration.txt`` (drawn from a records file, leaving out records close to
    ``calibration_against`` and mixing in ``calibration_general``, or the given text copied).

    Returns:
        The imatrix's path, and what made it for the build record (``gguf.provenance``): the
        files' names and SHA-256, the chunks, and how the calibration text was made.
    """
    import shutil

    from apto_release.gguf.calibration import count_tokens, draw_calibration
    from apto_release.io import atomic_path, sha256_file

    dest = out_dir / IMATRIX_FILE
    text = out_dir / CALIBRATION_FILE
    if str(imatrix) != "auto":
        if not _same(dest, imatrix):
            with atomic_path(dest) as tmp:
                shutil.copyfile(imatrix, tmp)
        text.unlink(missing_ok=True)  # an earlier run's (checked: --overwrite), which did not make this imatrix
        return dest, {"file": IMATRIX_FILE, "sha256": sha256_file(dest), "chunks": read_imatrix(dest)[0], "given": True}
    calibration = Path(calibration)
    if calibration.name.lower().endswith(RECORD_SUFFIXES):
        drawn = draw_calibration(calibration, model_dir, text, against=calibration_against, general=calibration_general)
        how = {"records": calibration.name, "records_drawn": drawn.records, "tokens": drawn.tokens,
               "tokens_by_source": drawn.tokens_by_source}
        if drawn.against:
            how.update(against=list(drawn.against), left_out=drawn.left_out)
        if drawn.general is not None:
            how["general"] = drawn.general.name
    else:
        if not _same(text, calibration):
            with atomic_path(text) as tmp:
                shutil.copyfile(calibration, tmp)
        how = {"text": calibration.name, "tokens": count_tokens(text, model_dir)}
    made = compute_imatrix(source, text, dest, context=context, threads=threads, llama_cpp=llama_cpp)
    return dest, {"file": IMATRIX_FILE, "sha256": sha256_file(dest), "chunks": made.chunks, "context": context,
                  "calibration": {"file": CALIBRATION_FILE, "sha256": sha256_file(text), **how}}


def place_computed(imatrix: Path, text: Path, made_with: dict[str, Any], out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Copy an imatrix computed earlier (the release's imatrix job) and its calibration text into
    ``out_dir``, beside the files; returns the imatrix's path there and ``made_with`` (its record)."""
    import shutil

    for given, name in ((imatrix, IMATRIX_FILE), (text, CALIBRATION_FILE)):
        if not given.is_file():
            raise InputError("the imatrix job's output does not exist", path=given, hint="run the imatrix stage first (--stages imatrix)")
        if not _same(out_dir / name, given):
            with atomic_path(out_dir / name) as tmp:
                shutil.copyfile(given, tmp)
    return out_dir / IMATRIX_FILE, dict(made_with)
