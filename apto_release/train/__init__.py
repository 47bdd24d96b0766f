"""LoRA safety training: presets (data files), chat template and loss masks, and the trainer."""
