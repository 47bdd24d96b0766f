"""GGUF conversion of merged checkpoints (``apto-release gguf convert``): Qwen3 and Qwen2 text models.

``names`` maps Hugging Face tensor names to llama.cpp's GGUF names; ``convert`` streams a
safetensors checkpoint, one tensor at a time, into one GGUF file with its tokenizer and chat
template inside. Needs the ``gguf`` package (``pip install 'apto-release[gguf]'``).
"""

#: The GGUF types ``gguf convert`` writes: directly with gguf-py, then through llama.cpp's quantizer.
DIRECT_TYPES = ("F16", "BF16", "Q8_0")
K_QUANT_TYPES = ("Q2_K", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K")
GGUF_TYPES = DIRECT_TYPES + K_QUANT_TYPES
