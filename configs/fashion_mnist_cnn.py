"""The offline CPU demo: Fashion-MNIST, small CNN, forget class 0 (T-shirt/top).

Command:
  python -m delete_jax.main --config configs/fashion_mnist_cnn.py --workdir runs/fm

Trains the original CNN (≥ 90 % test accuracy), unlearns the forget class with
DELETE using only its training images, evaluates, writes report.json/report.md
and prints the table. Expected on a 2-core CPU: a few minutes in all; after
DELETE train-forget and test-forget accuracy ≤ 1 %, test-remain within 1.5
points of the original's.
"""

from configs import common


def get_config():
  c = common.get_config()
  c.dataset = 'fashion_mnist'
  c.model = 'cnn'
  c.augment.crop_padding = 2
  c.augment.flip = True
  c.train.epochs = 4
  c.train.lr = 0.05
  c.train.lr_decay_every_epochs = 3
  c.unlearn.epochs = 10
  c.unlearn.lr = 1e-3
  return c
