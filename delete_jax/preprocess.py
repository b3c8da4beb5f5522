"""Input preprocessing on the device, inside the jitted steps.

Batches travel as uint8 and are turned into normalised floats here, so that no
per-step host work remains: crop with zero padding and horizontal flip (training
augmentation, keyed by the step's rng), optional resize (e.g. 32 → 224 for
ImageNet-layout models), and per-channel normalisation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """How images become model inputs.

  Attributes:
    mean: per-channel mean in [0, 1] pixel units.
    std: per-channel standard deviation in [0, 1] pixel units.
    crop_padding: zero padding of the random crop at native size (0 = no crop).
    flip: random horizontal flip (meaningless for digits; off there).
    resize_to: square output size after augmentation (None = native size).
  """
  mean: tuple[float, ...] = (0.0,)
  std: tuple[float, ...] = (1.0,)
  crop_padding: int = 0
  flip: bool = False
  resize_to: int | None = None

  @property
  def augments(self) -> bool:
    return self.crop_padding > 0 or self.flip

  def __call__(self, images: jnp.ndarray, rng: jax.Array | None, *,
               augment: bool, dtype=jnp.float32) -> jnp.ndarray:
    """uint8 (or already-float) NHWC images → normalised float NHWC."""
    return self.normalize(self.pixels(images, rng, augment=augment, dtype=dtype))

  def pixels(self, images: jnp.ndarray, rng: jax.Array | None, *, augment: bool,
             dtype=jnp.float32) -> jnp.ndarray:
    """Augmented (and resized) images in [0, 1] pixel space, before normalisation.

    uint8 images are scaled to [0, 1] in `dtype`; float images keep their own
    dtype and scale (so float64 cross-checks stay float64). Adversarial baselines
    perturb in this space (ε is given in [0, 1] pixel units).
    """
    if images.dtype == jnp.uint8:
      x = images.astype(dtype) / 255.0
    else:
      x = images
    if augment and self.augments:
      if rng is None:
        raise ValueError('augmentation needs an rng')
      crop_key, flip_key = jax.random.split(rng)
      if self.crop_padding > 0:
        x = random_crop(x, crop_key, self.crop_padding)
      if self.flip:
        x = random_flip(x, flip_key)
    if self.resize_to is not None and x.shape[1:3] != (self.resize_to, self.resize_to):
      x = jax.image.resize(x, (x.shape[0], self.resize_to, self.resize_to, x.shape[3]),
                           method='bilinear')
    return x

  def normalize(self, x: jnp.ndarray) -> jnp.ndarray:
    mean = jnp.asarray(self.mean, x.dtype)
    std = jnp.asarray(self.std, x.dtype)
    return (x - mean) / std


def random_crop(x: jnp.ndarray, rng: jax.Array, padding: int) -> jnp.ndarray:
  """Per-example random crop of the original size from a zero-padded image."""
  b, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = jax.random.randint(rng, (b, 2), 0, 2 * padding + 1)

  def crop_one(img, off):
    return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

  return jax.vmap(crop_one)(padded, offsets)


def random_flip(x: jnp.ndarray, rng: jax.Array) -> jnp.ndarray:
  """Flips each example left-right with probability 1/2."""
  flip = jax.random.bernoulli(rng, 0.5, (x.shape[0], 1, 1, 1))
  return jnp.where(flip, x[:, :, ::-1, :], x)
