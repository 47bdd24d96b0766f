"""Merging a LoRA adapter into its base checkpoint, shard by shard, without loading the model.

``shards`` reads and writes safetensors checkpoints (the index, a reader that keeps one shard
open, a writer with explicit header → data phases); ``merge`` plans a merge (every check, nothing
written) and then executes the plan into a folder that appears only when complete.

    from apto_release.merge.merge import plan_merge, execute_merge

    plan = plan_merge("models/Qwen3.5-9B", "out/adapter")
    result = execute_merge(plan, "out/merged")

Nothing heavy is imported here: planning reads JSON and safetensors headers only; torch is
imported when a shard is actually merged.
"""
