"""The shared unlearning loop: any registered method, starting from the original."""

from __future__ import annotations

import functools
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from delete_jax import config_lib, parallel
from delete_jax.checkpointing import StageCheckpoints
from delete_jax.context import RunContext
from delete_jax.errors import UserError
from delete_jax.loop import LoopSpec, run_epochs
from delete_jax.methods import MethodInfo, check_data_access, get_method
from delete_jax.methods import fisher as fisher_lib
from delete_jax.methods import salun as salun_lib
from delete_jax.models import create_model, expand_head, head_name, prune_head
from delete_jax.state import ModelVars, create_train_state, make_sgd, split_model
from delete_jax.evaluation import accuracy as acc_lib
from delete_jax.steps import cached_teacher_prepare, unlearn_step


def method_hparams(config, name: str) -> dict:
  """Learning rate and epochs a method runs with, and where they came from.

  DELETE takes config.unlearn.lr/epochs. Every other method takes
  config.compare.lr.<name> when ≥ 0, else its published CIFAR-10 ResNet-18 default
  × config.compare.lr_scale; epochs likewise from config.compare.epochs.<name>.
  """
  method = get_method(name)
  if name == 'delete':
    return {'lr': float(config.unlearn.lr), 'epochs': int(config.unlearn.epochs),
            'lr_source': 'config.unlearn.lr'}
  lr = float(config.compare.lr.get(name, -1.0))
  source = f'config.compare.lr.{name}'
  if lr < 0:
    lr = method.default_lr * float(config.compare.lr_scale)
    source = f'published {method.default_lr:g} × lr_scale {config.compare.lr_scale:g}'
  epochs = int(config.compare.epochs.get(name, -1))
  if epochs < 0:
    epochs = int(config.unlearn.epochs)
  return {'lr': lr, 'epochs': epochs, 'lr_source': source}


def unlearn_checkpoints(ctx: RunContext, name: str) -> StageCheckpoints:
  settings = config_lib.stage_settings(ctx.config, 'unlearn', ctx.split.forget_classes)
  method = get_method(name)
  shared = ('batch_size', 'momentum', 'bn', 'augment') + method.hparams
  settings['unlearn'] = {k: v for k, v in settings['unlearn'].items() if k in shared}
  settings['method'] = name
  settings['original'] = original_identity(ctx)
  settings.update({k: v for k, v in method_hparams(ctx.config, name).items()
                   if k != 'lr_source'})
  return StageCheckpoints(ctx.stage_dir(name), ctx.provenance(name, settings))


def original_identity(ctx: RunContext) -> str:
  """What the unlearning started from: the original stage's settings hash, or
  the converted checkpoint's path and metadata, so that a run from another
  original is never mistaken for this one."""
  if ctx.config.init_checkpoint:
    meta_path = os.path.join(ctx.config.init_checkpoint, 'meta.json')
    meta = open(meta_path).read() if os.path.isfile(meta_path) else ''
    return f'init_checkpoint:{os.path.abspath(ctx.config.init_checkpoint)}:' + \
        config_lib.settings_hash({'meta': meta})
  return 'trained:' + config_lib.settings_hash(
      config_lib.stage_settings(ctx.config, 'original', ctx.split.forget_classes))


def forget_class_mask(ctx: RunContext) -> jnp.ndarray:
  mask = np.zeros((ctx.dataset.num_classes,), bool)
  mask[list(ctx.split.forget_classes)] = True
  return jnp.asarray(mask)


def random_labels(ctx: RunContext, exclude_true: bool) -> np.ndarray:
  """One label per training example, drawn once (seeded) from all C classes."""
  rng = np.random.default_rng([ctx.config.seed, 6])
  c = ctx.dataset.num_classes
  y = ctx.dataset.train_labels
  if exclude_true:
    return ((y + rng.integers(1, c, size=len(y))) % c).astype(np.int32)
  return rng.integers(0, c, size=len(y)).astype(np.int32)


def unlearn(ctx: RunContext, original: ModelVars, *, method_name: str | None = None,
            stop_at_step: int | None = None, writer=None,
            evaluate_fn=None) -> tuple[ModelVars, dict]:
  """Runs (or resumes) one unlearning method from the original model.

  Args:
    ctx: run context.
    original: the original model's variables (teacher and starting point).
    method_name: registry name; default config.unlearn.method.
    stop_at_step: stop early after this step (preemption simulation).
    writer: optional MetricWriter.
    evaluate_fn: `evaluate_fn(variables) -> dict of the four accuracies`, called
      every `config.unlearn.eval_every_epochs` epochs for the per-epoch history.
  """
  cfg = ctx.config.unlearn
  method = get_method(method_name or cfg.method)
  hp = method_hparams(ctx.config, method.name)
  parallel.check_batch_size(cfg.batch_size, ctx.mesh, 'config.unlearn.batch_size')
  indices = {'forget': ctx.split.train_forget, 'remain': ctx.split.train_remain,
             'forget+remain': np.concatenate([ctx.split.train_forget,
                                              scrub_remain_subset(ctx)])}[method.data]
  if len(ctx.split.train_forget) == 0 or len(indices) == 0:
    raise UserError(f'the {method.data} set of forget classes {ctx.split.forget_classes} '
                    'is empty: choose classes that have training examples')
  check_data_access(method, indices, ctx.split)
  checkpoints = unlearn_checkpoints(ctx, method.name)
  record = {'step': 0, 'wall_seconds': 0.0, 'method': method.name,
            'data_access': method.data, 'lr': hp['lr'], 'lr_source': hp['lr_source'],
            'epochs': hp['epochs']}
  if not method.trains:
    record.update({'lr': None, 'lr_source': 'no training', 'epochs': 0})
    return _fisher(ctx, original, checkpoints, record, indices)

  graphdef = ctx.graphdef
  start = original
  if method.expand_head:
    graphdef, start = _expanded(ctx, original)
  spec = LoopSpec(name=method.name, images=ctx.dataset.train_images,
                  labels=ctx.dataset.train_labels, indices=indices,
                  batch_size=cfg.batch_size, epochs=hp['epochs'], seed=ctx.config.seed,
                  log_every_steps=ctx.config.log_every_steps,
                  checkpoint_every_steps=ctx.config.checkpoint_every_steps)
  if method.data == 'forget+remain':
    spec.batch_plan = functools.partial(_scrub_plan, spec, ctx, scrub_remain_subset(ctx))
  tx = make_sgd(hp['lr'], cfg.momentum, 0.0)
  state = parallel.put_replicated(create_train_state(start, tx), ctx.mesh)
  if checkpoints.check_compatible() is not None:
    state, record = checkpoints.restore(state)
    if record.get('complete'):
      logging.info('[%s] complete checkpoint found in %s: reusing it', method.name,
                   checkpoints.directory)
      return _finish(ctx, method, state.vars), record
    logging.info('[%s] resuming from step %d', method.name, record['step'])

  teacher = None
  if method.teacher == 'original':
    teacher = parallel.put_replicated(original, ctx.mesh)
  elif method.teacher == 'random':
    _, teacher = split_model(create_model(ctx.config.model, ctx.dataset.num_classes,
                                          _model_shape(ctx), seed=ctx.config.seed + 1))
    teacher = parallel.put_replicated(teacher, ctx.mesh)
  info = MethodInfo(ctx.dataset.num_classes, forget_class_mask(ctx))
  objective, prepare = method.build(cfg, info)
  update_mask = None
  if method.saliency_mask:
    update_mask = salun_lib.saliency_mask(
        original, ctx.dataset.train_images, ctx.dataset.train_labels, indices,
        graphdef=ctx.graphdef, preprocess=ctx.preprocess,
        batch_size=ctx.config.eval.batch_size, fraction=cfg.salun_fraction, mesh=ctx.mesh)
  extra_batch = None
  if method.random_labels:
    table = random_labels(ctx, cfg.rl_exclude_true)
    extra_batch = lambda idx: {'random_label': table[idx]}  # pylint: disable=unnecessary-lambda-assignment
  if method.data == 'forget+remain':
    is_forget = np.zeros(len(ctx.dataset.train_labels), np.int32)
    is_forget[ctx.split.train_forget] = 1
    extra_batch = lambda idx: {'phase': is_forget[idx]}  # pylint: disable=unnecessary-lambda-assignment
  if (cfg.cache_teacher and method.teacher == 'original' and prepare is None
      and not (cfg.augment and ctx.preprocess.augments)):
    # The teacher is frozen and the inputs never change: one eval pass replaces a
    # teacher forward per step (equal up to float rounding of batch composition).
    cached = np.zeros((len(ctx.dataset.train_labels), ctx.dataset.num_classes), np.float32)
    cached[indices] = acc_lib.predict(
        original, ctx.dataset.train_images, ctx.dataset.train_labels, indices,
        graphdef=ctx.graphdef, preprocess=ctx.preprocess,
        batch_size=ctx.config.eval.batch_size, mesh=ctx.mesh)['logits']
    teacher, prepare = None, cached_teacher_prepare
    previous_extra = extra_batch

    def extra_batch(idx):  # pylint: disable=function-redefined
      out = {'teacher_logits': cached[idx]}
      if previous_extra is not None:
        out.update(previous_extra(idx))
      return out
    logging.info('[%s] teacher logits computed once (no augmentation)', method.name)
  jitted = parallel.jit_step(functools.partial(
      unlearn_step, graphdef=ctx.graphdef, tx=tx, preprocess=ctx.preprocess,
      objective=objective, prepare=prepare, bn_mode=cfg.bn, augment=cfg.augment,
      student_graphdef=graphdef), ctx.mesh)

  def step_fn(state, batch, rng):
    return jitted(state, teacher, batch, rng, update_mask=update_mask)

  def on_epoch_end(epoch, state, record):
    every = cfg.eval_every_epochs
    if evaluate_fn is None or not every or (epoch % every and epoch != hp['epochs']):
      return
    accs = evaluate_fn(_finish(ctx, method, state.vars))
    record['history'].append({'epoch': epoch, **accs})
    logging.info('[%s] epoch %d: %s', method.name, epoch,
                 ' '.join(f'{k} {v:.2f}%' for k, v in accs.items()))
    if writer is not None:
      writer.write_scalars(record['step'], {f'{method.name}/{k}': v for k, v in accs.items()})

  rng = jax.random.fold_in(jax.random.key(ctx.config.seed), 3)
  logging.info('[%s] unlearning classes %s from %d %s examples, %d epochs of %d steps '
               '(lr=%g from %s, bn=%s%s)', method.name, list(ctx.split.forget_classes),
               len(indices), method.data, hp['epochs'], spec.steps_per_epoch, hp['lr'],
               hp['lr_source'], cfg.bn, f', mask={cfg.mask}' if method.name == 'delete' else '')
  state, record = run_epochs(spec, state, step_fn, rng, mesh=ctx.mesh, checkpoints=checkpoints,
                             record=record, writer=writer, on_epoch_end=on_epoch_end,
                             extra_batch=extra_batch, stop_at_step=stop_at_step)
  return _finish(ctx, method, state.vars), record


def scrub_remain_subset(ctx: RunContext) -> np.ndarray:
  """SCRUB's remaining data: a seeded subset of config.unlearn.scrub_remain_size (0 = all)."""
  remain = ctx.split.train_remain
  size = ctx.config.unlearn.scrub_remain_size
  if not size or size >= len(remain):
    return remain
  rng = np.random.default_rng([ctx.config.seed, 10])
  return np.sort(rng.choice(remain, size, replace=False))


def _scrub_plan(spec: LoopSpec, ctx: RunContext, remain: np.ndarray, epoch: int) -> list:
  """SCRUB's epoch: forget batches (max steps) while epoch < scrub_max_epochs, then
  remain batches (min steps); each shuffled by (seed, epoch), never mixed."""
  rng = np.random.default_rng([spec.seed, 11, epoch])
  b = spec.batch_size
  out = []
  if epoch < ctx.config.unlearn.scrub_max_epochs:
    forget = ctx.split.train_forget[rng.permutation(len(ctx.split.train_forget))]
    out += [forget[i:i + b] for i in range(0, len(forget), b)]
  rem = remain[rng.permutation(len(remain))]
  return out + [rem[i:i + b] for i in range(0, len(rem), b)]


def _model_shape(ctx: RunContext) -> tuple[int, int, int]:
  shape = ctx.image_shape
  if ctx.config.augment.resize_to:
    shape = (ctx.config.augment.resize_to, ctx.config.augment.resize_to, shape[2])
  return shape


def _expanded(ctx: RunContext, original: ModelVars):
  """Boundary expanding: the original plus one output (Xavier-normal row, zero bias)."""
  c = ctx.dataset.num_classes
  graphdef, _ = split_model(create_model(ctx.config.model, c + 1, _model_shape(ctx),
                                         seed=ctx.config.seed))
  head = head_name(ctx.config.model)
  fan_in = original.params[head]['kernel'].shape[0]
  # Xavier normal for one new output row: std = sqrt(2 / (fan_in + fan_out)), with
  # torch's fan_out of the expanded layer (c + 1).
  std = (2.0 / (fan_in + c + 1)) ** 0.5
  column = std * jax.random.normal(jax.random.key(ctx.config.seed + 7), (fan_in,),
                                   original.params[head]['kernel'].dtype)
  return graphdef, ModelVars(expand_head(original.params, head, column),
                             original.batch_stats)


def _finish(ctx: RunContext, method, variables: ModelVars) -> ModelVars:
  if method.expand_head:
    return ModelVars(prune_head(variables.params, head_name(ctx.config.model),
                                ctx.dataset.num_classes), variables.batch_stats)
  return variables


def _fisher(ctx: RunContext, original: ModelVars, checkpoints: StageCheckpoints,
            record: dict, indices: np.ndarray) -> tuple[ModelVars, dict]:
  """Fisher forgetting: one pass over the remaining data, then noise."""
  template = parallel.put_replicated(original, ctx.mesh)
  if checkpoints.check_compatible() is not None:
    variables, record = checkpoints.restore(template)
    return variables, record
  t0 = time.time()
  logging.info('[fisher] %s Fisher diagonal over %d remaining examples (alpha=%g)',
               ctx.config.unlearn.fisher_mode, len(indices), ctx.config.unlearn.fisher_alpha)
  fisher = fisher_lib.fisher_diagonal(
      template, ctx.dataset.train_images, ctx.dataset.train_labels, indices,
      graphdef=ctx.graphdef, preprocess=ctx.preprocess,
      batch_size=ctx.config.unlearn.batch_size, mesh=ctx.mesh,
      mode=ctx.config.unlearn.fisher_mode)
  variables = fisher_lib.fisher_forget(
      template, fisher, alpha=ctx.config.unlearn.fisher_alpha,
      num_classes=ctx.dataset.num_classes, forget_classes=ctx.split.forget_classes,
      rng=jax.random.fold_in(jax.random.key(ctx.config.seed), 8))
  record.update({'complete': True, 'wall_seconds': time.time() - t0, 'history': []})
  checkpoints.save(0, variables, record)
  return variables, record
