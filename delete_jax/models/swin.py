"""Swin-T with timm's parameter layout (`swin_tiny_patch4_window7_224`).

Patch embedding (4×4 stride-4 convolution + LayerNorm), four stages of Swin
blocks (depths 2, 2, 6, 2; heads 3, 6, 12, 24; width 96 doubling per stage),
patch merging (2×2 neighbourhood → LayerNorm → bias-free Linear 4C → 2C) at
the start of stages 2–4, a final LayerNorm, global average pooling and a linear
head. Each block is pre-norm: x + W-MSA(norm1(x)); x + MLP(norm2(x)). Odd
blocks shift their 7×7 windows by 3 (cyclic roll) and mask attention between
tokens that the roll brought together (−100 on the logits, as timm and the
original code do). Every attention adds a learned relative position bias.

Layout of timm ≥ 0.9 (the published DELETE code uses it): `patch_embed.proj`,
`patch_embed.norm`, `layers.i.downsample.{norm, reduction}` (i ≥ 1),
`layers.i.blocks.j.{norm1, attn.relative_position_bias_table, attn.qkv,
attn.proj, norm2, mlp.fc1, mlp.fc2}`, `norm`, `head.fc`. Our output layer is
the top-level `head` Linear (torch `head.fc`). `relative_position_index` and
the shifted-window masks are not variables: they depend on the window size and
input resolution only and are computed here (`relative_position_index`,
`shifted_window_mask`), as numpy constants at trace time.

As in timm, a stage whose resolution is at most the window size uses one window
covering it and no shift (stage 4 of Swin-T at 224×224: 7×7). Resolutions that
are not a multiple of the window size are refused (timm pads them).

Not reproduced: stochastic depth. timm's (and the published) Swin-T trains with
drop-path rate 0.1; this model has no randomness, so train and eval mode compute
the same function and it has no BatchStat variables. Initialisation follows
timm: truncated-normal(0.02) linear weights and bias table, zero biases.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from delete_jax.errors import UserError
from delete_jax.models.vit import Mlp, attention, layer_norm, linear

_trunc02 = nnx.initializers.truncated_normal(0.02)
_zeros = nnx.initializers.zeros
# Added to the logits of token pairs that a shifted window must not connect.
MASK_LOGIT = -100.0


@functools.lru_cache(maxsize=None)
def relative_position_index(window: tuple[int, int]) -> np.ndarray:
  """[Wh·Ww, Wh·Ww] int: row of the bias table for each (query, key) pair.

  Relative offsets (dy, dx) ∈ [−(Wh−1), Wh−1] × [−(Ww−1), Ww−1] map to
  (dy + Wh − 1)·(2Ww − 1) + (dx + Ww − 1), tokens in row-major window order.
  """
  wh, ww = window
  coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing='ij'))
  coords = coords.reshape(2, -1)  # [2, N]
  rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)  # [N, N, 2]
  index = (rel[..., 0] + wh - 1) * (2 * ww - 1) + (rel[..., 1] + ww - 1)
  index.setflags(write=False)
  return index


def window_shift(resolution: tuple[int, int], window: int,
                 shift: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """timm's rule: an axis no longer than the window gets one window, no shift."""
  size = tuple(r if r <= window else window for r in resolution)
  shifts = tuple(0 if r <= window else shift for r in resolution)
  return size, shifts


def _partition(x, window: tuple[int, int]):
  """[B, H, W, C] → [B·nW, Wh·Ww, C], windows row-major within each image."""
  b, h, w, c = x.shape
  wh, ww = window
  x = x.reshape(b, h // wh, wh, w // ww, ww, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, wh * ww, c)


def _reverse(windows, window: tuple[int, int], h: int, w: int):
  """Inverse of `_partition`: [B·nW, Wh·Ww, C] → [B, H, W, C]."""
  wh, ww = window
  c = windows.shape[-1]
  x = windows.reshape(-1, h // wh, w // ww, wh, ww, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, h, w, c)


@functools.lru_cache(maxsize=None)
def shifted_window_mask(resolution: tuple[int, int], window: tuple[int, int],
                        shift: tuple[int, int]) -> np.ndarray:
  """[nW, N, N] float: 0 within a region, −100 across regions (timm's attn_mask).

  After the cyclic roll by −shift, the last window row and column hold tokens
  from up to three regions per axis: [0, H−Wh), [H−Wh, H−sh), [H−sh, H).
  """
  h, w = resolution
  labels = np.zeros((1, h, w, 1))
  count = 0
  for hs in (slice(0, -window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
    for ws in (slice(0, -window[1]), slice(-window[1], -shift[1]),
               slice(-shift[1], None)):
      labels[:, hs, ws, :] = count
      count += 1
  windows = _partition(labels, window)[..., 0]  # [nW, N]
  mask = np.where(windows[:, None, :] != windows[:, :, None], MASK_LOGIT, 0.0)
  mask.setflags(write=False)
  return mask


class WindowAttention(nnx.Module):
  """Multi-head attention within windows, with a learned relative position bias."""

  def __init__(self, dim: int, num_heads: int, window: tuple[int, int],
               rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f'dim {dim} is not divisible by {num_heads} heads')
    self.num_heads = num_heads
    self.window = tuple(window)
    table_rows = (2 * window[0] - 1) * (2 * window[1] - 1)
    self.relative_position_bias_table = nnx.Param(
        _trunc02(rngs.params(), (table_rows, num_heads), jnp.float32))
    self.qkv = linear(dim, 3 * dim, rngs, kernel_init=_trunc02)
    self.proj = linear(dim, dim, rngs, kernel_init=_trunc02)

  def __call__(self, x: jnp.ndarray, mask: np.ndarray | None) -> jnp.ndarray:
    """x: [B·nW, N, C]; mask: [nW, N, N] or None."""
    n = x.shape[1]
    index = relative_position_index(self.window).reshape(-1)
    bias = self.relative_position_bias_table[...][index]  # [N·N, heads]
    bias = bias.reshape(n, n, self.num_heads).transpose(2, 0, 1)[None]  # [1, H, N, N]
    if mask is not None:
      num_windows = mask.shape[0]
      batch = x.shape[0] // num_windows
      bias = bias + jnp.asarray(mask, bias.dtype)[:, None]  # [nW, H, N, N]
      bias = jnp.broadcast_to(bias[None], (batch,) + bias.shape).reshape(
          (batch * num_windows,) + bias.shape[1:])
    return self.proj(attention(self.qkv(x), self.num_heads, bias))


class SwinBlock(nnx.Module):
  """x + (shifted) window attention(norm1(x)); x + MLP(norm2(x)), on [B, H, W, C]."""

  def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int,
               window: int, shift: int, mlp_ratio: float, rngs: nnx.Rngs):
    self.resolution = tuple(resolution)
    self.window, self.shift = window_shift(self.resolution, window, shift)
    for r, win in zip(self.resolution, self.window):
      if r % win:
        raise UserError(f'Swin: stage resolution {self.resolution} is not a multiple of '
                        f'the window {self.window}: resize the inputs so that the patch '
                        'grid divides into windows at every stage '
                        '(config.augment.resize_to, e.g. 224)')
    self.norm1 = layer_norm(dim, 1e-5, rngs)
    self.attn = WindowAttention(dim, num_heads, self.window, rngs)
    self.norm2 = layer_norm(dim, 1e-5, rngs)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs, kernel_init=_trunc02)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    _, h, w, _ = x.shape
    shifted = any(self.shift)
    y = self.norm1(x)
    if shifted:
      y = jnp.roll(y, (-self.shift[0], -self.shift[1]), axis=(1, 2))
    mask = (shifted_window_mask(self.resolution, self.window, self.shift)
            if shifted else None)
    y = self.attn(_partition(y, self.window), mask)
    y = _reverse(y, self.window, h, w)
    if shifted:
      y = jnp.roll(y, self.shift, axis=(1, 2))
    x = x + y
    return x + self.mlp(self.norm2(x))


class PatchMerging(nnx.Module):
  """2×2 neighbours concatenated (order (0,0), (1,0), (0,1), (1,1)) → norm → 4C→2C."""

  def __init__(self, dim: int, out_dim: int, rngs: nnx.Rngs):
    self.norm = layer_norm(4 * dim, 1e-5, rngs)
    self.reduction = linear(4 * dim, out_dim, rngs, bias=False, kernel_init=_trunc02)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, h, w, c = x.shape
    if h % 2 or w % 2:
      raise ValueError(f'patch merging needs an even resolution, got {h}×{w}')
    # timm: reshape(B, H/2, 2, W/2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3).
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5)
    x = x.reshape(b, h // 2, w // 2, 4 * c)
    return self.reduction(self.norm(x))


class SwinStage(nnx.Module):
  """Optional patch merging, then `depth` blocks alternating plain/shifted windows."""

  def __init__(self, dim: int, out_dim: int, resolution: tuple[int, int], depth: int,
               downsample: bool, num_heads: int, window: int, mlp_ratio: float,
               rngs: nnx.Rngs):
    if downsample:
      self.downsample = PatchMerging(dim, out_dim, rngs)
      resolution = (resolution[0] // 2, resolution[1] // 2)
    else:
      if dim != out_dim:
        raise ValueError('a stage without patch merging keeps its width')
      self.downsample = None
    self.blocks = nnx.List([
        SwinBlock(out_dim, resolution, num_heads, window, 0 if j % 2 == 0 else window // 2,
                  mlp_ratio, rngs) for j in range(depth)])

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if self.downsample is not None:
      x = self.downsample(x)
    for block in self.blocks:
      x = block(x)
    return x


class PatchEmbed(nnx.Module):
  """patch×patch stride-patch convolution → LayerNorm, tokens kept as [B, H, W, C]."""

  def __init__(self, in_ch: int, dim: int, patch_size: int, rngs: nnx.Rngs):
    # torch's default Conv2d initialisation (Kaiming-uniform with a = √5).
    self.proj = nnx.Conv(
        in_ch, dim, (patch_size, patch_size), strides=(patch_size, patch_size),
        padding='VALID', use_bias=True,
        kernel_init=nnx.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'),
        bias_init=_zeros, rngs=rngs)
    self.norm = layer_norm(dim, 1e-5, rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return self.norm(self.proj(x))


class SwinTransformer(nnx.Module):
  """Swin Transformer; Swin-T (patch 4, window 7) by default.

  Args:
    num_classes: outputs of `head`.
    image_shape: (H, W, C) of the NHWC inputs (224×224 for Swin-T).
    rngs: initialisation keys.
    patch_size: side of the square patches.
    window_size: side of the attention windows.
    embed_dim: width of stage 1 (doubled by each patch merging).
    depths: blocks per stage (fewer only for tests).
    num_heads: attention heads per stage.
    mlp_ratio: MLP hidden width / block width.
  """

  def __init__(self, num_classes: int, image_shape: tuple[int, int, int], *,
               rngs: nnx.Rngs, patch_size: int = 4, window_size: int = 7,
               embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
               num_heads: Sequence[int] = (3, 6, 12, 24), mlp_ratio: float = 4.0):
    h, w, c = image_shape
    halvings = 2 ** (len(depths) - 1)
    if (h % patch_size or w % patch_size or (h // patch_size) % halvings
        or (w // patch_size) % halvings):
      raise UserError(f'Swin: input {h}×{w} is not a whole number of {patch_size}×'
                      f'{patch_size} patches halving {len(depths) - 1} times: resize the '
                      'inputs (config.augment.resize_to, e.g. 224)')
    if len(depths) != len(num_heads):
      raise ValueError('depths and num_heads need one entry per stage')
    self.patch_embed = PatchEmbed(c, embed_dim, patch_size, rngs)
    resolution = (h // patch_size, w // patch_size)
    stages = []
    dim = embed_dim
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
      out_dim = embed_dim * 2 ** i
      stages.append(SwinStage(dim, out_dim, resolution, depth, i > 0, heads,
                              window_size, mlp_ratio, rngs))
      if i > 0:
        resolution = (resolution[0] // 2, resolution[1] // 2)
      dim = out_dim
    self.layers = nnx.List(stages)
    self.norm = layer_norm(dim, 1e-5, rngs)
    self.head = linear(dim, num_classes, rngs, kernel_init=_trunc02)  # torch: head.fc
    self.num_classes = num_classes

  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    del train  # no dropout, drop-path or BatchNorm: both modes compute the same function
    x = self.patch_embed(x)
    for stage in self.layers:
      x = stage(x)
    x = self.norm(x)
    return self.head(jnp.mean(x, axis=(1, 2)))
