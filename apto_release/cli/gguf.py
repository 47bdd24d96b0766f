"""The ``gguf`` commands: convert a merged checkpoint to GGUF (verify joins with llama.cpp)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("gguf")
def gguf_group() -> None:
    """Convert merged checkpoints to GGUF for llama.cpp, Ollama and LM Studio."""


@gguf_group.command(
    "convert",
    epilog="Example: apto-release gguf convert out/merged -o out/gguf --quant F16 --quant Q8_0 --name Apto-Qwen3-8B-Safety",
)
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the .gguf files.")
@click.option("--quant", "quants", multiple=True, default=("F16",), show_default=True, metavar="TYPE", help="F16, BF16 or Q8_0. Repeatable: one file per type.")
@click.option("--name", help="general.name and the file names' stem (<NAME>-<TYPE>.gguf) [default: the folder's name].")
@click.option("--basename", help="general.basename.")
@click.option("--finetune", help="general.finetune.")
@click.option("--version", "version", help="general.version.")
@click.option("--size-label", help="general.size_label [default: from the parameter count].")
@click.option("--license", "license_", help="general.license.")
@click.option("--overwrite", is_flag=True, help="Replace existing files.")
def convert_command(model_dir, out_dir, quants, name, basename, finetune, version, size_label, license_, overwrite):
    """Convert the checkpoint in MODEL_DIR (Qwen3 or Qwen2 for now) to GGUF, tensor by tensor.

    The tokenizer, with <|im_end|> as end of sequence and end of turn, and the chat template go
    into every file. Each file appears only when complete.
    """
    from apto_release.gguf.convert import convert

    for quant in dict.fromkeys(q.upper() for q in quants):
        result = convert(
            model_dir, out_dir, quant=quant, name=name, basename=basename, finetune=finetune, version=version,
            size_label=size_label, license=license_, overwrite=overwrite,
        )
        types = ", ".join(f"{n} {t}" for t, n in sorted(result.tensor_types.items()))
        click.echo(f"{result.path}  {result.bytes / 1e6:,.1f} MB  {result.tensors} tensors ({types})  {result.seconds:.1f}s")
    return 0


def register(cli: click.Group) -> None:
    cli.add_command(gguf_group)
