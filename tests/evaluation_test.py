"""Padded evaluation: every example counts exactly once, whatever the batch size."""

import numpy as np
import pytest

from delete_jax import parallel
from delete_jax.evaluation import accuracy as acc_lib
from delete_jax.models import create_model
from delete_jax.preprocess import Preprocess
from delete_jax.state import split_model


@pytest.mark.parametrize('batch_size', [7, 50, 64])
def test_predict_counts_each_example_once(batch_size):
  graphdef, variables = split_model(create_model('cnn', 10, (8, 8, 1)))
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (60, 8, 8, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, 60).astype(np.int32)
  indices = np.arange(3, 53)  # 50 examples: not divisible by 7 or 64
  mesh = parallel.make_mesh()
  out = acc_lib.predict(variables, images, labels, indices, graphdef=graphdef,
                        preprocess=Preprocess(), batch_size=batch_size, mesh=mesh)
  ref = acc_lib.predict(variables, images, labels, indices, graphdef=graphdef,
                        preprocess=Preprocess(), batch_size=50, mesh=mesh)
  assert out['pred'].shape == (50,) and out['prob'].shape == (50, 10)
  np.testing.assert_array_equal(out['pred'], ref['pred'])
  np.testing.assert_allclose(out['prob'], ref['prob'], rtol=1e-5, atol=1e-6)
  assert acc_lib.accuracy(out['correct']) == pytest.approx(
      100.0 * np.mean(ref['pred'] == labels[indices]))


def test_empty_split_accuracy_is_nan():
  assert np.isnan(acc_lib.accuracy(np.zeros((0,), bool)))
