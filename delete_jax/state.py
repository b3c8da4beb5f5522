"""Pure training state: pytrees of arrays that jitted steps take and return."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx


@flax.struct.dataclass
class ModelVars:
  """A model's variables as pure nested dicts (Param and BatchStat collections)."""
  params: Any
  batch_stats: Any


@flax.struct.dataclass
class TrainState:
  """What a training or unlearning step updates.

  Attributes:
    step: number of optimizer steps taken (int32 scalar).
    params: nested dict of trainable parameters.
    batch_stats: nested dict of BatchNorm running statistics.
    opt_state: optax state; the learning rate lives in it as data
      (`optax.inject_hyperparams`), so K runs with K learning rates vmap.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def vars(self) -> ModelVars:
    return ModelVars(self.params, self.batch_stats)


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, ModelVars]:
  """Separates a module into its static graph and pure variable dicts."""
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return graphdef, ModelVars(nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats))


def _sgd(learning_rate, momentum, weight_decay):
  # torch.optim.SGD: d = g + wd·θ; v ← μ·v + d (v₀ = d); θ ← θ − lr·v. optax's
  # trace starts from v = 0, so its first step equals torch's v₀ = d.
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(learning_rate, momentum=momentum))


def make_sgd(learning_rate, momentum: float = 0.9,
             weight_decay: float = 0.0) -> optax.GradientTransformation:
  """SGD with momentum in PyTorch's convention; hyperparameters stored as data.

  Args:
    learning_rate: a float, or an optax schedule of the step count.
    momentum: μ.
    weight_decay: L2 coefficient added to the gradient (torch's weight_decay).
  """
  return optax.inject_hyperparams(_sgd)(learning_rate=learning_rate,
                                        momentum=momentum, weight_decay=weight_decay)


def create_train_state(variables: ModelVars,
                       tx: optax.GradientTransformation) -> TrainState:
  """A fresh state (step 0, zero momentum) around copies of `variables`."""
  params = jax.tree.map(jnp.array, variables.params)
  batch_stats = jax.tree.map(jnp.array, variables.batch_stats)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats, opt_state=tx.init(params))


def step_decay_schedule(base_lr: float, steps_per_epoch: int, decay_every_epochs: int,
                        factor: float) -> optax.Schedule:
  """torch's StepLR(step_size=decay_every_epochs, gamma=factor), stepped per epoch."""
  if decay_every_epochs <= 0:
    return optax.constant_schedule(base_lr)
  every = decay_every_epochs * steps_per_epoch

  def schedule(count):
    return base_lr * factor ** (count // every)

  return schedule
