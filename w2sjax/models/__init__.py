"""Models: the BERT encoder (MiniLM port), weak featurizers, heads, the registry.

``get_model(name)`` is the entry point; see `w2sjax.models.registry`.
"""

from w2sjax.models.registry import ModelSpec, get_model, known_models, register_model

__all__ = ["ModelSpec", "get_model", "known_models", "register_model"]
