"""Adversarial inputs of the frozen original, for boundary shrink and L2UL.

Perturbations live in [0, 1] pixel space (ε as the published code states it) and
results are clipped back to [0, 1].
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from delete_jax import losses


def fgsm(teacher_fn: Callable, pixels: jnp.ndarray, labels: jnp.ndarray,
         epsilon: float) -> jnp.ndarray:
  """Untargeted FGSM: x + ε·sign(∇ₓ CE(f(x), y)), clipped to [0, 1]."""
  grad = jax.grad(lambda x: losses.cross_entropy(teacher_fn(x), labels))(pixels)
  return jnp.clip(pixels + epsilon * jnp.sign(grad), 0.0, 1.0)


def targeted_l2_pgd(teacher_fn: Callable, pixels: jnp.ndarray, targets: jnp.ndarray,
                    epsilon: float, step_size: float, iterations: int) -> jnp.ndarray:
  """Targeted L2 PGD: descend CE(f(x'), target) within ‖x' − x‖₂ ≤ ε per example."""
  axes = tuple(range(1, pixels.ndim))

  def l2_normalize(v):
    norm = jnp.sqrt(jnp.sum(v * v, axis=axes, keepdims=True))
    return v / jnp.maximum(norm, 1e-12)

  def body(_, x):
    grad = jax.grad(lambda z: losses.cross_entropy(teacher_fn(z), targets))(x)
    x = x - step_size * l2_normalize(grad)
    delta = x - pixels
    norm = jnp.sqrt(jnp.sum(delta * delta, axis=axes, keepdims=True))
    delta = delta * jnp.minimum(1.0, epsilon / jnp.maximum(norm, 1e-12))
    return jnp.clip(pixels + delta, 0.0, 1.0)

  return jax.lax.fori_loop(0, iterations, body, pixels)
