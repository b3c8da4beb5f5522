"""Layers whose semantics must match PyTorch exactly.

Flax's own BatchNorm updates its running variance with the biased batch variance;
PyTorch uses the unbiased one (n / (n - 1)). DELETE trains the student with
BatchNorm in train mode, so the running statistics it leaves behind are part of the
method's output. This BatchNorm offers both conventions.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx


class BatchNorm(nnx.Module):
  """BatchNorm over all axes but the last (NHWC or NC inputs).

  Attributes follow torch's `BatchNorm2d` one to one (weight→scale, bias→bias,
  running_mean→mean, running_var→var, num_batches_tracked→num_batches_tracked),
  so a state_dict converts by a table.

  Args:
    num_features: channels.
    momentum: weight of the new batch statistic in the running average, in the
      PyTorch convention (torch 0.1 ≙ Flax momentum 0.9).
    epsilon: added to the variance; torch's default 1e-5.
    unbiased_running_var: update the running variance with the unbiased batch
      variance as PyTorch does (True) or the biased one as Flax does (False).
  """

  def __init__(self, num_features: int, *, momentum: float = 0.1,
               epsilon: float = 1e-5, unbiased_running_var: bool = True,
               param_dtype=jnp.float32):
    self.scale = nnx.Param(jnp.ones((num_features,), param_dtype))
    self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))
    self.mean = nnx.BatchStat(jnp.zeros((num_features,), param_dtype))
    self.var = nnx.BatchStat(jnp.ones((num_features,), param_dtype))
    self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jnp.int32))
    self.momentum = momentum
    self.epsilon = epsilon
    self.unbiased_running_var = unbiased_running_var

  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    axes = tuple(range(x.ndim - 1))
    if train:
      mean = jnp.mean(x, axis=axes)
      var = jnp.mean(jnp.square(x - mean), axis=axes)  # biased: normalises
      n = x.size // x.shape[-1]
      running_var_update = var * (n / max(n - 1, 1)) if self.unbiased_running_var else var
      m = self.momentum
      old_mean, old_var = self.mean[...], self.var[...]
      self.mean[...] = (1 - m) * old_mean + m * mean.astype(old_mean.dtype)
      self.var[...] = (1 - m) * old_var + m * running_var_update.astype(old_var.dtype)
      self.num_batches_tracked[...] = self.num_batches_tracked[...] + 1
    else:
      mean, var = self.mean[...], self.var[...]
    inv = self.scale[...] * _rsqrt(var + self.epsilon)
    return (x - mean) * inv + self.bias[...]


def _rsqrt(x):
  # 1/sqrt rather than lax.rsqrt: identical to torch's formula in float64.
  return 1.0 / jnp.sqrt(x)


def conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0,
         *, bias: bool, rngs: nnx.Rngs, param_dtype=jnp.float32) -> nnx.Conv:
  """A 2-D convolution with torch's explicit symmetric padding.

  Flax's 'SAME' pads (0, 1) for stride-2 3×3 convolutions where torch's
  padding=1 pads (1, 1); explicit pads give torch's result for every stride.
  """
  return nnx.Conv(in_ch, out_ch, (kernel, kernel), strides=(stride, stride),
                  padding=((padding, padding), (padding, padding)), use_bias=bias,
                  kernel_init=nnx.initializers.kaiming_normal(),
                  param_dtype=param_dtype, rngs=rngs)


def max_pool(x: jnp.ndarray, window: int, stride: int, padding: int = 0) -> jnp.ndarray:
  """torch.nn.MaxPool2d (padding with -inf, floor mode) on NHWC inputs.

  Written as an elementwise maximum over the window's strided slices rather than
  `lax.reduce_window`: the gradient of reduce_window (select-and-scatter) is ~7×
  slower on XLA:CPU, and this form's gradient is plain elementwise selects. Ties
  share the gradient where torch picks the first maximum; after a ReLU, ties
  are zeros whose gradient the ReLU zeroes anyway.
  """
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)),
                constant_values=-jnp.inf)
  _, h, w, _ = x.shape
  out_h, out_w = (h - window) // stride + 1, (w - window) // stride + 1
  if window == stride and h == out_h * window and w == out_w * window:
    b, c = x.shape[0], x.shape[3]
    return x.reshape(b, out_h, window, out_w, window, c).max(axis=(2, 4))
  out = None
  for dy in range(window):
    for dx in range(window):
      piece = x[:, dy:dy + stride * (out_h - 1) + 1:stride,
                dx:dx + stride * (out_w - 1) + 1:stride, :]
      out = piece if out is None else jnp.maximum(out, piece)
  return out
