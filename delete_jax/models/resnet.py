"""ResNet-18 with torchvision's parameter layout.

`cifar=True` is the CIFAR variant used by the published code for 32×32 inputs
(3×3 stride-1 stem, no max-pool); `cifar=False` is torchvision's ImageNet layout
(7×7 stride-2 stem + 3×3 max-pool) used at 224×224.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from delete_jax.models.layers import BatchNorm, conv, max_pool


class BasicBlock(nnx.Module):
  """Two 3×3 convolutions with an identity or 1×1-projection shortcut."""

  def __init__(self, in_ch: int, out_ch: int, stride: int, *, rngs: nnx.Rngs):
    self.conv1 = conv(in_ch, out_ch, 3, stride, 1, bias=False, rngs=rngs)
    self.bn1 = BatchNorm(out_ch)
    self.conv2 = conv(out_ch, out_ch, 3, 1, 1, bias=False, rngs=rngs)
    self.bn2 = BatchNorm(out_ch)
    if stride != 1 or in_ch != out_ch:
      # torchvision names these downsample.0 (conv) and downsample.1 (BN).
      self.downsample_conv = conv(in_ch, out_ch, 1, stride, 0, bias=False, rngs=rngs)
      self.downsample_bn = BatchNorm(out_ch)
    else:
      self.downsample_conv = None
      self.downsample_bn = None

  def __call__(self, x, *, train: bool):
    y = jax.nn.relu(self.bn1(self.conv1(x), train=train))
    y = self.bn2(self.conv2(y), train=train)
    if self.downsample_conv is not None:
      x = self.downsample_bn(self.downsample_conv(x), train=train)
    return jax.nn.relu(x + y)


class ResNet18(nnx.Module):
  """ResNet-18: BasicBlocks [2, 2, 2, 2], widths 64-128-256-512."""

  def __init__(self, num_classes: int, image_shape: tuple[int, int, int], *,
               rngs: nnx.Rngs, cifar: bool = True):
    in_ch = image_shape[-1]
    self.cifar = cifar
    if cifar:
      self.conv1 = conv(in_ch, 64, 3, 1, 1, bias=False, rngs=rngs)
    else:
      self.conv1 = conv(in_ch, 64, 7, 2, 3, bias=False, rngs=rngs)
    self.bn1 = BatchNorm(64)
    widths = (64, 128, 256, 512)
    layers = []
    prev = 64
    for i, width in enumerate(widths):
      stride = 1 if i == 0 else 2
      layers.append(nnx.List([BasicBlock(prev, width, stride, rngs=rngs),
                              BasicBlock(width, width, 1, rngs=rngs)]))
      prev = width
    self.layer1, self.layer2, self.layer3, self.layer4 = layers
    self.fc = nnx.Linear(512, num_classes, rngs=rngs)
    self.num_classes = num_classes

  def __call__(self, x, *, train: bool):
    x = jax.nn.relu(self.bn1(self.conv1(x), train=train))
    if not self.cifar:
      x = max_pool(x, 3, 2, 1)
    for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
      for block in layer:
        x = block(x, train=train)
    x = jnp.mean(x, axis=(1, 2))
    return self.fc(x)
