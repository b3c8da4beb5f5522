"""ViT-S/16 with timm's parameter layout (`vit_small_patch16_224`).

Patch embedding by a 16×16 stride-16 convolution, a learned class token
prepended, learned position embeddings added, 12 pre-norm blocks (LayerNorm
eps 1e-6 → multi-head self-attention → residual; LayerNorm → MLP with exact
(erf) GELU → residual), a final LayerNorm, and a linear head on the class token.

Parameters are named as in timm so that a `state_dict` converts by a table:
`patch_embed.proj`, `cls_token` (1, 1, D), `pos_embed` (1, 1 + N, D),
`blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`, `norm`,
`head`. torchvision's ViT (which the published DELETE code uses, with its
`heads.head` renamed `fc`) computes the same function; `delete_jax.convert`
renames its keys.

There is no dropout, stochastic depth or BatchNorm: train and eval mode compute
the same function (the published ViT-S/16 uses dropout 0 too), and the model
has no BatchStat variables. The building blocks (`layer_norm`, `Mlp`,
`attention`) are shared with the Swin Transformer.

Initialisation follows torchvision's ViT (the published code trains from it):
patch projection N(0, 1/fan_in), zero class token, position embeddings
N(0, 0.02), Xavier-uniform attention and MLP weights, zero head.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from delete_jax.errors import UserError

_xavier = nnx.initializers.xavier_uniform()
_zeros = nnx.initializers.zeros


def layer_norm(dim: int, epsilon: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
  """torch.nn.LayerNorm(dim, eps): two-pass variance, weight → scale, bias → bias."""
  return nnx.LayerNorm(dim, epsilon=epsilon, use_fast_variance=False, rngs=rngs)


def linear(in_dim: int, out_dim: int, rngs: nnx.Rngs, *, bias: bool = True,
           kernel_init=_xavier, bias_init=_zeros) -> nnx.Linear:
  return nnx.Linear(in_dim, out_dim, use_bias=bias, kernel_init=kernel_init,
                    bias_init=bias_init, rngs=rngs)


def attention(qkv: jnp.ndarray, num_heads: int,
              bias: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """Scaled dot-product multi-head attention from a fused qkv projection.

  Args:
    qkv: [B, N, 3·C], the output of a Linear(C, 3·C) whose output features are
      ordered (q | k | v) and, within each, head by head (timm's and
      torch.nn.MultiheadAttention's `in_proj` order).
    num_heads: heads H; each has C / H channels.
    bias: added to the attention logits before the softmax, broadcast against
      [B, H, N, N] (Swin's relative position bias and shifted-window mask).

  Returns:
    [B, N, C], heads concatenated in order (before the output projection).
  """
  b, n, c3 = qkv.shape
  c = c3 // 3
  head_dim = c // num_heads
  qkv = qkv.reshape(b, n, 3, num_heads, head_dim).transpose(2, 0, 3, 1, 4)
  q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, N, hd]
  logits = (q * head_dim ** -0.5) @ jnp.swapaxes(k, -1, -2)
  if bias is not None:
    logits = logits + bias
  weights = jax.nn.softmax(logits, axis=-1)
  return (weights @ v).transpose(0, 2, 1, 3).reshape(b, n, c)


class Mlp(nnx.Module):
  """fc1 → exact GELU → fc2 (timm's `Mlp`)."""

  def __init__(self, dim: int, hidden: int, rngs: nnx.Rngs, **init):
    self.fc1 = linear(dim, hidden, rngs, **init)
    self.fc2 = linear(hidden, dim, rngs, **init)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Attention(nnx.Module):
  """Global multi-head self-attention: qkv → attention → proj."""

  def __init__(self, dim: int, num_heads: int, rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f'dim {dim} is not divisible by {num_heads} heads')
    self.num_heads = num_heads
    self.qkv = linear(dim, 3 * dim, rngs)
    self.proj = linear(dim, dim, rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return self.proj(attention(self.qkv(x), self.num_heads))


class Block(nnx.Module):
  """Pre-norm transformer block: x + attn(norm1(x)); x + mlp(norm2(x))."""

  def __init__(self, dim: int, num_heads: int, mlp_dim: int, rngs: nnx.Rngs):
    self.norm1 = layer_norm(dim, 1e-6, rngs)
    self.attn = Attention(dim, num_heads, rngs)
    self.norm2 = layer_norm(dim, 1e-6, rngs)
    self.mlp = Mlp(dim, mlp_dim, rngs, bias_init=nnx.initializers.normal(1e-6))

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class PatchEmbed(nnx.Module):
  """Non-overlapping patches → tokens by a patch×patch stride-patch convolution."""

  def __init__(self, in_ch: int, dim: int, patch_size: int, rngs: nnx.Rngs):
    self.proj = nnx.Conv(
        in_ch, dim, (patch_size, patch_size), strides=(patch_size, patch_size),
        padding='VALID', use_bias=True,
        kernel_init=nnx.initializers.variance_scaling(1.0, 'fan_in', 'normal'),
        bias_init=_zeros, rngs=rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = self.proj(x)  # [B, h, w, D]
    # Row-major over (h, w): torch's flatten(2).transpose(1, 2) of NCHW.
    return x.reshape(x.shape[0], -1, x.shape[-1])


class VisionTransformer(nnx.Module):
  """ViT with a class token; ViT-S/16 by default.

  Args:
    num_classes: outputs of `head`.
    image_shape: (H, W, C) of the NHWC inputs; H and W must be multiples of
      `patch_size` (224×224 for ViT-S/16: 196 patches + the class token).
    rngs: initialisation keys.
    patch_size: side of the square patches.
    dim: token width D.
    depth: number of blocks (12 for ViT-S; fewer only for tests).
    num_heads: attention heads per block.
    mlp_dim: hidden width of the MLPs.
  """

  def __init__(self, num_classes: int, image_shape: tuple[int, int, int], *,
               rngs: nnx.Rngs, patch_size: int = 16, dim: int = 384, depth: int = 12,
               num_heads: int = 6, mlp_dim: int = 1536):
    h, w, c = image_shape
    if h % patch_size or w % patch_size:
      raise UserError(f'ViT: input {h}×{w} is not a whole number of {patch_size}×'
                      f'{patch_size} patches: resize the inputs (config.augment.resize_to, '
                      'e.g. 224)')
    num_tokens = 1 + (h // patch_size) * (w // patch_size)
    self.patch_embed = PatchEmbed(c, dim, patch_size, rngs)
    self.cls_token = nnx.Param(jnp.zeros((1, 1, dim), jnp.float32))
    self.pos_embed = nnx.Param(
        nnx.initializers.normal(0.02)(rngs.params(), (1, num_tokens, dim), jnp.float32))
    self.blocks = nnx.List([Block(dim, num_heads, mlp_dim, rngs) for _ in range(depth)])
    self.norm = layer_norm(dim, 1e-6, rngs)
    self.head = linear(dim, num_classes, rngs, kernel_init=_zeros)
    self.num_classes = num_classes

  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    del train  # no dropout and no BatchNorm: both modes compute the same function
    x = self.patch_embed(x)
    cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, x.shape[-1]))
    x = jnp.concatenate([cls, x], axis=1) + self.pos_embed[...]
    for block in self.blocks:
      x = block(x)
    x = self.norm(x)
    return self.head(x[:, 0])
