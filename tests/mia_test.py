"""Tests for delete_jax.evaluation.mia against hand-computed values."""

import numpy as np
import pytest
from sklearn import svm

from delete_jax.errors import UserError
from delete_jax.evaluation import mia

# Two examples with different labels, so that the published code's whole-column
# indexing touches both label columns in both rows.
PROBS = np.array([[0.7, 0.2, 0.1],
                  [0.1, 0.6, 0.3]])
LABELS = np.array([0, 2])

# ln values used in the hand computations below.
LN_0_1 = -2.302585093
LN_0_2 = -1.609437912
LN_0_3 = -1.203972804
LN_0_4 = -0.916290732
LN_0_6 = -0.510825624
LN_0_7 = -0.356674944
LN_0_8 = -0.223143551
LN_0_9 = -0.105360516


def _feature(feature, probs=PROBS, labels=LABELS, compat='correct'):
  return mia.mia_features(probs, labels, feature, compat=compat)


def test_correctness():
  # Row 0: argmax 0 = label 0. Row 1: argmax 1 != label 2.
  np.testing.assert_array_equal(_feature('correctness'), [[1.0], [0.0]])


def test_confidence():
  np.testing.assert_allclose(_feature('confidence'), [[0.7], [0.3]])


def test_entropy():
  # Row 0: -(0.7 ln .7 + 0.2 ln .2 + 0.1 ln .1)
  #      = 0.2496725 + 0.3218876 + 0.2302585 = 0.8018186.
  # Row 1: -(0.1 ln .1 + 0.6 ln .6 + 0.3 ln .3)
  #      = 0.2302585 + 0.3064954 + 0.3611918 = 0.8979457.
  np.testing.assert_allclose(_feature('entropy'), [[0.8018186], [0.8979457]],
                             rtol=1e-6)
  np.testing.assert_allclose(
      _feature('entropy')[0, 0],
      -(0.7 * LN_0_7 + 0.2 * LN_0_2 + 0.1 * LN_0_1), rtol=1e-8)


def test_modified_entropy_correct():
  # Row 0 (y=0): -(1-0.7) ln 0.7 - 0.2 ln(1-0.2) - 0.1 ln(1-0.1)
  #            = 0.1070025 + 0.0446287 + 0.0105361 = 0.1621672.
  # Row 1 (y=2): -(1-0.3) ln 0.3 - 0.1 ln(1-0.1) - 0.6 ln(1-0.6)
  #            = 0.8427810 + 0.0105361 + 0.5497744 = 1.4030915.
  expected = [[-(0.3 * LN_0_7 + 0.2 * LN_0_8 + 0.1 * LN_0_9)],
              [-(0.7 * LN_0_3 + 0.1 * LN_0_9 + 0.6 * LN_0_4)]]
  np.testing.assert_allclose(_feature('m_entropy'), expected, rtol=1e-8)
  np.testing.assert_allclose(_feature('m_entropy'), [[0.1621672], [1.4030915]],
                             rtol=1e-6)


def test_modified_entropy_correct_is_per_row():
  # The correct value of a row must not depend on the other rows' labels.
  alone = [_feature('m_entropy', PROBS[i:i + 1], LABELS[i:i + 1])[0, 0]
           for i in range(2)]
  np.testing.assert_allclose(_feature('m_entropy')[:, 0], alone, rtol=1e-12)


def test_modified_entropy_published_column_bug():
  # Label columns L = {0, 2}; every row weights those columns by 1 - p and the
  # rest by p, and every class uses ln p:
  # Row 0: -(0.3 ln .7 + 0.2 ln .2 + 0.9 ln .1)
  #      = 0.1070025 + 0.3218876 + 2.0723266 = 2.5012167.
  # Row 1: -(0.9 ln .1 + 0.6 ln .6 + 0.7 ln .3)
  #      = 2.0723266 + 0.3064954 + 0.8427810 = 3.2216029.
  published = _feature('m_entropy', compat='published')
  np.testing.assert_allclose(
      published,
      [[-(0.3 * LN_0_7 + 0.2 * LN_0_2 + 0.9 * LN_0_1)],
       [-(0.9 * LN_0_1 + 0.6 * LN_0_6 + 0.7 * LN_0_3)]], rtol=1e-8)
  np.testing.assert_allclose(published, [[2.5012167], [3.2216029]], rtol=1e-6)
  assert not np.allclose(published, _feature('m_entropy'))


def test_modified_entropy_published_single_row_uses_log_p():
  # With one row the column bug is harmless, but ln p still replaces ln(1 - p):
  # -(0.3 ln .7 + 0.2 ln .2 + 0.1 ln .1) = 0.6591486, not 0.1621672.
  published = _feature('m_entropy', PROBS[:1], LABELS[:1], compat='published')
  np.testing.assert_allclose(published, [[0.6591486]], rtol=1e-6)
  # Row 0's published value changes when row 1 (label 2) joins the array.
  assert published[0, 0] != pytest.approx(
      _feature('m_entropy', compat='published')[0, 0])


def test_published_changes_only_m_entropy():
  for feature in mia.FEATURES:
    if feature == 'm_entropy':
      continue
    np.testing.assert_array_equal(_feature(feature),
                                  _feature(feature, compat='published'))


def test_prob_feature_is_full_vector():
  np.testing.assert_array_equal(_feature('prob'), PROBS)


def test_zero_probabilities_give_finite_features():
  probs = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  labels = np.array([0, 0])
  for compat in mia.COMPAT_MODES:
    for feature in mia.FEATURES:
      assert np.all(np.isfinite(_feature(feature, probs, labels, compat)))
  # 0 log 0 counts as 0: a one-hot vector has zero entropy.
  np.testing.assert_allclose(_feature('entropy', probs, labels), 0.0)
  # Row 1 puts p_y = 0 on its label: -(1 - 0) ln(1e-30) - 1 ln(1 - 1 -> 1e-30).
  np.testing.assert_allclose(_feature('m_entropy', probs, labels)[1, 0],
                             -2.0 * np.log(1e-30))


@pytest.mark.parametrize('probs, labels, feature, compat', [
    (PROBS, LABELS, 'loss', 'correct'),
    (PROBS, LABELS, 'entropy', 'salun'),
    (np.log(PROBS), LABELS, 'entropy', 'correct'),
    (PROBS * 3.0 - 0.5, LABELS, 'entropy', 'correct'),
    (PROBS[0], LABELS[:1], 'entropy', 'correct'),
    (PROBS, np.array([0, 3]), 'confidence', 'correct'),
    (PROBS, np.array([0.0, 2.0]), 'confidence', 'correct'),
    (PROBS, np.array([0]), 'confidence', 'correct'),
])
def test_bad_inputs_raise_user_error(probs, labels, feature, compat):
  with pytest.raises(UserError):
    mia.mia_features(probs, labels, feature, compat=compat)


def _random_probs(rng, n, num_classes, concentration):
  return rng.dirichlet(np.full(num_classes, concentration), size=n)


@pytest.mark.parametrize('compat', mia.COMPAT_MODES)
def test_svc_mia_matches_direct_sklearn(compat):
  rng = np.random.default_rng(0)
  num_classes = 4
  member_probs = _random_probs(rng, 60, num_classes, 0.3)
  nonmember_probs = _random_probs(rng, 50, num_classes, 1.0)
  target_probs = _random_probs(rng, 40, num_classes, 0.6)
  member_labels = rng.integers(0, num_classes, 60)
  nonmember_labels = rng.integers(0, num_classes, 50)
  target_labels = rng.integers(0, num_classes, 40)
  result = mia.svc_mia(member_probs, member_labels, nonmember_probs,
                       nonmember_labels, target_probs, target_labels,
                       compat=compat, seed=3)
  assert set(result) == set(mia.FEATURES)
  for feature in mia.FEATURES:
    x = np.concatenate([
        mia.mia_features(member_probs, member_labels, feature, compat),
        mia.mia_features(nonmember_probs, nonmember_labels, feature, compat)])
    y = np.concatenate([np.ones(60), np.zeros(50)])
    clf = svm.SVC(C=3, gamma='auto', kernel='rbf').fit(x, y)
    expected = clf.predict(
        mia.mia_features(target_probs, target_labels, feature, compat)).mean()
    assert result[feature]['member_rate'] == pytest.approx(expected, abs=0)
    assert result[feature]['mia_efficacy'] == pytest.approx(1.0 - expected)


def _peaked(rng, labels, num_classes, peak_class, peak):
  """Softmax-like rows with mass `peak` (+ noise) on peak_class[i]."""
  n = len(labels)
  p = np.full((n, num_classes), 0.0)
  top = np.clip(peak + rng.uniform(-0.03, 0.03, n), 0.0, 1.0)
  rest = rng.dirichlet(np.ones(num_classes - 1), size=n) * (1.0 - top)[:, None]
  for i in range(n):
    others = [k for k in range(num_classes) if k != peak_class[i]]
    p[i, others] = rest[i]
    p[i, peak_class[i]] = top[i]
  return p


def _separable_sets(rng, n=80, num_classes=3):
  """Members: confident and right. Non-members: confident and wrong."""
  labels = rng.integers(0, num_classes, n)
  wrong = (labels + 1) % num_classes
  member = _peaked(rng, labels, num_classes, labels, 0.95)
  nonmember = _peaked(rng, labels, num_classes, wrong, 0.6)
  return labels, member, nonmember, wrong


def test_svc_mia_member_like_targets_are_members():
  rng = np.random.default_rng(1)
  labels, member, nonmember, _ = _separable_sets(rng)
  target_labels = rng.integers(0, 3, 50)
  targets = _peaked(rng, target_labels, 3, target_labels, 0.95)
  result = mia.svc_mia(member, labels, nonmember, labels, targets,
                       target_labels)
  for feature in mia.FEATURES:
    assert result[feature]['member_rate'] >= 0.95, feature
    assert result[feature]['mia_efficacy'] <= 0.05, feature


def test_svc_mia_nonmember_like_targets_are_not_members():
  rng = np.random.default_rng(2)
  labels, member, nonmember, _ = _separable_sets(rng)
  target_labels = rng.integers(0, 3, 50)
  targets = _peaked(rng, target_labels, 3, (target_labels + 1) % 3, 0.6)
  result = mia.svc_mia(member, labels, nonmember, labels, targets,
                       target_labels)
  for feature in mia.FEATURES:
    assert result[feature]['member_rate'] <= 0.05, feature
    assert result[feature]['mia_efficacy'] >= 0.95, feature


def test_svc_mia_feature_subset_and_errors():
  rng = np.random.default_rng(3)
  labels, member, nonmember, _ = _separable_sets(rng, n=20)
  result = mia.svc_mia(member, labels, nonmember, labels, member, labels,
                       features=('confidence',))
  assert list(result) == ['confidence']
  with pytest.raises(UserError):
    mia.svc_mia(member, labels, nonmember, labels, member, labels,
                features=())
  with pytest.raises(UserError):
    mia.svc_mia(member, labels, nonmember, labels, member, labels,
                features=('loss',))
  with pytest.raises(UserError):
    mia.svc_mia(member[:0], labels[:0], nonmember, labels, member, labels)
  with pytest.raises(UserError):
    mia.svc_mia(member, labels, nonmember, labels, member[:, :2] * 1.5,
                labels % 2)


def test_shadow_member_indices():
  idx = mia.shadow_member_indices(1000, 100, seed=7)
  assert idx.shape == (100,)
  assert idx.dtype == np.int64
  assert len(np.unique(idx)) == 100
  assert idx.min() >= 0 and idx.max() < 1000
  np.testing.assert_array_equal(idx, np.sort(idx))
  np.testing.assert_array_equal(idx, mia.shadow_member_indices(1000, 100, 7))
  assert not np.array_equal(idx, mia.shadow_member_indices(1000, 100, 8))
  # Fewer remaining training examples than test-remain ones: use them all.
  np.testing.assert_array_equal(mia.shadow_member_indices(5, 9, 0),
                                np.arange(5))
  np.testing.assert_array_equal(mia.shadow_member_indices(5, 5, 0),
                                np.arange(5))
  with pytest.raises(UserError):
    mia.shadow_member_indices(-1, 5, 0)
