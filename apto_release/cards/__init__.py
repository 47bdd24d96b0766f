"""The release's cards: the model, adapter and GGUF cards and the dataset card, rendered from the templates in ``model_cards/`` and ``dataset_cards/``."""
