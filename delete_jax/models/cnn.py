"""A small CNN sized for the CPU demo (Fashion-MNIST, MNIST, digits)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from delete_jax.models.layers import BatchNorm, conv, max_pool


class SmallCNN(nnx.Module):
  """conv(16)-BN-ReLU-pool → conv(32)-BN-ReLU-pool → fc(128)-ReLU → fc(C).

  The flatten happens in torch's (C, H, W) order so that a torch twin's
  `fc1.weight` maps onto `fc1.kernel` by a transpose alone.
  """

  def __init__(self, num_classes: int, image_shape: tuple[int, int, int], *,
               rngs: nnx.Rngs, width: int = 16, hidden: int = 128):
    h, w, c = image_shape
    self.conv1 = conv(c, width, 3, 1, 1, bias=False, rngs=rngs)
    self.bn1 = BatchNorm(width)
    self.conv2 = conv(width, 2 * width, 3, 1, 1, bias=False, rngs=rngs)
    self.bn2 = BatchNorm(2 * width)
    flat = 2 * width * (h // 4) * (w // 4)
    self.fc1 = nnx.Linear(flat, hidden, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, num_classes, rngs=rngs)
    self.num_classes = num_classes

  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    x = max_pool(jax.nn.relu(self.bn1(self.conv1(x), train=train)), 2, 2)
    x = max_pool(jax.nn.relu(self.bn2(self.conv2(x), train=train)), 2, 2)
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    x = jax.nn.relu(self.fc1(x))
    return self.fc2(x)
