"""Everything measured about one model: accuracies, per-class views, MIA."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from delete_jax.context import RunContext, all_indices
from delete_jax.errors import UserError
from delete_jax.evaluation import accuracy as acc_lib
from delete_jax.evaluation import mia as mia_lib
from delete_jax.evaluation import scores
from delete_jax.state import ModelVars


def _predict_all(ctx: RunContext, variables: ModelVars, train: bool, **kw) -> dict:
  ds = ctx.dataset
  images, labels = (ds.train_images, ds.train_labels) if train else (ds.test_images,
                                                                       ds.test_labels)
  return acc_lib.predict(variables, images, labels, all_indices(len(labels)),
                         graphdef=ctx.graphdef, preprocess=ctx.preprocess,
                         batch_size=ctx.config.eval.batch_size, mesh=ctx.mesh, **kw)


def four_accuracies(ctx: RunContext, variables: ModelVars) -> dict[str, float]:
  """train/test × forget/remain accuracy in percent."""
  return acc_lib.split_accuracies(_predict_all(ctx, variables, True),
                                  _predict_all(ctx, variables, False), ctx.split)


def evaluate_model(ctx: RunContext, variables: ModelVars) -> dict[str, Any]:
  """All metrics of one model on the run's split (JSON-serialisable)."""
  train_pred = _predict_all(ctx, variables, True)
  test_pred = _predict_all(ctx, variables, False)
  accs = acc_lib.split_accuracies(train_pred, test_pred, ctx.split)
  c = ctx.dataset.num_classes
  out: dict[str, Any] = {
      'accuracy': accs,
      'per_class_test_accuracy': [None if np.isnan(a) else float(a) for a in
                                  scores.per_class_accuracy(test_pred['pred'],
                                                            ctx.dataset.test_labels, c)],
      'confusion_test': scores.confusion_matrix(test_pred['pred'], ctx.dataset.test_labels,
                                                c).tolist(),
      'h_mean': scores.h_mean(accs['test_remain'] / 100, accs['test_forget'] / 100),
  }
  if ctx.config.mia.enabled:
    out['mia'] = membership_inference(ctx, variables, train_pred, test_pred)
  return out


def membership_inference(ctx: RunContext, variables: ModelVars, train_pred: dict,
                         test_pred: dict) -> dict[str, Any]:
  """SVC attack of SPEC §4 on the forget-class training examples.

  Shadow members: a seeded random subset of train-remain of size |test-remain|
  (capped by config.mia.max_shadow); non-members: test-remain (same cap); targets:
  train-forget. In compat='published' mode the attack sees augmented inputs.
  """
  cfg = ctx.config.mia
  features = tuple(f.strip() for f in cfg.features.split(',') if f.strip())
  if cfg.compat not in mia_lib.COMPAT_MODES:
    raise UserError(f'config.mia.compat={cfg.compat!r}: use one of {mia_lib.COMPAT_MODES}')
  split = ctx.split
  rng = np.random.default_rng([ctx.config.seed, 4])
  nonmembers = split.test_remain
  if cfg.max_shadow and len(nonmembers) > cfg.max_shadow:
    nonmembers = np.sort(rng.choice(nonmembers, cfg.max_shadow, replace=False))
  members = split.train_remain[mia_lib.shadow_member_indices(
      len(split.train_remain), len(nonmembers), ctx.config.seed)]
  if cfg.compat == 'published':
    key = jax.random.fold_in(jax.random.key(ctx.config.seed), 5)
    train_pred = _predict_all(ctx, variables, True, augment=True, rng=key)
    test_pred = _predict_all(ctx, variables, False, augment=True,
                             rng=jax.random.fold_in(key, 1))
  ds = ctx.dataset
  result = mia_lib.svc_mia(
      train_pred['prob'][members], ds.train_labels[members],
      test_pred['prob'][nonmembers], ds.test_labels[nonmembers],
      train_pred['prob'][split.train_forget], ds.train_labels[split.train_forget],
      features=features, compat=cfg.compat, seed=ctx.config.seed)
  return {'features': result, 'compat': cfg.compat, 'shadow_members': int(len(members)),
          'shadow_nonmembers': int(len(nonmembers)), 'targets': int(len(split.train_forget))}
