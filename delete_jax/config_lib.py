"""Checks on a config and the settings that identify each stage's result."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import ml_collections

from delete_jax.errors import UserError

MODES = ('train', 'retrain', 'unlearn', 'evaluate', 'all', 'compare')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises UserError naming the first invalid field and its allowed values."""
  if config.mode not in MODES:
    raise UserError(f'config.mode={config.mode!r} is not a mode: choose one of {", ".join(MODES)}')
  if config.unlearn.mask not in ('label', 'all_forget'):
    raise UserError(f"config.unlearn.mask={config.unlearn.mask!r}: use 'label' (published) or 'all_forget'")
  if config.unlearn.bn not in ('train', 'frozen'):
    raise UserError(f"config.unlearn.bn={config.unlearn.bn!r}: use 'train' (published) or 'frozen'")
  for name in ('train.batch_size', 'unlearn.batch_size', 'eval.batch_size'):
    section, field = name.split('.')
    if config[section][field] <= 0:
      raise UserError(f'config.{name} must be positive, got {config[section][field]}')
  for name in ('train.epochs', 'unlearn.epochs'):
    section, field = name.split('.')
    if config[section][field] < 0:
      raise UserError(f'config.{name} must be ≥ 0, got {config[section][field]}')
  if config.unlearn.temperature <= 0:
    raise UserError(f'config.unlearn.temperature must be > 0, got {config.unlearn.temperature}')


def stage_settings(config: ml_collections.ConfigDict, stage: str,
                   forget_classes: tuple[int, ...] = ()) -> dict[str, Any]:
  """The config values that determine a stage's result (checkpoint provenance).

  A rerun whose settings differ from a stored checkpoint's would silently mix two
  experiments, so checkpoints refuse to resume under other settings.
  """
  base = {'dataset': config.dataset, 'model': config.model, 'seed': config.seed,
          'augment': config.augment.to_dict()}
  if stage in ('original', 'retrain'):
    base['train'] = config.train.to_dict()
    if not base['train'].get('init_from'):
      # Absent = from scratch: checkpoints made before the field existed still match.
      base['train'].pop('init_from', None)
    base['init_checkpoint'] = config.init_checkpoint if stage == 'original' else ''
    if stage == 'retrain':
      base['forget_classes'] = list(forget_classes)
    return base
  unlearn = config.unlearn.to_dict()
  unlearn.pop('eval_every_epochs', None)  # evaluation cadence does not change the model
  base['unlearn'] = unlearn
  base['forget_classes'] = list(forget_classes)
  return base


def settings_hash(settings: dict[str, Any]) -> str:
  return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def settings_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = '') -> list[str]:
  """Human-readable differences between two settings dicts."""
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += settings_diff(a, b, f'{prefix}{key}.')
    elif a != b:
      out.append(f'{prefix}{key}: {a!r} → {b!r}')
  return out
