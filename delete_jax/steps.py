"""Pure step functions: (state, batch, rng) -> (state, metrics).

Nothing here has side effects or talks to the host; `parallel.py` jits these
with explicit shardings and donated state, and the loops in `train.py` and
`unlearn.py` drive them. A batch is a dict with 'image' (uint8 NHWC, or float for
tests), 'label' (int32) and, for evaluation, 'mask' (bool; False on padding).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from delete_jax import losses
from delete_jax.preprocess import Preprocess
from delete_jax.state import ModelVars, TrainState

BN_MODES = ('train', 'frozen')


def apply_model(graphdef: nnx.GraphDef, variables: ModelVars, images: jnp.ndarray,
                *, train: bool) -> tuple[jnp.ndarray, dict]:
  """Runs the model; returns logits and (in train mode) updated BatchNorm stats.

  Variables are converted to jax arrays first: BatchNorm writes its running
  statistics in place, which must never reach a caller's numpy arrays.
  """
  as_jax = functools.partial(jax.tree.map, jnp.asarray)
  model = nnx.merge(graphdef, as_jax(variables.params), as_jax(variables.batch_stats))
  logits = model(images, train=train)
  if not train:
    return logits, variables.batch_stats
  return logits, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))


def _apply_gradients(state: TrainState, grads, batch_stats,
                     tx: optax.GradientTransformation, update_mask=None) -> TrainState:
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if update_mask is not None:
    # Select rather than multiply: masked parameters stay bit-identical (momentum
    # and weight decay would otherwise move them, and −0.0 + 0.0 flips a sign bit).
    params = jax.tree.map(lambda m, new, old: jnp.where(m, new, old), update_mask, params,
                          state.params)
  return TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                    opt_state=opt_state)


def train_step(state: TrainState, batch: dict, rng: jax.Array, *,
               graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
               preprocess: Preprocess) -> tuple[TrainState, dict]:
  """One step of supervised training: cross entropy, BatchNorm in train mode."""
  rng = jax.random.fold_in(rng, state.step)
  images = preprocess(batch['image'], rng, augment=True)
  labels = batch['label']

  def loss_fn(params):
    logits, batch_stats = apply_model(graphdef, ModelVars(params, state.batch_stats),
                                      images, train=True)
    return losses.cross_entropy(logits, labels), (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  new_state = _apply_gradients(state, grads, batch_stats, tx)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
  return new_state, {'loss': loss, 'accuracy': accuracy}


# An unlearning objective: (student_logits, aux, labels) -> loss, where aux is what
# the method's `prepare` returned (by default: the teacher's logits on the batch).
Objective = Callable[[jnp.ndarray, Any, jnp.ndarray], jnp.ndarray]
# A method's input preparation, run without gradient before the student forward:
# (teacher_fn, pixels, batch, rng) -> (student_pixels, aux). teacher_fn maps [0, 1]
# pixel-space images to the frozen teacher's logits (eval mode).
Prepare = Callable[[Callable, jnp.ndarray, dict, jax.Array], tuple[jnp.ndarray, Any]]


def delete_objective(mask_mode: str = 'label', temperature: float = 1.0,
                     forget_class_mask: Optional[jnp.ndarray] = None) -> Objective:
  """DELETE's loss with its named options bound."""

  def objective(student_logits, teacher_logits, labels):
    return losses.delete_loss(student_logits, teacher_logits, labels,
                              mask_mode=mask_mode, forget_class_mask=forget_class_mask,
                              temperature=temperature)

  return objective


def cached_teacher_prepare(teacher_fn, pixels, batch, rng):
  """aux = teacher logits precomputed once per example (batch['teacher_logits']).

  Valid only without augmentation: the frozen teacher then sees the same input
  every epoch, so one eval-mode pass replaces a teacher forward per step.
  """
  del teacher_fn, rng
  return pixels, batch['teacher_logits']


def teacher_logits_prepare(teacher_fn, pixels, batch, rng):
  """The default preparation: the student sees the batch, aux = teacher logits."""
  del batch, rng
  return pixels, (None if teacher_fn is None else teacher_fn(pixels))


def unlearn_step(state: TrainState, teacher: Optional[ModelVars], batch: dict,
                 rng: jax.Array, *, graphdef: nnx.GraphDef,
                 tx: optax.GradientTransformation, preprocess: Preprocess,
                 objective: Objective, bn_mode: str = 'train', augment: bool = True,
                 prepare: Optional[Prepare] = None, update_mask: Any = None,
                 student_graphdef: Optional[nnx.GraphDef] = None) -> tuple[TrainState, dict]:
  """One unlearning step (SPEC §2 for DELETE; §5 for the baselines).

  The teacher (frozen original, or whatever network the method names) runs in eval
  mode without gradient; the student runs with BatchNorm in train mode
  (`bn_mode='train'`, published; running statistics are updated from the batch) or
  eval mode (`bn_mode='frozen'`). Teacher and student see the same augmented batch.
  `update_mask` (a bool pytree like the params) freezes parameters bit-exactly
  (SalUn). `student_graphdef` lets the student's graph differ from the teacher's
  (boundary expanding adds an output).
  """
  if bn_mode not in BN_MODES:
    raise ValueError(f'unknown bn_mode {bn_mode!r}; choose one of {BN_MODES}')
  rng = jax.random.fold_in(rng, state.step)
  aug_key, method_key = jax.random.split(rng)
  pixels = preprocess.pixels(batch['image'], aug_key, augment=augment)
  labels = batch['label']
  teacher_fn = None
  if teacher is not None:
    def teacher_fn(x):
      logits, _ = apply_model(graphdef, teacher, preprocess.normalize(x), train=False)
      return jax.lax.stop_gradient(logits)
  student_pixels, aux = (prepare or teacher_logits_prepare)(teacher_fn, pixels, batch,
                                                            method_key)
  student_pixels = jax.lax.stop_gradient(student_pixels)
  aux = jax.lax.stop_gradient(aux)
  student_inputs = preprocess.normalize(student_pixels)
  train_bn = bn_mode == 'train'
  sgraph = graphdef if student_graphdef is None else student_graphdef

  def loss_fn(params):
    logits, batch_stats = apply_model(sgraph, ModelVars(params, state.batch_stats),
                                      student_inputs, train=train_bn)
    return objective(logits, aux, labels), (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  new_state = _apply_gradients(state, grads, batch_stats, tx, update_mask)
  accuracy = jnp.mean(jnp.argmax(logits[:labels.shape[0]], -1) == labels)
  return new_state, {'loss': loss, 'accuracy': accuracy}


def predict_step(variables: ModelVars, batch: dict, *, graphdef: nnx.GraphDef,
                 preprocess: Preprocess, rng: Optional[jax.Array] = None,
                 augment: bool = False) -> dict:
  """Eval-mode predictions for one (possibly padded) batch.

  Returns per-example 'pred', 'logits', 'prob' (softmax) and 'correct'; padding rows are
  masked by the caller with batch['mask']. `augment=True` (with an rng) feeds the
  training augmentation, which the published MIA code did.
  """
  images = preprocess(batch['image'], rng, augment=augment)
  logits, _ = apply_model(graphdef, variables, images, train=False)
  pred = jnp.argmax(logits, -1)
  return {'pred': pred, 'logits': logits, 'prob': jax.nn.softmax(logits, -1),
          'correct': (pred == batch['label']) & batch['mask']}
