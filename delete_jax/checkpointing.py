"""Orbax checkpoints of one pipeline stage, with provenance.

Each stage (original, retrain, one unlearning run) owns a directory under the
workdir. A checkpoint holds the pure TrainState and a JSON record of where it came
from: stage, the settings that determine it (and their hash), dataset and its
fingerprint, forget classes, seed, step, model, class count and input shape. A
rerun resumes from the latest step; a checkpoint of another model, class count or
settings is refused, so nothing already written is silently overwritten.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from delete_jax import config_lib
from delete_jax.errors import UserError

_IDENTITY_KEYS = ('model', 'num_classes', 'image_shape')


class StageCheckpoints:
  """Save/restore/resume for one stage directory.

  Args:
    directory: the stage directory (checkpoints go to `directory/checkpoints`).
    provenance: JSON-serialisable facts of this run; must include 'stage',
      'settings', 'model', 'num_classes' and 'image_shape'.
    keep: how many recent checkpoints to preserve.
  """

  def __init__(self, directory: str, provenance: dict[str, Any], keep: int = 2):
    self.directory = os.path.abspath(directory)
    self.provenance = dict(provenance)
    self.provenance['settings_hash'] = config_lib.settings_hash(provenance['settings'])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(keep),
        enable_async_checkpointing=False, create=True)
    self._manager = ocp.CheckpointManager(os.path.join(self.directory, 'checkpoints'),
                                          options=options)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def read_meta(self, step: Optional[int] = None) -> Optional[dict[str, Any]]:
    """The JSON record of `step` (default: latest), or None without checkpoints."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def check_compatible(self) -> Optional[dict[str, Any]]:
    """Refuses (UserError) a stored checkpoint made by a different run.

    Returns the stored record (None when the directory has no checkpoint).
    """
    meta = self.read_meta()
    if meta is None:
      return None
    for key in _IDENTITY_KEYS:
      if list_or_value(meta.get(key)) != list_or_value(self.provenance.get(key)):
        raise UserError(
            f'{self.directory} holds a checkpoint of {key}={meta.get(key)!r} but this run '
            f'needs {key}={self.provenance.get(key)!r}: use another --workdir or the matching config')
    if meta.get('settings_hash') != self.provenance['settings_hash']:
      diff = '; '.join(config_lib.settings_diff(meta.get('settings', {}),
                                                self.provenance['settings']))
      raise UserError(f'{self.directory} holds a run with other settings ({diff}): '
                      'use another --workdir, or delete that folder to start over')
    return meta

  def restore(self, abstract_state: Any, step: Optional[int] = None) -> tuple[Any, dict]:
    """Restores the state (shaped and sharded like `abstract_state`) and its record."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise UserError(f'no checkpoint in {self.directory}')
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise UserError(f'checkpoint {self.directory} step {step} does not fit this model '
                      f'({first}): use the matching config or another --workdir') from e
    return restored.state, restored.meta

  def save(self, step: int, state: Any, record: dict[str, Any]) -> None:
    """Saves `state` at `step` with provenance plus `record` (epoch, history, ...)."""
    meta = dict(self.provenance)
    meta.update(record)
    meta['step'] = int(step)
    self._manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def list_or_value(x):
  return list(x) if isinstance(x, (list, tuple)) else x
