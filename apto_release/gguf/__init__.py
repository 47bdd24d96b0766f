"""GGUF files of merged checkpoints for llama.cpp, Ollama and LM Studio (``apto-release gguf``).

``convert`` streams a Qwen3.5 (``qwen35``), Qwen3 or Qwen2 safetensors checkpoint, one tensor at a
time, into F16, BF16 or Q8_0 GGUF (one file or a split set) with its tokenizer and chat template
inside; the per-architecture knowledge is in ``archs`` / ``qwen35`` (and ``names``). ``quantize``
makes K-quants with llama.cpp's own quantizer, ``verify`` runs files in llama.cpp against
transformers, ``build`` does all of it for one model, ``output`` puts finished files in place.
Needs the ``gguf`` extra (``gguf``, ``llama-cpp-python``).
"""

#: The GGUF types ``gguf convert`` writes: directly with gguf-py, then through llama.cpp's quantizer.
DIRECT_TYPES = ("F16", "BF16", "Q8_0")
K_QUANT_TYPES = ("Q2_K", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K")
GGUF_TYPES = DIRECT_TYPES + K_QUANT_TYPES
