"""Training the original model and the Retrain reference (the published recipe).

SGD (momentum 0.9, weight decay 5e-4), cross entropy, step decay, training
augmentation; the kept model is the one with the best test accuracy (Retrain:
best test-remain accuracy), as in the published code.
"""

from __future__ import annotations

import functools
import logging

import jax
import numpy as np

from delete_jax import config_lib, parallel
from delete_jax.checkpointing import StageCheckpoints
from delete_jax.context import RunContext, all_indices
from delete_jax.data import vggface2
from delete_jax.errors import UserError
from delete_jax.evaluation import accuracy as acc_lib
from delete_jax.loop import LoopSpec, run_epochs
from delete_jax.state import ModelVars, create_train_state, make_sgd, step_decay_schedule
from delete_jax.steps import train_step

STAGES = ('original', 'retrain')


def stage_checkpoints(ctx: RunContext, stage: str) -> StageCheckpoints:
  settings = config_lib.stage_settings(ctx.config, stage, ctx.split.forget_classes)
  return StageCheckpoints(ctx.stage_dir(stage), ctx.provenance(stage, settings))


def best_checkpoints(ctx: RunContext, stage: str) -> StageCheckpoints:
  settings = config_lib.stage_settings(ctx.config, stage, ctx.split.forget_classes)
  return StageCheckpoints(f'{ctx.stage_dir(stage)}/best', ctx.provenance(stage, settings),
                          keep=1)


def train(ctx: RunContext, stage: str = 'original', stop_at_step: int | None = None,
          writer=None) -> tuple[ModelVars, dict]:
  """Trains (or resumes) `stage` and returns the kept variables and the record.

  A stage whose checkpoint is complete is not trained again.
  """
  if stage not in STAGES:
    raise ValueError(f'unknown training stage {stage!r}')
  if stage == 'original' and ctx.config.init_checkpoint:
    return load_init_checkpoint(ctx), {'complete': True, 'wall_seconds': 0.0,
                                       'init_checkpoint': ctx.config.init_checkpoint}
  cfg = ctx.config.train
  parallel.check_batch_size(cfg.batch_size, ctx.mesh, 'config.train.batch_size')
  spec, tx, eval_indices = _setup(ctx, stage)
  checkpoints = stage_checkpoints(ctx, stage)
  best = best_checkpoints(ctx, stage)
  # Fine-tuning (VGGFace2: pretrain on 100 identities, then train on 10) starts from
  # a pretrained model's layers with a fresh output layer.
  init_vars = vggface2.warm_start_vars(cfg.get('init_from', ''), ctx.init_vars,
                                       ctx.config.model)
  state = parallel.put_replicated(create_train_state(init_vars, tx), ctx.mesh)
  record = {'step': 0, 'wall_seconds': 0.0}
  stored = checkpoints.check_compatible()
  if stored is not None:
    state, record = checkpoints.restore(state)
    if record.get('complete'):
      logging.info('[%s] complete checkpoint found in %s: reusing it', stage,
                   checkpoints.directory)
      return load_kept_variables(ctx, stage), record
    logging.info('[%s] resuming from step %d', stage, record['step'])
  best.check_compatible()

  step_fn = parallel.jit_step(functools.partial(
      train_step, graphdef=ctx.graphdef, tx=tx, preprocess=ctx.preprocess), ctx.mesh)
  rng = jax.random.fold_in(jax.random.key(ctx.config.seed), 1 if stage == 'original' else 2)
  what = 'test' if stage == 'original' else 'test_remain'

  def on_epoch_end(epoch, state, record):
    pred = acc_lib.predict(state.vars, ctx.dataset.test_images, ctx.dataset.test_labels,
                           eval_indices, graphdef=ctx.graphdef, preprocess=ctx.preprocess,
                           batch_size=ctx.config.eval.batch_size, mesh=ctx.mesh)
    test_acc = acc_lib.accuracy(pred['correct'])
    record['history'].append({'epoch': epoch, what: test_acc})
    logging.info('[%s] epoch %d: %s accuracy %.2f%%', stage, epoch, what, test_acc)
    if writer is not None:
      writer.write_scalars(record['step'], {f'{stage}/{what}_accuracy': test_acc})
    if test_acc > record.get('best_accuracy', -1.0):
      record['best_accuracy'], record['best_epoch'] = test_acc, epoch
      best.save(epoch, state.vars, {'epoch': epoch, 'accuracy': test_acc, 'metric': what})

  logging.info('[%s] training on %d examples, %d epochs of %d steps', stage, len(spec.indices),
               cfg.epochs, spec.steps_per_epoch)
  state, record = run_epochs(spec, state, step_fn, rng, mesh=ctx.mesh,
                             checkpoints=checkpoints,
                             record=record, writer=writer, on_epoch_end=on_epoch_end,
                             stop_at_step=stop_at_step)
  if not record.get('complete'):
    return state.vars, record
  return load_kept_variables(ctx, stage), record


def load_init_checkpoint(ctx: RunContext) -> ModelVars:
  """The original model from `config.init_checkpoint` (python -m delete_jax.convert)."""
  from delete_jax import convert  # pylint: disable=g-import-not-at-top
  variables, meta = convert.load_converted(ctx.config.init_checkpoint)
  expected = {'arch': ctx.config.model, 'num_classes': ctx.dataset.num_classes}
  for key, want in expected.items():
    if meta.get(key) != want:
      raise UserError(f'config.init_checkpoint {ctx.config.init_checkpoint} holds {key}='
                      f'{meta.get(key)!r} but this run needs {want!r}: convert with '
                      'the matching --arch/classes or change the config')
  shapes_ok = all(np.shape(a) == np.shape(b) for a, b in zip(
      jax.tree.leaves(variables), jax.tree.leaves(ctx.init_vars)))
  if not shapes_ok or len(jax.tree.leaves(variables)) != len(jax.tree.leaves(ctx.init_vars)):
    raise UserError(f'config.init_checkpoint {ctx.config.init_checkpoint} does not fit '
                    f'{ctx.config.model} on {ctx.dataset.name} inputs: convert with the '
                    'matching --image-shape')
  dtypes = jax.tree.map(lambda x: x.dtype, ctx.init_vars)
  variables = jax.tree.map(lambda x, d: np.asarray(x).astype(d), variables, dtypes)
  return parallel.put_replicated(variables, ctx.mesh)


def load_kept_variables(ctx: RunContext, stage: str) -> ModelVars:
  """The kept (best-epoch) variables of a completed training stage."""
  if stage == 'original' and ctx.config.init_checkpoint:
    return load_init_checkpoint(ctx)
  best = best_checkpoints(ctx, stage)
  if best.latest_step() is None:
    checkpoints = stage_checkpoints(ctx, stage)
    if checkpoints.latest_step() is None:
      raise UserError(f'no trained {stage} model in {ctx.stage_dir(stage)}: run '
                      f'--config.mode={"train" if stage == "original" else "retrain"} first '
                      '(or --config.mode=all)')
    _, tx, _ = _setup(ctx, stage)
    state, _ = checkpoints.restore(parallel.put_replicated(
        create_train_state(ctx.init_vars, tx), ctx.mesh))
    return state.vars
  variables, _ = best.restore(parallel.put_replicated(ctx.init_vars, ctx.mesh))
  return variables


def is_complete(ctx: RunContext, stage: str) -> bool:
  if stage == 'original' and ctx.config.init_checkpoint:
    return True
  meta = stage_checkpoints(ctx, stage).check_compatible()
  return bool(meta and meta.get('complete'))


def _setup(ctx: RunContext, stage: str):
  """The loop spec, optimizer and evaluation indices of a training stage."""
  cfg = ctx.config.train
  if stage == 'original':
    indices = all_indices(len(ctx.dataset.train_labels))
    eval_indices = all_indices(len(ctx.dataset.test_labels))
  else:
    indices, eval_indices = ctx.split.train_remain, ctx.split.test_remain
  spec = LoopSpec(name=stage, images=ctx.dataset.train_images,
                  labels=ctx.dataset.train_labels, indices=indices,
                  batch_size=cfg.batch_size, epochs=cfg.epochs, seed=ctx.config.seed,
                  log_every_steps=ctx.config.log_every_steps,
                  checkpoint_every_steps=ctx.config.checkpoint_every_steps)
  schedule = step_decay_schedule(cfg.lr, spec.steps_per_epoch, cfg.lr_decay_every_epochs,
                                 cfg.lr_decay_factor)
  return spec, make_sgd(schedule, cfg.momentum, cfg.weight_decay), eval_indices
