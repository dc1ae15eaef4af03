"""w2sjax: weak-to-strong generalization research in JAX.

Importing the package is cheap: submodules are imported on demand, so
``import w2sjax.losses`` pulls in jax alone.
"""

__version__ = "0.1.0"
