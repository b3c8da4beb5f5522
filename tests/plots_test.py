"""Tests that each plot in delete_jax.evaluation.plots writes a real PNG."""

import os

import numpy as np
import pytest

from delete_jax.errors import UserError
from delete_jax.evaluation import plots
from delete_jax.evaluation import scores

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _assert_png(path):
  assert os.path.isfile(path)
  with open(path, 'rb') as f:
    data = f.read()
  assert data.startswith(_PNG_SIGNATURE)
  assert len(data) > 1024


def test_plot_epoch_curves(tmp_path):
  history = [
      {'epoch': e, 'train_forget': 100.0 - 20 * e, 'train_remain': 100.0,
       'test_forget': 95.0 - 19 * e, 'test_remain': 95.0 - 0.1 * e}
      for e in range(6)]
  path = str(tmp_path / 'curves.png')
  plots.plot_epoch_curves(
      history, path, 'CIFAR-10 ResNet-18, forget class 4: DELETE accuracy')
  _assert_png(path)


def test_plot_epoch_curves_rejects_bad_rows(tmp_path):
  path = str(tmp_path / 'curves.png')
  with pytest.raises(UserError):
    plots.plot_epoch_curves([], path, 'empty')
  with pytest.raises(UserError, match='test_remain'):
    plots.plot_epoch_curves(
        [{'epoch': 0, 'train_forget': 1.0, 'train_remain': 1.0,
          'test_forget': 1.0}], path, 'missing key')


def test_plot_per_class(tmp_path):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, 500)
  original = scores.per_class_accuracy(labels, labels, 10)
  preds = np.where(labels == 4, (labels + 1) % 10, labels)
  delete = scores.per_class_accuracy(preds, labels, 10)
  retrain = delete.copy()
  retrain[7] = np.nan  # A class without examples draws no bar.
  path = str(tmp_path / 'sub' / 'per_class.png')  # Parent is created.
  plots.plot_per_class(
      {'original': original, 'retrain': retrain, 'delete': delete}, [4],
      path, 'CIFAR-10 per-class test accuracy, forget class 4')
  _assert_png(path)


def test_plot_per_class_rejects_percent_and_bad_classes(tmp_path):
  path = str(tmp_path / 'per_class.png')
  with pytest.raises(UserError, match='fractions'):
    plots.plot_per_class({'original': np.full(10, 95.0)}, [4], path, 't')
  with pytest.raises(UserError):
    plots.plot_per_class({'original': np.full(10, 0.9)}, [10], path, 't')
  with pytest.raises(UserError):
    plots.plot_per_class({'a': np.full(10, 0.9), 'b': np.full(9, 0.9)}, [4],
                         path, 't')


@pytest.mark.parametrize('num_classes', [10, 100])
def test_plot_confusion(tmp_path, num_classes):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, num_classes, 2000)
  preds = np.where(rng.random(2000) < 0.8, labels,
                   rng.integers(0, num_classes, 2000))
  cm = scores.confusion_matrix(preds, labels, num_classes)
  path = str(tmp_path / f'confusion_{num_classes}.png')
  plots.plot_confusion(cm, path, f'confusion matrix, {num_classes} classes')
  _assert_png(path)
  with pytest.raises(UserError):
    plots.plot_confusion(cm[:, :-1], path, 'not square')


def test_plot_method_comparison(tmp_path):
  rows = [
      {'method': 'original', 'test_forget': 95.1, 'test_remain': 95.0,
       'mia_confidence': 99.8},
      {'method': 'retrain', 'test_forget': 0.0, 'test_remain': 95.2,
       'mia_confidence': 12.0},
      {'method': 'delete', 'test_forget': 3.4, 'test_remain': 94.8,
       'mia_confidence': None},
  ]
  path = str(tmp_path / 'methods.png')
  plots.plot_method_comparison(
      rows, path, 'CIFAR-10 ResNet-18, forget class 4: methods compared')
  _assert_png(path)
  with pytest.raises(UserError, match='percentages'):
    plots.plot_method_comparison(
        [dict(rows[0], test_remain=950.0)], path, 't')
  with pytest.raises(UserError):
    plots.plot_method_comparison([], path, 't')
