"""Independent PyTorch twins of delete_jax's models and steps, for cross-checks.

Test-only code: the delete_jax package never imports torch except in
`delete_jax.convert`.
"""
