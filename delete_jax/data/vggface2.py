"""VGGFace2 identity subsets (SPEC.md section 3) from an image folder.

Two datasets are cut from one selection of identities:

* `vggface2_pretrain`: identities 0-99 of the selection (100 classes), used to
  pretrain the face classifier;
* `vggface2`: identities 100-109 (10 classes, labels 0-9), fine-tuned from the
  pretrained model and then unlearned.

Where the data must be
----------------------
`<data_dir>/downloads/manual/vggface2/` (`<data_dir>` = `config.data_dir`, else
`$TFDS_DATA_DIR`, else `~/tensorflow_datasets`) holds the identity folders of
the VGGFace2 training release, either directly (`n000002/0001_01.jpg`, ...) or
inside `train/` as `vggface2_train.tar.gz` extracts (when `train/` exists only
it is read). Nothing is downloaded: VGGFace2 is distributed on request only.

Selection rule (deterministic)
------------------------------
1. Identities = sub-folders; images = files ending in .jpg/.jpeg/.png (any
   case), in sorted file-name order.
2. Keep identities with at least 500 images.
3. Sort them by image count, descending; ties by folder name, ascending (the
   published code's tie order depends on the file system; this one does not).
4. The first 110 are used: positions 0-99 pretrain, 100-109 fine-tune/unlearn.
5. Per identity: the first 400 images (sorted names) train, the next 100 test;
   any further images are unused.
Fewer than 110 qualifying identities is an error. The numbers live in
`Protocol`; `PROTOCOL` is what `load_dataset` uses (tests shrink it).

Images and memory
-----------------
Each image is decoded once with Pillow (JPEG draft mode: the decoder scales
down by a power of two while staying at or above the target size), converted
to RGB and resized with bilinear, antialiased filtering to a square of
`DEFAULT_IMAGE_SIZE`=128 pixels, squashing the aspect ratio (no crop). The
models see 224x224: `augment.resize_to=224` upsamples on the device after the
crop/flip augmentation. Host memory (and cache file) per stored size:

  stored size    vggface2_pretrain (50,000 images)   vggface2 (5,000 images)
  112            1.9 GB                              0.19 GB
  128 (default)  2.5 GB                              0.25 GB
  224            7.5 GB                              0.75 GB

Another size is chosen in the dataset name: `vggface2@224`,
`vggface2_pretrain@112` (use the same size for pretraining and fine-tuning).

Arrays are cached as
`<data_dir>/delete_jax_arrays/<name>-<size>px-<protocol hash>.npz`, with a JSON
manifest of the identities and files next to it. The cache is not checked
against the folder: delete it after changing the folder.

Normalisation: the ImageNet constants, mean (0.485, 0.456, 0.406), std (0.229,
0.224, 0.225).

Fine-tuning from the pretrained model
-------------------------------------
`warm_start_vars` builds the initial variables of the 10-identity model from a
finished `vggface2_pretrain` run: every layer is copied except the output
layer, which keeps its fresh initialisation (100 → 10 classes). The training
stages use it when `config.train.init_from` names the pretraining workdir
(see configs/vggface2_resnet18.py).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import threading
import time
from typing import Any

from absl import logging
import numpy as np
from PIL import Image

from delete_jax.data import datasets
from delete_jax.errors import UserError

NAMES = ('vggface2', 'vggface2_pretrain')
MANUAL_SUBDIR = 'vggface2'
DEFAULT_IMAGE_SIZE = 128
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

_IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
_NAME_PATTERN = re.compile(r'^(vggface2|vggface2_pretrain)(?:@(\d+))?$')
_MIN_SIZE, _MAX_SIZE = 8, 1024


@dataclasses.dataclass(frozen=True)
class Protocol:
  """The numbers of the selection rule (module docstring).

  Attributes:
    min_images: Identities need at least this many images.
    num_identities: How many of the sorted qualifying identities are used.
    num_pretrain: The first this many are the pretraining identities; the
      rest are the fine-tune/unlearn identities.
    train_per_identity: Training images per identity (first in name order).
    test_per_identity: Test images per identity (the next ones).
  """
  min_images: int = 500
  num_identities: int = 110
  num_pretrain: int = 100
  train_per_identity: int = 400
  test_per_identity: int = 100

  def __post_init__(self):
    if not 0 < self.num_pretrain < self.num_identities:
      raise ValueError(f'need 0 < num_pretrain < num_identities: {self}')
    if (min(self.train_per_identity, self.test_per_identity) < 1 or
        self.train_per_identity + self.test_per_identity > self.min_images):
      raise ValueError(f'train + test images per identity must be positive '
                       f'and at most min_images: {self}')

  def tag(self) -> str:
    """A short hash of the numbers, for cache file names."""
    text = json.dumps(dataclasses.asdict(self), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


# The published protocol; `load` uses it.
PROTOCOL = Protocol()


@dataclasses.dataclass(frozen=True)
class Identity:
  """One identity folder: its name and its image files in sorted order."""
  name: str
  files: tuple[str, ...]


def parse_name(name: str) -> tuple[str, int]:
  """'vggface2@224' → ('vggface2', 224); the size defaults to 128.

  Raises:
    UserError: Not a VGGFace2 dataset name, or a size out of range.
  """
  match = _NAME_PATTERN.match(name.strip().lower())
  if not match:
    raise UserError(f'unknown dataset {name!r}: use vggface2 or '
                    'vggface2_pretrain, optionally with the stored image size '
                    'as @<pixels> (e.g. vggface2@224)')
  size = int(match.group(2)) if match.group(2) else DEFAULT_IMAGE_SIZE
  if not _MIN_SIZE <= size <= _MAX_SIZE:
    raise UserError(f'{name}: stored image size {size} is outside '
                    f'[{_MIN_SIZE}, {_MAX_SIZE}]: use e.g. @128 or @224')
  return match.group(1), size


def manual_dir(data_dir: str) -> str:
  """Where the identity folders must be put for `data_dir`."""
  return os.path.join(data_dir, 'downloads', 'manual', MANUAL_SUBDIR)


def find_root(data_dir: str) -> str | None:
  """The folder holding the identity folders (`.../train` if present)."""
  manual = manual_dir(data_dir)
  train = os.path.join(manual, 'train')
  if os.path.isdir(train):
    return train
  return manual if os.path.isdir(manual) else None


def list_identities(root: str) -> list[Identity]:
  """All identity folders of `root` with their sorted image files."""
  identities = []
  with os.scandir(root) as entries:
    folders = sorted(e.name for e in entries if e.is_dir())
  for folder in folders:
    with os.scandir(os.path.join(root, folder)) as entries:
      files = sorted(e.name for e in entries
                     if e.is_file() and e.name.lower().endswith(
                         _IMAGE_EXTENSIONS))
    identities.append(Identity(folder, tuple(files)))
  return identities


def select_identities(identities: list[Identity],
                      protocol: Protocol = PROTOCOL) -> list[Identity]:
  """Applies steps 2-4 of the selection rule; returns `num_identities` ones.

  Raises:
    UserError: Fewer than `protocol.num_identities` identities qualify.
  """
  qualifying = [i for i in identities if len(i.files) >= protocol.min_images]
  qualifying.sort(key=lambda i: (-len(i.files), i.name))
  if len(qualifying) < protocol.num_identities:
    raise UserError(
        f'only {len(qualifying)} VGGFace2 identities have at least '
        f'{protocol.min_images} images, {protocol.num_identities} are needed: '
        'put the whole training release (8,631 identity folders) into the '
        'manual dir')
  return qualifying[:protocol.num_identities]


def split_files(identity: Identity,
                protocol: Protocol = PROTOCOL) -> tuple[tuple[str, ...],
                                                        tuple[str, ...]]:
  """Step 5: (train files, test files) of one identity."""
  train_end = protocol.train_per_identity
  test_end = train_end + protocol.test_per_identity
  return identity.files[:train_end], identity.files[train_end:test_end]


def variant_identities(selected: list[Identity], variant: str,
                       protocol: Protocol = PROTOCOL) -> list[Identity]:
  """The identities of `variant` in label order."""
  if variant == 'vggface2_pretrain':
    return selected[:protocol.num_pretrain]
  return selected[protocol.num_pretrain:protocol.num_identities]


def decode_image(path: str, size: int) -> np.ndarray:
  """Reads an image file as uint8 [size, size, 3] (squashed, not cropped)."""
  with Image.open(path) as image:
    image.draft('RGB', (size, size))  # JPEG only; a no-op for other formats
    rgb = image.convert('RGB')
    if rgb.size != (size, size):
      rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, np.uint8)


def build_arrays(root: str, variant: str, size: int,
                 protocol: Protocol = PROTOCOL
                 ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Decodes the images of `variant`; returns (arrays, manifest).

  Args:
    root: The folder of identity folders.
    variant: 'vggface2' or 'vggface2_pretrain'.
    size: Stored square image size in pixels.
    protocol: The selection numbers.

  Returns:
    `{train,test}_{images,labels}` arrays (identity-major, files in sorted
    order) and a JSON-serialisable manifest of identities and files.
  """
  listed = list_identities(root)
  selected = select_identities(listed, protocol)
  chosen = variant_identities(selected, variant, protocol)
  paths = {'train': [], 'test': []}
  labels = {'train': [], 'test': []}
  manifest = {'root': root, 'variant': variant, 'image_size': size,
              'protocol': dataclasses.asdict(protocol),
              'qualifying_identities': sum(
                  len(i.files) >= protocol.min_images for i in listed),
              'identities': []}
  for label, identity in enumerate(chosen):
    train_files, test_files = split_files(identity, protocol)
    for split, files in (('train', train_files), ('test', test_files)):
      paths[split].extend(os.path.join(root, identity.name, f) for f in files)
      labels[split].extend([label] * len(files))
    manifest['identities'].append({
        'label': label, 'name': identity.name,
        'num_images': len(identity.files),
        'train': list(train_files), 'test': list(test_files)})
  arrays = {}
  workers = min(32, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for split in ('train', 'test'):
      images = np.empty((len(paths[split]), size, size, 3), np.uint8)

      def fill(index, split=split, images=images):
        images[index] = decode_image(paths[split][index], size)

      # Pillow releases the GIL while decoding and resizing.
      list(pool.map(fill, range(len(paths[split]))))
      arrays[f'{split}_images'] = images
      arrays[f'{split}_labels'] = np.asarray(labels[split], np.int32)
  return arrays, manifest


def _manifest_digest(manifest: dict[str, Any]) -> str:
  text = json.dumps(manifest['identities'], sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def load(name: str, data_dir: str) -> datasets.ImageDataset:
  """Loads `vggface2[_pretrain][@size]` from the cache or the image folder.

  Args:
    name: Dataset name (see `parse_name`).
    data_dir: Resolved data dir (see `datasets.load_dataset`).

  Raises:
    UserError: Bad name, missing folder, too few qualifying identities.
  """
  variant, size = parse_name(name)
  protocol = PROTOCOL
  num_classes = (protocol.num_pretrain if variant == 'vggface2_pretrain'
                 else protocol.num_identities - protocol.num_pretrain)
  # pylint: disable=protected-access
  cache_path = os.path.join(data_dir, datasets._CACHE_DIRNAME,
                            f'{variant}-{size}px-{protocol.tag()}.npz')
  cached = datasets._read_cache(cache_path)
  if cached is not None:
    arrays, cached_classes, source = cached
    if cached_classes != num_classes:
      cached = None
  if cached is None:
    root = find_root(data_dir)
    if root is None:
      raise UserError(
          f'VGGFace2 not found: put the identity folders of the VGGFace2 '
          f'training release (n000002/, ... or train/n000002/, ...) into '
          f'{manual_dir(data_dir)}')
    start = time.time()
    logging.info('Reading %s from %s at %d px; this happens once.', variant,
                 root, size)
    arrays, manifest = build_arrays(root, variant, size, protocol)
    first, last = (manifest['identities'][0]['name'],
                   manifest['identities'][-1]['name'])
    source = (
        f'image folder {root}: {num_classes} identities {first}..{last} of '
        f'the {manifest["qualifying_identities"]} with >= '
        f'{protocol.min_images} images (count desc, name asc), '
        f'{protocol.train_per_identity}+{protocol.test_per_identity} images '
        f'each, {size}x{size} px, manifest {_manifest_digest(manifest)}')
    datasets._write_cache(cache_path, arrays, num_classes, source)
    _write_manifest(cache_path[:-len('.npz')] + '.json', manifest)
    logging.info('Loaded %s in %.1f s; cached in %s', variant,
                 time.time() - start, cache_path)
  # pylint: enable=protected-access
  return datasets.ImageDataset(name=variant, num_classes=num_classes,
                               mean=MEAN, std=STD, source=source, **arrays)


def _write_manifest(path: str, manifest: dict[str, Any]) -> None:
  tmp_path = f'{path}.tmp.{os.getpid()}.{threading.get_ident()}'
  try:
    with open(tmp_path, 'w') as f:
      json.dump(manifest, f, indent=1)
    os.replace(tmp_path, path)
  except OSError as e:
    logging.warning('Could not write manifest %s: %s', path, e)


# ---------------------------------------------------------------------------
# Fine-tuning from the pretrained model.


def _read_pretrained(init_from: str) -> tuple[dict[str, Any], str]:
  """Returns ({'params', 'batch_stats'} numpy tree, architecture name).

  `init_from` is the workdir of a finished pretraining run (its kept,
  best-epoch `original` model) or a converted checkpoint (meta.json).
  """
  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp
  from delete_jax import convert
  # pylint: enable=g-import-not-at-top
  path = os.path.abspath(os.path.expanduser(init_from))
  if os.path.isfile(os.path.join(path, 'meta.json')):
    variables, meta = convert.load_converted(path)
    return ({'params': variables.params,
             'batch_stats': variables.batch_stats}, meta.get('arch'))
  stage = os.path.join(path, 'original')
  best_dir = os.path.join(stage, 'best', 'checkpoints')
  last_dir = os.path.join(stage, 'checkpoints')
  if not os.path.isdir(best_dir):
    raise UserError(f'config.train.init_from={init_from}: no pretrained model '
                    f'in {stage}: run the pretraining config with --workdir '
                    f'{path} first, or name a converted checkpoint')
  composite = ocp.args.Composite(meta=ocp.args.JsonRestore())
  with ocp.CheckpointManager(last_dir) as manager:
    step = manager.latest_step()
    last_meta = (manager.restore(step, args=composite).meta
                 if step is not None else {})
  if not last_meta.get('complete'):
    raise UserError(f'config.train.init_from={init_from}: the pretraining in '
                    f'{stage} has not finished: rerun its command to complete '
                    'it')
  with ocp.CheckpointManager(best_dir) as manager:
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  return dict(restored.state), restored.meta.get('model')


def _path_key(path: tuple[Any, ...]) -> str:
  parts = []
  for entry in path:
    key = getattr(entry, 'key', getattr(entry, 'name', entry))
    parts.append(str(key))
  return '/'.join(parts)


def warm_start_vars(init_from: str, init_vars: Any, model_name: str) -> Any:
  """Initial variables for fine-tuning: all but the output layer pretrained.

  Args:
    init_from: '' (returns `init_vars` unchanged), the workdir of a finished
      pretraining run, or a converted checkpoint directory.
    init_vars: The freshly initialised `ModelVars` of the model to train.
    model_name: Its registry name; the pretrained model must be the same
      architecture.

  Returns:
    `ModelVars` with every leaf taken from the pretrained model except those
    of the output layer (`models.head_name`), which keep `init_vars`' values;
    dtypes follow `init_vars`.

  Raises:
    UserError: Missing or unfinished pretraining, another architecture, or a
      layer whose shape differs.
  """
  if not init_from:
    return init_vars
  # pylint: disable=g-import-not-at-top
  import jax
  from delete_jax import models
  from delete_jax.state import ModelVars
  # pylint: enable=g-import-not-at-top
  pretrained, arch = _read_pretrained(init_from)
  if arch != model_name:
    raise UserError(f'config.train.init_from={init_from} holds a {arch} model '
                    f'but config.model is {model_name}: use the same '
                    'architecture for pretraining and fine-tuning')
  head = models.head_name(model_name)
  flat = {_path_key(path): leaf for path, leaf in
          jax.tree_util.tree_flatten_with_path(pretrained)[0]}
  problems = []

  def take(collection):
    def pick(path, fresh):
      key = _path_key((collection,) + tuple(path))
      if collection == 'params' and _path_key(path).split('/')[0] == head:
        return fresh
      if key not in flat:
        problems.append(f'{key} missing')
        return fresh
      value = np.asarray(flat[key])
      if value.shape != np.shape(fresh):
        problems.append(f'{key} has shape {value.shape}, needs '
                        f'{np.shape(fresh)}')
        return fresh
      return value.astype(np.asarray(fresh).dtype)
    return pick

  params = jax.tree_util.tree_map_with_path(take('params'), init_vars.params)
  stats = jax.tree_util.tree_map_with_path(take('batch_stats'),
                                           init_vars.batch_stats)
  if problems:
    raise UserError(f'config.train.init_from={init_from} does not fit '
                    f'{model_name}: {"; ".join(problems[:3])}')
  logging.info('Fine-tuning from %s: all layers but %s pretrained.', init_from,
               head)
  return ModelVars(params, stats)
