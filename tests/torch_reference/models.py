"""PyTorch twins of the models in `delete_jax.models`.

Written independently of the JAX code, in plain `torch.nn`, with torchvision's
module names so that `state_dict()` keys are those of a torchvision checkpoint
(`conv1.weight`, `layer2.0.downsample.1.running_var`, `fc.bias`, ...). Test-only
code: the package itself never imports torch (except `delete_jax.convert`).
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
  """conv(16)-BN-ReLU-pool → conv(32)-BN-ReLU-pool → fc(128)-ReLU → fc(C).

  Args:
    num_classes: outputs of `fc2`.
    image_shape: (H, W, C) of the inputs (the model takes NCHW tensors).
    width: channels of `conv1` (`conv2` has twice as many).
    hidden: units of `fc1`.
  """

  def __init__(self, num_classes: int, image_shape: tuple[int, int, int],
               width: int = 16, hidden: int = 128):
    super().__init__()
    h, w, c = image_shape
    self.conv1 = nn.Conv2d(c, width, 3, stride=1, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=1, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(2 * width)
    self.pool = nn.MaxPool2d(2, 2)
    self.fc1 = nn.Linear(2 * width * (h // 4) * (w // 4), hidden)
    self.fc2 = nn.Linear(hidden, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.pool(torch.relu(self.bn1(self.conv1(x))))
    x = self.pool(torch.relu(self.bn2(self.conv2(x))))
    x = torch.flatten(x, 1)
    return self.fc2(torch.relu(self.fc1(x)))


class BasicBlock(nn.Module):
  """torchvision's BasicBlock (expansion 1)."""

  def __init__(self, in_ch: int, out_ch: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(out_ch)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(out_ch)
    self.downsample = None
    if stride != 1 or in_ch != out_ch:
      self.downsample = nn.Sequential(
          nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
          nn.BatchNorm2d(out_ch))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + identity)


class ResNet18(nn.Module):
  """ResNet-18 with torchvision's module names.

  Args:
    num_classes: outputs of `fc`.
    in_channels: input channels.
    cifar: True for the CIFAR stem (3×3 stride-1 conv, no max-pool); False for
      torchvision's ImageNet stem (7×7 stride-2 pad-3 conv + MaxPool2d(3, 2, 1)).
  """

  def __init__(self, num_classes: int, in_channels: int = 3, cifar: bool = True):
    super().__init__()
    if cifar:
      self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
      self.maxpool = nn.Identity()
    else:
      self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
      self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    widths = (64, 128, 256, 512)
    prev = 64
    for i, width in enumerate(widths):
      stride = 1 if i == 0 else 2
      layer = nn.Sequential(BasicBlock(prev, width, stride),
                            BasicBlock(width, width, 1))
      setattr(self, f'layer{i + 1}', layer)
      prev = width
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(512, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    x = torch.flatten(self.avgpool(x), 1)
    return self.fc(x)


def create_model(name: str, num_classes: int,
                 image_shape: tuple[int, int, int]) -> nn.Module:
  """The twin of `delete_jax.models.create_model(name, ...)` (NCHW inputs)."""
  if name == 'cnn':
    return SmallCNN(num_classes, image_shape)
  if name == 'resnet18_cifar':
    return ResNet18(num_classes, image_shape[-1], cifar=True)
  if name == 'resnet18':
    return ResNet18(num_classes, image_shape[-1], cifar=False)
  raise ValueError(f'unknown model {name!r}')


def randomize_batch_norm(model: nn.Module, generator: torch.Generator) -> None:
  """Gives every BatchNorm non-trivial affine parameters and running statistics.

  Freshly built BatchNorms are the identity in eval mode (mean 0, var 1, scale 1,
  bias 0), which would hide a mis-mapped key; this fills them with random values.
  """
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.BatchNorm2d):
        n = module.num_features
        dtype = module.weight.dtype
        module.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=generator, dtype=dtype))
        module.bias.copy_(0.1 * torch.randn(n, generator=generator, dtype=dtype))
        module.running_mean.copy_(0.1 * torch.randn(n, generator=generator, dtype=dtype))
        module.running_var.copy_(
            0.5 + torch.rand(n, generator=generator, dtype=dtype))
        module.num_batches_tracked.fill_(
            int(torch.randint(0, 1000, (), generator=generator)))
