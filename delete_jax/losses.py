"""Objectives as pure functions of logits.

No Flax state lives here: every function takes logits (any leading shape; the
class axis is last) and returns a scalar, so each is unit-tested by hand
arithmetic and reused for classification and per-pixel segmentation alike.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

# The published code writes the masked logit as -1e10: exp(-1e10 - max) underflows
# to exactly 0 in float32 and float64, so the target puts no mass on it.
MASK_VALUE = -1e10

MASK_MODES = ('label', 'all_forget')


def forget_mask(labels: jnp.ndarray, num_classes: int, mask_mode: str,
                forget_class_mask: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """Which teacher logits DELETE masks, as a bool array [..., C].

  Args:
    labels: int labels [...].
    num_classes: C.
    mask_mode: 'label' masks each example's own label (published code);
      'all_forget' masks every forget class (needs `forget_class_mask`).
    forget_class_mask: bool [C], True for forget classes.
  """
  own = jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_)
  if mask_mode == 'label':
    return own
  if mask_mode == 'all_forget':
    if forget_class_mask is None:
      raise ValueError("mask_mode='all_forget' needs forget_class_mask")
    return own | jnp.broadcast_to(forget_class_mask, own.shape)
  raise ValueError(f'unknown mask_mode {mask_mode!r}; choose one of {MASK_MODES}')


def masked_teacher_target(teacher_logits: jnp.ndarray, mask: jnp.ndarray,
                          temperature: float = 1.0) -> jnp.ndarray:
  """softmax of the teacher logits with masked entries set to -1e10."""
  z = jnp.where(mask, jnp.asarray(MASK_VALUE, teacher_logits.dtype), teacher_logits)
  return jax.nn.softmax(z / temperature, axis=-1)


def kl_batchmean(target: jnp.ndarray, student_logits: jnp.ndarray,
                 temperature: float = 1.0) -> jnp.ndarray:
  """KL(target ‖ softmax(student)) summed over classes, averaged over examples.

  torch's `KLDivLoss(reduction='batchmean')` divides by the size of the first
  axis; for per-pixel inputs [B, H, W, C] we divide by B as well, as torch does.
  Terms with target 0 contribute exactly 0 (0·log 0 = 0).
  """
  log_q = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  safe_t = jnp.where(target > 0, target, 1.0)
  terms = jnp.where(target > 0, target * (jnp.log(safe_t) - log_q), 0.0)
  return jnp.sum(terms) / student_logits.shape[0]


def delete_loss(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray,
                labels: jnp.ndarray, *, mask_mode: str = 'label',
                forget_class_mask: Optional[jnp.ndarray] = None,
                temperature: float = 1.0) -> jnp.ndarray:
  """DELETE's masked distillation loss (SPEC §2).

  loss = (1/B) Σ_b KL(softmax(mask(z_b)) ‖ softmax(s_b)); with temperature T ≠ 1
  both sides are divided by T and the loss is scaled by T² (our option; the
  published method has T = 1).
  """
  mask = forget_mask(labels, teacher_logits.shape[-1], mask_mode, forget_class_mask)
  target = jax.lax.stop_gradient(masked_teacher_target(teacher_logits, mask, temperature))
  loss = kl_batchmean(target, student_logits, temperature)
  if temperature != 1.0:
    loss = loss * temperature ** 2
  return loss


def delete_decomposition(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray,
                         labels: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The two terms of DELETE's loss for own-label masking (SPEC §2).

  Returns (forgetting, retention), batch means of −log(1 − p_u) and KL(t ‖ p̂),
  where p̂ is the student's distribution renormalised over classes ≠ u. Their sum
  equals `delete_loss(..., mask_mode='label')`.
  """
  num_classes = student_logits.shape[-1]
  mask = forget_mask(labels, num_classes, 'label')
  log_p = jax.nn.log_softmax(student_logits, axis=-1)
  log_pu = jnp.sum(jnp.where(mask, log_p, 0.0), axis=-1)
  forgetting = -jnp.log1p(-jnp.exp(log_pu))
  renorm_logits = jnp.where(mask, -jnp.inf, student_logits)
  target = masked_teacher_target(teacher_logits, mask)
  log_phat = jax.nn.log_softmax(renorm_logits, axis=-1)
  safe_t = jnp.where(target > 0, target, 1.0)
  retention = jnp.sum(jnp.where(target > 0, target * (jnp.log(safe_t) - log_phat), 0.0), axis=-1)
  batch = student_logits.shape[0]
  return jnp.sum(forgetting) / batch, jnp.sum(retention) / batch


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """Mean cross entropy with integer labels (torch's `CrossEntropyLoss`)."""
  log_p = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(log_p, labels[..., None], axis=-1))


def gradient_ascent_loss(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """−CE(f(x), y): gradient ascent on the forget set."""
  return -cross_entropy(logits, labels)


def distillation_loss(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray,
                      temperature: float = 1.0) -> jnp.ndarray:
  """KL(softmax(teacher) ‖ softmax(student)), batchmean (bad teacher, SCRUB)."""
  target = jax.lax.stop_gradient(jax.nn.softmax(teacher_logits / temperature, axis=-1))
  return kl_batchmean(target, student_logits, temperature)


def l2ul_loss(student_logits: jnp.ndarray, labels: jnp.ndarray, adv_targets: jnp.ndarray,
              adv_weight: float = 0.1) -> jnp.ndarray:
  """L2UL: −CE on the clean forget batch + adv_weight · CE on its adversarial twins.

  `student_logits` holds the clean batch followed by the adversarial batch.
  """
  b = labels.shape[0]
  return (-cross_entropy(student_logits[:b], labels)
          + adv_weight * cross_entropy(student_logits[b:], adv_targets))
