"""Unlearning methods as small declarations sharing one loop (`unlearn.py`).

A method states its objective (a pure function of logits from `losses.py`), the
input preparation it needs from the frozen original (adversarial examples,
teacher logits), which network is its teacher, which data it may read (the loop
enforces it), and its default learning rate: the published CIFAR-10 ResNet-18
value (SPEC.md §5). Configs scale every default by one factor
(`config.compare.lr_scale`) rather than tuning methods one by one.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections

from delete_jax import losses
from delete_jax.errors import UserError
from delete_jax.methods import adversarial
from delete_jax.steps import Objective, Prepare, delete_objective

DATA_ACCESS = ('forget', 'remain', 'forget+remain')
TEACHERS = (None, 'original', 'random')


@dataclasses.dataclass(frozen=True)
class MethodInfo:
  """Facts about the run a method's objective may depend on."""
  num_classes: int
  forget_class_mask: jnp.ndarray   # bool [C]


@dataclasses.dataclass(frozen=True)
class Method:
  """An unlearning method.

  Attributes:
    name: registry name.
    data: what its loop reads: 'forget' (forget set only), 'remain' (remaining
      set) or 'forget+remain' (both; SCRUB reads a seeded remaining subset of
      config.unlearn.scrub_remain_size examples, 0 = all).
    teacher: None, 'original' (the frozen original) or 'random' (a freshly
      initialised network of the same architecture).
    default_lr: published CIFAR-10 ResNet-18 learning rate.
    build: (unlearn config, info) -> (objective, prepare or None).
    description: one line for reports.
    random_labels: feeds a fixed random label per forget example ('random_label').
    saliency_mask: trains only the most salient half of the weights (SalUn).
    expand_head: trains an extra output that is pruned afterwards.
    trains: False for methods that edit the weights without a training loop.
    hparams: the config.unlearn fields of its own that it reads (beyond batch size,
      momentum, bn and augment), recorded as checkpoint provenance.
  """
  name: str
  data: str
  teacher: Optional[str]
  default_lr: float
  build: Callable[[ml_collections.ConfigDict, MethodInfo], tuple[Objective, Optional[Prepare]]]
  description: str
  random_labels: bool = False
  saliency_mask: bool = False
  expand_head: bool = False
  trains: bool = True
  hparams: tuple[str, ...] = ()


def _delete(cfg, info):
  return delete_objective(cfg.mask, cfg.temperature, info.forget_class_mask), None


def _finetune(cfg, info):
  del cfg, info
  return lambda s, aux, y: losses.cross_entropy(s, y), None


def _gradient_ascent(cfg, info):
  del cfg, info
  return lambda s, aux, y: losses.gradient_ascent_loss(s, y), None


def _random_label_prepare(teacher_fn, pixels, batch, rng):
  del teacher_fn, rng
  return pixels, batch['random_label']


def _random_label(cfg, info):
  del cfg, info
  return lambda s, aux, y: losses.cross_entropy(s, aux), _random_label_prepare


def _boundary_shrink(cfg, info):
  del info
  eps = cfg.bs_epsilon

  def prepare(teacher_fn, pixels, batch, rng):
    del rng
    adv = adversarial.fgsm(teacher_fn, pixels, batch['label'], eps)
    # The label is the original model's prediction on the perturbed input: the
    # nearest class across the boundary. The student is trained on the clean input.
    return pixels, jnp.argmax(teacher_fn(adv), axis=-1)

  return lambda s, aux, y: losses.cross_entropy(s, aux), prepare


def _boundary_expand(cfg, info):
  del cfg
  shadow = info.num_classes  # the extra output's index

  def objective(s, aux, y):
    return losses.cross_entropy(s, jnp.full_like(y, shadow))

  return objective, None


def _bad_teacher(cfg, info):
  del info
  return (lambda s, aux, y: losses.distillation_loss(s, aux, cfg.bad_teacher_temperature),
          None)


def _l2ul(cfg, info):
  c = info.num_classes

  def prepare(teacher_fn, pixels, batch, rng):
    labels = batch['label']
    # Target: a uniformly drawn class other than the example's own.
    targets = (labels + jax.random.randint(rng, labels.shape, 1, c)) % c
    adv = adversarial.targeted_l2_pgd(teacher_fn, pixels, targets, cfg.l2ul_epsilon,
                                      cfg.l2ul_step_size, cfg.l2ul_iterations)
    return jnp.concatenate([pixels, adv], axis=0), targets

  return (lambda s, aux, y: losses.l2ul_loss(s, y, aux, cfg.l2ul_adv_weight)), prepare


def _scrub_prepare(teacher_fn, pixels, batch, rng):
  del rng
  return pixels, (teacher_fn(pixels), batch['phase'])


def _scrub(cfg, info):
  """SCRUB (Kurmanji et al., 2023): max steps on forget, min steps on remain.

  A batch is all-forget (phase 1: maximise the distillation loss to the original)
  or all-remain (phase 0: α·KD + γ·CE); the batch plan alternates them.
  """
  del info
  t = cfg.scrub_temperature

  def objective(s, aux, y):
    teacher_logits, phase = aux
    kd = losses.distillation_loss(s, teacher_logits, t) * t ** 2
    minimise = cfg.scrub_alpha * kd + cfg.scrub_gamma * losses.cross_entropy(s, y)
    return jnp.where(phase[0] == 1, -kd, minimise)

  return objective, _scrub_prepare


def _no_objective(cfg, info):
  del cfg, info
  return None, None


REGISTRY: dict[str, Method] = {m.name: m for m in [
    Method('delete', 'forget', 'original', 1e-4, _delete,
           'DELETE: masked distillation from the frozen original',
           hparams=('mask', 'temperature')),
    Method('ft', 'remain', None, 2e-2, _finetune,
           'fine-tune: cross entropy on the remaining data'),
    Method('ga', 'forget', None, 1e-5, _gradient_ascent,
           'gradient ascent: −CE on the forget set'),
    Method('rl', 'forget', None, 3e-4, _random_label,
           'random label: CE with a fixed random label per forget example',
           random_labels=True, hparams=('rl_exclude_true',)),
    Method('salun', 'forget', None, 1e-4, _random_label,
           'SalUn: random label on the most salient half of the weights',
           random_labels=True, saliency_mask=True,
           hparams=('rl_exclude_true', 'salun_fraction')),
    Method('bs', 'forget', 'original', 5e-5, _boundary_shrink,
           "boundary shrink: CE to the original's label on an FGSM neighbour",
           hparams=('bs_epsilon',)),
    Method('be', 'forget', None, 8e-4, _boundary_expand,
           'boundary expand: train to an extra output, then prune it', expand_head=True),
    Method('bad_teacher', 'forget', 'random', 1e-4, _bad_teacher,
           'bad teacher: distil a randomly initialised network on the forget set',
           hparams=('bad_teacher_temperature',)),
    Method('l2ul', 'forget', 'original', 1e-5, _l2ul,
           'L2UL: −CE + 0.1·CE on targeted L2-PGD examples of the original',
           hparams=('l2ul_epsilon', 'l2ul_step_size', 'l2ul_iterations', 'l2ul_adv_weight')),
    Method('scrub', 'forget+remain', 'original', 5e-4, _scrub,
           'SCRUB: max-min distillation (forget: push away; remain: stay close)',
           hparams=('scrub_max_epochs', 'scrub_alpha', 'scrub_gamma', 'scrub_temperature',
                    'scrub_remain_size')),
    Method('fisher', 'remain', None, 0.0, _no_objective,
           'Fisher forgetting: noise scaled by the inverse Fisher diagonal (no training)',
           trains=False, hparams=('fisher_alpha', 'fisher_mode')),
]}


def get_method(name: str) -> Method:
  if name not in REGISTRY:
    raise UserError(f'unknown unlearning method {name!r}: choose one of '
                    f'{", ".join(sorted(REGISTRY))} (config.unlearn.method)')
  return REGISTRY[name]


def check_data_access(method: Method, indices, split) -> None:
  """Refuses to feed a method data it did not declare (UserError)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  allowed = {'forget': split.train_forget, 'remain': split.train_remain,
             'forget+remain': np.concatenate([split.train_forget, split.train_remain])
             }[method.data]
  extra = np.setdiff1d(np.asarray(indices), allowed)
  if len(extra):
    raise UserError(f'method {method.name} declares data={method.data!r} but was given '
                    f'{len(extra)} other training examples: feed it only its declared data')
