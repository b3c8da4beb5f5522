"""Model registry: build a Flax NNX classifier by name."""

from __future__ import annotations

from typing import Callable

from flax import nnx

from delete_jax.errors import UserError
from delete_jax.models.cnn import SmallCNN
from delete_jax.models.resnet import ResNet18
from delete_jax.models.swin import SwinTransformer
from delete_jax.models.vgg import VGG16BN
from delete_jax.models.vit import VisionTransformer

_REGISTRY: dict[str, Callable[..., nnx.Module]] = {
    'cnn': lambda num_classes, image_shape, rngs: SmallCNN(num_classes, image_shape, rngs=rngs),
    'resnet18_cifar': lambda num_classes, image_shape, rngs: ResNet18(
        num_classes, image_shape, rngs=rngs, cifar=True),
    'resnet18': lambda num_classes, image_shape, rngs: ResNet18(
        num_classes, image_shape, rngs=rngs, cifar=False),
    # The published CIFAR VGG16-BN (32×32; no conv bias, 2048-256-256 classifier + fc).
    'vgg16_bn': lambda num_classes, image_shape, rngs: VGG16BN(
        num_classes, image_shape, rngs=rngs),
    # ViT-S/16 and Swin-T (224×224), timm layouts; no BatchNorm (empty batch_stats).
    'vit_s16': lambda num_classes, image_shape, rngs: VisionTransformer(
        num_classes, image_shape, rngs=rngs),
    'swin_t': lambda num_classes, image_shape, rngs: SwinTransformer(
        num_classes, image_shape, rngs=rngs),
}

MODEL_NAMES = tuple(sorted(_REGISTRY))


def create_model(name: str, num_classes: int, image_shape: tuple[int, int, int],
                 seed: int = 0) -> nnx.Module:
  """Builds model `name` for inputs of `image_shape` (H, W, C).

  Every model is called as `model(images, train=bool)` and returns logits.
  """
  if name not in _REGISTRY:
    raise UserError(f'unknown model {name!r}: choose one of {", ".join(MODEL_NAMES)} '
                    '(config.model)')
  return _REGISTRY[name](num_classes, tuple(image_shape), nnx.Rngs(seed))


# Where each architecture's output layer lives in its params (a Linear: kernel [in, C], bias [C]).
HEADS = {'cnn': 'fc2', 'resnet18_cifar': 'fc', 'resnet18': 'fc', 'vgg16_bn': 'fc',
         'vit_s16': 'head', 'swin_t': 'head'}


def head_name(name: str) -> str:
  if name not in HEADS:
    raise UserError(f'model {name!r} declares no output layer for head surgery')
  return HEADS[name]


def expand_head(params: dict, head: str, extra_kernel_column, extra_bias=0.0) -> dict:
  """Params with one more output: a new kernel column and bias entry (boundary expand)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  out = dict(params)
  layer = dict(params[head])
  layer['kernel'] = jnp.concatenate([layer['kernel'], extra_kernel_column[:, None]], axis=1)
  layer['bias'] = jnp.concatenate([layer['bias'], jnp.full((1,), extra_bias,
                                                           layer['bias'].dtype)])
  out[head] = layer
  return out


def prune_head(params: dict, head: str, num_classes: int) -> dict:
  """Drops outputs beyond `num_classes` (undoes `expand_head`)."""
  out = dict(params)
  layer = dict(params[head])
  layer['kernel'] = layer['kernel'][:, :num_classes]
  layer['bias'] = layer['bias'][:num_classes]
  out[head] = layer
  return out
