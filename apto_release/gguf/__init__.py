"""GGUF files of merged checkpoints for llama.cpp, Ollama and LM Studio (``apto-release gguf``).

``convert`` streams a Qwen3.5 (``qwen35``), Qwen3 or Qwen2 safetensors checkpoint, one tensor at a
time, into F16, BF16 or Q8_0 GGUF (one file or a split set) with its tokenizer and chat template
inside; the per-architecture knowledge is in ``archs`` / ``qwen35`` (and ``names``). ``quantize``
makes K-quants and i-quants with llama.cpp's own quantizer (with an importance matrix: ``imatrix``,
``calibration``, ``tools``), ``verify`` runs files in llama.cpp against transformers, ``build`` does all of it for one model, ``output`` puts finished files in place.
Needs the ``gguf`` extra (``gguf``, ``llama-cpp-python``).
"""

#: The GGUF types ``gguf convert`` writes: directly with gguf-py, then through llama.cpp's quantizer.
DIRECT_TYPES = ("F16", "BF16", "Q8_0")
K_QUANT_TYPES = ("Q2_K", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K")
#: llama.cpp's i-quants and Q2_K_S: best made with an importance matrix (``gguf.imatrix``).
IQ_TYPES = ("IQ4_XS", "IQ4_NL", "IQ3_M", "IQ3_S", "IQ3_XS", "IQ3_XXS", "IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S", "Q2_K_S")
#: The types llama.cpp's quantizer refuses to make without an imatrix: some of their tensors get a type
#: that ``tensor_requires_imatrix`` (src/llama-quant.cpp) names. Beyond issue 18's list: IQ2_M (IQ2_S),
#: IQ3_XXS, and IQ3_XS (IQ3_XXS on some tensors), as llama.cpp 0.3.36's quantizer showed (tests/gguf/test_imatrix.py).
IMATRIX_REQUIRED = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "Q2_K_S")
GGUF_TYPES = DIRECT_TYPES + K_QUANT_TYPES + IQ_TYPES
