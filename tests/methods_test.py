"""Baselines: objectives by hand, SalUn's frozen weights, boundary expand, data access, compare."""

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from delete_jax import losses, pipeline
from delete_jax.context import build_context
from delete_jax.errors import UserError
from delete_jax.methods import REGISTRY, MethodInfo, adversarial, check_data_access, get_method
from delete_jax.methods import fisher as fisher_lib
from delete_jax.models import create_model
from delete_jax.preprocess import Preprocess
from delete_jax.state import ModelVars, create_train_state, make_sgd, split_model
from delete_jax.steps import unlearn_step
from tests.pipeline_test import small_config


def _ce(logits, label):
  m = max(logits)
  lse = m + math.log(sum(math.exp(v - m) for v in logits))
  return lse - logits[label]


def test_gradient_ascent_is_negative_cross_entropy():
  logits = jnp.array([[1.0, 2.0, 0.5]])
  assert float(losses.gradient_ascent_loss(logits, jnp.array([1]))) == pytest.approx(
      -_ce([1.0, 2.0, 0.5], 1), rel=1e-6)


def test_distillation_loss_hand_computed():
  t = [0.2, 0.1, 1.0]
  s = [0.0, 1.0, -1.0]
  pt = [math.exp(v) / sum(math.exp(u) for u in t) for v in t]
  qs = [math.exp(v) / sum(math.exp(u) for u in s) for v in s]
  kl = sum(a * math.log(a / b) for a, b in zip(pt, qs))
  got = losses.distillation_loss(jnp.array([s]), jnp.array([t]))
  assert float(got) == pytest.approx(kl, rel=1e-6)


def test_l2ul_loss_hand_computed():
  clean = [[2.0, 0.0], [0.0, 1.0]]
  adv = [[0.5, 0.3], [1.0, -1.0]]
  logits = jnp.array(clean + adv)
  labels, targets = jnp.array([0, 1]), jnp.array([1, 0])
  expected = -(_ce(clean[0], 0) + _ce(clean[1], 1)) / 2 + 0.1 * (
      _ce(adv[0], 1) + _ce(adv[1], 0)) / 2
  assert float(losses.l2ul_loss(logits, labels, targets)) == pytest.approx(expected, rel=1e-6)


def _cfg():
  return small_config().unlearn


def test_random_label_and_boundary_expand_objectives():
  info = MethodInfo(3, jnp.array([True, False, False]))
  s = jnp.array([[1.0, 0.0, 0.0, 2.0]])  # 3 classes + the expanded output
  rl, _ = get_method('rl').build(_cfg(), info)
  assert float(rl(s[:, :3], jnp.array([2]), jnp.array([0]))) == pytest.approx(
      _ce([1.0, 0.0, 0.0], 2), rel=1e-6)
  be, _ = get_method('be').build(_cfg(), info)
  assert float(be(s, None, jnp.array([0]))) == pytest.approx(_ce([1.0, 0.0, 0.0, 2.0], 3),
                                                              rel=1e-6)


def test_fgsm_and_boundary_shrink_label_by_hand():
  w = jnp.array([[1.0, -1.0], [-2.0, 2.0]])  # logits = x @ w on 2 "pixels"
  teacher_fn = lambda x: x.reshape(x.shape[0], -1) @ w  # pylint: disable=unnecessary-lambda-assignment
  x = jnp.array([[0.5, 0.45]]).reshape(1, 1, 2, 1)
  # ∂CE/∂x for label 0 = w @ (p − e₀): sign is (−, +) here, so x moves by (−ε, +ε).
  adv = adversarial.fgsm(teacher_fn, x, jnp.array([0]), 0.1)
  np.testing.assert_allclose(np.asarray(adv).ravel(), [0.4, 0.55], rtol=1e-6)
  _, prepare = get_method('bs').build(_cfg(), MethodInfo(2, jnp.array([True, False])))
  pixels, new_label = prepare(teacher_fn, x, {'label': jnp.array([0])}, jax.random.key(0))
  np.testing.assert_array_equal(pixels, x)  # the student trains on the clean input
  # Perturbed logits: [0.4 − 1.1, −0.4 + 1.1] = [−0.7, 0.7] → class 1.
  assert int(new_label[0]) == 1


def test_targeted_l2_pgd_stays_in_ball_and_moves_toward_target():
  w = jax.random.normal(jax.random.key(0), (16, 4))
  teacher_fn = lambda x: x.reshape(x.shape[0], -1) @ w  # pylint: disable=unnecessary-lambda-assignment
  x = jax.random.uniform(jax.random.key(1), (3, 4, 4, 1))
  targets = jnp.array([1, 2, 3])
  adv = adversarial.targeted_l2_pgd(teacher_fn, x, targets, 0.4, 0.1, 10)
  norms = jnp.sqrt(jnp.sum((adv - x) ** 2, axis=(1, 2, 3)))
  assert float(norms.max()) <= 0.4 + 1e-5
  assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
  assert float(losses.cross_entropy(teacher_fn(adv), targets)) < float(
      losses.cross_entropy(teacher_fn(x), targets))


def test_salun_masked_parameters_stay_bit_identical():
  graphdef, variables = split_model(create_model('cnn', 10, (8, 8, 1)))
  rng = np.random.default_rng(0)
  mask = jax.tree.map(lambda p: jnp.asarray(rng.random(p.shape) < 0.5), variables.params)
  tx = make_sgd(0.05, 0.9, 5e-4)  # momentum and weight decay would move frozen weights
  state = create_train_state(variables, tx)
  objective, prepare = get_method('salun').build(_cfg(), MethodInfo(10, jnp.zeros(10, bool)))
  step = jax.jit(functools.partial(unlearn_step, graphdef=graphdef, tx=tx,
                                   preprocess=Preprocess(), objective=objective,
                                   prepare=prepare, augment=False))
  batch = {'image': jnp.asarray(rng.integers(0, 256, (8, 8, 8, 1), dtype=np.uint8)),
           'label': jnp.zeros(8, jnp.int32),
           'random_label': jnp.asarray(rng.integers(0, 10, 8).astype(np.int32))}
  for _ in range(4):
    state, _ = step(state, None, batch, jax.random.key(0), update_mask=mask)
  for m, new, old in zip(jax.tree.leaves(mask), jax.tree.leaves(state.params),
                         jax.tree.leaves(variables.params)):
    m, new, old = np.asarray(m), np.asarray(new), np.asarray(old)
    assert np.array_equal(new[~m].view(np.uint32), old[~m].view(np.uint32))
    assert not np.array_equal(new[m], old[m])


def test_fisher_noise_follows_published_variance_rules():
  params = {'w': jnp.ones((2, 3)), 'b': jnp.zeros((3,)), 'k': jnp.ones((4, 5))}
  fisher = {'w': jnp.full((2, 3), 1e-2), 'b': jnp.full((3,), 1e-9), 'k': jnp.full((4, 5), 1.0)}
  key = jax.random.key(0)
  out = fisher_lib.fisher_forget(ModelVars(params, {}), fisher, alpha=1e-6, num_classes=3,
                                 forget_classes=(1,), rng=key)
  leaves, _ = jax.tree.flatten(params)  # order: b, k, w
  keys = jax.random.split(key, len(leaves))
  z = {name: jax.random.normal(k, params[name].shape) for name, k in zip(['b', 'k', 'w'], keys)}
  # b: head-shaped (last dim 3) and 1-D: var = 1e-6·min(1e9, 1e2)·10; forget entry 1e-4·10.
  var_b = np.array([1e-3, 1e-3, 1e-3])
  var_b[1] = 1e-3
  np.testing.assert_allclose(out.params['b'], np.sqrt(var_b) * z['b'], rtol=1e-5)
  # w: head-shaped: var = 1e-6·min(100, 1e2)·10 = 1e-3; forget column mean 0, var 1e-3.
  expected_w = np.where(np.arange(3) == 1, 0.0, 1.0) + np.sqrt(1e-3) * z['w']
  np.testing.assert_allclose(out.params['w'], expected_w, rtol=1e-5)
  # k: ordinary weight: var = 1e-6·min(1/(1+1e-8), 1e3).
  np.testing.assert_allclose(out.params['k'], 1.0 + np.sqrt(1e-6 / (1 + 1e-8)) * z['k'],
                             rtol=1e-5)


def test_data_access_is_enforced(tmp_path):
  ctx = build_context(small_config(), str(tmp_path))
  check_data_access(get_method('delete'), ctx.split.train_forget, ctx.split)
  with pytest.raises(UserError, match="declares data='forget'"):
    check_data_access(get_method('delete'), ctx.split.train_remain, ctx.split)
  with pytest.raises(UserError, match="declares data='remain'"):
    check_data_access(get_method('ft'), ctx.split.train_forget, ctx.split)


def test_compare_runs_every_method_and_boundary_expand_keeps_class_count(tmp_path):
  config = small_config(mode='compare', **{
      'train.epochs': 2, 'unlearn.epochs': 1, 'unlearn.fisher_mode': 'empirical',
      'compare.lr_scale': 20.0, 'mia.features': 'confidence',
      'compare.lr.ga': 1e12,  # gradient ascent diverges: the comparison goes on
      'relearn.enabled': False})
  report = pipeline.run(config, str(tmp_path))
  assert set(report['failed']) == {'ga'} and 'lower the learning rate' in report['failed']['ga']
  assert set(REGISTRY) - {'ga'} <= set(report['models'])
  for name in set(REGISTRY) - {'ga'}:
    acc = report['models'][name]['evaluation']['accuracy']
    assert all(np.isfinite(v) for v in acc.values()), name
    assert report['models'][name]['method']['data'] == REGISTRY[name].data
  # Boundary expand trained 11 outputs and returned a 10-class model.
  assert len(report['models']['be']['evaluation']['per_class_test_accuracy']) == 10
  md = open(os.path.join(tmp_path, 'report.md')).read()
  assert md.count('\n| ') >= 2 * len(REGISTRY) - 1
  assert '| ga | failed: ' in md
  assert os.path.getsize(os.path.join(tmp_path, 'plots', 'method_comparison.png')) > 1000
