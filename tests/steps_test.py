"""Pure steps: BatchNorm modes, SGD in torch's convention, preprocessing."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from delete_jax import losses
from delete_jax.models import create_model
from delete_jax.preprocess import Preprocess
from delete_jax.state import create_train_state, make_sgd, split_model
from delete_jax.steps import apply_model, delete_objective, train_step, unlearn_step


def _setup(seed=0):
  graphdef, variables = split_model(create_model('cnn', 10, (8, 8, 1), seed=seed))
  rng = np.random.default_rng(seed)
  batch = {'image': jnp.asarray(rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)),
           'label': jnp.asarray(rng.integers(0, 10, 16).astype(np.int32))}
  return graphdef, variables, batch


def _delete_step(graphdef, tx, bn_mode):
  return jax.jit(functools.partial(unlearn_step, graphdef=graphdef, tx=tx,
                                   preprocess=Preprocess(), objective=delete_objective(),
                                   bn_mode=bn_mode, augment=False))


@pytest.mark.parametrize('bn_mode', ['train', 'frozen'])
def test_batchnorm_statistics_follow_bn_mode(bn_mode):
  graphdef, variables, batch = _setup()
  tx = make_sgd(1e-2)
  state = create_train_state(variables, tx)
  state, _ = _delete_step(graphdef, tx, bn_mode)(state, variables, batch, jax.random.key(0))
  changed = [not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(state.batch_stats), jax.tree.leaves(variables.batch_stats))]
  if bn_mode == 'train':
    assert all(changed), 'running stats (and num_batches_tracked) must update in bn=train'
  else:
    assert not any(changed), 'running stats must not move in bn=frozen'
  params_changed = [not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(state.params), jax.tree.leaves(variables.params))]
  assert all(params_changed), 'every parameter is trained'


def test_running_variance_is_unbiased_like_torch():
  graphdef, variables, batch = _setup()
  tx = make_sgd(0.0)
  state = create_train_state(variables, tx)
  state, _ = _delete_step(graphdef, tx, 'train')(state, variables, batch, jax.random.key(0))
  # conv1 output statistics by hand: running = 0.9·1 + 0.1·var·n/(n−1).
  model_in = batch['image'].astype(jnp.float32) / 255.0
  conv = jax.lax.conv_general_dilated(model_in, variables.params['conv1']['kernel'], (1, 1),
                                      ((1, 1), (1, 1)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  n = conv.shape[0] * conv.shape[1] * conv.shape[2]
  var = jnp.var(conv, axis=(0, 1, 2))
  np.testing.assert_allclose(state.batch_stats['bn1']['var'], 0.9 + 0.1 * var * n / (n - 1),
                             rtol=1e-5)
  np.testing.assert_allclose(state.batch_stats['bn1']['mean'],
                             0.1 * jnp.mean(conv, axis=(0, 1, 2)), rtol=1e-5, atol=1e-7)


def test_student_equal_teacher_frozen_bn_loss_is_forgetting_term():
  graphdef, variables, batch = _setup()
  tx = make_sgd(0.0)
  state = create_train_state(variables, tx)
  _, metrics = _delete_step(graphdef, tx, 'frozen')(state, variables, batch, jax.random.key(0))
  logits, _ = apply_model(graphdef, variables, batch['image'].astype(jnp.float32) / 255.0,
                          train=False)
  p = jax.nn.softmax(logits)
  pu = p[jnp.arange(16), batch['label']]
  assert float(metrics['loss']) == pytest.approx(float(jnp.mean(-jnp.log1p(-pu))), rel=1e-5)


def test_sgd_matches_torch_convention_by_hand():
  lr, mu, wd = 0.1, 0.9, 0.01
  tx = make_sgd(lr, mu, wd)
  theta = {'w': jnp.array([1.0, -2.0])}
  opt = tx.init(theta)
  grads = [jnp.array([0.5, 0.25]), jnp.array([-1.0, 2.0])]
  v = np.zeros(2)
  th = np.array([1.0, -2.0])
  for g in grads:
    d = np.asarray(g) + wd * th       # torch: d = g + wd·θ
    v = mu * v + d                    # v ← μv + d (v₀ = d)
    th = th - lr * v                  # θ ← θ − lr·v
    updates, opt = tx.update({'w': g}, opt, theta)
    theta = jax.tree.map(lambda a, b: a + b, theta, updates)
  np.testing.assert_allclose(theta['w'], th, rtol=1e-6)


def test_learning_rate_is_data():
  tx = make_sgd(0.5)
  opt = tx.init({'w': jnp.zeros(2)})
  assert float(opt.hyperparams['learning_rate']) == 0.5


def test_train_step_reduces_loss_and_counts_steps():
  graphdef, variables, batch = _setup()
  tx = make_sgd(0.05, 0.9, 5e-4)
  state = create_train_state(variables, tx)
  step = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx,
                                   preprocess=Preprocess()))
  first = None
  for _ in range(15):
    state, metrics = step(state, batch, jax.random.key(0))
    first = first if first is not None else float(metrics['loss'])
  assert int(state.step) == 15
  assert float(metrics['loss']) < first


def test_preprocess_scaling_crop_flip():
  images = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.uint8).reshape(2, 4, 4, 1)
  plain = Preprocess(mean=(0.5,), std=(0.25,))(images, None, augment=False)
  np.testing.assert_allclose(plain, (images / 255.0 - 0.5) / 0.25, rtol=1e-6)
  aug = Preprocess(crop_padding=1, flip=True)
  a = aug(images, jax.random.key(1), augment=True)
  b = aug(images, jax.random.key(1), augment=True)
  np.testing.assert_array_equal(a, b)  # keyed: reproducible
  assert a.shape == (2, 4, 4, 1)
  # Every augmented image is a shifted/flipped window of the zero-padded original.
  padded = np.pad(np.asarray(images) / 255.0, ((0, 0), (1, 1), (1, 1), (0, 0)))
  for i in range(2):
    windows = [padded[i, y:y + 4, x:x + 4] for y in range(3) for x in range(3)]
    windows += [w[:, ::-1] for w in windows]
    assert any(np.allclose(a[i], w) for w in windows)
  resized = Preprocess(resize_to=8)(images, None, augment=False)
  assert resized.shape == (2, 8, 8, 1)


def test_delete_objective_all_forget_binds_mask():
  forget = jnp.array([True, True, False])
  obj = delete_objective('all_forget', forget_class_mask=forget)
  s = jnp.zeros((1, 3))
  t = jnp.array([[0.0, 5.0, 0.0]])
  # With classes 0 and 1 masked the target is one-hot on class 2: loss = −log q₂ = log 3.
  assert float(obj(s, t, jnp.array([0]))) == pytest.approx(float(jnp.log(3.0)), rel=1e-6)
  assert float(losses.delete_loss(s, t, jnp.array([0]))) != pytest.approx(float(jnp.log(3.0)))


def test_apply_model_never_writes_into_caller_numpy_arrays():
  graphdef, variables, batch = _setup()
  host = jax.tree.map(np.array, variables)
  before = jax.tree.map(np.copy, host)
  apply_model(graphdef, host, batch['image'].astype(jnp.float32) / 255.0, train=True)
  for a, b in zip(jax.tree.leaves(host), jax.tree.leaves(before)):
    np.testing.assert_array_equal(a, b)
