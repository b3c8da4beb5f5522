"""Scores that summarise an unlearned model, most of them against Retrain.

The field compares an unlearned model with *Retrain* (the same recipe trained
from scratch without the forget classes) rather than judging accuracies in
isolation: the ideal forget accuracy is whatever Retrain gets, not 0. SPEC §4
defines each score; this module computes them from plain numbers and numpy
arrays of predictions.

Units matter: `avg_gap` works in whatever units it is given (both models in the
same ones, usually percent), while `tow`, `tow_mia` and `h_mean` are defined on
fractions in [0, 1] and reject values above 1.
"""

from collections.abc import Mapping, Sequence
import math

import numpy as np

from delete_jax.errors import UserError

AVG_GAP_KEYS = ('forget_acc', 'mia', 'remain_acc', 'test_acc')
TOW_KEYS = ('train_forget', 'train_remain', 'test')
TOW_MIA_KEYS = TOW_KEYS + ('mia',)


def _finite_values(scores: Mapping[str, float], keys: Sequence[str],
                   score_name: str, which: str) -> list[float]:
  """Returns scores[key] for each key as floats, or raises UserError."""
  if not isinstance(scores, Mapping):
    raise UserError(
        f'{score_name} needs a dict of metrics for the {which} model; got '
        f'{type(scores).__name__}.')
  missing = [key for key in keys if key not in scores]
  if missing:
    raise UserError(
        f'{score_name}: the {which} metrics lack {", ".join(missing)} (needs '
        f'{", ".join(keys)}).')
  values = []
  for key in keys:
    try:
      value = float(scores[key])
    except (TypeError, ValueError):
      raise UserError(
          f'{score_name}: {which} {key} must be a number; got '
          f'{scores[key]!r}.') from None
    if not math.isfinite(value):
      raise UserError(f'{score_name}: {which} {key} is {value}; it must be '
                      'finite.')
    values.append(value)
  return values


def _fractions(scores: Mapping[str, float], keys: Sequence[str],
               score_name: str, which: str) -> list[float]:
  """Like `_finite_values`, but also requires every value in [0, 1]."""
  values = _finite_values(scores, keys, score_name, which)
  for key, value in zip(keys, values):
    if not 0.0 <= value <= 1.0:
      hint = ' (a percentage? divide by 100)' if 1.0 < value <= 100.0 else ''
      raise UserError(
          f'{score_name} expects fractions in [0, 1]; {which} {key} = '
          f'{value:g}{hint}.')
  return values


def avg_gap(unlearned: Mapping[str, float],
            retrain: Mapping[str, float]) -> float:
  """Average gap to Retrain: mean of |u - r| over the four metrics.

  The metrics are 'forget_acc', 'mia', 'remain_acc' and 'test_acc'. Both dicts
  must use the same units (usually percent, as in SalUn's tables); the result
  is in those units. Lower is better.

  Args:
    unlearned: metrics of the unlearned model.
    retrain: the same metrics of the Retrain model.

  Returns:
    The mean absolute difference.

  Raises:
    UserError: missing or non-finite metrics, negative values, values above
      100, or one dict apparently in fractions and the other in percent.
  """
  u = _finite_values(unlearned, AVG_GAP_KEYS, 'avg_gap', 'unlearned')
  r = _finite_values(retrain, AVG_GAP_KEYS, 'avg_gap', 'retrain')
  for which, values in (('unlearned', u), ('retrain', r)):
    for key, value in zip(AVG_GAP_KEYS, values):
      if not 0.0 <= value <= 100.0:
        raise UserError(
            f'avg_gap expects accuracies and MIA rates in [0, 100] (percent) '
            f'or [0, 1] (fractions); {which} {key} = {value:g}.')
  # A model whose every metric (remaining accuracy included) is at most 1 % is
  # implausible, so "all <= 1" on one side and "some > 1" on the other means a
  # fraction dict was mixed with a percent dict, which would silently give a
  # meaningless gap.
  if (max(u) <= 1.0) != (max(r) <= 1.0):
    raise UserError(
        'avg_gap: the unlearned and retrain metrics seem to be in different '
        'units (one in fractions, one in percent); convert both to percent.')
  return float(np.mean(np.abs(np.subtract(u, r))))


def tow(unlearned: Mapping[str, float], retrain: Mapping[str, float]) -> float:
  """Tug-of-war score: Π over {D_f, D_r, D_test} of (1 - |acc_u - acc_r|).

  Keys 'train_forget', 'train_remain' and 'test' hold accuracies as fractions
  in [0, 1]. The score is 1 when the unlearned model matches Retrain exactly
  and falls towards 0 as any accuracy drifts from it. Higher is better.

  Args:
    unlearned: accuracies of the unlearned model.
    retrain: accuracies of the Retrain model.

  Returns:
    The product, in [0, 1].

  Raises:
    UserError: missing or non-finite accuracies, or values outside [0, 1]
      (e.g. percentages).
  """
  u = _fractions(unlearned, TOW_KEYS, 'tow', 'unlearned')
  r = _fractions(retrain, TOW_KEYS, 'tow', 'retrain')
  return float(np.prod(1.0 - np.abs(np.subtract(u, r))))


def tow_mia(unlearned: Mapping[str, float],
            retrain: Mapping[str, float]) -> float:
  """ToW with the MIA member rate as a fourth factor.

  Π over {train_forget, train_remain, test, mia} of (1 - |u - r|), where 'mia'
  is the fraction of forget-class training examples the SVC attack calls
  members (see `mia.svc_mia`; same feature for both models). All four values
  are fractions in [0, 1]. Higher is better.

  Args:
    unlearned: accuracies and member rate of the unlearned model.
    retrain: the same for the Retrain model.

  Returns:
    The product, in [0, 1].

  Raises:
    UserError: missing or non-finite values, or values outside [0, 1].
  """
  u = _fractions(unlearned, TOW_MIA_KEYS, 'tow_mia', 'unlearned')
  r = _fractions(retrain, TOW_MIA_KEYS, 'tow_mia', 'retrain')
  return float(np.prod(1.0 - np.abs(np.subtract(u, r))))


def h_mean(test_remain_acc: float, test_forget_acc: float) -> float:
  """Harmonic mean of test-remain accuracy and (1 - test-forget accuracy).

  High only when the model both keeps the remaining classes and forgets the
  forget classes; it needs no Retrain model.

  Args:
    test_remain_acc: test accuracy on the remaining classes, a fraction.
    test_forget_acc: test accuracy on the forget classes, a fraction.

  Returns:
    2ab / (a + b) with a = test_remain_acc, b = 1 - test_forget_acc; 0 when
    either is 0.

  Raises:
    UserError: a value outside [0, 1] or not finite.
  """
  a, forget = _fractions(
      {'test_remain_acc': test_remain_acc, 'test_forget_acc': test_forget_acc},
      ('test_remain_acc', 'test_forget_acc'), 'h_mean', 'given')
  b = 1.0 - forget
  if a == 0.0 or b == 0.0:
    return 0.0
  return 2.0 * a * b / (a + b)


def _check_predictions(preds, labels, num_classes: int):
  """Returns (preds, labels) as int64 arrays, or raises UserError."""
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise UserError(f'num_classes must be a positive integer; got '
                    f'{num_classes!r}.')
  preds = np.asarray(preds)
  labels = np.asarray(labels)
  if preds.ndim != 1 or labels.ndim != 1 or preds.shape != labels.shape:
    raise UserError(
        'preds and labels must be 1-D arrays of the same length; got shapes '
        f'{preds.shape} and {labels.shape}.')
  for name, array in (('preds', preds), ('labels', labels)):
    if array.size and not np.issubdtype(array.dtype, np.integer):
      raise UserError(f'{name} must be integer class ids (argmax of the '
                      f'logits); got dtype {array.dtype}.')
    if array.size and (array.min() < 0 or array.max() >= num_classes):
      raise UserError(
          f'{name} must lie in [0, {num_classes - 1}]; got '
          f'{array.min()}..{array.max()}.')
  return preds.astype(np.int64), labels.astype(np.int64)


def per_class_accuracy(preds: np.ndarray, labels: np.ndarray,
                       num_classes: int) -> np.ndarray:
  """Accuracy on each true class.

  Args:
    preds: [N] predicted class ids.
    labels: [N] true class ids.
    num_classes: number of classes C.

  Returns:
    [C] float64 fractions in [0, 1]; NaN for a class with no examples (its
    accuracy is undefined, and 0 would read as "forgotten").

  Raises:
    UserError: mismatched shapes, non-integer ids, or ids out of range.
  """
  preds, labels = _check_predictions(preds, labels, num_classes)
  totals = np.bincount(labels, minlength=num_classes)
  hits = np.bincount(labels[preds == labels], minlength=num_classes)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)


def confusion_matrix(preds: np.ndarray, labels: np.ndarray,
                     num_classes: int) -> np.ndarray:
  """Counts of (true class, predicted class) pairs.

  Args:
    preds: [N] predicted class ids.
    labels: [N] true class ids.
    num_classes: number of classes C.

  Returns:
    [C, C] int64 array; entry [t, p] counts examples of true class t
    predicted as p.

  Raises:
    UserError: mismatched shapes, non-integer ids, or ids out of range.
  """
  preds, labels = _check_predictions(preds, labels, num_classes)
  flat = np.bincount(labels * num_classes + preds,
                     minlength=num_classes * num_classes)
  return flat.reshape(num_classes, num_classes).astype(np.int64)


def relearn_steps(accuracy_curve: Sequence[float], original_acc: float,
                  fraction: float) -> int | None:
  """How many fine-tuning steps it takes to relearn the forget classes.

  Relearn time probes whether forgetting is shallow: fine-tune the unlearned
  model on a small forget subset and count the steps until its forget accuracy
  regains `fraction` of the original model's.

  Args:
    accuracy_curve: curve[i] is the forget accuracy after i + 1 fine-tuning
      steps; same units as `original_acc`.
    original_acc: the original model's forget accuracy.
    fraction: the share of `original_acc` that counts as relearned, in (0, 1].

  Returns:
    The 1-based number of steps after which accuracy first reaches
    fraction * original_acc, or None if it never does within the curve.

  Raises:
    UserError: fraction outside (0, 1], or a negative or non-finite value.
  """
  try:
    fraction = float(fraction)
    original_acc = float(original_acc)
    curve = np.asarray(accuracy_curve, dtype=np.float64)
  except (TypeError, ValueError):
    raise UserError('relearn_steps needs numbers: an accuracy curve, the '
                    'original accuracy and a fraction.') from None
  if not 0.0 < fraction <= 1.0:
    raise UserError(f'relearn_steps: fraction must be in (0, 1]; got '
                    f'{fraction:g}.')
  if not math.isfinite(original_acc) or original_acc < 0.0:
    raise UserError(f'relearn_steps: original accuracy must be a non-negative '
                    f'number; got {original_acc:g}.')
  if curve.ndim != 1:
    raise UserError('relearn_steps: the accuracy curve must be a flat '
                    f'sequence; got shape {curve.shape}.')
  if not np.all(np.isfinite(curve)) or np.any(curve < 0.0):
    raise UserError('relearn_steps: the accuracy curve must hold finite, '
                    'non-negative accuracies.')
  reached = np.flatnonzero(curve >= fraction * original_acc)
  if reached.size == 0:
    return None
  return int(reached[0]) + 1
