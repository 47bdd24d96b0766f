"""LoRA safety training: presets (data files), chat template and loss masks, the trainer, and its summary (``summary``)."""
