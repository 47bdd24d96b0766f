"""The release's cards: the model, adapter and GGUF cards and the dataset card, rendered from the templates in ``model_cards/`` and ``dataset_cards/``.

``model`` renders the model, adapter and GGUF cards from the values ``context`` prepares;
``check`` is the offline check of any card's text (the push uses it too); ``dataset`` is the
dataset card.
"""
