"""CIFAR-100, CIFAR-style ResNet-18 (3x3 stem, no max-pool) at 32x32.

Command:
  python -m delete_jax.main --config configs/cifar100_resnet18_cifar.py \
      --workdir runs/cifar100_resnet18_cifar

Protocol of the published code (SPEC.md section 3): as configs/
cifar100_resnet18.py but with the CIFAR variant of ResNet-18 on native 32x32
inputs (no resize): 150 epochs, SGD lr 0.1 (momentum 0.9, weight decay 5e-4),
x0.1 every 40 epochs, batch 128, best-test epoch kept; flip and 4-pixel
zero-padded crop, CIFAR-10 normalisation constants. Forget class 25 (first
entry of the CIFAR-100 permutation). DELETE: 20 epochs, batch 128, lr 5e-5.

What the published code reports here: SPEC.md records no number for this
setting.
"""

from configs import cifar100_resnet18


def get_config():
  """The CIFAR-100 ResNet-18 (32) setting: the 224 setting with the CIFAR-style net."""
  c = cifar100_resnet18.get_config()
  c.model = 'resnet18_cifar'
  c.augment.resize_to = 0
  return c
