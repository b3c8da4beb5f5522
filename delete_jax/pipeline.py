"""The stages behind `config.mode`: train │ retrain │ unlearn │ evaluate │ all │ compare.

Every stage reuses what an earlier stage left in the workdir (the original
model's checkpoint is the teacher) and refuses, with a one-line error, to run
when what it needs is missing. Notebooks and tests call `run(config, workdir)`
exactly as `main` does.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ml_collections

from delete_jax import config_lib, train as train_lib, unlearn as unlearn_lib
from delete_jax.context import RunContext, build_context
from delete_jax.errors import UserError
from delete_jax.methods import get_method
from delete_jax.evaluation.evaluate import evaluate_model, four_accuracies
from delete_jax.evaluation.relearn import relearn_time
from delete_jax.metric_writers import MetricWriter
from delete_jax.report import build_report, write_report


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs `config.mode` in `workdir`; returns the report (empty for train-only modes)."""
  config_lib.validate(config)
  _check_workdir(workdir)
  ctx = build_context(config, workdir)
  mode = config.mode
  with MetricWriter(os.path.join(workdir, 'metrics'), enabled=ctx.is_host0()) as writer:
    if mode in ('train', 'all'):
      original_vars(ctx, writer, train_if_missing=True)
    if mode == 'retrain' or (mode == 'all' and config.run_retrain):
      train_lib.train(ctx, 'retrain', writer=writer)
    if mode in ('unlearn', 'all'):
      original = original_vars(ctx, writer, train_if_missing=False)
      unlearn_lib.unlearn(ctx, original, writer=writer,
                          evaluate_fn=lambda v: four_accuracies(ctx, v))
    if mode == 'compare':
      original = original_vars(ctx, writer, train_if_missing=True)
      if config.run_retrain:
        train_lib.train(ctx, 'retrain', writer=writer)
      failures = {}
      for name in compare_methods(config):
        try:
          unlearn_lib.unlearn(ctx, original, method_name=name, writer=writer)
        except UserError as e:
          # One diverging baseline (gradient ascent is unbounded) must not void
          # the comparison: its row reports the failure instead.
          logging.warning('[%s] failed: %s', name, e)
          failures[name] = str(e)
      return evaluate(ctx, compare_methods(config), failures)
    if mode in ('evaluate', 'all', 'unlearn'):
      return evaluate(ctx)
  return {}


def compare_methods(config: ml_collections.ConfigDict) -> list[str]:
  names = [m.strip() for m in config.compare.methods.split(',') if m.strip()]
  for name in names:
    get_method(name)  # unknown names fail before any work
  return names


def load_variables(config: ml_collections.ConfigDict, workdir: str, stage: str):
  """The variables of a finished stage in `workdir` ('original', 'retrain' or a method).

  For notebooks and export (`convert.flax_to_torch`); refuses (UserError) a stage
  that has not finished under this config.
  """
  ctx = build_context(config, workdir)
  if stage in train_lib.STAGES:
    if not train_lib.is_complete(ctx, stage):
      raise UserError(f'no finished {stage} model in {ctx.stage_dir(stage)}: run it first')
    return train_lib.load_kept_variables(ctx, stage)
  meta = unlearn_lib.unlearn_checkpoints(ctx, stage).check_compatible()
  if not (meta and meta.get('complete')):
    raise UserError(f'no finished {stage} run in {ctx.stage_dir(stage)}: run '
                    f'--config.mode=unlearn --config.unlearn.method={stage} first')
  return unlearn_lib.unlearn(ctx, original_vars(ctx, train_if_missing=False),
                             method_name=stage)[0]


def original_vars(ctx: RunContext, writer=None, *, train_if_missing: bool):
  """The original model: trained here, or missing → clear error."""
  if train_if_missing:
    return train_lib.train(ctx, 'original', writer=writer)[0]
  if not train_lib.is_complete(ctx, 'original'):
    raise UserError(f'no trained original model in {ctx.stage_dir("original")}: run '
                    '--config.mode=train first (or --config.mode=all)')
  return train_lib.load_kept_variables(ctx, 'original')


def evaluate(ctx: RunContext, methods: list[str] | None = None,
             failures: dict[str, str] | None = None) -> dict[str, Any]:
  """Evaluates the original, retrain (if present) and each finished method.

  `failures` (method → error) become report rows that say why a method has no
  numbers.
  """
  rows: dict[str, dict] = {}
  original = original_vars(ctx, train_if_missing=False)
  if ctx.config.init_checkpoint:
    original_meta = {'init_checkpoint': ctx.config.init_checkpoint}
  else:
    original_meta = train_lib.stage_checkpoints(ctx, 'original').read_meta()
  models = [('original', original, original_meta)]
  if train_lib.is_complete(ctx, 'retrain'):
    models.append(('retrain', train_lib.load_kept_variables(ctx, 'retrain'),
                   train_lib.stage_checkpoints(ctx, 'retrain').read_meta()))
  for name in methods or [ctx.config.unlearn.method]:
    meta = unlearn_lib.unlearn_checkpoints(ctx, name).check_compatible()
    if meta is not None and meta.get('complete'):
      variables, record = unlearn_lib.unlearn(ctx, original, method_name=name)
      models.append((name, variables, record))
  for name, variables, meta in models:
    logging.info('evaluating %s', name)
    meta = meta or {}
    row: dict[str, Any] = {'evaluation': evaluate_model(ctx, variables),
                           'wall_seconds': meta.get('wall_seconds'),
                           'history': meta.get('history', [])}
    if name not in ('original', 'retrain'):
      method = get_method(name)
      row['method'] = {'data': method.data, 'lr': meta.get('lr'),
                       'lr_source': meta.get('lr_source'), 'epochs': meta.get('epochs'),
                       'description': method.description,
                       'settings': {k: ctx.config.unlearn[k] for k in method.hparams}}
    rows[name] = row
  if ctx.config.relearn.enabled:
    _add_relearn_times(ctx, rows, models)
  report = build_report(ctx, rows)
  if failures:
    report['failed'] = dict(failures)
  text = write_report(ctx, report)
  if ctx.is_host0():
    print(text, flush=True)
  return report


def _add_relearn_times(ctx: RunContext, rows: dict, models: list) -> None:
  """Relearn time of every model but the original, and its ratio to Retrain's."""
  target = ctx.config.relearn.fraction * rows['original']['evaluation']['accuracy']['test_forget']
  for name, variables, _ in models:
    if name == 'original':
      continue
    logging.info('relearn time of %s (target test-forget %.2f%%)', name, target)
    rows[name]['relearn'] = relearn_time(ctx, variables, target)
  ref = rows.get('retrain', {}).get('relearn', {}).get('steps')
  for name, row in rows.items():
    steps = row.get('relearn', {}).get('steps')
    if ref and steps is not None and name != 'retrain':
      row['relearn']['ratio_to_retrain'] = steps / ref


def _check_workdir(workdir: str) -> None:
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f'--workdir {workdir} exists and is not a directory: choose another path')
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(f'cannot create --workdir {workdir} ({e.strerror}): choose a writable path') from e
  if not os.access(workdir, os.W_OK):
    raise UserError(f'--workdir {workdir} is not writable: choose a writable path')
