"""Membership inference by a support-vector attack on softmax outputs.

This is the SVC attack used by SalUn and by the published DELETE code (SPEC §4).
An attacker fits one RBF support-vector classifier per feature of the softmax
output: *shadow members* (remaining-class training examples the model was
trained on) are labelled 1, *shadow non-members* (test examples of the
remaining classes) are labelled 0. It then asks which *targets* (training
examples of the forget classes) look like members. A model that has truly
forgotten the forget classes should make them look like unseen data, so a low
member rate means more forgetting; SalUn's "MIA-efficacy" is 1 minus it.

Everything here works on numpy arrays of probabilities and labels; computing
those probabilities (model forward pass, augmentation) is the caller's job.

Typical use::

  idx = shadow_member_indices(len(remain_train), len(test_remain), seed=0)
  result = svc_mia(
      remain_probs[idx], remain_labels[idx], test_remain_probs,
      test_remain_labels, forget_probs, forget_labels)
  result['confidence']['member_rate']  # the number papers report
"""

from collections.abc import Sequence

import numpy as np
from sklearn import svm

from delete_jax.errors import UserError

# Features of one softmax output p and its label y that the attack can use.
FEATURES = ('correctness', 'confidence', 'entropy', 'm_entropy', 'prob')

# Ways to compute the features: 'correct' follows the definitions in SPEC §4;
# 'published' reproduces the published DELETE/SalUn code (see `mia_features`).
COMPAT_MODES = ('correct', 'published')

# Floor applied before every logarithm, so that a probability (or 1 - p) that
# underflowed to exactly 0 gives a large finite value instead of -inf; an
# infinite feature would make the SVC fit fail. It is the constant the
# published code uses, so both modes agree wherever no clamping is needed.
LOG_CLAMP = 1e-30

# SVC hyperparameters of the published attack.
_SVC_C = 3.0
_SVC_GAMMA = 'auto'
_SVC_KERNEL = 'rbf'

# How far a row of `probs` may sum from 1: loose enough for float16/bfloat16
# softmax outputs, tight enough to catch logits passed by mistake.
_ROW_SUM_TOLERANCE = 1e-2


def _check_probs_and_labels(probs, labels, name='probs'):
  """Returns (probs as float64 [N, C], labels as int64 [N]) or raises."""
  probs = np.asarray(probs)
  labels = np.asarray(labels)
  if probs.ndim != 2:
    raise UserError(
        f'{name} must be a 2-D [examples, classes] array of softmax '
        f'probabilities; got shape {probs.shape}.')
  num_examples, num_classes = probs.shape
  if labels.ndim != 1 or labels.shape[0] != num_examples:
    raise UserError(
        f'labels for {name} must be a 1-D array with one label per row '
        f'({num_examples}); got shape {labels.shape}.')
  if num_examples and not np.issubdtype(labels.dtype, np.integer):
    raise UserError(
        f'labels for {name} must be integer class ids; got dtype '
        f'{labels.dtype}.')
  probs = probs.astype(np.float64)
  labels = labels.astype(np.int64)
  if num_examples == 0:
    return probs, labels
  if not np.all(np.isfinite(probs)):
    raise UserError(f'{name} contains NaN or infinite values.')
  if probs.min() < 0.0 or probs.max() > 1.0:
    raise UserError(
        f'{name} must hold probabilities in [0, 1] (apply softmax to the '
        f'logits first); got values in [{probs.min():.4g}, '
        f'{probs.max():.4g}].')
  row_sums = probs.sum(axis=1)
  if np.max(np.abs(row_sums - 1.0)) > _ROW_SUM_TOLERANCE:
    raise UserError(
        f'rows of {name} must sum to 1 (softmax probabilities, not logits); '
        f'a row sums to {row_sums[np.argmax(np.abs(row_sums - 1.0))]:.4g}.')
  if labels.min() < 0 or labels.max() >= num_classes:
    raise UserError(
        f'labels for {name} must lie in [0, {num_classes - 1}]; got '
        f'{labels.min()}..{labels.max()}.')
  return probs, labels


def _clamped_log(x: np.ndarray) -> np.ndarray:
  return np.log(np.maximum(x, LOG_CLAMP))


def _modified_entropy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Song & Mittal's modified entropy, per example."""
  rows = np.arange(probs.shape[0])
  # Off-label terms: p_k log(1 - p_k). Computing them for every class and then
  # swapping the label entry keeps it vectorised.
  terms = probs * _clamped_log(1.0 - probs)
  p_y = probs[rows, labels]
  terms[rows, labels] = (1.0 - p_y) * _clamped_log(p_y)
  return -terms.sum(axis=1)


def _published_modified_entropy(
    probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """The published code's 'modified entropy', bugs included, per example."""
  # The published code takes log(p) where it means log(1 - p), so every class
  # gets log p_k; its floor replaces log 0 by log 1e-30 (where p > 0 it keeps
  # log p even below the floor, unlike `_clamped_log`).
  safe = np.where(probs > 0.0, probs, 1.0)
  log_probs = np.where(probs > 0.0, np.log(safe), np.log(LOG_CLAMP))
  # It indexes `[:, labels]` with the label vector, which selects whole columns:
  # every class that is the label of ANY example in the array gets the weight
  # 1 - p_k in EVERY row, not just each row's own label.
  label_columns = np.unique(labels)
  weights = probs.copy()
  weights[:, label_columns] = 1.0 - probs[:, label_columns]
  return -(weights * log_probs).sum(axis=1)


def mia_features(
    probs: np.ndarray,
    labels: np.ndarray,
    feature: str,
    compat: str = 'correct',
) -> np.ndarray:
  """Computes one attack feature for each softmax output.

  With p the softmax vector of an example, y its label and K the classes:

  - 'correctness': 1[argmax_k p_k = y] (ties go to the lowest class index).
  - 'confidence': p_y.
  - 'entropy': -sum_k p_k log p_k.
  - 'm_entropy' (Song & Mittal 2021, "Systematic evaluation of privacy risks
    of machine learning models"), with compat='correct':
        -(1 - p_y) log p_y - sum_{k != y} p_k log(1 - p_k).
    With compat='published', the formula of the published DELETE/SalUn code:
        -sum_{k in L} (1 - p_k) log p_k - sum_{k not in L} p_k log p_k,
    where L is the set of classes that occur anywhere in `labels`. It differs
    from the correct one twice: it uses log p_k where log(1 - p_k) belongs,
    and because it indexes whole label columns, each row's value depends on
    the other rows' labels. To reproduce the published numbers, pass each set
    (shadow members, shadow non-members, targets) whole, as that code did.
  - 'prob': the full vector p.

  Every logarithm's argument is floored at LOG_CLAMP = 1e-30 so that outputs
  that underflowed to 0 give finite features (0 · log 0 counts as 0).

  The published code also fed augmented (training-transform) images to the
  attack. That is outside this function: in compat mode the caller must compute
  `probs` from augmented inputs.

  Args:
    probs: [N, C] softmax probabilities.
    labels: [N] integer labels.
    feature: one of FEATURES.
    compat: 'correct' (default) or 'published'; changes only 'm_entropy'.

  Returns:
    [N, d] float64 features: d = C for 'prob', 1 otherwise.

  Raises:
    UserError: unknown feature or compat mode, or inputs that are not
      probabilities with matching integer labels.
  """
  if feature not in FEATURES:
    raise UserError(
        f'unknown MIA feature {feature!r}; choose from {", ".join(FEATURES)}.')
  if compat not in COMPAT_MODES:
    raise UserError(
        f'unknown MIA compat mode {compat!r}; choose from '
        f'{", ".join(COMPAT_MODES)}.')
  probs, labels = _check_probs_and_labels(probs, labels)
  rows = np.arange(probs.shape[0])
  if feature == 'correctness':
    values = (np.argmax(probs, axis=1) == labels).astype(np.float64)
  elif feature == 'confidence':
    values = probs[rows, labels]
  elif feature == 'entropy':
    values = -(probs * _clamped_log(probs)).sum(axis=1)
  elif feature == 'm_entropy':
    if compat == 'published':
      values = _published_modified_entropy(probs, labels)
    else:
      values = _modified_entropy(probs, labels)
  else:  # 'prob'
    return probs
  return values[:, None]


def svc_mia(
    shadow_member_probs: np.ndarray,
    shadow_member_labels: np.ndarray,
    shadow_nonmember_probs: np.ndarray,
    shadow_nonmember_labels: np.ndarray,
    target_probs: np.ndarray,
    target_labels: np.ndarray,
    *,
    features: Sequence[str] = FEATURES,
    compat: str = 'correct',
    seed: int = 0,
) -> dict[str, dict[str, float]]:
  """Runs the SVC membership-inference attack once per feature.

  For each feature, fits `sklearn.svm.SVC(C=3, gamma='auto', kernel='rbf')` on
  the shadow members (class 1) against the shadow non-members (class 0) and
  predicts the targets.

  Args:
    shadow_member_probs: [M, C] softmax outputs on examples the model trained
      on (SPEC: a random subset of remaining-class training examples of size
      |test-remain|, see `shadow_member_indices`).
    shadow_member_labels: [M] their labels.
    shadow_nonmember_probs: [K, C] softmax outputs on unseen examples (SPEC:
      test examples of the remaining classes).
    shadow_nonmember_labels: [K] their labels.
    target_probs: [T, C] softmax outputs on the examples under attack (SPEC:
      training examples of the forget classes).
    target_labels: [T] their labels.
    features: which of FEATURES to attack with.
    compat: 'correct' or 'published'; see `mia_features`. To reproduce the
      published numbers, the caller must also compute all three sets of
      probabilities from augmented (training-transform) inputs.
    seed: seeds the SVC. With the settings above libsvm draws no random
      numbers, so this only matters if those settings change; it is passed so
      that the attack stays reproducible if they do.

  Returns:
    {feature: {'member_rate': fraction of targets predicted member,
               'mia_efficacy': 1 - member_rate}} for each requested feature.
    Lower member rate (higher efficacy) means more forgetting.

  Raises:
    UserError: bad feature names or inputs, an empty set, or shadow sets whose
      class counts differ.
  """
  features = tuple(features)
  if not features:
    raise UserError('svc_mia needs at least one feature; choose from '
                    f'{", ".join(FEATURES)}.')
  sets = {
      'shadow members': (shadow_member_probs, shadow_member_labels),
      'shadow non-members': (shadow_nonmember_probs, shadow_nonmember_labels),
      'targets': (target_probs, target_labels),
  }
  num_classes = set()
  for name, (probs, _) in sets.items():
    probs = np.asarray(probs)
    if probs.ndim == 2 and probs.shape[0] == 0:
      raise UserError(f'the MIA {name} set is empty; it needs at least one '
                      'example.')
    if probs.ndim == 2:
      num_classes.add(probs.shape[1])
  if len(num_classes) > 1:
    raise UserError('the MIA shadow and target probabilities must have the '
                    f'same number of classes; got {sorted(num_classes)}.')

  results = {}
  for feature in features:
    member_x, nonmember_x, target_x = (
        mia_features(probs, labels, feature, compat=compat)
        for probs, labels in sets.values())
    x = np.concatenate([member_x, nonmember_x])
    y = np.concatenate([np.ones(len(member_x), np.int64),
                        np.zeros(len(nonmember_x), np.int64)])
    attack = svm.SVC(
        C=_SVC_C, gamma=_SVC_GAMMA, kernel=_SVC_KERNEL, random_state=seed)
    attack.fit(x, y)
    member_rate = float(np.mean(attack.predict(target_x) == 1))
    results[feature] = {
        'member_rate': member_rate,
        'mia_efficacy': 1.0 - member_rate,
    }
  return results


def shadow_member_indices(
    num_remain_train: int, num_test_remain: int, seed: int) -> np.ndarray:
  """Picks which remaining-class training examples serve as shadow members.

  The attack is trained on balanced shadow sets, so it draws |test-remain|
  remaining-class training examples uniformly without replacement. If there are
  no more remaining-class training examples than test-remain examples (unusual:
  tiny datasets), it uses all of them and the shadow sets are unbalanced.

  Args:
    num_remain_train: number of remaining-class training examples.
    num_test_remain: number of remaining-class test examples.
    seed: seed of the draw; the same seed gives the same indices.

  Returns:
    Sorted int64 indices into the remaining-class training examples, of length
    min(num_remain_train, num_test_remain).

  Raises:
    UserError: a negative count.
  """
  num_remain_train = int(num_remain_train)
  num_test_remain = int(num_test_remain)
  if num_remain_train < 0 or num_test_remain < 0:
    raise UserError(
        'shadow_member_indices needs non-negative counts; got '
        f'num_remain_train={num_remain_train}, '
        f'num_test_remain={num_test_remain}.')
  if num_remain_train <= num_test_remain:
    return np.arange(num_remain_train, dtype=np.int64)
  rng = np.random.default_rng(seed)
  chosen = rng.choice(num_remain_train, size=num_test_remain, replace=False)
  return np.sort(chosen).astype(np.int64)
