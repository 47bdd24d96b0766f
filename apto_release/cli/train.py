"""The ``train`` command: LoRA safety tuning from a preset (``--dry-run`` checks data and config)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from apto_release.cli.render import with_validation_report
from apto_release.errors import UsageError
from apto_release.cli.options import dry_run_option, output_dir_option, overwrite_option

EPILOG = (
    "Example: apto-release train --preset qwen3.5-9b --base Qwen/Qwen3.5-9B --data data/records.jsonl "
    "-o out/adapter --set lora.r=16 --dry-run"
)


@click.command("train", epilog=EPILOG)
@click.option("--preset", required=True, metavar="NAME|FILE", help="A shipped preset (qwen3.5-27b, qwen3.5-9b, qwen3.5-9b-base, tiny) or a .toml file in the same format.")
@click.option("--base", required=True, metavar="PATH_OR_HUB_ID", help="The model to tune: a local folder or a Hub id (the dry run loads only its tokenizer).")
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path), help="Training records (JSONL, JSONL.GZ or Parquet, schema v1); a file with validation errors is refused.")
@output_dir_option("Folder for the adapter.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a preset setting, KEY as table.key (lora.r=8, train.learning_rate=5e-5, data.max_length=2048). Repeatable.")
@dry_run_option("Load the tokenizer, encode the data and print token counts per category, one rendered example per category with its trained text marked, and the resolved config; train nothing.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in OUTPUT.checkpoints/.")
@overwrite_option()
@click.option("--max-steps", type=click.IntRange(1), help="Stop after this many optimiser steps (default: the preset's epochs).")
@click.option("--save-steps", type=click.IntRange(1), default=200, show_default=True, help="Checkpoint every this many steps.")
@click.option("--keep-checkpoints", is_flag=True, help="Keep OUTPUT.checkpoints/ after a successful run.")
@click.option("--base-model-id", metavar="HUB_ID", help="The base model id written into adapter_config.json [default: --base].")
@click.option("--allow-slow-kernels", is_flag=True, help="Train on a CUDA GPU without flash-linear-attention and causal-conv1d (the [gpu] extra), on transformers' much slower PyTorch fallback.")
@click.option("--gpus", type=click.IntRange(1), help="With --dry-run: the GPUs the memory estimate is for [default: the preset's documented hardware].")
@click.option("--gpu-memory", metavar="SIZE", help="With --dry-run: memory per GPU, e.g. 80G (GiB); the dry run warns when the run will not fit.")
@with_validation_report
def train_command(preset, base, data_path, out_dir, overrides, dry_run, resume, overwrite, max_steps, save_steps, keep_checkpoints, base_model_id, allow_slow_kernels, gpus, gpu_memory):
    """Tune a LoRA adapter on safety records with a preset.

    The loss covers the assistant's answers and their end-of-turn token only; the harmful prefix
    of mid_refusal records opens the final answer but carries no loss. Records longer than
    data.max_length tokens are dropped whole, never cut.

    Several processes: launch it with accelerate launch (configs for FSDP2, DeepSpeed ZeRO-3 and
    data parallel ship in apto_release/train/accelerate/) or torchrun, e.g. accelerate launch
    --config_file .../fsdp-27b.yaml -m apto_release train ...; each process trains on its own
    share of the records and only the main process writes OUTPUT.

    On a CUDA GPU the run needs the fast Gated DeltaNet kernels (pip install -c constraints.txt
    '.[gpu]'); without them it is refused unless --allow-slow-kernels. The dry run says which
    kernels a run would use.
    """
    from apto_release.train.memory import dry_run_memory, parse_gpu_memory
    from apto_release.train.presets import load_preset, parse_overrides

    typed = parse_overrides(overrides)
    config = load_preset(preset, typed)
    if (gpus or gpu_memory) and not dry_run:
        raise UsageError("--gpus and --gpu-memory size the dry run's memory estimate", hint="add --dry-run")
    memory_bytes = parse_gpu_memory(gpu_memory) if gpu_memory else None
    if not dry_run:
        from apto_release.progress import Progress
        from apto_release.train.trainer import train

        # Under torchrun every process runs this command (RANK is the launcher's); one reports.
        progress = Progress() if os.environ.get("RANK", "0") == "0" else Progress.off()
        with progress.task("train", unit="step") as task:  # a spinner while the model loads
            result = train(
                config, base=base, data=data_path, out_dir=out_dir, resume=resume, overwrite=overwrite,
                max_steps=max_steps, save_steps=save_steps, keep_checkpoints=keep_checkpoints, base_model_id=base_model_id,
                on_step=task.update, allow_slow_kernels=allow_slow_kernels,
            )
        if result.is_main_process:
            loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
            click.echo(f"Trained {result.steps} steps in {result.seconds:.1f}s (final loss {loss}); adapter, training_summary.json and loss_curve.png in {out_dir}/")
        return 0

    from apto_release.train.preview import preview_training

    preview = preview_training(config, base=base, data=data_path, begin=TRAINED_BEGIN, end=TRAINED_END)
    click.echo(f"Dry run: preset {config.name}, base {base}, data {data_path} ({preview.records:,} records); nothing written to {out_dir}/")
    click.echo(render_kernels(preview.kernels, config, allow_slow=allow_slow_kernels))
    click.echo("")
    click.echo(render_statistics(preview.statistics))
    click.echo("")
    click.echo(render_examples(preview.examples, config))
    click.echo("")
    click.echo(render_config(config, set(typed)))
    click.echo("")
    click.echo(dry_run_memory(config, base=base, gpus=gpus, gpu_memory=memory_bytes))
    return 0


#: The marks around trained text in the dry run's examples: plain characters that survive a CI
#: log (no colours), and rare enough in chat data not to be mistaken for it.
TRAINED_BEGIN, TRAINED_END = "⟦", "⟧"


def render_examples(examples, config) -> str:
    """One rendered record per category, trained text between ``TRAINED_BEGIN`` and ``TRAINED_END``."""
    template = f'data.chat_template = "{config.data.chat_template}"' + (" (the tokenizer\'s own)" if not config.data.chat_template else "")
    lines = [
        f"Examples: the first record of each category as the model sees it ({template}, data.thinking = \"{config.data.thinking}\").",
        f"The loss covers the text between {TRAINED_BEGIN} and {TRAINED_END}; the rest is context. Each line is indented by 4 spaces.",
    ]
    for ex in examples:
        note = " (over data.max_length: dropped)" if ex.over_length else ""
        lines += ["", f"--- {ex.category}: record {ex.record_id}, {ex.n_tokens:,} tokens, {ex.n_trained:,} trained{note} ---"]
        lines += ["    " + line for line in ex.text.split("\n")]
    return "\n".join(lines)


def render_kernels(report, config, *, allow_slow: bool) -> str:
    """The dry run's kernel line: what a run here would use, and whether ``train`` would refuse it."""
    from apto_release.errors import UsageError
    from apto_release.train.kernels import INSTALL, check_liger

    line = f"Kernels {report.describe()}"
    if report.device == "cuda" and not report.fast:
        line += ("; --allow-slow-kernels: train runs on the fallback" if allow_slow
                 else f"; train refuses this without --allow-slow-kernels (install: {INSTALL})")
    if config.train.liger_kernel:
        try:
            check_liger(config, report)
            line += f"; Liger: liger-kernel {report.liger_version}"
        except UsageError as exc:
            line += f"; train would refuse: {exc.message}"
    return line


def render_statistics(stats) -> str:
    """The per-category table of a dry run."""
    header = ("category", "records", "over limit", "tokens", "trained", "trained %", "longest")
    rows = [
        (name, c.records, c.over_length, c.tokens, c.trained_tokens, c.trained_share, c.longest)
        for name, c in list(stats.categories.items()) + [("total", stats.total)]
    ]
    width = max(len(header[0]), *(len(r[0]) for r in rows))
    lines = [f"{header[0]:<{width}}  {header[1]:>8}  {header[2]:>10}  {header[3]:>11}  {header[4]:>11}  {header[5]:>9}  {header[6]:>8}"]
    for i, (name, records, over, tokens, trained, share, longest) in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("-" * len(lines[0]))
        lines.append(f"{name:<{width}}  {records:>8,}  {over:>10,}  {tokens:>11,}  {trained:>11,}  {share:>9.1%}  {longest:>8,}")
    total = stats.total
    lines += [
        "",
        (
            f"tokens and trained count the {total.kept:,} records that are kept; records over data.max_length "
            f"({stats.max_length:,} tokens) are dropped whole, never cut: {total.over_length:,} of {total.records:,}."
        ),
    ]
    return "\n".join(lines)


def render_config(config, overridden: set[str]) -> str:
    """The resolved config, one ``key = value`` a line, with overridden keys marked."""
    from apto_release.train.presets import render_value

    flat = config.flat()
    width = max(len(k) for k in flat)
    lines = [f"Resolved config (preset {config.name}):"]
    for key, value in flat.items():
        mark = "  # --set" if key in overridden else ""
        lines.append(f"  {key:<{width}} = {render_value(value)}{mark}")
    lines.append(f"  {'(target regex)':<{width}}   {config.lora.target_regex}")
    lines.append(
        f"  {'(batch)':<{width}}   {config.effective_batch_per_device} sequences per optimiser step per device"
        + (" (times the number of GPUs under FSDP)" if config.train.fsdp else "")
    )
    return "\n".join(lines)


def register(cli: click.Group) -> None:
    cli.add_command(train_command)
