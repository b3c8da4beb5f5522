"""PyTorch twins of the models in `delete_jax.models`.

Written independently of the JAX code, in plain `torch.nn`, with torchvision's
module names so that `state_dict()` keys are those of a torchvision checkpoint
(`conv1.weight`, `layer2.0.downsample.1.running_var`, `fc.bias`, ...). Test-only
code: the package itself never imports torch (except `delete_jax.convert`).
"""

from __future__ import annotations

import math

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
  if name == 'vgg16_bn':
    return VGG16BN(num_classes, image_shape[-1])
  if name in ('vit_s16', 'swin_t'):
    return create_transformer(name, num_classes, image_shape)
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


# ---------------------------------------------------------------------------
# VGG16-BN (the published CIFAR variant), ViT-S/16 and Swin-T (timm layouts).

VGG16_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M',
             512, 512, 512)


class VGG16BN(nn.Module):
  """The published code's CIFAR VGG16-BN, with its module names.

  Configuration "D" without its last max-pool; bias-free 3×3 convolutions each
  followed by BatchNorm and ReLU; AdaptiveAvgPool2d((2, 2)); classifier
  Linear(2048, 256)-ReLU-Linear(256, 256)-ReLU; output layer `fc`.
  """

  def __init__(self, num_classes: int, in_channels: int = 3):
    super().__init__()
    layers = []
    prev = in_channels
    for v in VGG16_CFG:
      if v == 'M':
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
      else:
        layers += [nn.Conv2d(prev, v, kernel_size=3, padding=1, bias=False),
                   nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
        prev = v
    self.features = nn.Sequential(*layers)
    self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
    self.classifier = nn.Sequential(nn.Linear(prev * 4, 256), nn.ReLU(True),
                                    nn.Linear(256, 256), nn.ReLU(True))
    self.fc = nn.Linear(256, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = torch.flatten(self.avgpool(self.features(x)), 1)
    return self.fc(self.classifier(x))


class Mlp(nn.Module):
  """timm's Mlp: fc1 → GELU (erf) → fc2."""

  def __init__(self, dim: int, hidden: int):
    super().__init__()
    self.fc1 = nn.Linear(dim, hidden)
    self.act = nn.GELU()
    self.fc2 = nn.Linear(hidden, dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc2(self.act(self.fc1(x)))


def _heads_attention(qkv: torch.Tensor, num_heads: int,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
  """softmax(q·kᵀ/√d + bias)·v per head, from a fused [B, N, 3C] projection."""
  b, n, c3 = qkv.shape
  c = c3 // 3
  d = c // num_heads
  q, k, v = qkv.reshape(b, n, 3, num_heads, d).permute(2, 0, 3, 1, 4).unbind(0)
  logits = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d)
  if bias is not None:
    logits = logits + bias
  out = torch.matmul(torch.softmax(logits, dim=-1), v)  # [B, H, N, d]
  return out.transpose(1, 2).reshape(b, n, c)


class ViTAttention(nn.Module):
  """timm's Attention (qkv bias, no q/k norm)."""

  def __init__(self, dim: int, num_heads: int):
    super().__init__()
    self.num_heads = num_heads
    self.qkv = nn.Linear(dim, 3 * dim)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.proj(_heads_attention(self.qkv(x), self.num_heads))


class ViTBlock(nn.Module):
  """timm's pre-norm Block without layer scale or drop-path."""

  def __init__(self, dim: int, num_heads: int, mlp_dim: int):
    super().__init__()
    self.norm1 = nn.LayerNorm(dim, eps=1e-6)
    self.attn = ViTAttention(dim, num_heads)
    self.norm2 = nn.LayerNorm(dim, eps=1e-6)
    self.mlp = Mlp(dim, mlp_dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class ViTPatchEmbed(nn.Module):
  """timm's PatchEmbed: strided convolution, flattened to tokens."""

  def __init__(self, in_ch: int, dim: int, patch_size: int):
    super().__init__()
    self.proj = nn.Conv2d(in_ch, dim, patch_size, stride=patch_size)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
  """timm's `vit_small_patch16_224` layout (class token, learned positions).

  Args:
    num_classes: outputs of `head`.
    image_size: side of the square inputs.
    in_channels: input channels.
    patch_size, dim, depth, num_heads, mlp_dim: the ViT-S/16 shape by default.
  """

  def __init__(self, num_classes: int, image_size: int = 224, in_channels: int = 3,
               patch_size: int = 16, dim: int = 384, depth: int = 12,
               num_heads: int = 6, mlp_dim: int = 1536):
    super().__init__()
    num_tokens = 1 + (image_size // patch_size) ** 2
    # Registered before any submodule, as in timm: state_dict starts with them.
    self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
    self.pos_embed = nn.Parameter(0.02 * torch.randn(1, num_tokens, dim))
    self.patch_embed = ViTPatchEmbed(in_channels, dim, patch_size)
    self.blocks = nn.Sequential(*[ViTBlock(dim, num_heads, mlp_dim)
                                  for _ in range(depth)])
    self.norm = nn.LayerNorm(dim, eps=1e-6)
    self.head = nn.Linear(dim, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.patch_embed(x)
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = self.norm(self.blocks(x + self.pos_embed))
    return self.head(x[:, 0])


def _swin_relative_index(win: int) -> torch.Tensor:
  """Table row for each (query, key) pair of a win×win window (row-major tokens)."""
  ys, xs = torch.meshgrid(torch.arange(win), torch.arange(win), indexing='ij')
  ys, xs = ys.flatten(), xs.flatten()
  dy = ys[:, None] - ys[None, :] + win - 1
  dx = xs[:, None] - xs[None, :] + win - 1
  return dy * (2 * win - 1) + dx


def _swin_windows(x: torch.Tensor, win: int) -> torch.Tensor:
  """[B, H, W, C] → [B·nW, win·win, C]."""
  b, h, w, c = x.shape
  x = x.view(b, h // win, win, w // win, win, c).permute(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, win * win, c)


def _swin_unwindows(x: torch.Tensor, win: int, h: int, w: int) -> torch.Tensor:
  c = x.shape[-1]
  x = x.view(-1, h // win, w // win, win, win, c).permute(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, h, w, c)


class SwinWindowAttention(nn.Module):
  """Window attention with a relative position bias table (timm names)."""

  def __init__(self, dim: int, num_heads: int, win: int):
    super().__init__()
    self.num_heads = num_heads
    self.relative_position_bias_table = nn.Parameter(
        0.02 * torch.randn((2 * win - 1) ** 2, num_heads))
    self.register_buffer('relative_position_index', _swin_relative_index(win),
                         persistent=False)
    self.qkv = nn.Linear(dim, 3 * dim)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    n = x.shape[1]
    bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
    bias = bias.view(n, n, self.num_heads).permute(2, 0, 1)  # [H, N, N]
    if mask is None:
      bias = bias.unsqueeze(0)
    else:
      num_windows = mask.shape[0]
      bias = bias.unsqueeze(0) + mask.unsqueeze(1)  # [nW, H, N, N]
      bias = bias.repeat(x.shape[0] // num_windows, 1, 1, 1)
    return self.proj(_heads_attention(self.qkv(x), self.num_heads, bias))


class SwinBlock(nn.Module):
  """Swin block on [B, H, W, C] with an optional cyclic shift and its mask."""

  def __init__(self, dim: int, resolution: int, num_heads: int, win: int, shift: int,
               mlp_ratio: float = 4.0):
    super().__init__()
    if resolution <= win:  # one window covers the stage: no shift
      win, shift = resolution, 0
    self.win, self.shift = win, shift
    self.norm1 = nn.LayerNorm(dim)
    self.attn = SwinWindowAttention(dim, num_heads, win)
    self.norm2 = nn.LayerNorm(dim)
    self.mlp = Mlp(dim, int(dim * mlp_ratio))
    mask = None
    if shift:
      region = torch.zeros(1, resolution, resolution, 1)
      label = 0
      for hs in (slice(0, -win), slice(-win, -shift), slice(-shift, None)):
        for ws in (slice(0, -win), slice(-win, -shift), slice(-shift, None)):
          region[:, hs, ws, :] = label
          label += 1
      windows = _swin_windows(region, win).squeeze(-1)  # [nW, N]
      differ = windows.unsqueeze(1) != windows.unsqueeze(2)
      mask = torch.zeros(differ.shape).masked_fill(differ, -100.0)
    self.register_buffer('attn_mask', mask, persistent=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    _, h, w, _ = x.shape
    y = self.norm1(x)
    if self.shift:
      y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
    y = self.attn(_swin_windows(y, self.win), self.attn_mask)
    y = _swin_unwindows(y, self.win, h, w)
    if self.shift:
      y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
    x = x + y
    return x + self.mlp(self.norm2(x))


class SwinPatchMerging(nn.Module):
  """x0 = x[0::2, 0::2], x1 = x[1::2, 0::2], x2 = x[0::2, 1::2], x3 = x[1::2, 1::2]."""

  def __init__(self, dim: int, out_dim: int):
    super().__init__()
    self.norm = nn.LayerNorm(4 * dim)
    self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
                   x[:, 1::2, 1::2]], dim=-1)
    return self.reduction(self.norm(x))


class SwinStage(nn.Module):

  def __init__(self, dim: int, out_dim: int, resolution: int, depth: int,
               downsample: bool, num_heads: int, win: int):
    super().__init__()
    self.downsample = SwinPatchMerging(dim, out_dim) if downsample else nn.Identity()
    if downsample:
      resolution //= 2
    self.blocks = nn.Sequential(*[
        SwinBlock(out_dim, resolution, num_heads, win, 0 if j % 2 == 0 else win // 2)
        for j in range(depth)])

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.blocks(self.downsample(x))


class SwinPatchEmbed(nn.Module):

  def __init__(self, in_ch: int, dim: int, patch_size: int):
    super().__init__()
    self.proj = nn.Conv2d(in_ch, dim, patch_size, stride=patch_size)
    self.norm = nn.LayerNorm(dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.norm(self.proj(x).permute(0, 2, 3, 1))  # NHWC tokens


class SwinHead(nn.Module):
  """timm's ClassifierHead: global average pool over H, W, then `fc`."""

  def __init__(self, dim: int, num_classes: int):
    super().__init__()
    self.fc = nn.Linear(dim, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc(x.mean(dim=(1, 2)))


class SwinTransformer(nn.Module):
  """timm's (≥ 0.9) `swin_tiny_patch4_window7_224` layout, without drop-path.

  Args:
    num_classes: outputs of `head.fc`.
    image_size: side of the square inputs.
    in_channels: input channels.
    patch_size, window_size, embed_dim, depths, num_heads: Swin-T by default.
  """

  def __init__(self, num_classes: int, image_size: int = 224, in_channels: int = 3,
               patch_size: int = 4, window_size: int = 7, embed_dim: int = 96,
               depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)):
    super().__init__()
    self.patch_embed = SwinPatchEmbed(in_channels, embed_dim, patch_size)
    resolution = image_size // patch_size
    stages = []
    dim = embed_dim
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
      out_dim = embed_dim * 2 ** i
      stages.append(SwinStage(dim, out_dim, resolution, depth, i > 0, heads,
                              window_size))
      if i > 0:
        resolution //= 2
      dim = out_dim
    self.layers = nn.Sequential(*stages)
    self.norm = nn.LayerNorm(dim)
    self.head = SwinHead(dim, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.head(self.norm(self.layers(self.patch_embed(x))))


def create_transformer(name: str, num_classes: int, image_shape: tuple[int, int, int],
                       **kwargs) -> nn.Module:
  """ViT ('vit_s16') or Swin ('swin_t') twin; `kwargs` shrink it for tests."""
  if name == 'vit_s16':
    return VisionTransformer(num_classes, image_shape[0], image_shape[-1], **kwargs)
  if name == 'swin_t':
    return SwinTransformer(num_classes, image_shape[0], image_shape[-1], **kwargs)
  raise ValueError(f'unknown transformer {name!r}')


def randomize_transformer(model: nn.Module, generator: torch.Generator) -> None:
  """Gives every parameter a non-trivial, O(1)-activation random value.

  Fresh LayerNorms (1, 0), zero biases, a zero class token and a small bias
  table would hide mis-mapped keys and leave attention near uniform; this draws
  weights N(0, 1/fan_in), biases N(0, 0.1²), LayerNorm scales 1 + N(0, 0.2²),
  tokens and position embeddings N(0, 0.5²) and bias tables N(0, 1).
  """
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
      leaf = name.rsplit('.', 1)[-1]
      owner = model.get_submodule(name.rsplit('.', 1)[0]) if '.' in name else model
      if isinstance(owner, nn.LayerNorm):
        p.copy_(1.0 + 0.2 * noise if leaf == 'weight' else 0.1 * noise)
      elif leaf == 'relative_position_bias_table':
        p.copy_(noise)
      elif leaf in ('cls_token', 'pos_embed'):
        p.copy_(0.5 * noise)
      elif leaf == 'bias':
        p.copy_(0.1 * noise)
      else:  # conv and linear weights: [out, in, ...]
        p.copy_(noise / math.sqrt(p[0].numel()))
