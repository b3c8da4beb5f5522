"""The shared unlearning loop: any registered method, starting from the original."""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from delete_jax import config_lib, parallel
from delete_jax.checkpointing import StageCheckpoints
from delete_jax.context import RunContext
from delete_jax.errors import UserError
from delete_jax.loop import LoopSpec, run_epochs
from delete_jax.methods import get_method
from delete_jax.state import ModelVars, create_train_state, make_sgd
from delete_jax.steps import unlearn_step


def unlearn_checkpoints(ctx: RunContext, method: str) -> StageCheckpoints:
  settings = config_lib.stage_settings(ctx.config, 'unlearn', ctx.split.forget_classes)
  return StageCheckpoints(ctx.stage_dir(method), ctx.provenance(method, settings))


def forget_class_mask(ctx: RunContext) -> jnp.ndarray:
  mask = np.zeros((ctx.dataset.num_classes,), bool)
  mask[list(ctx.split.forget_classes)] = True
  return jnp.asarray(mask)


def unlearn(ctx: RunContext, original: ModelVars, *, stop_at_step: int | None = None,
            writer=None, evaluate_fn=None) -> tuple[ModelVars, dict]:
  """Runs (or resumes) `config.unlearn.method` from the original model.

  Args:
    ctx: run context.
    original: the original model's variables (teacher and starting point).
    stop_at_step: stop early after this step (preemption simulation).
    writer: optional MetricWriter.
    evaluate_fn: `evaluate_fn(variables) -> dict of the four accuracies`, called
      every `config.unlearn.eval_every_epochs` epochs for the per-epoch history.
  """
  cfg = ctx.config.unlearn
  method = get_method(cfg.method)
  parallel.check_batch_size(cfg.batch_size, ctx.mesh, 'config.unlearn.batch_size')
  if method.data != 'forget':
    raise UserError(f'method {method.name} reads {method.data} data; this loop feeds '
                    'only the forget set')
  indices = ctx.split.train_forget
  if len(indices) == 0:
    raise UserError(f'the forget set of classes {ctx.split.forget_classes} is empty: '
                    'choose classes that have training examples')
  spec = LoopSpec(name=method.name, images=ctx.dataset.train_images,
                  labels=ctx.dataset.train_labels, indices=indices,
                  batch_size=cfg.batch_size, epochs=cfg.epochs, seed=ctx.config.seed,
                  log_every_steps=ctx.config.log_every_steps,
                  checkpoint_every_steps=ctx.config.checkpoint_every_steps)
  tx = make_sgd(cfg.lr, cfg.momentum, 0.0)
  checkpoints = unlearn_checkpoints(ctx, method.name)
  state = parallel.put_replicated(create_train_state(original, tx), ctx.mesh)
  record = {'step': 0, 'wall_seconds': 0.0, 'method': method.name,
            'data_access': method.data}
  if checkpoints.check_compatible() is not None:
    state, record = checkpoints.restore(state)
    if record.get('complete'):
      logging.info('[%s] complete checkpoint found in %s: reusing it', method.name,
                   checkpoints.directory)
      return state.vars, record
    logging.info('[%s] resuming from step %d', method.name, record['step'])

  teacher = parallel.put_replicated(original, ctx.mesh) if method.needs_teacher else None
  jitted = parallel.jit_step(functools.partial(
      unlearn_step, graphdef=ctx.graphdef, tx=tx, preprocess=ctx.preprocess,
      objective=method.make_objective(cfg, forget_class_mask(ctx)), bn_mode=cfg.bn,
      augment=cfg.augment), ctx.mesh)

  def step_fn(state, batch, rng):
    return jitted(state, teacher, batch, rng)

  def on_epoch_end(epoch, state, record):
    every = cfg.eval_every_epochs
    if evaluate_fn is None or not every or (epoch % every and epoch != cfg.epochs):
      return
    accs = evaluate_fn(state.vars)
    record['history'].append({'epoch': epoch, **accs})
    logging.info('[%s] epoch %d: %s', method.name, epoch,
                 ' '.join(f'{k} {v:.2f}%' for k, v in accs.items()))
    if writer is not None:
      writer.write_scalars(record['step'], {f'{method.name}/{k}': v for k, v in accs.items()})

  rng = jax.random.fold_in(jax.random.key(ctx.config.seed), 3)
  logging.info('[%s] unlearning classes %s from %d forget examples, %d epochs of %d steps '
               '(mask=%s, bn=%s, lr=%g)', method.name, list(ctx.split.forget_classes),
               len(indices), cfg.epochs, spec.steps_per_epoch, cfg.mask, cfg.bn, cfg.lr)
  state, record = run_epochs(spec, state, step_fn, rng, mesh=ctx.mesh, checkpoints=checkpoints,
                             record=record, writer=writer, on_epoch_end=on_epoch_end,
                             stop_at_step=stop_at_step)
  return state.vars, record
