"""The one epoch loop that training, retraining and unlearning share.

The loop owns everything outside the pure step: the per-epoch example order
(seeded by (seed, stage, epoch), so a resumed run sees the same batches), host
batch gathering, progress lines, metric writing, the NaN guard, checkpoints and
per-epoch callbacks. Host syncs happen only at log points and epoch ends.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import zlib
from typing import Any, Callable, Optional

import jax
import numpy as np

from delete_jax import parallel
from delete_jax.checkpointing import StageCheckpoints
from delete_jax.errors import UserError


@dataclasses.dataclass
class LoopSpec:
  """What to iterate over.

  Attributes:
    name: stage name for logs ('original', 'retrain', 'delete', ...).
    images: host uint8 images of the whole split the indices refer to.
    labels: host int32 labels (or per-example targets) aligned with `images`.
    indices: which examples this stage reads.
    batch_size: global batch size.
    epochs: number of passes over `indices`.
    seed: run seed; the order of epoch e is a function of (seed, name, e).
    log_every_steps: cadence of progress lines.
    checkpoint_every_steps: 0 = checkpoint at epoch ends only.
    batch_plan: optional `plan(epoch) -> list of index batches` replacing the
      default (shuffle `indices`, cut into batches); must be deterministic in
      `epoch` so that a resumed run sees the same batches (SCRUB's phases).
  """
  name: str
  images: np.ndarray
  labels: np.ndarray
  indices: np.ndarray
  batch_size: int
  epochs: int
  seed: int
  log_every_steps: int = 100
  checkpoint_every_steps: int = 0
  batch_plan: Optional[Callable[[int], list]] = None

  @property
  def steps_per_epoch(self) -> int:
    """Steps of the first epoch (all epochs, without a batch_plan)."""
    return len(self.batches(0))

  def batches(self, epoch: int) -> list:
    if self.batch_plan is not None:
      return self.batch_plan(epoch)
    order = epoch_order(self, epoch)
    return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]


def epoch_order(spec: LoopSpec, epoch: int) -> np.ndarray:
  """Shuffled indices for one epoch (DataLoader(shuffle=True), keeps the last partial batch)."""
  stage_id = zlib.crc32(spec.name.encode())
  rng = np.random.default_rng([spec.seed, stage_id, epoch])
  return spec.indices[rng.permutation(len(spec.indices))]


def run_epochs(spec: LoopSpec, state: Any, step_fn: Callable, rng: jax.Array, *,
               mesh, checkpoints: StageCheckpoints, record: dict[str, Any],
               writer=None, on_epoch_end: Optional[Callable[[int, Any, dict], None]] = None,
               extra_batch: Optional[Callable[[np.ndarray], dict]] = None,
               stop_at_step: Optional[int] = None) -> tuple[Any, dict[str, Any]]:
  """Runs `step_fn(state, batch, rng)` from `record['step']` to the last epoch.

  Args:
    spec: what to iterate over.
    state: the state at `record['step']` (fresh or restored).
    step_fn: jitted pure step.
    rng: base key of the stage; steps fold in their step number.
    mesh: device mesh.
    checkpoints: where to save (provenance already attached).
    record: JSON-serialisable progress record (step, epoch, history, accumulated
      wall_seconds, ...), saved with every checkpoint and updated in place.
    writer: optional MetricWriter.
    on_epoch_end: called as `on_epoch_end(epoch, state, record)` after each epoch,
      before its checkpoint (evaluation, best-model tracking).
    extra_batch: adds per-example fields (e.g. fixed random labels) from indices.
    stop_at_step: stop (after checkpointing) once this global step is reached, as
      a preemption would; used by resume tests.

  Returns:
    The final state and record (record['complete'] is True when all epochs ran).
  """
  epoch_steps = [len(spec.batches(e)) for e in range(spec.epochs)] if spec.batch_plan else \
      [spec.steps_per_epoch] * spec.epochs
  epoch_ends = np.cumsum(epoch_steps)
  total = int(epoch_ends[-1]) if spec.epochs else 0
  step = int(record.get('step', 0))
  record.setdefault('history', [])
  t_start = time.time()
  wall_base = float(record.get('wall_seconds', 0.0))
  step_at_start = step

  def save(state):
    record['wall_seconds'] = wall_base + time.time() - t_start
    checkpoints.save(record['step'], state, record)

  batches, batches_epoch = None, -1
  pending = None
  while step < total:
    epoch = int(np.searchsorted(epoch_ends, step, side='right'))
    i = step - (int(epoch_ends[epoch - 1]) if epoch else 0)
    if batches_epoch != epoch:
      batches, batches_epoch = spec.batches(epoch), epoch
    idx = batches[i]

    def gather(rows, idx=idx):
      # Each process reads only the rows its devices hold.
      sub = idx[rows]
      host = {'image': spec.images[sub], 'label': spec.labels[sub]}
      if extra_batch is not None:
        host.update(extra_batch(sub))
      return host

    state, metrics = step_fn(state, parallel.gather_batch(len(idx), gather, mesh), rng)
    step += 1
    pending = metrics
    end_of_epoch = step == int(epoch_ends[epoch])
    if step % spec.log_every_steps == 0 or end_of_epoch or step == total:
      values = {k: float(v) for k, v in parallel.to_host(pending).items()}
      if not all(math.isfinite(v) for v in values.values()):
        raise UserError(f'[{spec.name}] loss is {values.get("loss")} at step {step} '
                        f'(epoch {epoch + 1}): lower the learning rate; the last good '
                        f'checkpoint in {checkpoints.directory} is kept')
      elapsed = time.time() - t_start
      rate = (step - step_at_start) * spec.batch_size / max(elapsed, 1e-9)
      eta = (total - step) * spec.batch_size / max(rate, 1e-9)
      logging.info('[%s] epoch %d/%d step %d/%d %s | %.0f img/s, eta %s', spec.name,
                   epoch + 1, spec.epochs, step, total,
                   ' '.join(f'{k} {v:.4f}' for k, v in sorted(values.items())), rate,
                   _fmt_seconds(eta))
      if writer is not None:
        writer.write_scalars(step, {f'{spec.name}/{k}': v for k, v in values.items()})
    record['step'] = step
    record['epoch'] = epoch + 1 if end_of_epoch else epoch
    if end_of_epoch and on_epoch_end is not None:
      on_epoch_end(epoch + 1, state, record)
    if end_of_epoch or (spec.checkpoint_every_steps and step % spec.checkpoint_every_steps == 0):
      record['complete'] = step == total
      save(state)
    if stop_at_step is not None and step >= stop_at_step and step < total:
      if not (end_of_epoch or (spec.checkpoint_every_steps
                               and step % spec.checkpoint_every_steps == 0)):
        save(state)
      return state, record
  if total == 0 or record.get('complete') is not True:
    record['complete'] = True
    record['step'] = step
    save(state)
  return state, record


def _fmt_seconds(s: float) -> str:
  s = int(s)
  return f'{s // 60}m{s % 60:02d}s'
