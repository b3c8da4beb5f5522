"""SalUn's saliency mask: which weights the forget set's gradient points at."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from delete_jax import losses, parallel
from delete_jax.preprocess import Preprocess
from delete_jax.state import ModelVars
from delete_jax.steps import apply_model


def saliency_mask(variables: ModelVars, images: np.ndarray, labels: np.ndarray,
                  indices: np.ndarray, *, graphdef: nnx.GraphDef, preprocess: Preprocess,
                  batch_size: int, fraction: float, mesh):
  """Bool pytree like the params: True for the top `fraction` of |Σ ∂CE/∂θ|.

  The gradient of the cross entropy with the true labels is accumulated over the
  whole forget set with the model in eval mode and no augmentation; one global
  threshold over all parameters selects the salient weights.
  """

  @functools.partial(parallel.jit, mesh=mesh, out_shardings=parallel.replicated(mesh))
  def batch_grad(params, batch_stats, batch):
    def loss(p):
      x = preprocess(batch['image'], None, augment=False)
      logits, _ = apply_model(graphdef, ModelVars(p, batch_stats), x, train=False)
      # Sum, not mean: the accumulated gradient must not depend on the batching.
      return losses.cross_entropy(logits, batch['label']) * batch['label'].shape[0]
    return jax.grad(loss)(params)

  total = jax.tree.map(jnp.zeros_like, variables.params)
  for b in range(math.ceil(len(indices) / batch_size)):
    idx = indices[b * batch_size:(b + 1) * batch_size]
    batch = parallel.put_batch({'image': images[idx], 'label': labels[idx]}, mesh)
    g = batch_grad(variables.params, variables.batch_stats, batch)
    total = jax.tree.map(jnp.add, total, g)
  magnitudes = jax.tree.map(jnp.abs, total)
  flat = np.concatenate([np.asarray(m).ravel() for m in jax.tree.leaves(magnitudes)])
  keep = max(1, int(round(fraction * flat.size)))
  threshold = np.partition(flat, flat.size - keep)[flat.size - keep]
  return jax.tree.map(lambda m: m >= threshold, magnitudes)
