"""VGG16-BN, the CIFAR variant of the published DELETE code.

The published code (`models/vgg.py`, chosen by `vgg16` in its model factory)
builds torchvision's configuration "D" feature extractor with BatchNorm, but:

* its 3×3 convolutions have no bias (`bias=False`, torchvision's have one);
* the last max-pool of configuration "D" is dropped, so a 32×32 input leaves
  the features at 2×2 and the adaptive average pool to 2×2 is the identity;
* the classifier is 2048 → 256 → ReLU → 256 → ReLU (no dropout) followed by a
  separate output layer `fc` 256 → C (kept apart for boundary expanding).

This module reproduces that network with its `state_dict` layout: parameters
live under `features.N` (N the index in torch's `nn.Sequential`, where ReLUs and
max-pools take indices without parameters), `classifier.0`, `classifier.2` and
`fc`. Initialisation follows the published code: Kaiming-normal (fan-out)
convolutions, N(0, 0.01) linear weights, zero biases.
"""

from __future__ import annotations

from typing import Sequence, Union

import jax
import jax.numpy as jnp
from flax import nnx

from delete_jax.errors import UserError
from delete_jax.models.layers import BatchNorm, max_pool

# Configuration "D" without its final max-pool: channels of each 3×3
# convolution, 'M' for a 2×2 stride-2 max-pool.
VGG16_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M',
             512, 512, 512)
POOLED_SIZE = (2, 2)  # output of the adaptive average pool


def features_plan(cfg: Sequence[Union[int, str]]) -> tuple[tuple[str, int], ...]:
  """torch's `features` Sequential as (kind, index) pairs.

  Each convolution contributes 'conv', 'bn', 'relu' at three consecutive
  indices; each 'M' contributes one 'pool'.
  """
  plan = []
  for v in cfg:
    if v == 'M':
      plan.append(('pool', len(plan)))
    else:
      for kind in ('conv', 'bn', 'relu'):
        plan.append((kind, len(plan)))
  return tuple(plan)


def adaptive_avg_pool(x: jnp.ndarray, out_hw: tuple[int, int]) -> jnp.ndarray:
  """torch.nn.AdaptiveAvgPool2d on NHWC inputs.

  Output cell i along an axis of size n averages input rows
  [floor(i·n/out), ceil((i+1)·n/out)), as torch does; where n == out this is
  the identity (each cell averages one value), exactly.
  """
  _, h, w, _ = x.shape
  out_h, out_w = out_hw
  if (h, w) == (out_h, out_w):
    return x
  rows = []
  for i in range(out_h):
    h0, h1 = (i * h) // out_h, -((-(i + 1) * h) // out_h)
    cols = []
    for j in range(out_w):
      w0, w1 = (j * w) // out_w, -((-(j + 1) * w) // out_w)
      cols.append(jnp.mean(x[:, h0:h1, w0:w1, :], axis=(1, 2)))
    rows.append(jnp.stack(cols, axis=1))
  return jnp.stack(rows, axis=1)


class VGG16BN(nnx.Module):
  """The published CIFAR VGG16-BN (see the module docstring).

  Args:
    num_classes: outputs of `fc`.
    image_shape: (H, W, C) of the NHWC inputs (32×32×3 for CIFAR).
    rngs: initialisation keys.
    cfg: the feature configuration (default: configuration "D" without its
      last max-pool).
  """

  def __init__(self, num_classes: int, image_shape: tuple[int, int, int], *,
               rngs: nnx.Rngs, cfg: Sequence[Union[int, str]] = VGG16_CFG):
    h, w, in_ch = image_shape
    pools = sum(v == 'M' for v in cfg)
    if min(h, w) < 2 ** pools:
      raise UserError(f'VGG: input {h}×{w} is smaller than its {pools} max-pools allow '
                      f'({2 ** pools}×{2 ** pools} at least; CIFAR: 32×32)')
    self.plan = features_plan(cfg)
    layers = [None] * len(self.plan)
    channels = iter(v for v in cfg if v != 'M')
    for kind, index in self.plan:
      if kind == 'conv':
        out_ch = next(channels)
        layers[index] = nnx.Conv(
            in_ch, out_ch, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
            kernel_init=nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
            rngs=rngs)
      elif kind == 'bn':
        layers[index] = BatchNorm(out_ch)
        in_ch = out_ch
    self.features = nnx.List(layers)
    flat = in_ch * POOLED_SIZE[0] * POOLED_SIZE[1]
    linear = dict(kernel_init=nnx.initializers.normal(0.01),
                  bias_init=nnx.initializers.zeros, rngs=rngs)
    # torch indices: 0 Linear, 1 ReLU, 2 Linear, 3 ReLU.
    self.classifier = nnx.List([nnx.Linear(flat, 256, **linear), None,
                                nnx.Linear(256, 256, **linear), None])
    self.fc = nnx.Linear(256, num_classes, **linear)
    self.num_classes = num_classes

  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    for kind, index in self.plan:
      if kind == 'conv':
        x = self.features[index](x)
      elif kind == 'bn':
        x = self.features[index](x, train=train)
      elif kind == 'relu':
        x = jax.nn.relu(x)
      else:
        x = max_pool(x, 2, 2)
    x = adaptive_avg_pool(x, POOLED_SIZE)
    # torch flattens NCHW: (C, H, W) order, so classifier.0 maps by a transpose.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    x = jax.nn.relu(self.classifier[0](x))
    x = jax.nn.relu(self.classifier[2](x))
    return self.fc(x)
