"""Unlearning methods as small declarations sharing one loop (`unlearn.py`).

A method states its objective, whether it needs the frozen original as teacher,
which data it may read, and its defaults. The loop enforces the data access.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp
import ml_collections

from delete_jax.errors import UserError
from delete_jax.steps import Objective, delete_objective

DATA_ACCESS = ('forget', 'remain_subset', 'remain')


@dataclasses.dataclass(frozen=True)
class Method:
  """An unlearning method.

  Attributes:
    name: registry name ('delete', ...).
    data: what it reads: 'forget' (forget set only), 'remain_subset' or 'remain'.
    needs_teacher: whether the step receives the frozen original's variables.
    make_objective: builds the objective from the unlearn config and the boolean
      forget-class mask [C].
    description: one line for reports.
  """
  name: str
  data: str
  needs_teacher: bool
  make_objective: Callable[[ml_collections.ConfigDict, jnp.ndarray], Objective]
  description: str


def _delete(cfg: ml_collections.ConfigDict, forget_class_mask: jnp.ndarray) -> Objective:
  return delete_objective(mask_mode=cfg.mask, temperature=cfg.temperature,
                          forget_class_mask=forget_class_mask)


REGISTRY: dict[str, Method] = {
    'delete': Method('delete', 'forget', True, _delete,
                     'DELETE: masked distillation from the frozen original (forget data only)'),
}


def get_method(name: str) -> Method:
  if name not in REGISTRY:
    raise UserError(f'unknown unlearning method {name!r}: choose one of '
                    f'{", ".join(sorted(REGISTRY))} (config.unlearn.method)')
  return REGISTRY[name]


