"""Tiny-ImageNet (CS231n `tiny-imagenet-200`) as a TF-free TFDS dataset.

The TFDS catalog has no Tiny-ImageNet, so this module defines the builder
`Tinyimagenet` (registered as 'tinyimagenet', version 1.0.0). Like the catalog
builders in `datasets.py` it prepares the `array_record` format without
TensorFlow (images decoded with Pillow and stored as PNG) and is read back with
`tfds.data_source`; the decoded arrays are cached as
`<data_dir>/delete_jax_arrays/tinyimagenet-1.0.0.npz`, so only the first load
pays for preparation.

Where the data must be (manual download; nothing is fetched)
------------------------------------------------------------
Put ONE of these into `<data_dir>/downloads/manual/tinyimagenet/`, where
`<data_dir>` is `config.data_dir` (else `$TFDS_DATA_DIR`, else
`~/tensorflow_datasets`):

* `tiny-imagenet-200.zip`, as published at
  http://cs231n.stanford.edu/tiny-imagenet-200.zip (read in place, never
  extracted);
* the extracted folder `tiny-imagenet-200/`;
* the folder's contents themselves (`train/`, `val/`, `wnids.txt`, ...).

Layout read (the published one):

  train/<wnid>/images/<wnid>_<k>.JPEG     500 images per class
  train/<wnid>/<wnid>_boxes.txt           (ignored)
  val/images/val_<k>.JPEG                 10,000 images
  val/val_annotations.txt                 `val_<k>.JPEG<TAB><wnid><TAB>box`
  wnids.txt                               the 200 wnids (checked, not used)
  test/images/*.JPEG                      unlabelled (ignored)

Protocol (SPEC.md section 3)
----------------------------
* Class id = position of the wnid in the SORTED list of `train/` folder names
  (the published code's ImageFolder order). `wnids.txt`, when present, must
  name the same set; its own order is not used.
* Splits: 'train' = the `train/` images; 'test' = the 10,000 `val/` images
  with the labels of `val_annotations.txt` (the official test images have no
  labels).
* Images: 64x64x3 uint8; the few grayscale JPEGs become RGB (channel
  replicated, Pillow's `convert('RGB')`). Any other size is refused.
* Normalisation: mean (0.4802, 0.4481, 0.3975), std (0.2302, 0.2265, 0.2262).
"""

from __future__ import annotations

import io
import os
import time
import zipfile

from absl import logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from delete_jax.data import datasets
from delete_jax.errors import UserError

NAME = 'tinyimagenet'
VERSION = '1.0.0'
ARCHIVE_NAME = 'tiny-imagenet-200.zip'
FOLDER_NAME = 'tiny-imagenet-200'
URL = 'http://cs231n.stanford.edu/tiny-imagenet-200.zip'
IMAGE_SIZE = 64
MEAN = (0.4802, 0.4481, 0.3975)
STD = (0.2302, 0.2265, 0.2262)

_IMAGE_EXTENSIONS = ('.jpeg', '.jpg', '.png')
_VAL_ANNOTATIONS = 'val/val_annotations.txt'


def manual_dir(data_dir: str) -> str:
  """Where the zip or folder must be put for `data_dir`."""
  return os.path.join(data_dir, 'downloads', 'manual', NAME)


class _SourceTree:
  """Read access to the files of a `tiny-imagenet-200` folder or zip.

  Paths are relative to the dataset root (the directory that holds `train/`
  and `val/`), with '/' separators, whatever the container.
  """

  def __init__(self, path: str):
    self.path = path
    self._zip = None
    if os.path.isdir(path):
      self._root = path
      names = []
      for directory, _, files in os.walk(path):
        rel_dir = os.path.relpath(directory, path).replace(os.sep, '/')
        prefix = '' if rel_dir == '.' else rel_dir + '/'
        names.extend(prefix + f for f in files)
      self.names = sorted(names)
    else:
      self._zip = zipfile.ZipFile(path)
      members = [n for n in self._zip.namelist() if not n.endswith('/')]
      anchors = [n for n in members if n == _VAL_ANNOTATIONS
                 or n.endswith('/' + _VAL_ANNOTATIONS)]
      if not anchors:
        raise UserError(f'{path} holds no {_VAL_ANNOTATIONS}: it is not the '
                        f'Tiny-ImageNet archive ({URL})')
      self._prefix = min(anchors, key=len)[:-len(_VAL_ANNOTATIONS)]
      self.names = sorted(n[len(self._prefix):] for n in members
                          if n.startswith(self._prefix))

  def read(self, name: str) -> bytes:
    if self._zip is not None:
      return self._zip.read(self._prefix + name)
    with open(os.path.join(self._root, *name.split('/')), 'rb') as f:
      return f.read()

  def close(self) -> None:
    if self._zip is not None:
      self._zip.close()


def find_source(directory: str) -> str | None:
  """Returns the Tiny-ImageNet folder or zip inside `directory`, or None.

  Checked in this order: `directory` itself holding `val/val_annotations.txt`,
  `directory/tiny-imagenet-200/`, `directory/tiny-imagenet-200.zip`.
  """
  if os.path.isfile(os.path.join(directory, *_VAL_ANNOTATIONS.split('/'))):
    return directory
  folder = os.path.join(directory, FOLDER_NAME)
  if os.path.isfile(os.path.join(folder, *_VAL_ANNOTATIONS.split('/'))):
    return folder
  archive = os.path.join(directory, ARCHIVE_NAME)
  if os.path.isfile(archive):
    return archive
  return None


def _is_image(name: str) -> bool:
  return name.lower().endswith(_IMAGE_EXTENSIONS)


def read_layout(tree: _SourceTree) -> tuple[list[str], list[tuple[str, int]],
                                            list[tuple[str, int]]]:
  """Parses the layout: (sorted wnids, train (path, label), test (path, label)).

  Raises:
    UserError: No training folders, a `wnids.txt` naming other classes, or a
      validation annotation naming an unknown class or a missing image.
  """
  by_class: dict[str, list[str]] = {}
  for name in tree.names:
    parts = name.split('/')
    if (len(parts) == 4 and parts[0] == 'train' and parts[2] == 'images'
        and _is_image(parts[3])):
      by_class.setdefault(parts[1], []).append(name)
  if not by_class:
    raise UserError(f'{tree.path} holds no train/<wnid>/images/*.JPEG: it is '
                    f'not the Tiny-ImageNet folder ({URL})')
  wnids = sorted(by_class)
  label_of = {wnid: i for i, wnid in enumerate(wnids)}
  names = set(tree.names)
  if 'wnids.txt' in names:
    listed = tree.read('wnids.txt').decode().split()
    if set(listed) != set(wnids):
      raise UserError(
          f'{tree.path}: wnids.txt names {len(set(listed))} classes but train/ '
          f'holds {len(wnids)} class folders (e.g. '
          f'{sorted(set(listed) ^ set(wnids))[:3]} differ): re-extract '
          f'{ARCHIVE_NAME}')
  train = [(path, label_of[wnid]) for wnid in wnids
           for path in sorted(by_class[wnid])]
  test = []
  for line in tree.read(_VAL_ANNOTATIONS).decode().splitlines():
    fields = line.split('\t')
    if not line.strip():
      continue
    if len(fields) < 2:
      raise UserError(f'{tree.path}: malformed line in {_VAL_ANNOTATIONS}: '
                      f'{line!r}')
    filename, wnid = fields[0].strip(), fields[1].strip()
    if wnid not in label_of:
      raise UserError(f'{tree.path}: {_VAL_ANNOTATIONS} labels {filename} '
                      f'with {wnid}, which has no train/ folder')
    path = f'val/images/{filename}'
    if path not in names:
      raise UserError(f'{tree.path}: {path} named in {_VAL_ANNOTATIONS} is '
                      'missing')
    test.append((path, label_of[wnid]))
  if not test:
    raise UserError(f'{tree.path}: {_VAL_ANNOTATIONS} lists no images')
  return wnids, train, sorted(test)


def decode_image(data: bytes, name: str) -> np.ndarray:
  """JPEG/PNG bytes → uint8 [64, 64, 3] (grayscale and CMYK become RGB)."""
  with Image.open(io.BytesIO(data)) as image:
    rgb = np.asarray(image.convert('RGB'))
  if rgb.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
    raise UserError(f'{name} is {rgb.shape[1]}x{rgb.shape[0]}, but every '
                    f'Tiny-ImageNet image is {IMAGE_SIZE}x{IMAGE_SIZE}: '
                    f're-extract {ARCHIVE_NAME}')
  return rgb


class Tinyimagenet(tfds.core.GeneratorBasedBuilder):
  """Tiny-ImageNet-200; the `val/` images are the 'test' split."""

  name = NAME
  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {
      str(VERSION): 'train/ and val/ (as test) of tiny-imagenet-200.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Put {ARCHIVE_NAME} ({URL}) or its extracted {FOLDER_NAME}/ folder '
      f'into <data_dir>/downloads/manual/{NAME}/.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
            # Names (the sorted wnids) are set from the data when preparing.
            'label': tfds.features.ClassLabel(),
            'id': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='http://cs231n.stanford.edu/',
    )

  def _split_generators(self, dl_manager):
    source = find_source(os.fspath(dl_manager.manual_dir))
    if source is None:
      raise UserError(_missing_message(os.fspath(dl_manager.manual_dir)))
    tree = _SourceTree(source)
    try:
      wnids, train, test = read_layout(tree)
    finally:
      tree.close()
    self.info.features['label'].names = wnids
    return {'train': self._generate_examples(source, train),
            'test': self._generate_examples(source, test)}

  def _generate_examples(self, source, items):
    encode_png = datasets._encode_png  # pylint: disable=protected-access
    tree = _SourceTree(source)
    try:
      for path, label in items:
        image = decode_image(tree.read(path), path)
        # Key and id: the path inside the dataset, unique across splits.
        yield path, {'image': encode_png(image), 'label': label, 'id': path}
    finally:
      tree.close()


def _missing_message(directory: str) -> str:
  return (f'{NAME} data not found: put {ARCHIVE_NAME} (from {URL}) or its '
          f'extracted {FOLDER_NAME}/ folder into {directory}')


def load(data_dir: str) -> datasets.ImageDataset:
  """Loads Tiny-ImageNet from `data_dir` (prepared, cached, or manual files).

  Args:
    data_dir: Resolved TFDS data dir (see `datasets.load_dataset`).

  Returns:
    100,000 train and 10,000 test images (for the published data) as uint8
    [N, 64, 64, 3] with int32 labels in [0, 200).

  Raises:
    UserError: The manual data is missing or malformed, or `data_dir` cannot
      be written to prepare it.
  """
  # pylint: disable=protected-access
  cache_path = os.path.join(data_dir, datasets._CACHE_DIRNAME,
                            f'{NAME}-{VERSION}.npz')
  cached = datasets._read_cache(cache_path)
  if cached is not None:
    arrays, num_classes, source = cached
  else:
    start = time.time()
    builder = Tinyimagenet(data_dir=data_dir)
    if builder.is_prepared():
      source = f'tfds:{NAME} {VERSION} (read from {data_dir})'
    else:
      manual = manual_dir(data_dir)
      found = find_source(manual)
      if found is None:
        raise UserError(_missing_message(manual))
      datasets._ensure_writable(data_dir, f'prepare {NAME}')
      logging.info('Preparing %s in %s from %s; this happens once.', NAME,
                   data_dir, found)
      builder.download_and_prepare(
          file_format='array_record',
          download_config=tfds.download.DownloadConfig(
              manual_dir=manual, try_download_gcs=False))
      source = f'tfds:{NAME} {VERSION} (prepared offline from {found})'
      builder = Tinyimagenet(data_dir=data_dir)
    arrays = datasets._read_prepared_arrays(builder)
    num_classes = builder.info.features['label'].num_classes
    datasets._write_cache(cache_path, arrays, num_classes, source)
    logging.info('Loaded %s in %.1f s; decoded arrays cached in %s', NAME,
                 time.time() - start, cache_path)
  # pylint: enable=protected-access
  return datasets.ImageDataset(name=NAME, num_classes=num_classes, mean=MEAN,
                               std=STD, source=source, **arrays)
