"""Tests for the folder-based datasets: Tiny-ImageNet and VGGFace2.

Both are exercised on small generated folders with the real layouts; nothing
is downloaded. `make_tinyimagenet` and `make_vggface2` are also used by
tests/paper_configs_test.py.
"""

import io
import os
import socket
import time
import zipfile

import numpy as np
from PIL import Image
import pytest

from delete_jax import data
from delete_jax.data import datasets
from delete_jax.data import tinyimagenet
from delete_jax.data import vggface2
from delete_jax.errors import UserError
from delete_jax.state import ModelVars

# A protocol small enough to generate: identities with >= 5 images, the first
# 5 of them, 3 for pretraining; 3 train + 2 test images each.
SMALL_PROTOCOL = vggface2.Protocol(min_images=5, num_identities=5,
                                   num_pretrain=3, train_per_identity=3,
                                   test_per_identity=2)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
  def refuse(*args, **kwargs):
    del args, kwargs
    raise OSError('network access is disabled in folder_datasets_test.py')

  monkeypatch.setenv(datasets.OFFLINE_ENV_VAR, '1')
  monkeypatch.setattr(socket.socket, 'connect', refuse)
  monkeypatch.setattr(socket, 'create_connection', refuse)


def _one_line(error: pytest.ExceptionInfo) -> str:
  message = str(error.value)
  assert '\n' not in message
  return message


def _jpeg(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='JPEG', quality=95)
  return buffer.getvalue()


def _write(path: str, payload: bytes) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(payload)


# ------------------------------------------------------------ Tiny-ImageNet


def make_tinyimagenet(root: str, wnids: list[str], train_per_class: int,
                      val_labels: list[str], grayscale_first: bool = True,
                      seed: int = 0) -> dict[str, np.ndarray]:
  """Writes a tiny-imagenet-200 folder; returns {relative path: decoded RGB}.

  Args:
    root: The folder to create (it gets train/, val/, test/, wnids.txt).
    wnids: Class folder names, written to wnids.txt in this (unsorted) order.
    train_per_class: Images per class folder.
    val_labels: The wnid of each val image, in val_<k> order.
    grayscale_first: Make the first training image of the first wnid an 'L'
      JPEG, as a few real ones are.
    seed: Pixel noise seed.
  """
  rng = np.random.default_rng(seed)
  decoded = {}

  def put(rel: str, gray: bool = False) -> None:
    pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    if gray:
      payload = _jpeg(pixels[..., 0])
    else:
      payload = _jpeg(pixels)
    _write(os.path.join(root, *rel.split('/')), payload)
    with Image.open(io.BytesIO(payload)) as image:
      decoded[rel] = np.asarray(image.convert('RGB'))

  with open(_mkdirs(os.path.join(root, 'wnids.txt')), 'w') as f:
    f.write('\n'.join(wnids) + '\n')
  with open(os.path.join(root, 'words.txt'), 'w') as f:
    f.write(''.join(f'{w}\tthing {w}\n' for w in wnids))
  for c, wnid in enumerate(wnids):
    boxes = []
    for k in range(train_per_class):
      name = f'{wnid}_{k}.JPEG'
      put(f'train/{wnid}/images/{name}', gray=grayscale_first and c == 0
          and k == 0)
      boxes.append(f'{name}\t1\t2\t60\t61\n')
    with open(os.path.join(root, 'train', wnid, f'{wnid}_boxes.txt'),
              'w') as f:
      f.writelines(boxes)
  lines = []
  for k, wnid in enumerate(val_labels):
    put(f'val/images/val_{k}.JPEG')
    lines.append(f'val_{k}.JPEG\t{wnid}\t0\t3\t50\t63\n')
  with open(os.path.join(root, 'val', 'val_annotations.txt'), 'w') as f:
    f.writelines(lines)
  # The unlabelled official test images, which must be ignored.
  _write(os.path.join(root, 'test', 'images', 'test_0.JPEG'),
         _jpeg(np.zeros((64, 64, 3), np.uint8)))
  return decoded


def _mkdirs(path: str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return path


def _zip_folder(folder: str, archive: str, prefix: str) -> None:
  with zipfile.ZipFile(archive, 'w') as z:
    for directory, _, files in os.walk(folder):
      rel_dir = os.path.relpath(directory, folder)
      z.writestr(prefix + ('' if rel_dir == '.' else rel_dir + '/'), '')
      for name in files:
        rel = os.path.normpath(os.path.join(rel_dir, name))
        z.write(os.path.join(directory, name), prefix + rel)


_WNIDS = ['n03', 'n01', 'n02']     # wnids.txt order is not the class order
_VAL = ['n02', 'n03', 'n01', 'n01', 'n02']


def _rows(images, labels):
  return sorted((img.tobytes(), int(label)) for img, label in zip(images,
                                                                    labels))


@pytest.fixture(scope='module')
def tiny_folder(tmp_path_factory):
  """(data_dir, decoded images) with the folder in the manual dir."""
  data_dir = tmp_path_factory.mktemp('tfds_tiny')
  root = os.path.join(tinyimagenet.manual_dir(str(data_dir)),
                      tinyimagenet.FOLDER_NAME)
  decoded = make_tinyimagenet(root, _WNIDS, train_per_class=2,
                              val_labels=_VAL)
  return str(data_dir), decoded


def test_tinyimagenet_classes_from_sorted_wnids(tiny_folder):
  data_dir, decoded = tiny_folder
  start = time.time()
  ds = data.load_dataset('tinyimagenet', data_dir)
  print(f'Tiny-ImageNet (generated): prepared and loaded in '
        f'{time.time() - start:.1f} s')
  assert ds.name == 'tinyimagenet' and ds.num_classes == 3
  assert ds.train_images.shape == (6, 64, 64, 3)
  assert ds.test_images.shape == (5, 64, 64, 3)
  assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
  assert ds.mean == (0.4802, 0.4481, 0.3975)
  assert ds.std == (0.2302, 0.2265, 0.2262)
  class_of = {w: i for i, w in enumerate(sorted(_WNIDS))}   # n01 → 0 ...
  want_train = [(decoded[f'train/{w}/images/{w}_{k}.JPEG'], class_of[w])
                for w in _WNIDS for k in range(2)]
  want_test = [(decoded[f'val/images/val_{k}.JPEG'], class_of[w])
               for k, w in enumerate(_VAL)]
  assert _rows(ds.train_images, ds.train_labels) == _rows(*zip(*want_train))
  assert _rows(ds.test_images, ds.test_labels) == _rows(*zip(*want_test))
  np.testing.assert_array_equal(np.bincount(ds.test_labels), [2, 2, 1])
  # The grayscale JPEG became RGB with equal channels.
  gray = decoded['train/n03/images/n03_0.JPEG']
  assert np.array_equal(gray[..., 0], gray[..., 2])
  assert 'prepared offline from' in ds.source


def test_tinyimagenet_is_a_tfds_dataset_with_wnid_names(tiny_folder):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir, _ = tiny_folder
  data.load_dataset('tinyimagenet', data_dir)
  builder = tfds.builder('tinyimagenet', data_dir=data_dir)
  assert builder.is_prepared()
  assert builder.info.features['label'].names == sorted(_WNIDS)
  source = tfds.data_source('tinyimagenet', data_dir=data_dir,
                            download=False, try_gcs=False)
  assert len(source['test']) == 5
  example = source['test'][0]
  assert example['image'].shape == (64, 64, 3)


def test_tinyimagenet_second_load_hits_cache(tiny_folder, monkeypatch):
  data_dir, _ = tiny_folder
  first = data.load_dataset('tinyimagenet', data_dir)
  monkeypatch.setattr(datasets, '_read_prepared_arrays',
                      lambda *a: pytest.fail('must come from the cache'))
  second = data.load_dataset('tinyimagenet', data_dir)
  assert second.fingerprint() == first.fingerprint()


def test_tinyimagenet_zip_equals_folder(tiny_folder, tmp_path):
  folder_dir, _ = tiny_folder
  manual = tinyimagenet.manual_dir(str(tmp_path))
  os.makedirs(manual)
  _zip_folder(os.path.join(tinyimagenet.manual_dir(folder_dir),
                           tinyimagenet.FOLDER_NAME),
              os.path.join(manual, tinyimagenet.ARCHIVE_NAME),
              prefix='tiny-imagenet-200/')
  from_zip = data.load_dataset('tinyimagenet', str(tmp_path))
  from_folder = data.load_dataset('tinyimagenet', folder_dir)
  assert tinyimagenet.ARCHIVE_NAME in from_zip.source
  # Same example keys, so TFDS writes the same order: identical arrays.
  assert from_zip.fingerprint() == from_folder.fingerprint()


def test_tinyimagenet_missing_data_names_the_place(tmp_path):
  start = time.time()
  with pytest.raises(UserError) as error:
    data.load_dataset('tinyimagenet', str(tmp_path))
  assert time.time() - start < 5
  message = _one_line(error)
  assert tinyimagenet.manual_dir(str(tmp_path)) in message
  assert 'tiny-imagenet-200.zip' in message
  assert 'tiny-imagenet-200/' in message


def test_tinyimagenet_rejects_unknown_val_wnid(tmp_path):
  root = tinyimagenet.manual_dir(str(tmp_path))
  make_tinyimagenet(root, ['n01', 'n02'], 1, ['n01', 'n09'])
  with pytest.raises(UserError) as error:
    data.load_dataset('tinyimagenet', str(tmp_path))
  assert 'n09' in _one_line(error)


def test_tinyimagenet_rejects_wrong_image_size(tmp_path):
  root = tinyimagenet.manual_dir(str(tmp_path))
  make_tinyimagenet(root, ['n01', 'n02'], 1, ['n01'])
  _write(os.path.join(root, 'train', 'n02', 'images', 'n02_0.JPEG'),
         _jpeg(np.zeros((32, 48, 3), np.uint8)))
  with pytest.raises(UserError) as error:
    data.load_dataset('tinyimagenet', str(tmp_path))
  assert '48x32' in _one_line(error)


def test_tinyimagenet_read_layout_ignores_boxes_and_test(tmp_path):
  make_tinyimagenet(str(tmp_path), _WNIDS, 2, _VAL)
  # pylint: disable-next=protected-access
  tree = tinyimagenet._SourceTree(str(tmp_path))
  wnids, train, test = tinyimagenet.read_layout(tree)
  assert wnids == ['n01', 'n02', 'n03']
  assert all('/images/' in path for path, _ in train)
  assert [label for _, label in train] == [0, 0, 1, 1, 2, 2]
  assert dict(test) == {f'val/images/val_{k}.JPEG': wnids.index(w)
                        for k, w in enumerate(_VAL)}


# ----------------------------------------------------------------- VGGFace2


def _face_color(identity: int, index: int) -> tuple[int, int, int]:
  return (40 + 4 * identity, 20 + 9 * index, 200 - 7 * identity)


def make_vggface2(root: str, counts: dict[str, int],
                  sizes: tuple[tuple[int, int], ...] = ((40, 30), (24, 36))
                  ) -> None:
  """Writes identity folders; image k of identity i is a flat `_face_color`.

  Identity numbers follow the sorted names; image sizes (W, H) cycle through
  `sizes` so that resizing squashes several aspect ratios.
  """
  for i, name in enumerate(sorted(counts)):
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    for k in range(counts[name]):
      width, height = sizes[k % len(sizes)]
      pixels = np.empty((height, width, 3), np.uint8)
      pixels[...] = _face_color(i, k)
      # Files named so that sorted order is image order.
      _write(os.path.join(folder, f'{k:04d}_01.jpg'), _jpeg(pixels))
    _write(os.path.join(folder, 'notes.txt'), b'not an image')


# Sorted by count (desc) then name: d(9), g(9), a(7), b(7), f(6), e(5);
# c(4) has too few. Pretrain: d, g, a; fine-tune: b, f; e is not used.
_COUNTS = {'id_a': 7, 'id_b': 7, 'id_c': 4, 'id_d': 9, 'id_e': 5, 'id_f': 6,
           'id_g': 9}


@pytest.fixture
def small_protocol(monkeypatch):
  monkeypatch.setattr(vggface2, 'PROTOCOL', SMALL_PROTOCOL)


def test_vggface2_published_protocol_numbers():
  p = vggface2.PROTOCOL
  assert (p.min_images, p.num_identities, p.num_pretrain,
          p.train_per_identity, p.test_per_identity) == (500, 110, 100, 400,
                                                         100)
  assert vggface2.DEFAULT_IMAGE_SIZE == 128


def test_vggface2_selection_rule(tmp_path):
  make_vggface2(str(tmp_path), _COUNTS)
  listed = vggface2.list_identities(str(tmp_path))
  assert [i.name for i in listed] == sorted(_COUNTS)
  assert all(f.endswith('.jpg') for i in listed for f in i.files)
  selected = vggface2.select_identities(listed, SMALL_PROTOCOL)
  assert [i.name for i in selected] == ['id_d', 'id_g', 'id_a', 'id_b', 'id_f']
  pretrain = vggface2.variant_identities(selected, 'vggface2_pretrain',
                                        SMALL_PROTOCOL)
  assert [i.name for i in pretrain] == ['id_d', 'id_g', 'id_a']
  assert [i.name for i in vggface2.variant_identities(
      selected, 'vggface2', SMALL_PROTOCOL)] == ['id_b', 'id_f']
  train, test = vggface2.split_files(selected[0], SMALL_PROTOCOL)
  assert train == ('0000_01.jpg', '0001_01.jpg', '0002_01.jpg')
  assert test == ('0003_01.jpg', '0004_01.jpg')


def test_vggface2_too_few_identities(tmp_path):
  make_vggface2(str(tmp_path), {'a': 5, 'b': 4})
  with pytest.raises(UserError) as error:
    vggface2.select_identities(vggface2.list_identities(str(tmp_path)),
                               SMALL_PROTOCOL)
  assert 'only 1 VGGFace2 identities have at least 5 images' in _one_line(
      error)


@pytest.mark.parametrize('layout', ['direct', 'train_subfolder'])
def test_vggface2_load_both_variants(tmp_path, small_protocol, layout):
  del small_protocol
  manual = vggface2.manual_dir(str(tmp_path))
  make_vggface2(manual if layout == 'direct' else os.path.join(manual, 'train'),
                _COUNTS)
  names = sorted(_COUNTS)
  for dataset_name, identities in (('vggface2_pretrain@16', ['id_d', 'id_g',
                                                             'id_a']),
                                   ('vggface2@16', ['id_b', 'id_f'])):
    ds = data.load_dataset(dataset_name, str(tmp_path))
    assert ds.name == dataset_name.split('@')[0]
    assert ds.num_classes == len(identities)
    assert ds.train_images.shape == (3 * len(identities), 16, 16, 3)
    assert ds.test_images.shape == (2 * len(identities), 16, 16, 3)
    assert (ds.mean, ds.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for split, first in (('train', 0), ('test', 3)):
      images = getattr(ds, f'{split}_images')
      labels = getattr(ds, f'{split}_labels')
      per = 3 if split == 'train' else 2
      np.testing.assert_array_equal(labels, np.repeat(np.arange(
          len(identities)), per))
      for row, (image, label) in enumerate(zip(images, labels)):
        # Flat colours survive JPEG and resizing up to a small error.
        want = _face_color(names.index(identities[label]), first + row % per)
        assert np.abs(image.astype(int) - want).max() <= 3, (split, row)
    assert f'{len(identities)} identities' in ds.source


def test_vggface2_default_size_and_cache(tmp_path, small_protocol, monkeypatch):
  del small_protocol
  make_vggface2(vggface2.manual_dir(str(tmp_path)), _COUNTS)
  first = data.load_dataset('vggface2', str(tmp_path))
  assert first.train_images.shape[1:] == (128, 128, 3)
  cache_dir = os.path.join(str(tmp_path), 'delete_jax_arrays')
  assert sorted(os.listdir(cache_dir)) == [
      f'vggface2-128px-{SMALL_PROTOCOL.tag()}.json',
      f'vggface2-128px-{SMALL_PROTOCOL.tag()}.npz']
  monkeypatch.setattr(vggface2, 'build_arrays',
                      lambda *a: pytest.fail('must come from the cache'))
  assert data.load_dataset(' VGGFace2 ', str(tmp_path)).fingerprint() == \
      first.fingerprint()


@pytest.mark.parametrize('name,fragment', [
    ('vggface2@', 'unknown dataset'),
    ('vggface2_test', 'unknown dataset'),
    ('vggface2@4', 'outside [8, 1024]'),
])
def test_vggface2_bad_names(name, fragment, tmp_path):
  with pytest.raises(UserError) as error:
    data.load_dataset(name, str(tmp_path))
  assert fragment in _one_line(error)


def test_vggface2_missing_folder_names_the_place(tmp_path):
  with pytest.raises(UserError) as error:
    data.load_dataset('vggface2', str(tmp_path))
  assert vggface2.manual_dir(str(tmp_path)) in _one_line(error)


# ------------------------------------------------ fine-tuning warm start


def _pretrained_workdir(workdir, complete=True, model='cnn', num_classes=3):
  """Writes what a finished pretraining run leaves: original/{,best/}."""
  # pylint: disable=g-import-not-at-top
  from delete_jax.checkpointing import StageCheckpoints
  from delete_jax.models import create_model
  from delete_jax.state import split_model
  # pylint: enable=g-import-not-at-top
  _, variables = split_model(create_model(model, num_classes, (8, 8, 1),
                                          seed=7))
  provenance = {'stage': 'original', 'settings': {}, 'model': model,
                'num_classes': num_classes, 'image_shape': [8, 8, 1]}
  stage = os.path.join(str(workdir), 'original')
  StageCheckpoints(os.path.join(stage, 'best'), provenance, keep=1).save(
      3, variables, {'epoch': 3})
  StageCheckpoints(stage, provenance).save(
      30, {'step': np.int32(30)}, {'complete': complete})
  return variables


def test_warm_start_copies_all_but_the_head(tmp_path):
  # pylint: disable=g-import-not-at-top
  import jax
  from delete_jax.models import create_model
  from delete_jax.state import split_model
  # pylint: enable=g-import-not-at-top
  pretrained = _pretrained_workdir(tmp_path)
  _, fresh = split_model(create_model('cnn', 2, (8, 8, 1), seed=0))
  assert vggface2.warm_start_vars('', fresh, 'cnn') is fresh
  warm = vggface2.warm_start_vars(str(tmp_path), fresh, 'cnn')
  assert isinstance(warm, ModelVars)
  for name in fresh.params:
    want = fresh.params[name] if name == 'fc2' else pretrained.params[name]
    for got_leaf, want_leaf in zip(jax.tree.leaves(warm.params[name]),
                                   jax.tree.leaves(want)):
      np.testing.assert_array_equal(got_leaf, want_leaf)
  assert warm.params['fc2']['kernel'].shape[-1] == 2
  assert jax.tree.structure(warm) == jax.tree.structure(fresh)


def test_warm_start_refusals(tmp_path):
  # pylint: disable=g-import-not-at-top
  from delete_jax.models import create_model
  from delete_jax.state import split_model
  # pylint: enable=g-import-not-at-top
  _, fresh = split_model(create_model('cnn', 2, (8, 8, 1)))
  with pytest.raises(UserError) as error:
    vggface2.warm_start_vars(str(tmp_path / 'none'), fresh, 'cnn')
  assert 'run the pretraining config' in _one_line(error)
  _pretrained_workdir(tmp_path / 'unfinished', complete=False)
  with pytest.raises(UserError) as error:
    vggface2.warm_start_vars(str(tmp_path / 'unfinished'), fresh, 'cnn')
  assert 'has not finished' in _one_line(error)
  _pretrained_workdir(tmp_path / 'done')
  with pytest.raises(UserError) as error:
    vggface2.warm_start_vars(str(tmp_path / 'done'), fresh, 'resnet18')
  assert 'holds a cnn model' in _one_line(error)
  _, wide = split_model(create_model('cnn', 2, (16, 16, 1)))
  with pytest.raises(UserError) as error:
    vggface2.warm_start_vars(str(tmp_path / 'done'), wide, 'cnn')
  assert 'has shape' in _one_line(error)
