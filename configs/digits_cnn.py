"""Tiny offline config for tests and smoke runs: scikit-learn digits, small CNN.

Command:
  python -m delete_jax.main --config configs/digits_cnn.py --workdir runs/digits

Runs train → unlearn → evaluate in well under a minute on a CPU.
"""

from configs import common


def get_config():
  c = common.get_config()
  c.dataset = 'digits'
  c.model = 'cnn'
  c.augment.crop_padding = 1
  c.augment.flip = False        # flipped digits are other glyphs
  c.train.epochs = 10
  c.train.batch_size = 64
  c.train.lr = 0.05
  c.train.lr_decay_every_epochs = 0
  c.unlearn.epochs = 5
  c.unlearn.batch_size = 32
  c.unlearn.lr = 2e-3
  c.eval.batch_size = 256
  c.log_every_steps = 20
  return c
