"""Tests for delete_jax.evaluation.scores on hand-computed examples."""

import math

import numpy as np
import pytest

from delete_jax.errors import UserError
from delete_jax.evaluation import scores


def test_avg_gap_percent():
  unlearned = {'forget_acc': 3.4, 'mia': 10.0, 'remain_acc': 99.0,
               'test_acc': 94.0}
  retrain = {'forget_acc': 0.0, 'mia': 6.0, 'remain_acc': 100.0,
             'test_acc': 95.0}
  # (3.4 + 4 + 1 + 1) / 4 = 2.35
  assert scores.avg_gap(unlearned, retrain) == pytest.approx(2.35)


def test_avg_gap_fractions_and_symmetry():
  unlearned = {'forget_acc': 0.1, 'mia': 0.2, 'remain_acc': 0.9,
               'test_acc': 0.8}
  retrain = {'forget_acc': 0.0, 'mia': 0.4, 'remain_acc': 1.0,
             'test_acc': 0.8}
  # (0.1 + 0.2 + 0.1 + 0) / 4 = 0.1
  assert scores.avg_gap(unlearned, retrain) == pytest.approx(0.1)
  assert scores.avg_gap(retrain, unlearned) == pytest.approx(0.1)
  assert scores.avg_gap(retrain, retrain) == 0.0


def test_avg_gap_rejects_mixed_units_and_missing_keys():
  percent = {'forget_acc': 0.0, 'mia': 5.0, 'remain_acc': 99.0,
             'test_acc': 94.0}
  fraction = {'forget_acc': 0.0, 'mia': 0.05, 'remain_acc': 0.99,
              'test_acc': 0.94}
  with pytest.raises(UserError, match='units'):
    scores.avg_gap(percent, fraction)
  with pytest.raises(UserError, match='mia'):
    scores.avg_gap({'forget_acc': 0.0, 'remain_acc': 99.0, 'test_acc': 94.0},
                   percent)
  with pytest.raises(UserError):
    scores.avg_gap(dict(percent, test_acc=float('nan')), percent)
  with pytest.raises(UserError):
    scores.avg_gap(dict(percent, test_acc=140.0), percent)


def test_tow():
  unlearned = {'train_forget': 0.1, 'train_remain': 0.9, 'test': 0.8}
  retrain = {'train_forget': 0.0, 'train_remain': 1.0, 'test': 0.85}
  # (1 - 0.1) * (1 - 0.1) * (1 - 0.05) = 0.9 * 0.9 * 0.95 = 0.7695
  assert scores.tow(unlearned, retrain) == pytest.approx(0.7695)
  assert scores.tow(retrain, retrain) == 1.0
  # Opposite extremes on the forget set make the product 0.
  assert scores.tow(dict(retrain, train_forget=1.0), retrain) == 0.0


def test_tow_rejects_percentages():
  percent = {'train_forget': 3.4, 'train_remain': 100.0, 'test': 94.8}
  fraction = {'train_forget': 0.0, 'train_remain': 1.0, 'test': 0.95}
  with pytest.raises(UserError, match='fractions'):
    scores.tow(percent, fraction)
  with pytest.raises(UserError, match='fractions'):
    scores.tow(fraction, dict(fraction, test=-0.1))
  with pytest.raises(UserError):
    scores.tow(fraction, {'train_forget': 0.0, 'test': 0.9})


def test_tow_mia():
  unlearned = {'train_forget': 0.1, 'train_remain': 0.9, 'test': 0.8,
               'mia': 0.3}
  retrain = {'train_forget': 0.0, 'train_remain': 1.0, 'test': 0.85,
             'mia': 0.1}
  # 0.9 * 0.9 * 0.95 * (1 - 0.2) = 0.7695 * 0.8 = 0.6156
  assert scores.tow_mia(unlearned, retrain) == pytest.approx(0.6156)
  with pytest.raises(UserError, match='mia'):
    scores.tow_mia({'train_forget': 0.1, 'train_remain': 0.9, 'test': 0.8},
                   retrain)
  with pytest.raises(UserError, match='fractions'):
    scores.tow_mia(dict(unlearned, mia=30.0), retrain)


def test_h_mean():
  # a = 0.9, b = 1 - 0.4 = 0.6: 2 * 0.54 / 1.5 = 0.72.
  assert scores.h_mean(0.9, 0.4) == pytest.approx(0.72)
  assert scores.h_mean(1.0, 0.0) == 1.0
  assert scores.h_mean(0.0, 0.0) == 0.0
  assert scores.h_mean(0.9, 1.0) == 0.0
  with pytest.raises(UserError, match='fractions'):
    scores.h_mean(94.8, 3.4)
  with pytest.raises(UserError):
    scores.h_mean(math.inf, 0.1)


def test_per_class_accuracy():
  labels = np.array([0, 0, 0, 1, 1, 3])
  preds = np.array([0, 1, 0, 1, 1, 2])
  # Class 0: 2/3, class 1: 2/2, class 2: no examples, class 3: 0/1.
  acc = scores.per_class_accuracy(preds, labels, 4)
  assert acc.shape == (4,)
  np.testing.assert_allclose(acc[[0, 1, 3]], [2 / 3, 1.0, 0.0])
  assert np.isnan(acc[2])


def test_confusion_matrix():
  labels = np.array([0, 0, 0, 1, 1, 3])
  preds = np.array([0, 1, 0, 1, 1, 2])
  cm = scores.confusion_matrix(preds, labels, 4)
  assert cm.dtype == np.int64
  np.testing.assert_array_equal(cm, [[2, 1, 0, 0],
                                     [0, 2, 0, 0],
                                     [0, 0, 0, 0],
                                     [0, 0, 1, 0]])
  # Row sums are the class counts, the diagonal the hits.
  np.testing.assert_array_equal(cm.sum(axis=1), [3, 2, 0, 1])
  np.testing.assert_allclose(
      np.diag(cm)[[0, 1, 3]] / cm.sum(axis=1)[[0, 1, 3]],
      scores.per_class_accuracy(preds, labels, 4)[[0, 1, 3]])


@pytest.mark.parametrize('preds, labels, num_classes', [
    (np.array([0, 4]), np.array([0, 1]), 4),
    (np.array([0, 1]), np.array([-1, 1]), 4),
    (np.array([0, 1, 2]), np.array([0, 1]), 4),
    (np.array([0.0, 1.0]), np.array([0, 1]), 4),
    (np.array([[0, 1]]), np.array([[0, 1]]), 4),
    (np.array([0, 1]), np.array([0, 1]), 0),
])
def test_prediction_metrics_reject_bad_input(preds, labels, num_classes):
  with pytest.raises(UserError):
    scores.per_class_accuracy(preds, labels, num_classes)
  with pytest.raises(UserError):
    scores.confusion_matrix(preds, labels, num_classes)


def test_relearn_steps():
  curve = [5.0, 20.0, 60.0, 85.0, 95.0]
  # Threshold 0.5 * 90 = 45: first reached after 3 steps (curve[2] = 60).
  assert scores.relearn_steps(curve, 90.0, 0.5) == 3
  # Threshold 0.9 * 90 = 81: curve[3] = 85, after 4 steps.
  assert scores.relearn_steps(curve, 90.0, 0.9) == 4
  # Equality counts as reached: 1.0 * 95 = 95 at step 5.
  assert scores.relearn_steps(curve, 95.0, 1.0) == 5
  # Never reaches 1.0 * 96.
  assert scores.relearn_steps(curve, 96.0, 1.0) is None
  assert scores.relearn_steps([], 90.0, 0.5) is None
  # Already above the threshold after the first step.
  assert scores.relearn_steps(curve, 10.0, 0.5) == 1
  for fraction in (0.0, 1.5, -0.1):
    with pytest.raises(UserError):
      scores.relearn_steps(curve, 90.0, fraction)
  with pytest.raises(UserError):
    scores.relearn_steps([1.0, float('nan')], 90.0, 0.5)
  with pytest.raises(UserError):
    scores.relearn_steps(curve, -1.0, 0.5)
