"""The unlearning loop's speed paths compute the same function as the plain path."""

import jax
import numpy as np

from delete_jax import unlearn as unlearn_lib
from delete_jax.context import build_context
from tests.pipeline_test import small_config


def test_cached_teacher_logits_match_per_step_teacher(tmp_path, monkeypatch):
  calls = []
  real_predict = unlearn_lib.acc_lib.predict
  monkeypatch.setattr(unlearn_lib.acc_lib, 'predict',
                      lambda *a, **k: calls.append(1) or real_predict(*a, **k))
  results = []
  for cache in (True, False):
    calls.clear()
    config = small_config(**{'unlearn.augment': False, 'unlearn.epochs': 2,
                             'unlearn.cache_teacher': cache})
    ctx = build_context(config, str(tmp_path / str(cache)))
    variables, record = unlearn_lib.unlearn(ctx, ctx.init_vars)
    assert record['complete']
    assert len(calls) == (1 if cache else 0)  # one teacher pass over the forget set
    results.append(variables)
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_nan_loss_stops_with_one_line_error(tmp_path):
  import pytest  # pylint: disable=g-import-not-at-top
  from delete_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  config = small_config(log_every_steps=1, **{'unlearn.method': 'ga', 'compare.lr.ga': 1e12,
                                              'unlearn.epochs': 3})
  ctx = build_context(config, str(tmp_path))
  with pytest.raises(UserError, match='lower the learning rate') as e:
    unlearn_lib.unlearn(ctx, ctx.init_vars)
  assert '\n' not in str(e.value)


def test_demo_config_learning_rates_as_documented():
  """README: the CPU demo runs baselines at 10× their published lr, except GA and
  L2UL (published lr) and SCRUB (5e-5), which diverge at 10× on its CNN."""
  from configs import fashion_mnist_cnn  # pylint: disable=g-import-not-at-top
  from delete_jax import config_lib  # pylint: disable=g-import-not-at-top
  from delete_jax.methods import REGISTRY  # pylint: disable=g-import-not-at-top
  config = fashion_mnist_cnn.get_config()
  config_lib.validate(config)
  expected = {'ga': 1e-5, 'l2ul': 1e-5, 'scrub': 5e-5}
  for name in config.compare.methods.split(','):
    lr = unlearn_lib.method_hparams(config, name)['lr']
    if name == 'delete':
      assert lr == config.unlearn.lr
    elif name in expected:
      assert lr == expected[name], name
    elif REGISTRY[name].trains:
      assert np.isclose(lr, REGISTRY[name].default_lr * 10), name
