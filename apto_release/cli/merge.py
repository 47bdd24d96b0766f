"""The merge command: fold a LoRA adapter into its base checkpoint, shard by shard."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from apto_release.cli.options import dry_run_option, output_dir_option, overwrite_option
from apto_release.io import human_size


def render_plan(plan, out_dir: Path | None = None) -> str:
    """The plan as text: adapter, key layout, each shard and file and what happens to it."""
    lines = [f"Merge plan: {plan.base} + {plan.adapter}" + (f" → {out_dir}/" if out_dir else "")]
    kinds = [u.kind for u in plan.updates.values()]
    lines.append(f"Adapter: {plan.describe_adapter()}; {kinds.count('lora')} weights get a LoRA delta"
                 + (f", {kinds.count('lora_bias')} biases a LoRA bias" if "lora_bias" in kinds else "")
                 + (f", {kinds.count('replace')} are replaced (modules_to_save)" if "replace" in kinds else ""))
    lines.append(f"Keys: {plan.layout}")
    lines.append(f"Shards ({len(plan.shards)}, {human_size(plan.shard_bytes)}):")
    width = max(len(s.name) for s in plan.shards)
    for shard in plan.shards:
        what = f"{len(shard.updates)} of {shard.tensors} tensors merged" if shard.action == "merge" else f"{shard.tensors} tensors, copied as a file"
        lines.append(f"  {shard.name:<{width}}  {shard.action:<5}  {what:<36} {human_size(shard.size):>10}")
    if plan.checkpoint.index_file:
        lines.append(f"Index: {plan.checkpoint.index_file} ({len(plan.checkpoint.weight_map)} tensors, the base's weight map)")
    lines.append("Files:")
    for item in plan.files:
        lines.append(f"  {item.name:<{width}}  {item.action:<5}  {item.note}".rstrip())
    if plan.skipped:
        lines.append(f"Not copied: {', '.join(plan.skipped)}")
    if plan.eos_token_ids:
        lines.append(f"Generation stops at eos_token_id {list(plan.eos_token_ids)}")
    lines.append(f"Output: {human_size(plan.total_bytes)}")
    lines.extend(f"Warning: {w}" for w in plan.warnings)
    return "\n".join(lines)


@click.command("merge", epilog="Example: apto-release merge --base models/Qwen3.5-9B --adapter out/adapter -o out/merged")
@click.option("--base", required=True, type=click.Path(path_type=Path), help="Base checkpoint folder (config.json, safetensors shards, tokenizer).")
@click.option("--adapter", required=True, type=click.Path(path_type=Path), help="PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors).")
@output_dir_option("Output folder for the merged checkpoint (required unless --dry-run).", required=False)
@dry_run_option("Check everything and print the plan; write nothing.")
@click.option("--force", is_flag=True, help="Merge even if the adapter names another base model (keys and shapes are still checked).")
@overwrite_option()
def merge_command(base, adapter, out_dir, dry_run, force, overwrite):
    """Merge a LoRA adapter into its base model, one shard at a time, exactly.

    Adds scale * (B @ A) to every targeted weight in float32 and stores it in the base's dtype;
    every other tensor (vision tower and mtp.* included) is copied byte for byte, and shards with
    no targeted weight are copied as files. Writes the index, config, tokenizer and a
    generation_config whose eos_token_id includes <|im_end|>. The folder appears only when
    complete. Exit 1 when the adapter cannot be merged into this base, 2 for an unreadable or
    corrupted input.
    """
    from apto_release.errors import UsageError
    from apto_release.merge.merge import merge, plan_merge
    from apto_release.progress import Progress

    if dry_run:
        plan = plan_merge(base, adapter, force=force)
        click.echo(render_plan(plan, out_dir))
        click.echo("Dry run: nothing was written.")
        return 0
    if out_dir is None:
        raise UsageError("give the output folder with -o (or pass --dry-run)", hint="for example -o out/merged")

    def show(shard):
        what = f"{len(shard.updates)} tensors merged" if shard.action == "merge" else "copied"
        click.echo(f"  {shard.name}  {what}")

    # On a terminal a bar over the bytes of the shards; in a log a line per shard as it is written.
    progress = Progress()
    run = functools.partial(merge, base, adapter, out_dir, force=force, overwrite=overwrite)
    if progress.bars:
        with progress.task("merge", unit="B") as task:
            result = run(on_bytes=task.update)
    else:
        result = run(on_shard=show)
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    click.echo(
        f"Merged {result.tensors_merged:,} tensors into {out_dir}/: {result.shards_written} shards "
        f"({result.shards_merged} rewritten, {result.shards_written - result.shards_merged} copied as files), "
        f"{result.tensors_copied:,} tensors copied unchanged, {human_size(result.bytes_written)} in {result.seconds:.1f}s."
    )
    if result.stale_removed:
        click.echo(f"Removed {result.stale_removed} unfinished output folder(s) left by an interrupted merge.")
    return 0


def register(cli: click.Group) -> None:
    cli.add_command(merge_command)
