"""Every paper config: published values, one training step and one DELETE step.

The step test loads each config, shrinks only what does not change the
architecture (batch 2; ResNet-18 at 64x64 and ViT-S/16 at 32x32 instead of
224x224; Swin-T stays at 224, its windows need it), builds the run context from
small offline data of the config's dataset (fake CIFAR archives prepared by the
TF-free TFDS builders, generated Tiny-ImageNet and VGGFace2 folders), and runs
one jitted training step and one DELETE step: shapes as the config implies,
finite losses, parameters moved.

`tfds.testing.mock_data` is not used: it cannot stand in for an `array_record`
data source without TensorFlow (its data source mock needs split metadata the
mocked builder does not have), so the CIFAR data is a tiny archive in the real
binary format instead, as in tests/data_test.py.
"""

import functools
import hashlib
import importlib
import io
import os
import socket
import tarfile
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from delete_jax import config_lib
from delete_jax import models
from delete_jax.context import build_context
from delete_jax.data import datasets
from delete_jax.data import resolve_forget_classes
from delete_jax.data import tinyimagenet
from delete_jax.data import vggface2
from delete_jax.methods import MethodInfo, get_method
from delete_jax.state import create_train_state, make_sgd
from delete_jax.steps import train_step, unlearn_step
from tests import folder_datasets_test

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# config: (dataset, model, resize_to, batch, train epochs, train lr,
#          unlearn lr, unlearn bn, first forget class) from SPEC.md section 3.
PUBLISHED = {
    'cifar10_resnet18': ('cifar10', 'resnet18', 224, 128, 150, 0.1, 1e-4,
                         'train', 4),
    'cifar10_vgg16': ('cifar10', 'vgg16_bn', 0, 128, 80, 0.01, 5e-5, 'train',
                      4),
    'cifar10_vit_s16': ('cifar10', 'vit_s16', 224, 128, 150, 0.1, 5e-5,
                        'train', 4),
    'cifar10_swin_t': ('cifar10', 'swin_t', 224, 64, 100, 0.01, 5e-5, 'train',
                       4),
    'cifar100_resnet18': ('cifar100', 'resnet18', 224, 128, 150, 0.1, 5e-5,
                          'train', 25),
    'cifar100_resnet18_cifar': ('cifar100', 'resnet18_cifar', 0, 128, 150, 0.1,
                                5e-5, 'train', 25),
    'tinyimagenet_resnet18': ('tinyimagenet', 'resnet18', 224, 64, 150, 0.1,
                              5e-5, 'frozen', 126),
    'vggface2_pretrain_resnet18': ('vggface2_pretrain', 'resnet18', 224, 64, 80,
                                   0.01, 5e-5, 'train', None),
    'vggface2_resnet18': ('vggface2', 'resnet18', 224, 64, 40, 0.01, 5e-5,
                          'train', 4),
}
NUM_CLASSES = {'cifar10': 10, 'cifar100': 100, 'tinyimagenet': 200,
               'vggface2': 10, 'vggface2_pretrain': 100}

# Reduced input size of the step test per model (None: keep the config's).
_TEST_RESIZE = {'resnet18': 64, 'vit_s16': 32, 'swin_t': None,
                'resnet18_cifar': None, 'vgg16_bn': None}

# Stand-in for the VGGFace2 protocol: 14 identities of >= 3 images, the first
# 4 pretrain, the other 10 the unlearning set (10 classes as in the real one).
_VGGFACE2_TEST_PROTOCOL = vggface2.Protocol(
    min_images=3, num_identities=14, num_pretrain=4, train_per_identity=2,
    test_per_identity=1)

# The steps are compiled once each; XLA's cheapest optimisation level halves
# compile time on CPU and leaves the computed function the same.
_FAST_COMPILE = {'xla_backend_optimization_level': 0,
                 'xla_llvm_disable_expensive_passes': True}


def _load(name):
  return importlib.import_module(f'configs.{name}').get_config()


# --------------------------------------------------------- published values


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_config_has_published_values(name):
  (dataset, model, resize, batch, epochs, lr, unlearn_lr, bn,
   first_forget) = PUBLISHED[name]
  c = _load(name)
  config_lib.validate(c)
  assert (c.dataset, c.model, c.augment.resize_to) == (dataset, model, resize)
  assert model in models.MODEL_NAMES
  assert (c.train.batch_size, c.unlearn.batch_size) == (batch, batch)
  assert (c.train.epochs, c.train.lr) == (epochs, lr)
  assert (c.train.momentum, c.train.weight_decay) == (0.9, 5e-4)
  assert (c.train.lr_decay_every_epochs, c.train.lr_decay_factor) == (40, 0.1)
  assert (c.unlearn.method, c.unlearn.epochs, c.unlearn.lr) == ('delete', 20,
                                                                unlearn_lr)
  assert (c.unlearn.momentum, c.unlearn.mask, c.unlearn.bn) == (0.9, 'label',
                                                                bn)
  assert c.unlearn.temperature == 1.0 and c.unlearn.augment
  assert (c.augment.crop_padding, c.augment.flip) == (4, True)
  assert c.compare.lr_scale == pytest.approx(unlearn_lr / 1e-4)
  assert c.forget_classes == '' and c.num_forget == 1
  if first_forget is not None:
    assert resolve_forget_classes(dataset, NUM_CLASSES[dataset], None,
                                  1) == (first_forget,)
  doc = importlib.import_module(f'configs.{name}').__doc__
  assert f'--config configs/{name}.py' in doc
  assert 'published code reports' in doc


def test_every_paper_config_file_is_covered():
  found = {f[:-3] for f in os.listdir(os.path.join(REPO, 'configs'))
           if f.startswith(('cifar', 'tinyimagenet', 'vggface2'))
           and f.endswith('.py')}
  assert found == set(PUBLISHED), (
      'a paper config without published values here, or one missing: add it '
      'to PUBLISHED')


def test_vggface2_fine_tune_starts_from_pretraining():
  pretrain, fine_tune = _load('vggface2_pretrain_resnet18'), _load(
      'vggface2_resnet18')
  assert pretrain.mode == 'train' and pretrain.train.init_from == ''
  assert fine_tune.train.init_from == ''
  assert pretrain.model == fine_tune.model
  assert 'init_from=runs/vggface2_pretrain' in importlib.import_module(
      'configs.vggface2_resnet18').__doc__


def test_run_script_knows_every_config():
  script = os.path.join(REPO, 'benchmarks', 'run_paper_setting.sh')
  assert os.access(script, os.X_OK)
  text = open(script).read()
  for name in PUBLISHED:
    assert name in text


# ------------------------------------------------------------------- data


def _fake_cifar_archive(path, name):
  """A CIFAR binary archive with every class in train and test."""
  if name == 'cifar10':
    prefix, num_classes = 'cifar-10-batches-bin/', 10
    train_files = [f'data_batch_{i}.bin' for i in range(1, 6)]
    test_files = ['test_batch.bin']
    label_files = {'batches.meta.txt': [f'class{i}' for i in range(10)]}
  else:
    prefix, num_classes = 'cifar-100-binary/', 100
    train_files, test_files = ['train.bin'], ['test.bin']
    label_files = {'coarse_label_names.txt': [f'c{i}' for i in range(20)],
                   'fine_label_names.txt': [f'f{i}' for i in range(100)]}
  rng = np.random.default_rng(0)
  members = {}
  for files, per_file in ((train_files, num_classes // len(train_files) * 2),
                          (test_files, num_classes)):
    label = 0
    for filename in files:
      records = []
      for _ in range(per_file):
        fine = label % num_classes
        label += 1
        header = bytes([fine]) if num_classes == 10 else bytes([fine // 5,
                                                                fine])
        image = rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)
        records.append(header + image.tobytes())
      members[prefix + filename] = b''.join(records)
  for filename, names in label_files.items():
    members[prefix + filename] = ('\n'.join(names) + '\n').encode()
  with tarfile.open(path, 'w:gz') as tar:
    for member_name, payload in members.items():
      info = tarfile.TarInfo(member_name)
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))


def _prepare_fake_cifar(data_dir, name):
  """Prepares a fake `name` through the TF-free builder (cached afterwards)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  manual = os.path.join(data_dir, 'downloads', 'manual', name)
  os.makedirs(manual)
  # pylint: disable-next=protected-access
  real_cls = datasets._tf_free_builder_cls(name)
  (url, registered), = real_cls.url_infos.items()
  archive = os.path.join(manual, registered.filename)
  _fake_cifar_archive(archive, name)
  with open(archive, 'rb') as f:
    payload = f.read()
  fake_info = tfds.download.checksums.UrlInfo(
      size=len(payload), checksum=hashlib.sha256(payload).hexdigest(),
      filename=registered.filename)
  fake_cls = types.new_class(
      'Fake' + real_cls.__name__, (real_cls,), {'skip_registration': True},
      lambda ns: ns.update({'name': name, 'url_infos': {url: fake_info},
                            '__module__': __name__}))
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(datasets, '_tf_free_builder_cls', lambda _: fake_cls)
    datasets.load_dataset(name, data_dir)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """One offline data dir with small data for every paper dataset."""

  def refuse(*args, **kwargs):
    del args, kwargs
    raise OSError('network access is disabled in paper_configs_test.py')

  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(datasets.OFFLINE_ENV_VAR, '1')
    mp.setattr(socket.socket, 'connect', refuse)
    mp.setattr(socket, 'create_connection', refuse)
    # Folders generated with the small protocol are read with it.
    mp.setattr(vggface2, 'PROTOCOL', _VGGFACE2_TEST_PROTOCOL)
    root = str(tmp_path_factory.mktemp('paper_data'))
    start = time.time()
    for name in ('cifar10', 'cifar100'):
      _prepare_fake_cifar(root, name)
    # 200 classes (the permutation's first entry is 126), one image each.
    wnids = [f'n{i:08d}' for i in range(200)]
    folder_datasets_test.make_tinyimagenet(
        os.path.join(tinyimagenet.manual_dir(root), tinyimagenet.FOLDER_NAME),
        wnids[::-1], train_per_class=1, val_labels=wnids[:20])
    folder_datasets_test.make_vggface2(
        vggface2.manual_dir(root),
        {f'n{i:06d}': 3 + (i % 2) for i in range(14)}, sizes=((48, 40),))
    print(f'paper data prepared in {time.time() - start:.1f} s')
    yield root


# ------------------------------------------------------------ step checks


def _compiled(fn, *args):
  return jax.jit(fn).lower(*args).compile(compiler_options=_FAST_COMPILE)


def _moved(before, after) -> bool:
  return any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(before), jax.tree.leaves(after)))


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_one_training_and_one_delete_step(name, data_dir, tmp_path):
  start = time.time()
  c = _load(name)
  c.data_dir = data_dir
  resize = _TEST_RESIZE[c.model]
  if resize is not None and c.augment.resize_to != resize:
    c.augment.resize_to = resize
  c.train.batch_size = c.unlearn.batch_size = 2
  ctx = build_context(c, str(tmp_path))
  ds = ctx.dataset
  num_classes = NUM_CLASSES[ds.name]
  if ds.name.startswith('vggface2'):
    num_classes = (4, 10)[ds.name == 'vggface2']
  assert ds.num_classes == num_classes
  head = ctx.init_vars.params[models.head_name(c.model)]
  assert head['kernel'].shape[-1] == head['bias'].shape[0] == num_classes
  assert len(ctx.split.train_forget) > 0

  # One training step of the original model's recipe.
  tx = make_sgd(c.train.lr, c.train.momentum, c.train.weight_decay)
  state = create_train_state(ctx.init_vars, tx)
  idx = np.arange(2)
  batch = {'image': jnp.asarray(ds.train_images[idx]),
           'label': jnp.asarray(ds.train_labels[idx])}
  step = functools.partial(train_step, graphdef=ctx.graphdef, tx=tx,
                           preprocess=ctx.preprocess)
  rng = jax.random.key(0)
  trained, metrics = _compiled(step, state, batch, rng)(state, batch, rng)
  assert np.isfinite(float(metrics['loss']))
  assert jax.tree.map(np.shape, trained.params) == jax.tree.map(
      np.shape, ctx.init_vars.params)
  assert _moved(ctx.init_vars.params, trained.params)

  # One DELETE step on forget-class examples. The teacher is the initialised
  # model: one step at the pretraining rate on 2 images can saturate the
  # softmax, and then teacher and student agree to the last bit.
  teacher = ctx.init_vars
  forget = np.resize(ctx.split.train_forget, 2)   # repeats a lone example
  forget_batch = {'image': jnp.asarray(ds.train_images[forget]),
                  'label': jnp.asarray(ds.train_labels[forget])}
  mask = np.zeros((num_classes,), bool)
  mask[list(ctx.split.forget_classes)] = True
  objective, prepare = get_method('delete').build(
      c.unlearn, MethodInfo(num_classes, jnp.asarray(mask)))
  utx = make_sgd(c.unlearn.lr, c.unlearn.momentum, 0.0)
  student = create_train_state(teacher, utx)
  ustep = functools.partial(
      unlearn_step, graphdef=ctx.graphdef, tx=utx, preprocess=ctx.preprocess,
      objective=objective, prepare=prepare, bn_mode=c.unlearn.bn,
      augment=c.unlearn.augment)
  unlearned, umetrics = _compiled(ustep, student, teacher, forget_batch, rng)(
      student, teacher, forget_batch, rng)
  loss = float(umetrics['loss'])
  assert np.isfinite(loss) and loss >= 0.0
  assert _moved(teacher.params, unlearned.params)
  if c.unlearn.bn == 'frozen':
    # Eval-mode student: its BatchNorm statistics stay the teacher's.
    for a, b in zip(jax.tree.leaves(teacher.batch_stats),
                    jax.tree.leaves(unlearned.batch_stats)):
      np.testing.assert_array_equal(a, b)
  print(f'{name}: {time.time() - start:.1f} s')
