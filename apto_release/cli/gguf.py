"""The ``gguf`` commands: convert a merged checkpoint to GGUF, verify GGUF files with llama.cpp."""

from __future__ import annotations

from pathlib import Path

import click

from apto_release.cli.options import license_option, output_dir_option, overwrite_option, threads_option, version_option


@click.group("gguf")
def gguf_group() -> None:
    """Convert merged checkpoints to GGUF for llama.cpp, Ollama and LM Studio."""


@gguf_group.command(
    "convert",
    epilog="Example: apto-release gguf convert out/merged -o out/gguf --quant F16 --quant Q8_0 --quant Q4_K_M --name Apto-Qwen3.5-9B-Safety",
)
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@output_dir_option("Folder for the .gguf files.")
@click.option(
    "--quant", "quants", multiple=True, default=("F16",), show_default=True, metavar="TYPE",
    help="F16, BF16, Q8_0 (written directly) or a K-quant: Q4_K_M, Q5_K_M, Q6_K, Q4_K_S, Q5_K_S, Q3_K_M, Q2_K "
    "(llama.cpp's quantizer), or an i-quant: IQ4_XS, IQ3_M, IQ2_M, ... (IQ1_*, IQ2_*, IQ3_XXS, IQ3_XS and Q2_K_S need "
    "--imatrix). Repeatable or comma-separated: one file per type.",
)
@click.option("--imatrix", metavar="auto|FILE", help="Quantize with an importance matrix: 'auto' computes imatrix.gguf with "
              "llama-imatrix from the F16/BF16 file and --calibration; a FILE (GGUF imatrix) is used as it is. Written beside the files.")
@click.option("--calibration", type=click.Path(dir_okay=False, path_type=Path), metavar="RECORDS_OR_TEXT",
              help="For --imatrix auto: a records file (.jsonl/.parquet, drawn as `gguf calibration` does) or a plain UTF-8 text; "
              "kept as calibration.txt.")
@click.option("--calibration-against", multiple=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="With --calibration RECORDS: records close to an item of this benchmark are left out (as `gguf calibration --against`). Repeatable.")
@click.option("--calibration-general", type=click.Path(dir_okay=False, path_type=Path), metavar="TEXT",
              help="With --calibration RECORDS: a general Japanese UTF-8 text mixed in (as `gguf calibration --general`).")
@click.option("--llama-cpp", "llama_cpp", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="A folder with llama.cpp's llama-imatrix and llama-quantize [default: built once from the pinned source, or on PATH].")
@click.option("--name", help="general.name and the file names' stem (<NAME>-<TYPE>.gguf) [default: the folder's name].")
@click.option("--basename", help="general.basename.")
@click.option("--finetune", help="general.finetune.")
@version_option("general.version.")
@click.option("--size-label", help="general.size_label [default: from the parameter count].")
@license_option("general.license [default: the model card's].")
@click.option("--base-model", "base_models", multiple=True, metavar="REPO_ID", help="general.base_model.* (repeatable) [default: the model card's base_model].")
@click.option("--tag", "tags", multiple=True, help="general.tags (repeatable) [default: the model card's tags].")
@click.option("--language", "languages", multiple=True, help="general.languages (repeatable) [default: the model card's language].")
@click.option("--dataset", "datasets", multiple=True, metavar="REPO_ID", help="general.dataset.* (repeatable) [default: the model card's datasets].")
@click.option("--quantized-by", help="general.quantized_by.")
@click.option(
    "--split-max-size", default="48G", show_default=True, metavar="SIZE",
    help="Write F16/BF16/Q8_0 files larger than this as a llama.cpp split set (NAME-TYPE-00001-of-0000N.gguf); "
    "0 never splits. The Hub takes files up to 50 GB.",
)
@click.option(
    "--mmproj-type", default="F16", show_default=True, type=click.Choice(["F16", "BF16", "Q8_0"], case_sensitive=False),
    help="Type of the vision projector (mmproj-NAME-TYPE.gguf) written when MODEL_DIR has a vision tower (Qwen3.5); "
    "one serves every file.",
)
@click.option("--no-mmproj", is_flag=True, help="Write no vision projector (text only).")
@click.option("--mtp/--no-mtp", default=None, help="Write the multi-token-prediction layers (Qwen3.5) [default: when the checkpoint has them].")
@click.option("--verify/--no-verify", default=True, show_default=True, help="Check every file with llama.cpp against MODEL_DIR (see `gguf verify`).")
@threads_option("CPU threads for llama.cpp and the reference [default: up to 4].")
@overwrite_option("Replace existing files.")
def convert_command(
    model_dir, out_dir, quants, name, basename, finetune, version, size_label, license_, base_models, tags, languages, datasets,
    quantized_by, split_max_size, mmproj_type, no_mmproj, mtp, verify, threads, overwrite, imatrix, calibration, llama_cpp,
    calibration_against, calibration_general,
):
    """Convert the checkpoint in MODEL_DIR (Qwen3.5, Qwen3 or Qwen2) to GGUF files, tensor by tensor.

    The tokenizer, with <|im_end|> as end of sequence and end of turn, and the chat template go
    into every file. Each file appears only when complete; then llama.cpp loads it and `gguf
    verify`'s checks run on it (exit 1 when one fails; the file stays for inspection). A
    checkpoint with a vision tower also gets its vision projector, mmproj-NAME-F16.gguf, for image
    input in llama.cpp (llama-server -hf fetches it) and LM Studio.
    """
    from apto_release.gguf.build import build_gguf, parse_size
    from apto_release.io import human_size
    from apto_release.progress import Progress

    quants = [q for item in quants for q in item.split(",")]
    metadata = {"basename": basename, "finetune": finetune, "version": version, "size_label": size_label, "license": license_,
                "quantized_by": quantized_by}
    for key, values in (("base_model", base_models), ("tags", tags), ("languages", languages), ("datasets", datasets)):
        if values:  # given: replaces the model card's
            metadata[key] = list(values)
    if mtp is not None:
        metadata["mtp"] = mtp
    limit = parse_size(split_max_size)

    def show(item) -> None:
        types = ", ".join(f"{n} {t}" for t, n in sorted(item.tensor_types.items()))
        more = f" (+{len(item.paths) - 1} split files)" if len(item.paths) > 1 else ""
        status = "" if item.report is None else ("  verified" if item.report.ok else "  VERIFY FAILED")
        click.echo(f"{item.path}{more}  {human_size(item.bytes)}  ({types})  {item.seconds:.1f}s{status}")
        if item.report is not None and not item.report.ok:
            click.echo(item.report.to_text())
        if item.quality is not None:
            click.echo(f"  quality against {item.quality.against}: " + item.quality.to_text().split(": ", 1)[1])
        if limit and len(item.paths) == 1 and item.bytes > limit:
            click.echo(f"warning: {item.path.name} is larger than --split-max-size ({human_size(item.bytes)}); K-quants are not split", err=True)

    def show_mmproj(item, check) -> None:
        if item is None:
            click.echo("no vision projector: the checkpoint has no vision tower (text only)")
        else:
            types = ", ".join(f"{n} {t}" for t, n in sorted(item.tensor_types.items()))
            status = "" if check is None else ("  verified" if check.ok else "  VERIFY FAILED")
            click.echo(f"{item.path}  {human_size(item.bytes)}  ({types})  {item.seconds:.1f}s  vision projector{status}")
            if check is not None:
                click.echo("  " + check.to_text())

    files = build_gguf(
        model_dir, out_dir, quants, name=name, split_max_size=limit, verify=verify, overwrite=overwrite,
        threads=threads, mmproj=None if no_mmproj else mmproj_type, on_file=show, on_mmproj=show_mmproj, progress=Progress(),
        imatrix=imatrix, calibration=calibration, llama_cpp=llama_cpp,
        calibration_against=calibration_against, calibration_general=calibration_general,
        **metadata,
    )
    if str(imatrix) == "auto" and files:
        _show_calibration(files[-1].path)
    return 0 if all(f.ok for f in files) else 1


def _show_calibration(path: Path) -> None:
    """What the auto imatrix's calibration text held, from the build record beside ``path``."""
    from apto_release.gguf.provenance import read_record

    made = read_record(path.parent).get("files", {}).get(path.name, {}).get("imatrix", {}).get("calibration")
    if not isinstance(made, dict):
        return
    sources = ", ".join(f"{source} {n}" for source, n in made.get("tokens_by_source", {}).items())
    drawn = f"{made['records_drawn']} records, " if "records_drawn" in made else ""
    line = f"{path.parent / made.get('file', '')}: {drawn}{made.get('tokens')} tokens" + (f" ({sources})" if sources else "")
    if made.get("against"):
        line += f"; {made.get('left_out')} left out as close to {', '.join(made['against'])}"
    click.echo(line)


VERIFY_HELP = """Check GGUF FILEs with llama.cpp against the checkpoint they came from.

\b
Runs llama.cpp (llama-cpp-python, in a subprocess) and the reference (transformers, float32,
CPU) and prints one table per file:
  tokenizer          llama.cpp tokenizes Japanese texts exactly as the reference tokenizer
  chat template      the file's template renders as the tokenizer's apply_chat_template
  logits             all positions of three chat prompts, within the bounds of the file type
  end-of-turn token  EOS = EOT = <|im_end|>, an end-of-generation token for llama.cpp
  generation stops   a completion forced to <|im_end|> finishes with 'stop' and no text

\b
Logit bounds by general.file_type (Δ: file minus reference logits, σ: the reference logits'
spread, NMSE = mean Δ² / var(reference), KL in nats):
  F32      max|Δ| <= 1e-3·max(1,σ)  NMSE <= 1e-6
  F16      max|Δ| <= 1e-2·max(1,σ)  NMSE <= 1e-4
  BF16     max|Δ| <= 0.1·max(1,σ)   NMSE <= 1e-3
  Q8_0     NMSE <= 5e-3  KL <= 0.02
  Q6_K     NMSE <= 2e-2  KL <= 0.05
  Q5_K_*   NMSE <= 4e-2  KL <= 0.08
  Q4_K_*   NMSE <= 0.1   KL <= 0.2
  IQ4_XS   NMSE <= 0.15  KL <= 0.3
  Q3_K_*   NMSE <= 0.2   KL <= 0.5
  Q2_K     NMSE <= 0.4   KL <= 1.0
and for every type the argmax agrees wherever the reference's top-two margin is over 8 times
the rms of Δ. (Why these: docs/verify.md.)

\b
A vision projector among the FILEs (mmproj-NAME-TYPE.gguf, general.type mmproj) is loaded by
llama.cpp's mtmd beside the first text FILE, encodes a 128 x 96 image, and passes when its
embeddings are those of the checkpoint's vision tower in transformers: max |Δ| / max |reference|
<= 5e-3 (F16), 3e-2 (BF16), 5e-2 (Q8_0). It needs --reference and a text FILE.

\b
--against-f16 F16: the quality pass. Each FILE and F16 (the F16 or BF16 file of the same
model) run in llama.cpp on a held-out Japanese text (about 600 tokens); printed per file: mean
and 99th percentile of KL(F16 || FILE) per token in nats, and top-1 agreement (the share of
positions whose most likely next token is the F16's). Measured, not bounded. Without
--reference, only this pass runs.

Exit 0 when every check passes, 1 when one fails, 2 for a missing file or a bad reference folder.
"""


@gguf_group.command(
    "verify",
    help=VERIFY_HELP,
    epilog="Example: apto-release gguf verify out/gguf/Apto-Qwen3-8B-Safety-F16.gguf out/gguf/Apto-Qwen3-8B-Safety-Q8_0.gguf --reference out/merged",
)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-r", "--reference", "reference", type=click.Path(path_type=Path), help="The checkpoint folder the files were converted from (weights and tokenizer).")
@click.option("--against-f16", "against_f16", type=click.Path(path_type=Path), metavar="F16",
              help="The F16 (or BF16) file of the same model: also measure KL and top-1 agreement of each FILE against it.")
@threads_option("CPU threads for llama.cpp and torch [default: up to 4].")
@click.option("--timeout", type=click.FloatRange(1, min_open=False), help="Seconds llama.cpp may take per file before its checks fail.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
def verify_command(files, reference, against_f16, threads, timeout, as_json):
    import json

    from apto_release.errors import UsageError
    from apto_release.gguf.projector_check import check_projector, is_projector
    from apto_release.gguf.verify import verify_files

    if reference is None and against_f16 is None:
        raise UsageError("give the checkpoint (--reference DIR), the F16 file (--against-f16 F16), or both", field="reference")
    projectors = [f for f in files if is_projector(f)]
    files = [f for f in files if f not in projectors]
    if projectors and (reference is None or not files):
        raise UsageError(f"{projectors[0].name} is a vision projector: it is checked against the checkpoint's vision tower "
                         "(--reference DIR), loaded beside a text GGUF file of the same model given with it", field="files",
                         hint=f"e.g. apto-release gguf verify {projectors[0]} MODEL-Q8_0.gguf --reference MODEL_DIR")
    reports = []
    for report in verify_files(files, reference, threads=threads, timeout=timeout) if reference is not None else ():
        reports.append(report)
        if not as_json:
            click.echo(report.to_text())
    checks = []
    for projector in projectors:
        checks.append(check_projector(projector, files[0], reference, threads=threads, timeout=timeout))
        if not as_json:
            click.echo(checks[-1].to_text())
    quality = []
    if against_f16 is not None:
        from apto_release.gguf.quality import measure_quality

        quality = measure_quality(list(files), against_f16, threads=threads, timeout=timeout)
        if not as_json:
            click.echo(f"quality against {against_f16.name} (held-out Japanese text, llama.cpp):")
            for q in quality:
                click.echo("  " + q.to_text())
    ok = all(r.ok for r in reports) and all(c.ok for c in checks)
    if as_json:
        extra = {"quality": [q.to_dict() for q in quality]} if against_f16 is not None else {}
        if projectors:
            extra["projectors"] = [c.to_dict() for c in checks]
        click.echo(json.dumps({"ok": ok, "files": [r.to_dict() for r in reports], **extra}, ensure_ascii=False, indent=2))
    elif len(reports) > 1:
        failed = [r.path.name for r in reports if not r.ok]
        click.echo(f"{len(reports) - len(failed)} of {len(reports)} files passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 0 if ok else 1


@gguf_group.command(
    "calibration",
    epilog="Example: apto-release gguf calibration -o out/calibration.txt --records data/records.jsonl --model out/merged",
)
@click.option("-o", "--output", "dest", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The text file to write.")
@click.option("--records", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Records in schema v1 (validated).")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The checkpoint whose tokenizer and chat template render the records and count the tokens.")
@click.option("--max-tokens", type=click.IntRange(1), default=300_000, show_default=True, help="The token budget.")
@click.option("--against", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Benchmark file (as `validate --against`): records close to one of its items are left out. Repeatable.")
@click.option("--against-field", "against_fields", multiple=True, metavar="FIELD", help="Text field of the --against items to compare. Repeatable.")
@click.option("--general", type=click.Path(dir_okay=False, path_type=Path),
              help="A plain UTF-8 general Japanese text mixed in: its lines in file order, up to --general-share of the budget.")
@click.option("--general-share", type=click.FloatRange(0, 1, max_open=True), default=0.3, show_default=True,
              help="The share of --max-tokens the --general text may take.")
def calibration_command(dest, records, model_dir, max_tokens, against, against_fields, general, general_share):
    """Draw a calibration text for `gguf convert --imatrix auto` from the release's records.

    Every category in turn, each in a fixed order (a SHA-256 of the record id), rendered with the
    chat template as in training, until the next record would pass its budget; records close to an
    --against benchmark left out; then the --general text's lines, up to their share.
    """
    from apto_release.gguf.calibration import draw_calibration

    made = draw_calibration(records, model_dir, dest, max_tokens=max_tokens, against=against, against_fields=against_fields,
                            general=general, general_share=general_share)
    click.echo(calibration_summary(made))
    return 0


def calibration_summary(made) -> str:
    """What a drawn calibration holds: records per category, tokens per source, what was left out."""
    parts = ", ".join(f"{category} {n}" for category, n in made.by_category.items())
    sources = ", ".join(f"{source} {n}" for source, n in made.tokens_by_source.items())
    lines = [f"{made.path}: {made.records} records, {made.tokens} tokens ({parts})", f"tokens: {sources}"]
    if made.against:
        s = "" if made.left_out == 1 else "s"
        lines.append(f"{made.left_out} record{s} left out as close to {', '.join(made.against)}")
    return "\n".join(lines)


def register(cli: click.Group) -> None:
    cli.add_command(gguf_group)
