"""GGUF conversion of merged checkpoints (``apto-release gguf convert``): Qwen3 and Qwen2 text models.

``names`` maps Hugging Face tensor names to llama.cpp's GGUF names; ``convert`` streams a
safetensors checkpoint, one tensor at a time, into one GGUF file with its tokenizer and chat
template inside. Needs the ``gguf`` package (``pip install 'apto-release[gguf]'``).
"""
