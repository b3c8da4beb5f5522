"""delete_jax: DELETE (Decoupled Distillation to Erase, CVPR 2025) in JAX/Flax."""

__version__ = "0.1.0"
