"""Tests for delete_jax.data: loading, caching, offline behaviour, splits.

Nothing here downloads: every socket connect fails, and DELETE_JAX_OFFLINE=1
is set for the whole module. The Fashion-MNIST tests prepare the TFDS
dataset once per run from the Debian package's files in a temporary dir.
"""

import gzip
import hashlib
import io
import os
import socket
import tarfile
import time
import types

import numpy as np
import pytest

from delete_jax import data
from delete_jax.data import datasets
from delete_jax.errors import UserError

# The digits split and its fingerprint are provenance recorded in
# checkpoints; a change here means old checkpoints no longer match.
_DIGITS_FINGERPRINT = 'de043819b67c8e5b'
# Fashion-MNIST as prepared by TFDS 4.9.10 (its writer fixes the record
# order), from the Debian package's files.
_FASHION_MNIST_FINGERPRINT = '495579ef2a63edf5'


@pytest.fixture(scope='module', autouse=True)
def no_network():
  """Makes any attempt to open a connection fail loudly."""

  def refuse(*args, **kwargs):
    del args, kwargs
    raise OSError('network access is disabled in data_test.py')

  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(datasets.OFFLINE_ENV_VAR, '1')
    mp.setattr(socket.socket, 'connect', refuse)
    mp.setattr(socket.socket, 'connect_ex', refuse)
    mp.setattr(socket, 'create_connection', refuse)
    yield


def _one_line(error: pytest.ExceptionInfo) -> str:
  message = str(error.value)
  assert '\n' not in message
  return message


# ------------------------------------------------------------------ digits


def test_digits_shapes_and_dtypes():
  ds = data.load_dataset('digits')
  assert ds.name == 'digits'
  assert ds.train_images.shape == (1437, 8, 8, 1)
  assert ds.test_images.shape == (360, 8, 8, 1)
  assert ds.train_images.dtype == ds.test_images.dtype == np.uint8
  assert ds.train_labels.dtype == ds.test_labels.dtype == np.int32
  assert ds.num_classes == 10
  assert ds.train_images.max() == 255 and ds.train_images.min() == 0
  assert 'sklearn' in ds.source


def test_digits_split_is_stratified_and_disjoint():
  ds = data.load_dataset('digits')
  train_counts = np.bincount(ds.train_labels, minlength=10)
  test_counts = np.bincount(ds.test_labels, minlength=10)
  fractions = test_counts / (train_counts + test_counts)
  np.testing.assert_allclose(fractions, 0.2, atol=0.01)
  # Every digits image is distinct enough that the splits share none.
  train_rows = {row.tobytes() for row in ds.train_images}
  assert not any(row.tobytes() in train_rows for row in ds.test_images[:50])


def test_digits_normalisation_comes_from_train_split():
  ds = data.load_dataset('digits')
  pixels = ds.train_images.astype(np.float64) / 255.0
  assert ds.mean == pytest.approx((pixels.mean(),))
  assert ds.std == pytest.approx((pixels.std(),))


def test_digits_is_deterministic_and_fingerprint_stable():
  first, second = data.load_dataset('digits'), data.load_dataset('digits')
  for field in ('train_images', 'train_labels', 'test_images', 'test_labels'):
    np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
  assert first.fingerprint() == second.fingerprint() == _DIGITS_FINGERPRINT


def test_fingerprint_tracks_content_and_name():
  ds = data.load_dataset('digits')
  labels = ds.train_labels.copy()
  labels[0] = (labels[0] + 1) % 10
  changed = datasets.ImageDataset(
      name=ds.name, train_images=ds.train_images, train_labels=labels,
      test_images=ds.test_images, test_labels=ds.test_labels,
      num_classes=10, mean=ds.mean, std=ds.std, source=ds.source)
  renamed = datasets.ImageDataset(
      name='other', train_images=ds.train_images, train_labels=ds.train_labels,
      test_images=ds.test_images, test_labels=ds.test_labels,
      num_classes=10, mean=ds.mean, std=ds.std, source=ds.source)
  assert len({ds.fingerprint(), changed.fingerprint(),
              renamed.fingerprint()}) == 3
  assert len(ds.fingerprint()) == 16
  int(ds.fingerprint(), 16)


def test_arrays_are_read_only():
  ds = data.load_dataset('digits')
  with pytest.raises(ValueError):
    ds.train_images[0, 0, 0, 0] = 1


# ----------------------------------------------------------- Fashion-MNIST


@pytest.fixture(scope='module')
def fashion_mnist(tmp_path_factory):
  """Prepares Fashion-MNIST once from the Debian files: (data dir, dataset)."""
  if not os.path.isdir(datasets.DEBIAN_FASHION_MNIST_DIR):
    pytest.skip(f'{datasets.DEBIAN_FASHION_MNIST_DIR} is absent: run '
                '`apt-get install -y dataset-fashion-mnist` to run this test')
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  start = time.time()
  ds = data.load_dataset('fashion_mnist', data_dir)
  print(f'Fashion-MNIST first load (prepare + decode): '
        f'{time.time() - start:.1f} s')
  return data_dir, ds


def test_fashion_mnist_offline_through_tfds_builder(fashion_mnist):
  data_dir, ds = fashion_mnist
  assert ds.name == 'fashion_mnist'
  assert ds.train_images.shape == (60000, 28, 28, 1)
  assert ds.test_images.shape == (10000, 28, 28, 1)
  assert ds.train_images.dtype == np.uint8
  assert ds.train_labels.dtype == np.int32
  assert ds.num_classes == 10
  np.testing.assert_array_equal(np.bincount(ds.train_labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(ds.test_labels), [1000] * 10)
  assert (ds.mean, ds.std) == ((0.2860,), (0.3530,))
  assert ds.fingerprint() == _FASHION_MNIST_FINGERPRINT
  assert datasets.DEBIAN_FASHION_MNIST_DIR in ds.source
  assert ds.source.startswith('tfds:fashion_mnist')
  # The catalog layout: a prepared array_record dataset TFDS itself can read.
  version_dir = os.path.join(data_dir, 'fashion_mnist', '3.0.1')
  assert os.path.exists(os.path.join(version_dir, 'dataset_info.json'))
  assert any('array_record' in f for f in os.listdir(version_dir))


def test_fashion_mnist_staged_files_are_the_upstream_files(fashion_mnist):
  data_dir, _ = fashion_mnist
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  registry = tfds.builder_cls('fashion_mnist').url_infos
  manual_dir = os.path.join(data_dir, 'downloads', 'manual', 'fashion_mnist')
  for info in registry.values():
    with open(os.path.join(manual_dir, info.filename), 'rb') as f:
      assert hashlib.sha256(f.read()).hexdigest() == info.checksum


def test_fashion_mnist_pixels_match_debian_files(fashion_mnist):
  _, ds = fashion_mnist

  def idx(name, header):
    path = os.path.join(datasets.DEBIAN_FASHION_MNIST_DIR, name)
    with gzip.open(path) as f:
      return np.frombuffer(f.read(), np.uint8, offset=header)

  def sorted_rows(images, labels):
    # TFDS shuffles records when writing, so compare as multisets of rows.
    rows = np.concatenate([images.reshape(len(labels), -1),
                           labels.astype(np.uint8)[:, None]], axis=1)
    rows = np.ascontiguousarray(rows)
    return np.sort(rows.view(np.dtype((np.void, rows.shape[1]))).ravel())

  for split, prefix in (('train', 'train'), ('test', 't10k')):
    raw_images = idx(f'{prefix}-images-idx3-ubyte.gz', 16)
    raw_labels = idx(f'{prefix}-labels-idx1-ubyte.gz', 8)
    np.testing.assert_array_equal(
        sorted_rows(raw_images, raw_labels),
        sorted_rows(getattr(ds, f'{split}_images'),
                    getattr(ds, f'{split}_labels')))


def test_fashion_mnist_second_load_hits_cache(fashion_mnist, monkeypatch):
  data_dir, first = fashion_mnist

  def fail(*args, **kwargs):
    raise AssertionError('the second load must come from the array cache')

  monkeypatch.setattr(datasets, '_read_prepared_arrays', fail)
  monkeypatch.setattr(datasets, '_prepare', fail)
  start = time.time()
  second = data.load_dataset('fashion_mnist', data_dir)
  elapsed = time.time() - start
  assert elapsed < 2.0, f'cached load took {elapsed:.2f} s'
  assert second.fingerprint() == first.fingerprint()
  assert second.source == first.source


def test_fashion_mnist_without_debian_files_fails_fast(tmp_path, monkeypatch):
  monkeypatch.setattr(datasets, 'DEBIAN_FASHION_MNIST_DIR',
                      str(tmp_path / 'absent'))
  start = time.time()
  with pytest.raises(UserError) as error:
    data.load_dataset('fashion_mnist', str(tmp_path / 'tfds'))
  assert time.time() - start < 5.0
  message = _one_line(error)
  assert 'fashion_mnist not found in' in message
  assert 'apt-get install -y dataset-fashion-mnist' in message


# ---------------------------------------------------- CIFAR without network


def test_cifar10_offline_empty_dir_fails_fast(tmp_path):
  start = time.time()
  with pytest.raises(UserError) as error:
    data.load_dataset('cifar10', str(tmp_path))
  assert time.time() - start < 5.0
  message = _one_line(error)
  assert 'cifar10 not found in' in message and str(tmp_path) in message
  assert datasets.OFFLINE_ENV_VAR in message
  assert 'cifar-10-binary.tar.gz' in message


def _fake_cifar_archive(path, name, num_train_per_file, num_test):
  """Writes a tiny CIFAR binary-format archive; returns its examples."""
  rng = np.random.default_rng(0)
  if name == 'cifar10':
    prefix, train_files, test_files = (
        'cifar-10-batches-bin/', [f'data_batch_{i}.bin' for i in range(1, 6)],
        ['test_batch.bin'])
    label_files = {'batches.meta.txt': [f'class{i}' for i in range(10)]}
    label_sizes, fine_index = (10,), 0
  else:
    prefix, train_files, test_files = (
        'cifar-100-binary/', ['train.bin'], ['test.bin'])
    label_files = {'coarse_label_names.txt': [f'coarse{i}' for i in range(20)],
                   'fine_label_names.txt': [f'fine{i}' for i in range(100)]}
    label_sizes, fine_index = (20, 100), 1
  members, examples = {}, {'train': [], 'test': []}
  for split, files, count in (('train', train_files, num_train_per_file),
                              ('test', test_files, num_test)):
    for filename in files:
      records = []
      for _ in range(count):
        labels = [int(rng.integers(n)) for n in label_sizes]
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        records.append(bytes(labels) + image.transpose(2, 0, 1).tobytes())
        examples[split].append((image, labels[fine_index]))
      members[prefix + filename] = b''.join(records)
  for filename, names in label_files.items():
    members[prefix + filename] = ('\n'.join(names) + '\n').encode()
  with tarfile.open(path, 'w:gz') as tar:
    for member_name, payload in members.items():
      info = tarfile.TarInfo(member_name)
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
  return examples


@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
def test_cifar_prepares_from_manual_dir_without_tensorflow(
    name, tmp_path, monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  data_dir = tmp_path / 'tfds'
  manual_dir = data_dir / 'downloads' / 'manual' / name
  manual_dir.mkdir(parents=True)
  real_cls = datasets._tf_free_builder_cls(name)
  (url, registered), = real_cls.url_infos.items()
  archive = manual_dir / registered.filename
  examples = _fake_cifar_archive(archive, name, num_train_per_file=3,
                                 num_test=4)
  fake_info = tfds.download.checksums.UrlInfo(
      size=archive.stat().st_size,
      checksum=hashlib.sha256(archive.read_bytes()).hexdigest(),
      filename=registered.filename)
  # Same TF-free builder, with the registry entry swapped for the fake
  # archive's, so the whole manual-dir -> prepare -> data_source path runs.
  fake_cls = types.new_class(
      'Fake' + real_cls.__name__, (real_cls,), {'skip_registration': True},
      lambda ns: ns.update({'name': name, 'url_infos': {url: fake_info},
                            '__module__': __name__}))
  monkeypatch.setattr(datasets, '_tf_free_builder_cls', lambda _: fake_cls)

  ds = data.load_dataset(name, str(data_dir))
  assert ds.num_classes == (10 if name == 'cifar10' else 100)
  assert ds.train_images.shape == (len(examples['train']), 32, 32, 3)
  assert ds.test_images.shape == (len(examples['test']), 32, 32, 3)
  assert ds.mean == (0.4914, 0.4822, 0.4465)
  assert str(manual_dir) in ds.source
  for split in ('train', 'test'):
    want = sorted((img.tobytes(), label) for img, label in examples[split])
    got = sorted((img.tobytes(), int(label)) for img, label in zip(
        getattr(ds, f'{split}_images'), getattr(ds, f'{split}_labels')))
    assert got == want


# ------------------------------------------------------- bad names and dirs


def test_unknown_dataset_lists_known_names():
  with pytest.raises(UserError) as error:
    data.load_dataset('imagenet')
  message = _one_line(error)
  assert 'imagenet' in message
  for name in data.DATASET_NAMES:
    assert name in message


def test_data_dir_that_is_a_file(tmp_path):
  not_a_dir = tmp_path / 'file'
  not_a_dir.write_text('')
  with pytest.raises(UserError) as error:
    data.load_dataset('cifar10', str(not_a_dir))
  assert str(not_a_dir) in _one_line(error)
  assert 'not a directory' in str(error.value)


@pytest.mark.skipif(os.geteuid() == 0, reason='root ignores permission bits')
def test_data_dir_without_permission(tmp_path):
  locked = tmp_path / 'locked'
  locked.mkdir()
  locked.chmod(0)
  try:
    with pytest.raises(UserError) as error:
      data.load_dataset('cifar10', str(locked))
    assert str(locked) in _one_line(error)
  finally:
    locked.chmod(0o700)


def test_default_data_dir_follows_tfds_data_dir(tmp_path, monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'from_env'))
  with pytest.raises(UserError) as error:
    data.load_dataset('mnist')
  assert str(tmp_path / 'from_env') in str(error.value)


# -------------------------------------------------- resolve_forget_classes


@pytest.mark.parametrize('name,num_classes,count,want', [
    ('cifar10', 10, 1, (4,)),
    ('cifar10', 10, 3, (4, 3, 5)),
    ('cifar100', 100, 2, (25, 58)),
    ('cifar100', 100, 20, data.FORGET_PERMUTATIONS['cifar100']),
    ('tinyimagenet', 200, 2, (126, 162)),
    ('fashion_mnist', 10, 3, (4, 6, 2)),
    ('digits', 10, 1, (4,)),
])
def test_num_forget_takes_permutation_prefix(name, num_classes, count, want):
  assert data.resolve_forget_classes(name, num_classes, None, count) == want


def test_fallback_permutation_is_seeded_rng():
  want = tuple(int(c) for c in np.random.default_rng(0).permutation(10))
  assert data.forget_permutation('mnist', 10) == want
  assert data.resolve_forget_classes('mnist', 10, None, 9) == want[:9]


@pytest.mark.parametrize('given,want', [
    ('3,7', (3, 7)),
    (' 3 , 7 ', (3, 7)),
    ('[7, 3]', (7, 3)),
    ('5', (5,)),
    (5, (5,)),
    (np.int64(5), (5,)),
    ([3, 7], (3, 7)),
    ((9,), (9,)),
    (np.array([1, 2]), (1, 2)),
])
def test_explicit_forget_classes(given, want):
  got = data.resolve_forget_classes('cifar10', 10, given, None)
  assert got == want
  assert all(isinstance(c, int) and not isinstance(c, np.integer)
             for c in got)


@pytest.mark.parametrize('given,num_forget,fragment', [
    ('3', 1, 'only one'),
    (None, None, 'no forget classes'),
    ('10', None, 'outside [0, 10)'),
    ([-1], None, 'outside [0, 10)'),
    ('3,3', None, 'repeat 3'),
    ('', None, 'empty'),
    ([], None, 'empty'),
    ('3,x', None, 'not an integer'),
    ([1.5], None, 'not an integer'),
    ([True], None, 'not an integer'),
    (list(range(10)), None, 'all 10 classes'),
    (None, 10, 'all 10 classes'),
    (None, 0, 'at least 1'),
    (None, 2.0, 'must be an integer'),
])
def test_forget_class_errors(given, num_forget, fragment):
  with pytest.raises(UserError) as error:
    data.resolve_forget_classes('cifar10', 10, given, num_forget)
  assert fragment in _one_line(error)


def test_num_forget_beyond_published_prefix():
  with pytest.raises(UserError) as error:
    data.resolve_forget_classes('cifar100', 100, None, 21)
  assert 'exceeds the 20 known entries' in _one_line(error)


# ------------------------------------------------------------- class_split


def test_class_split_sizes_and_disjointness():
  ds = data.load_dataset('digits')
  split = data.class_split(ds, (0, 3))
  assert split.forget_classes == (0, 3)
  sizes = split.sizes()
  assert sizes['train_forget'] + sizes['train_remain'] == 1437
  assert sizes['test_forget'] + sizes['test_remain'] == 360
  want_train_forget = int(np.isin(ds.train_labels, (0, 3)).sum())
  assert sizes['train_forget'] == want_train_forget
  for part in ('train', 'test'):
    forget = getattr(split, f'{part}_forget')
    remain = getattr(split, f'{part}_remain')
    labels = getattr(ds, f'{part}_labels')
    assert forget.dtype == remain.dtype == np.int64
    assert np.all(np.diff(forget) > 0) and np.all(np.diff(remain) > 0)
    assert not np.intersect1d(forget, remain).size
    np.testing.assert_array_equal(np.union1d(forget, remain),
                                  np.arange(len(labels)))
    assert set(labels[forget]) == {0, 3}
    assert not set(labels[remain]) & {0, 3}


def test_class_split_accepts_resolved_string():
  ds = data.load_dataset('digits')
  assert data.class_split(ds, '7').sizes() == data.class_split(ds, [7]).sizes()


def test_class_split_rejects_empty_forget_set():
  images = np.zeros((4, 2, 2, 1), np.uint8)
  labels = np.array([0, 1, 0, 1], np.int32)
  ds = datasets.ImageDataset(
      name='tiny', train_images=images, train_labels=labels,
      test_images=images, test_labels=labels, num_classes=3,
      mean=(0.5,), std=(0.5,), source='test')
  with pytest.raises(UserError) as error:
    data.class_split(ds, [2])
  assert 'empty forget set' in _one_line(error)


def test_class_split_validates_classes():
  ds = data.load_dataset('digits')
  with pytest.raises(UserError):
    data.class_split(ds, [10])
