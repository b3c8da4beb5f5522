"""Fisher forgetting: no training, noise shaped by the remaining data's Fisher.

Follows the published implementation (after Golatkar et al.): per parameter,
var = α · min(1 / (F + 1e-8), cap) with cap 1e3 (1e2 for output-layer
parameters); output-layer and 1-D parameters get 10× that variance; the output
layer's forget-class entries are reset to mean 0 with variance 1e-4. F is the
Fisher diagonal over the remaining training data: 'expected' (published:
E_x Σ_y p(y|x) (∂ CE(f(x), y) / ∂θ)², per example) or 'empirical' (true labels
only; C times cheaper, our option).
"""

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

# Caps on 1/(F + 1e-8) as in the published implementation: general weights, and the
# tighter one for output-layer parameters (class axis last in Flax, of size C).
MAX_VARIANCE = 1e3
MAX_HEAD_VARIANCE = 1e2


FISHER_MODES = ('expected', 'empirical')


def fisher_diagonal(variables: ModelVars, images: np.ndarray, labels: np.ndarray,
                    indices: np.ndarray, *, graphdef: nnx.GraphDef, preprocess: Preprocess,
                    batch_size: int, mesh, mode: str = 'expected'):
  """Fisher diagonal over `indices`, per-example gradients, model in eval mode."""
  if mode not in FISHER_MODES:
    raise ValueError(f'unknown Fisher mode {mode!r}; choose one of {FISHER_MODES}')

  @functools.partial(parallel.jit, mesh=mesh, out_shardings=parallel.replicated(mesh))
  def batch_sq_grads(params, batch_stats, batch):
    def one(image, label):
      x = preprocess(image[None], None, augment=False)

      def loss(p, y):
        logits, _ = apply_model(graphdef, ModelVars(p, batch_stats), x, train=False)
        return losses.cross_entropy(logits, y[None])

      if mode == 'empirical':
        return jax.tree.map(jnp.square, jax.grad(loss)(params, label))
      logits, _ = apply_model(graphdef, ModelVars(params, batch_stats), x, train=False)
      probs = jax.nn.softmax(logits[0])
      classes = jnp.arange(probs.shape[0])
      sq = jax.vmap(lambda y: jax.tree.map(jnp.square, jax.grad(loss)(params, y)))(classes)
      return jax.tree.map(lambda g: jnp.tensordot(probs, g, axes=1), sq)
    per_example = jax.vmap(one)(batch['image'], batch['label'])
    return jax.tree.map(lambda g: jnp.sum(g, axis=0), per_example)

  total = jax.tree.map(jnp.zeros_like, variables.params)
  for b in range(math.ceil(len(indices) / batch_size)):
    idx = indices[b * batch_size:(b + 1) * batch_size]
    batch = parallel.put_batch({'image': images[idx], 'label': labels[idx]}, mesh)
    total = jax.tree.map(jnp.add, total,
                         batch_sq_grads(variables.params, variables.batch_stats, batch))
  return jax.tree.map(lambda t: t / len(indices), total)


def fisher_forget(variables: ModelVars, fisher, *, alpha: float, num_classes: int,
                  forget_classes, rng: jax.Array) -> ModelVars:
  """θ ← μ + sqrt(var) · N(0, 1) with the published variance rules (module doc)."""
  leaves, treedef = jax.tree.flatten(variables.params)
  f_leaves = jax.tree.leaves(fisher)
  keys = jax.random.split(rng, len(leaves))
  forget = jnp.zeros((num_classes,), bool).at[jnp.asarray(list(forget_classes))].set(True)
  out = []
  for p, f, k in zip(leaves, f_leaves, keys):
    head = p.ndim >= 1 and p.shape[-1] == num_classes
    cap = MAX_HEAD_VARIANCE if head else MAX_VARIANCE
    var = alpha * jnp.minimum(1.0 / (f + 1e-8), cap)
    mean = p
    if head:
      mean = jnp.where(forget, 0.0, p)
      var = jnp.where(forget, 1e-4, var)
    if head or p.ndim == 1:
      var = var * 10.0
    out.append(mean + jnp.sqrt(var) * jax.random.normal(k, p.shape, p.dtype))
  return ModelVars(jax.tree.unflatten(treedef, out), variables.batch_stats)
