"""Command line: python -m delete_jax.main --config configs/<file>.py --workdir DIR.

Override any field with --config.<field>=value, e.g. --config.mode=unlearn
--config.forget_classes=3,7. The same command runs on every host of a pod: under
SLURM, Open MPI or on Cloud TPU VMs the processes find each other by themselves;
elsewhere add --coordinator_address=HOST:PORT --num_processes=N --process_id=I.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from delete_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and reports.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None,
    'Multi-process runs: host:port of process 0, reachable from every process '
    '(not needed under SLURM, Open MPI or on Cloud TPU VMs, which are detected).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Multi-process runs: number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'Multi-process runs: index of this process, 0-based.')
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries(logging.Filter):
  """Drops INFO chatter of Orbax (a line per checkpoint file) from the log."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or '/orbax/' not in record.pathname


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.getLogger().setLevel(logging.INFO)
  for handler in logging.getLogger().handlers + logging.getLogger('absl').handlers:
    handler.addFilter(_QuietLibraries())
  from delete_jax import parallel, pipeline  # pylint: disable=g-import-not-at-top
  try:
    # Before anything touches a JAX backend: every process joins the run first.
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                    _PROCESS_ID.value)
    parallel.log_topology()
    pipeline.run(_CONFIG.value, _WORKDIR.value)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
