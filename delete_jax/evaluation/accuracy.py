"""Eval-mode predictions over whole splits, one jitted pass at a large batch.

Batches are padded to a fixed size with a mask, so there is one compiled program
and every example counts exactly once, whatever the device count and split size.
"""

from __future__ import annotations

import collections
import functools
import math
from typing import Optional

import jax
import numpy as np
from flax import nnx

from delete_jax import parallel
from delete_jax.preprocess import Preprocess
from delete_jax.state import ModelVars
from delete_jax.steps import predict_step


# Batches dispatched before the oldest one's results are fetched.
_IN_FLIGHT = 2


@functools.lru_cache(maxsize=32)
def _jitted_predict(graphdef: nnx.GraphDef, preprocess: Preprocess, augment: bool, mesh):
  fn = functools.partial(predict_step, graphdef=graphdef, preprocess=preprocess,
                         augment=augment)
  return parallel.jit(lambda v, b, r: fn(v, b, rng=r), mesh,
                      out_shardings=parallel.replicated(mesh))


def predict(variables: ModelVars, images: np.ndarray, labels: np.ndarray,
            indices: np.ndarray, *, graphdef: nnx.GraphDef, preprocess: Preprocess,
            batch_size: int, mesh, augment: bool = False,
            rng: Optional[jax.Array] = None) -> dict[str, np.ndarray]:
  """Predictions for `images[indices]`.

  Returns host arrays 'pred' [n], 'logits' and 'prob' [n, C] and 'correct' [n] bool.
  `augment=True` applies the training augmentation (the published MIA inputs).
  """
  parallel.check_batch_size(batch_size, mesh, 'config.eval.batch_size')
  fn = _jitted_predict(graphdef, preprocess, augment, mesh)
  n = len(indices)
  preds, logits, probs, correct = [], [], [], []
  if rng is None:
    rng = jax.random.key(0)
  in_flight: collections.deque = collections.deque()

  def collect():
    out, real = in_flight.popleft()
    out = parallel.to_host(out)
    preds.append(out['pred'][:real])
    logits.append(out['logits'][:real])
    probs.append(out['prob'][:real])
    correct.append(out['correct'][:real])

  for b in range(math.ceil(n / batch_size)):
    idx = indices[b * batch_size:(b + 1) * batch_size]
    real = len(idx)
    padded = np.concatenate([idx, np.full(batch_size - real, idx[0] if real else 0,
                                          idx.dtype)])
    mask = np.arange(batch_size) < real

    def gather(rows, padded=padded, mask=mask):
      return {'image': images[padded[rows]], 'label': labels[padded[rows]].astype(np.int32),
              'mask': mask[rows]}

    # Dispatch is asynchronous: gathering and sending the next batches overlaps
    # the device's work on this one; results are fetched _IN_FLIGHT batches later.
    in_flight.append((fn(variables, parallel.gather_batch(batch_size, gather, mesh),
                         jax.random.fold_in(rng, b)), real))
    if len(in_flight) > _IN_FLIGHT:
      collect()
  while in_flight:
    collect()
  if not preds:
    return {'pred': np.zeros((0,), np.int32), 'logits': np.zeros((0, 0), np.float32),
            'prob': np.zeros((0, 0), np.float32), 'correct': np.zeros((0,), bool)}
  return {'pred': np.concatenate(preds), 'logits': np.concatenate(logits),
          'prob': np.concatenate(probs), 'correct': np.concatenate(correct)}


def accuracy(correct: np.ndarray) -> float:
  """Percent correct; NaN for an empty split."""
  return float(100.0 * correct.mean()) if len(correct) else float('nan')


def split_accuracies(train_pred: dict, test_pred: dict, split) -> dict[str, float]:
  """The four accuracies (percent) from whole-train and whole-test predictions.

  `train_pred`/`test_pred` are `predict` outputs over *all* train/test examples
  in index order; `split` is a `ClassSplit`.
  """
  return {
      'train_forget': accuracy(train_pred['correct'][split.train_forget]),
      'train_remain': accuracy(train_pred['correct'][split.train_remain]),
      'test_forget': accuracy(test_pred['correct'][split.test_forget]),
      'test_remain': accuracy(test_pred['correct'][split.test_remain]),
  }
