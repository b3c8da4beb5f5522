"""Command line: python -m delete_jax.main --config configs/<file>.py --workdir DIR.

Override any field with --config.<field>=value, e.g. --config.mode=unlearn
--config.forget_classes=3,7. The same command runs on every host of a pod.
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
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.getLogger().setLevel(logging.INFO)
  from delete_jax import pipeline  # pylint: disable=g-import-not-at-top
  try:
    pipeline.run(_CONFIG.value, _WORKDIR.value)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
