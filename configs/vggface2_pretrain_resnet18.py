"""VGGFace2 step 1 of 2: pretrain ResNet-18 on the 100 pretraining identities.

Needs the VGGFace2 training release's identity folders in
<data_dir>/downloads/manual/vggface2/ (see delete_jax/data/vggface2.py for the
selection rule: identities with >= 500 images, sorted by count, first 110;
identities 0-99 here, 100-109 in configs/vggface2_resnet18.py; 400 train + 100
test images each). Images are stored at 128x128
(`dataset='vggface2_pretrain@224'` stores them at 224, ~7.5 GB of host memory)
and resized to 224 on the device.

Command (trains the original model only; step 2 fine-tunes from it):
  python -m delete_jax.main --config configs/vggface2_pretrain_resnet18.py \
      --workdir runs/vggface2_pretrain

Protocol of the published code (SPEC.md section 3): 80 epochs, SGD lr 0.01
(momentum 0.9, weight decay 5e-4), x0.1 every 40 epochs, batch 64, best-test
epoch kept; ImageNet normalisation. Augmentation (not given by SPEC.md for
VGGFace2; ours, as for the other datasets): flip and 4-pixel zero-padded crop
at the stored size, then resize to 224.

What the published code reports here: SPEC.md records no number for this
setting.
"""

from configs import common


def get_config():
  """Pretraining on VGGFace2 identities 0-99."""
  c = common.get_config()
  c.mode = 'train'
  c.dataset = 'vggface2_pretrain'
  c.model = 'resnet18'
  c.augment.resize_to = 224
  c.train.epochs = 80
  c.train.batch_size = 64
  c.train.lr = 0.01
  # Unused by mode=train; these make mode=all on the 100 identities possible.
  c.unlearn.batch_size = 64
  c.unlearn.lr = 5e-5
  c.compare.lr_scale = 0.5
  return c
