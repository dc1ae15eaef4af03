"""Models, one module per architecture family (`bert`, `mpnet`, `llama`, ...), each owning its
config, NNX module, weight loader and featurizer/finetune spec; `hf` loads any supported Hugging
Face directory, `gguf` any supported GGUF file; `shallow` (bags of words, raw-input models) and
`heads` hold the small models.

``get_model(name)`` is the entry point; see `w2sjax.models.registry`.
"""

from w2sjax.models.registry import ModelSpec, get_model, known_models, register_model

__all__ = ["ModelSpec", "get_model", "known_models", "register_model"]
