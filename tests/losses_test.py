"""DELETE's loss and the cross entropy against hand arithmetic."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from delete_jax import losses


def _softmax(v):
  m = max(v)
  e = [math.exp(x - m) for x in v]
  return [x / sum(e) for x in e]


def test_delete_loss_hand_computed():
  teacher = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
  student = jnp.array([[0.0, 0.0, 0.0], [1.0, 0.0, -1.0]])
  labels = jnp.array([0, 2])
  # Example 0: class 0 masked → t = softmax([2, 3]) on classes 1, 2.
  t0 = [0.0] + _softmax([2.0, 3.0])
  q0 = _softmax([0.0, 0.0, 0.0])
  kl0 = sum(t * (math.log(t) - math.log(q)) for t, q in zip(t0, q0) if t > 0)
  # Example 1: class 2 masked → t = softmax([0.5, -1]) on classes 0, 1.
  t1 = _softmax([0.5, -1.0]) + [0.0]
  q1 = _softmax([1.0, 0.0, -1.0])
  kl1 = sum(t * (math.log(t) - math.log(q)) for t, q in zip(t1, q1) if t > 0)
  expected = (kl0 + kl1) / 2
  got = losses.delete_loss(student, teacher, labels)
  assert float(got) == pytest.approx(expected, rel=1e-6)


def test_mask_gives_exactly_zero_target_mass():
  teacher = jnp.array([[1e4, 0.0, -3.0], [5.0, 80.0, 7.0]], jnp.float32)
  labels = jnp.array([0, 1])
  mask = losses.forget_mask(labels, 3, 'label')
  t = losses.masked_teacher_target(teacher, mask)
  assert float(t[0, 0]) == 0.0 and float(t[1, 1]) == 0.0
  np.testing.assert_allclose(np.asarray(t).sum(-1), 1.0, rtol=1e-6)


def test_all_forget_masks_every_forget_class():
  teacher = jnp.array([[3.0, 2.0, 1.0, 0.0]])
  labels = jnp.array([1])
  forget = jnp.array([False, True, True, False])
  own = losses.masked_teacher_target(teacher, losses.forget_mask(labels, 4, 'label'))
  both = losses.masked_teacher_target(
      teacher, losses.forget_mask(labels, 4, 'all_forget', forget))
  assert float(own[0, 1]) == 0.0 and float(own[0, 2]) > 0.0  # published: other forget class keeps mass
  assert float(both[0, 1]) == 0.0 and float(both[0, 2]) == 0.0
  np.testing.assert_allclose(np.asarray(both[0, [0, 3]]), _softmax([3.0, 0.0]), rtol=1e-6)


def test_decomposition_identity_on_random_logits():
  key1, key2, key3 = jax.random.split(jax.random.key(0), 3)
  student = 3 * jax.random.normal(key1, (64, 10))
  teacher = 3 * jax.random.normal(key2, (64, 10))
  labels = jax.random.randint(key3, (64,), 0, 10)
  forgetting, retention = losses.delete_decomposition(student, teacher, labels)
  total = losses.delete_loss(student, teacher, labels)
  assert float(forgetting + retention) == pytest.approx(float(total), rel=1e-5)
  # The forgetting term alone: mean −log(1 − p_u).
  p = jax.nn.softmax(student)
  pu = p[jnp.arange(64), labels]
  assert float(forgetting) == pytest.approx(float(jnp.mean(-jnp.log1p(-pu))), rel=1e-5)


def test_student_equal_to_teacher_leaves_only_forgetting_term():
  logits = jnp.array([[2.0, 1.0, 0.0, -1.0]])
  labels = jnp.array([0])
  p0 = _softmax([2.0, 1.0, 0.0, -1.0])[0]
  got = losses.delete_loss(logits, logits, labels)
  assert float(got) == pytest.approx(-math.log(1 - p0), rel=1e-6)


def test_temperature_scales_by_t_squared():
  teacher = jnp.array([[1.0, 2.0, 3.0]])
  student = jnp.array([[0.3, -0.2, 0.1]])
  labels = jnp.array([2])
  temp = 2.0
  t = [x for x in _softmax([0.5, 1.0])] + [0.0]
  q = _softmax([0.15, -0.1, 0.05])
  kl = sum(a * (math.log(a) - math.log(b)) for a, b in zip(t, q) if a > 0)
  got = losses.delete_loss(student, teacher, labels, temperature=temp)
  assert float(got) == pytest.approx(kl * temp ** 2, rel=1e-6)


def test_gradient_does_not_reach_teacher():
  teacher = jnp.array([[1.0, 2.0, 3.0]])
  student = jnp.array([[0.0, 0.0, 0.0]])
  g = jax.grad(lambda t: losses.delete_loss(student, t, jnp.array([0])))(teacher)
  assert float(jnp.abs(g).sum()) == 0.0


def test_cross_entropy_hand_computed():
  logits = jnp.array([[2.0, 0.0], [0.0, 1.0]])
  labels = jnp.array([0, 0])
  p = [_softmax([2.0, 0.0])[0], _softmax([0.0, 1.0])[0]]
  expected = -(math.log(p[0]) + math.log(p[1])) / 2
  assert float(losses.cross_entropy(logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_unknown_mask_mode_raises():
  with pytest.raises(ValueError, match='mask_mode'):
    losses.forget_mask(jnp.array([0]), 3, 'nope')
