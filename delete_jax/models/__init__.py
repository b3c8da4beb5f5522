"""Model registry: build a Flax NNX classifier by name."""

from __future__ import annotations

from typing import Callable

from flax import nnx

from delete_jax.errors import UserError
from delete_jax.models.cnn import SmallCNN
from delete_jax.models.resnet import ResNet18

_REGISTRY: dict[str, Callable[..., nnx.Module]] = {
    'cnn': lambda num_classes, image_shape, rngs: SmallCNN(num_classes, image_shape, rngs=rngs),
    'resnet18_cifar': lambda num_classes, image_shape, rngs: ResNet18(
        num_classes, image_shape, rngs=rngs, cifar=True),
    'resnet18': lambda num_classes, image_shape, rngs: ResNet18(
        num_classes, image_shape, rngs=rngs, cifar=False),
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
