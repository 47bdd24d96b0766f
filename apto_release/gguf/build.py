"""Every GGUF file of one model: direct types, K-quants, verification (``apto-release gguf convert``).

- F16, BF16 and Q8_0 are written by ``convert`` from the safetensors, streaming, and split into a
  llama.cpp split set when larger than ``split_max_size``.
- K-quants (Q4_K_M, ...) are made by llama.cpp's quantizer (``quantize``) from a high-precision
  GGUF: the F16 or BF16 file of the same run when there is one in a single file (BF16 preferred
  for a bfloat16 checkpoint, F16 otherwise), else one written for the purpose in a hidden staging
  folder and removed afterwards. K-quant files are never split: Ollama does not load split sets,
  and a Q4_K_M is under a third of the F16 (a file over the limit is reported, not hidden).
- The vision projector of a Qwen3.5 with its vision tower, ``mmproj-<Model>-F16.gguf`` (``mmproj``:
  another type, or none), as llama.cpp's converter writes it (``gguf.mmproj``); a checkpoint without
  a vision tower gets none. One projector serves every file: ``llama-server -hf`` takes the
  ``mmproj`` file of the repo (the nearest in bits when there are several).
- Ollama's ``params`` file (the stop string and the checkpoint's sampling defaults, ``gguf.sampling``)
  is written beside the files once they are all written.
- Each file is then checked with llama.cpp against the checkpoint (``verify``) unless
  ``verify=False``; the reference logits are computed once for all files. A file that fails
  stays where it is, complete, and the result says so (the CLI exits 1).
- What wrote each file, whether llama.cpp verified it, and which llama.cpp this was are recorded
  beside the files for the card (``gguf.provenance``; hidden, never published).

Given a ``progress`` reporter, each of these steps is a task of it: ``convert F16`` counts the
bytes of tensor data written; ``quantize Q4_K_M`` (llama.cpp in its subprocess says nothing until
it is done), ``reference logits`` and ``verify F16`` are spinners.

Every output name is checked before any work starts, so a run that would collide with an
existing file stops at once rather than after the long conversions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apto_release.errors import BuildError, UsageError
from apto_release.gguf import GGUF_TYPES, output
from apto_release.gguf.convert import EOT_TOKEN, QUANT_TYPES, convert, output_name
from apto_release.gguf.imatrix import check_request as check_imatrix_request
from apto_release.gguf.imatrix import place_computed, prepare_imatrix
from apto_release.gguf.mmproj import convert_mmproj, mmproj_name, vision_tower
from apto_release.gguf.quantize import K_QUANTS, quantize
from apto_release.gguf.provenance import record_files
from apto_release.gguf.sampling import OLLAMA_PARAMS, params_text
from apto_release.io import write_text
from apto_release.merge.shards import CheckpointIndex
from apto_release.progress import Progress

#: The Hub takes files up to 50 GB; the default stays below with a margin.
DEFAULT_SPLIT_MAX_SIZE = 48 * 1000**3
ALL_QUANTS = GGUF_TYPES

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)


@dataclass
class GgufFile(output.Written):
    """One output (a file or a split set) and, when verified, its report."""

    report: Any = None  # verify.VerifyReport
    quality: Any = None  # quality.Quality, against the run's F16 or BF16 file

    @classmethod
    def of(cls, result: output.Written) -> GgufFile:
        return cls(result.quant, result.paths, result.bytes, result.seconds, result.tensor_types)

    @property
    def ok(self) -> bool:
        return self.report is None or self.report.ok


def parse_size(text: str) -> int:
    """``"48G"`` -> 48e9 bytes, ``"500MiB"`` -> 500 * 2**20; ``"0"`` means no splitting."""
    match = _SIZE.match(str(text))
    if not match:
        raise UsageError(f"'{text}' is not a size; write e.g. 48G, 500M or 2GiB", field="split-max-size")
    number, unit, binary = float(match.group(1)), match.group(2).upper(), bool(match.group(3))
    power = "KMGT".find(unit) + 1 if unit else 0
    return int(number * (1024 if binary else 1000) ** power)


def normalise_quants(quants: list[str] | tuple[str, ...]) -> list[str]:
    """Upper-cased, de-duplicated, in the order given; unknown names are a usage error."""
    out = list(dict.fromkeys(q.strip().upper() for q in quants if q.strip()))
    unknown = [q for q in out if q not in ALL_QUANTS]
    if unknown:
        raise UsageError(f"unknown GGUF type '{unknown[0]}'; choose from {', '.join(ALL_QUANTS)}", field="quant")
    if not out:
        raise UsageError("no GGUF type given", field="quant")
    return out


def build_gguf(
    model_dir: str | Path,
    out_dir: str | Path,
    quants: list[str] | tuple[str, ...],
    *,
    name: str | None = None,
    split_max_size: int = DEFAULT_SPLIT_MAX_SIZE,
    verify: bool = True,
    overwrite: bool = False,
    threads: int | None = None,
    mmproj: str | None = "F16",
    on_file: Callable[[GgufFile], None] | None = None,
    on_mmproj: Callable[[output.Written | None], None] | None = None,
    progress: Progress | None = None,
    imatrix: str | Path | None = None,
    calibration: str | Path | None = None,
    calibration_against: Sequence[str | Path] = (),
    calibration_general: str | Path | None = None,
    llama_cpp: str | Path | None = None,
    imatrix_made: dict[str, Any] | None = None,
    **metadata: Any,
) -> list[GgufFile]:
    """Write ``out_dir/<name>-<TYPE>.gguf`` for each of ``quants`` from the checkpoint in ``model_dir``,
    and ``out_dir/mmproj-<name>-<mmproj>.gguf`` when the checkpoint has a vision tower.

    ``metadata`` goes to ``convert`` (basename, finetune, version, size_label, license, mtp, ...)
    and, but for the text model's own keys, to ``convert_mmproj``. ``mmproj``: the projector's
    type (``F16``, ``BF16``, ``Q8_0``), or None for no projector. ``on_file`` is called with each
    output as it is finished (and, last, verified), between the tasks of ``progress``, which
    reports each conversion, quantization and verification; ``on_mmproj``, last, with the
    projector written (or None when ``mmproj`` is set and the checkpoint has no vision tower) and,
    with ``verify``, its check (``gguf.projector_check``: llama.cpp encodes an image with it as
    transformers' vision tower does), else None. A failed check raises ``BuildError`` after that
    call, with every file left in place and recorded.
    The list returned holds the ``quants`` files; the projector is a companion file
    (``output.COMPANION_FILES``). ``imatrix`` (``"auto"`` with a ``calibration``, or a file)
    quantizes with an importance matrix, written beside the files (``gguf.imatrix.prepare_imatrix``,
    which takes ``calibration_against`` and ``calibration_general`` to the draw from records);
    ``llama_cpp`` is a folder with llama.cpp's tools (default: built once, ``gguf.tools``).
    ``imatrix_made``: ``imatrix`` is a file that ``imatrix_for_checkpoint`` computed over the text
    ``calibration``, and this its record; both files are copied beside the files, as ``auto`` leaves them.
    """
    progress = progress or Progress.off()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    quants = normalise_quants(quants)
    name = name or model_dir.resolve().name
    for quant in quants:
        output.check_free(out_dir, output_name(name, quant).removesuffix(".gguf"), overwrite=overwrite)
    wanted = mmproj is not None
    if mmproj is not None:
        mmproj = mmproj.upper()
        if mmproj not in QUANT_TYPES:
            raise UsageError(f"unknown mmproj type '{mmproj}'; choose one of {', '.join(QUANT_TYPES)}", field="mmproj-type")
        if not vision_tower(model_dir):
            mmproj = None
        else:
            output.check_free(out_dir, mmproj_name(name, mmproj).removesuffix(".gguf"), overwrite=overwrite)
    sources = {"calibration_against": tuple(calibration_against), "calibration_general": calibration_general}
    check_imatrix_request(quants, imatrix, None if imatrix_made else calibration, out_dir, overwrite=overwrite, llama_cpp=llama_cpp, **sources)
    params, params_path = params_text(model_dir, [EOT_TOKEN]), out_dir / OLLAMA_PARAMS
    if not overwrite and params_path.is_file() and params_path.read_bytes() != params.encode("utf-8"):
        raise UsageError(f"{params_path} exists with other settings (another model's?)",
                         hint="use another output folder, or overwrite it (--overwrite)")

    files: list[GgufFile] = []
    made_with: dict[str, Any] = {}  # the imatrix, for the build record

    def done(item: GgufFile) -> None:
        files.append(item)
        if on_file is not None and not verify:
            on_file(item)

    for quant in (q for q in quants if q in QUANT_TYPES):
        with progress.task(f"convert {quant}", unit="B") as task:
            result = convert(
                model_dir, out_dir, quant=quant, name=name, overwrite=overwrite, split_max_size=split_max_size,
                on_bytes=task.update, **metadata,
            )
        done(GgufFile.of(result))
    projector = None
    if mmproj is not None:
        with progress.task(f"convert mmproj {mmproj}", unit="B") as task:
            projector = convert_mmproj(model_dir, out_dir, quant=mmproj, name=name, overwrite=overwrite, on_bytes=task.update, **metadata)

    if overwrite:  # a projector of another type, or of a run that wanted one, would be published too
        for stale in output.companion_files(out_dir, name):
            if stale.suffix == ".gguf" and stale.name.startswith("mmproj-") and (projector is None or stale != projector.path):
                stale.unlink()

    k_quants = [q for q in quants if q in K_QUANTS]
    if k_quants:
        source_quant = _intermediate_type(model_dir)
        reuse = next((f for f in files if f.quant == source_quant and len(f.paths) == 1), None)
        with output.staging(out_dir, f"{name}-intermediate") as staged:
            if reuse is not None:
                source = reuse.path
            else:
                with progress.task(f"convert {source_quant} for the K-quants", unit="B") as task:
                    source = convert(
                        model_dir, staged, quant=source_quant, name=name, split_max_size=0, on_bytes=task.update, **metadata
                    ).path
            if imatrix is not None and imatrix_made is not None:
                imatrix, made_with = place_computed(Path(imatrix), Path(str(calibration)), imatrix_made, out_dir)
            elif imatrix is not None:
                with progress.task("imatrix"):
                    imatrix, made_with = prepare_imatrix(imatrix, calibration, source, model_dir, out_dir, threads=threads, llama_cpp=llama_cpp,
                                                         **sources)
            for quant in k_quants:
                with progress.task(f"quantize {quant}"):
                    result = quantize(
                        source, out_dir, output_name(name, quant).removesuffix(".gguf"), quant, threads=threads, overwrite=overwrite,
                        imatrix=imatrix, llama_cpp=llama_cpp,
                    )
                done(GgufFile.of(result))

    write_text(params_path, params)

    if verify:
        from apto_release.gguf.verify import load_reference
        from apto_release.gguf.verify import verify as verify_file

        with progress.task("reference logits"):
            reference = load_reference(model_dir, threads=threads)
        _measure_quality(files, _intermediate_type(model_dir), threads, progress)
        for item in files:
            with progress.task(f"verify {item.quant}"):
                item.report = verify_file(item.path, reference, threads=threads)
            if on_file is not None:
                on_file(item)
    record = {path: {"written_by": "llama.cpp's quantizer" if item.quant in K_QUANTS else "gguf-py",
                     "verified": verify and item.ok,
                     **({"imatrix": made_with} if made_with and item.quant in K_QUANTS else {}),
                     **({"quality": item.quality.recorded()} if item.quality is not None else {})}
              for item in files for path in item.paths}
    check = None
    if projector is not None:
        if verify:
            from apto_release.gguf.projector_check import check_projector

            with progress.task(f"verify mmproj {mmproj}"):
                check = check_projector(projector.path, files[0].path, model_dir, threads=threads)
        record[projector.path] = {"written_by": "gguf-py", "verified": check is not None and check.ok,
                                  **({"check": check.recorded()} if check is not None else {})}
    record_files(out_dir, record)
    if on_mmproj is not None and (projector is not None or wanted):
        on_mmproj(projector, check)
    if check is not None and not check.ok:
        raise BuildError(f"llama.cpp's check of the vision projector failed: {check.detail}", path=projector.path,
                         hint=f"the files stay for inspection; see: apto-release gguf verify {projector.path} {files[0].path} --reference {model_dir}")
    return files


def imatrix_for_checkpoint(
    model_dir: str | Path,
    out_dir: str | Path,
    calibration: str | Path,
    *,
    name: str | None = None,
    threads: int | None = None,
    llama_cpp: str | Path | None = None,
    calibration_against: Sequence[str | Path] = (),
    calibration_general: str | Path | None = None,
) -> dict[str, Any]:
    """``out_dir/imatrix.gguf`` and ``out_dir/calibration.txt`` for the checkpoint in ``model_dir``:
    its F16/BF16 file (the one ``build_gguf`` quantizes from: the same bytes) is converted into a
    staging folder, removed after. Returns the record ``build_gguf(imatrix_made=...)`` takes."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    check_imatrix_request(["Q4_K_M"], "auto", calibration, out_dir, overwrite=True, llama_cpp=llama_cpp,
                          calibration_against=tuple(calibration_against), calibration_general=calibration_general)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or model_dir.resolve().name
    with output.staging(out_dir, f"{name}-intermediate") as staged:
        source = convert(model_dir, staged, quant=_intermediate_type(model_dir), name=name, split_max_size=0).path
        return prepare_imatrix("auto", calibration, source, model_dir, out_dir, threads=threads, llama_cpp=llama_cpp,
                               calibration_against=calibration_against, calibration_general=calibration_general)[1]


def _measure_quality(files: list[GgufFile], preferred: str, threads: int | None, progress: Progress) -> None:
    """The quality pass (``gguf.quality``) of every other file against the run's F16 or BF16 file
    (``preferred`` when both were written), when there is one."""
    floats = sorted((f for f in files if f.quant in ("F16", "BF16")), key=lambda f: f.quant != preferred)
    others = [f for f in files if floats and f is not floats[0]]
    if not others:
        return
    from apto_release.gguf.quality import measure_quality

    with progress.task(f"quality against {floats[0].quant}"):
        measured = measure_quality([f.path for f in others], floats[0].path, threads=threads)
    for item, quality in zip(others, measured):
        item.quality = quality


def _intermediate_type(model_dir: Path) -> str:
    """BF16 for a checkpoint stored in bfloat16 (no second rounding), F16 otherwise (read from the shard headers)."""
    index = CheckpointIndex.from_dir(model_dir)
    bf16 = any(info.dtype == "BF16" for shard in index.shards for info in index.tensors_in(shard))
    return "BF16" if bf16 else "F16"
