"""Which classes to forget, and the index split that follows from them.

Class-wise unlearning splits each dataset split into a forget part (examples
of the forget classes) and a remain part (everything else). The forget
classes are either given explicitly (the better interface) or taken as the
first `num_forget` entries of a fixed per-dataset permutation, which is how
the published code chooses them (SPEC.md section 3).

Permutations:

* cifar10, cifar100, tinyimagenet: the published ones. For cifar100 and
  tinyimagenet SPEC.md gives only a prefix (20 and 10 entries), so
  `num_forget` is limited to that length.
* every other dataset (digits, fashion_mnist, mnist, ...) has no published
  permutation; it uses `np.random.default_rng(0).permutation(num_classes)`,
  computed at call time. For 10 classes that is (4, 6, 2, 7, 3, 5, 9, 0, 8, 1).
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import operator

import numpy as np

from delete_jax.data.datasets import ImageDataset
from delete_jax.errors import UserError

FORGET_PERMUTATIONS: dict[str, tuple[int, ...]] = {
    'cifar10': (4, 3, 5, 9, 8, 1, 0, 7, 6, 2),
    'cifar100': (25, 58, 38, 23, 96, 54, 51, 49, 98, 66, 16, 52, 40, 71, 63,
                 79, 53, 12, 46, 55),
    'tinyimagenet': (126, 162, 16, 87, 88, 17, 78, 93, 127, 14),
}

# Seed of the permutation used for datasets without a published one.
_FALLBACK_PERMUTATION_SEED = 0


def forget_permutation(dataset_name: str, num_classes: int) -> tuple[int, ...]:
  """Returns the class order whose prefixes are the default forget sets."""
  if dataset_name in FORGET_PERMUTATIONS:
    return FORGET_PERMUTATIONS[dataset_name]
  permutation = np.random.default_rng(_FALLBACK_PERMUTATION_SEED).permutation(
      num_classes)
  return tuple(int(c) for c in permutation)


def resolve_forget_classes(
    dataset_name: str,
    num_classes: int,
    forget_classes: Sequence[int] | str | int | None,
    num_forget: int | None,
) -> tuple[int, ...]:
  """Returns the forget classes from exactly one of the two ways to name them.

  Args:
    dataset_name: Catalog name; selects the permutation for `num_forget`.
    num_classes: Number of classes in the dataset.
    forget_classes: Explicit classes: a sequence of ints, one int, or a
      string such as '3,7' (as given on a command line). Order is kept.
    num_forget: Take the first `num_forget` entries of the dataset's
      permutation (see the module docstring).

  Returns:
    The forget classes, in the order given (or permutation order).

  Raises:
    UserError: Both or neither given, an empty list, a non-integer, a class
      outside [0, num_classes), a duplicate, `num_forget` beyond the known
      permutation, or all classes forgotten (nothing would remain).
  """
  if forget_classes is not None and num_forget is not None:
    raise UserError(
        f'both forget_classes={forget_classes!r} and num_forget={num_forget!r}'
        ' are set: set only one of them')
  if forget_classes is None and num_forget is None:
    raise UserError('no forget classes chosen: set forget_classes (e.g. '
                    "'3,7') or num_forget (e.g. 1)")
  if forget_classes is not None:
    return _validated(_parse_classes(forget_classes), num_classes)

  if isinstance(num_forget, bool):
    raise UserError(f'num_forget must be an integer, got {num_forget!r}: '
                    'set it to a count such as 1')
  try:
    count = operator.index(num_forget)
  except TypeError:
    raise UserError(f'num_forget must be an integer, got {num_forget!r}: '
                    'set it to a count such as 1') from None
  if count < 1:
    raise UserError(f'num_forget={count} forgets nothing: set it to at least '
                    '1')
  if count >= num_classes:
    raise UserError(f'num_forget={count} would forget all {num_classes} '
                    f'classes of {dataset_name}, leaving nothing to remain: '
                    f'use at most {num_classes - 1}')
  permutation = forget_permutation(dataset_name, num_classes)
  if count > len(permutation):
    raise UserError(
        f'num_forget={count} exceeds the {len(permutation)} known entries of '
        f'the {dataset_name} forget permutation: use at most '
        f'{len(permutation)} or list the classes in forget_classes')
  return _validated(permutation[:count], num_classes)


def _parse_classes(forget_classes: Sequence[int] | str | int) -> list[int]:
  """Turns '3,7', 3 or [3, 7] into a list of ints (UserError otherwise)."""
  if isinstance(forget_classes, str):
    # Tolerate the brackets and spaces people type around lists.
    text = forget_classes.strip().strip('[]()')
    tokens = [t.strip() for t in text.split(',')] if text.strip() else []
    items = []
    for token in tokens:
      try:
        items.append(int(token))
      except ValueError:
        raise UserError(
            f'forget class {token!r} in {forget_classes!r} is not an '
            "integer: write the classes as integers, e.g. '3,7'") from None
    return items
  if isinstance(forget_classes, (int, np.integer)) and not isinstance(
      forget_classes, bool):
    return [int(forget_classes)]
  try:
    values = list(forget_classes)
  except TypeError:
    raise UserError(
        f'forget_classes={forget_classes!r} is not a list of classes: '
        "give integers, e.g. [3, 7] or '3,7'") from None
  items = []
  for value in values:
    if isinstance(value, bool):
      raise UserError(f'forget class {value!r} is not an integer: give class '
                      'indices, e.g. [3, 7]')
    try:
      items.append(operator.index(value))
    except TypeError:
      raise UserError(f'forget class {value!r} is not an integer: give class '
                      'indices, e.g. [3, 7]') from None
  return items


def _validated(classes: Sequence[int], num_classes: int) -> tuple[int, ...]:
  """Checks a parsed forget list against the dataset's class count."""
  if not classes:
    raise UserError('the forget class list is empty: name at least one '
                    "class, e.g. '3'")
  for c in classes:
    if not 0 <= c < num_classes:
      raise UserError(f'forget class {c} is outside [0, {num_classes}): use '
                      f'classes 0..{num_classes - 1}')
  duplicates = sorted({c for c in classes if list(classes).count(c) > 1})
  if duplicates:
    raise UserError(f'forget classes {list(classes)} repeat '
                    f'{", ".join(map(str, duplicates))}: list each class once')
  if len(classes) >= num_classes:
    raise UserError(f'forgetting all {num_classes} classes leaves nothing to '
                    f'remain: forget at most {num_classes - 1} classes')
  return tuple(int(c) for c in classes)


@dataclasses.dataclass(frozen=True, eq=False)
class ClassSplit:
  """Indices of the forget and remain parts of each dataset split.

  Attributes:
    forget_classes: The classes forgotten.
    train_forget: int64 indices into the train arrays, sorted ascending.
    train_remain: int64 indices of the other training examples, sorted.
    test_forget: int64 indices into the test arrays, sorted.
    test_remain: int64 indices of the other test examples, sorted.
  """
  forget_classes: tuple[int, ...]
  train_forget: np.ndarray
  train_remain: np.ndarray
  test_forget: np.ndarray
  test_remain: np.ndarray

  def sizes(self) -> dict[str, int]:
    """Returns the number of examples in each of the four parts."""
    return {
        'train_forget': int(self.train_forget.size),
        'train_remain': int(self.train_remain.size),
        'test_forget': int(self.test_forget.size),
        'test_remain': int(self.test_remain.size),
    }


def class_split(dataset: ImageDataset,
                forget_classes: Sequence[int] | str | int) -> ClassSplit:
  """Splits both dataset splits into forget and remain indices.

  Args:
    dataset: The dataset.
    forget_classes: Classes to forget, usually from `resolve_forget_classes`
      (any form that function accepts explicitly works).

  Returns:
    The four sorted, disjoint index arrays.

  Raises:
    UserError: Invalid classes, or a forget class without training examples
      (an empty forget set cannot be unlearned or measured).
  """
  classes = _validated(_parse_classes(forget_classes), dataset.num_classes)
  train_counts = np.bincount(dataset.train_labels,
                             minlength=dataset.num_classes)
  absent = [c for c in classes if train_counts[c] == 0]
  if absent:
    raise UserError(
        f'empty forget set: class {", ".join(map(str, absent))} has no '
        f'training examples in {dataset.name}: choose other forget classes')
  parts = {}
  for split in ('train', 'test'):
    in_forget = np.isin(getattr(dataset, f'{split}_labels'), classes)
    # flatnonzero yields ascending indices, so both parts come out sorted.
    parts[f'{split}_forget'] = np.flatnonzero(in_forget).astype(np.int64)
    parts[f'{split}_remain'] = np.flatnonzero(~in_forget).astype(np.int64)
  for indices in parts.values():
    indices.flags.writeable = False
  return ClassSplit(forget_classes=classes, **parts)
