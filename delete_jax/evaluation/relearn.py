"""Relearn time: how quickly fine-tuning on a few forget examples brings them back.

A model that merely hides the forget classes relearns them in a few steps; one
that erased them needs about as long as a model that never saw them (Retrain).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from delete_jax import parallel
from delete_jax.context import RunContext
from delete_jax.evaluation import accuracy as acc_lib
from delete_jax.evaluation import scores
from delete_jax.state import ModelVars, create_train_state, make_sgd
from delete_jax.steps import train_step


def relearn_subset(ctx: RunContext) -> np.ndarray:
  """The fixed forget subset every model fine-tunes on (seeded, same for all)."""
  rng = np.random.default_rng([ctx.config.seed, 9])
  forget = ctx.split.train_forget
  n = min(ctx.config.relearn.num_examples, len(forget))
  return np.sort(rng.choice(forget, n, replace=False))


def relearn_time(ctx: RunContext, variables: ModelVars, target_accuracy: float) -> dict[str, Any]:
  """Fine-tuning steps until test-forget accuracy reaches `target_accuracy` (percent).

  SGD (config.relearn.lr, momentum 0.9, no weight decay), cross entropy with the
  true labels, BatchNorm in train mode, no augmentation, one full batch of the
  fixed subset per step; test-forget accuracy is measured after every step.
  """
  cfg = ctx.config.relearn
  subset = relearn_subset(ctx)
  preprocess = dataclasses.replace(ctx.preprocess, crop_padding=0, flip=False)
  tx = make_sgd(cfg.lr, 0.9, 0.0)
  state = parallel.put_replicated(create_train_state(variables, tx), ctx.mesh)
  step = parallel.jit_step(functools.partial(train_step, graphdef=ctx.graphdef, tx=tx,
                                             preprocess=preprocess), ctx.mesh)
  batch = parallel.put_batch({'image': ctx.dataset.train_images[subset],
                              'label': ctx.dataset.train_labels[subset]}, ctx.mesh)
  rng = jax.random.key(0)
  curve = []
  for _ in range(cfg.max_steps):
    state, _ = step(state, batch, rng)
    pred = acc_lib.predict(state.vars, ctx.dataset.test_images, ctx.dataset.test_labels,
                           ctx.split.test_forget, graphdef=ctx.graphdef,
                           preprocess=ctx.preprocess, batch_size=ctx.config.eval.batch_size,
                           mesh=ctx.mesh)
    curve.append(acc_lib.accuracy(pred['correct']))
    if curve[-1] >= target_accuracy:
      break
  steps = scores.relearn_steps(curve, target_accuracy, 1.0) if target_accuracy > 0 else 0
  return {'steps': steps, 'max_steps': int(cfg.max_steps), 'target_test_forget': target_accuracy,
          'subset_size': int(len(subset)), 'lr': float(cfg.lr), 'curve': curve}
