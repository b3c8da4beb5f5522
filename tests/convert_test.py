"""Tests for delete_jax.convert: tables, round trips, refusals, file formats, CLI."""

from __future__ import annotations

import collections
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from delete_jax import convert
from delete_jax.data import load_dataset
from delete_jax.errors import UserError
from delete_jax.models import create_model
from delete_jax.preprocess import Preprocess
from delete_jax.state import split_model
from delete_jax.steps import predict_step
from tests.torch_reference import models as torch_models
from tests.torch_reference import steps as torch_steps

# One thread: torch's OpenMP threads spin-wait on a shared 2-core machine.
torch.set_num_threads(1)

# arch → an input shape it is exercised with.
SHAPES = {'cnn': (8, 8, 1), 'resnet18_cifar': (32, 32, 3), 'resnet18': (64, 64, 3)}


def _twin(arch: str, num_classes: int = 10, dtype=torch.float32, seed: int = 0):
  torch.manual_seed(seed)
  model = torch_models.create_model(arch, num_classes, SHAPES[arch]).to(dtype)
  torch_models.randomize_batch_norm(model, torch.Generator().manual_seed(seed + 1))
  return model


def _assert_bitwise_equal(got: dict, want: dict) -> None:
  assert list(got) == list(want)
  for key, value in want.items():
    assert got[key].dtype == value.dtype, key
    assert tuple(got[key].shape) == tuple(value.shape), key
    assert got[key].numpy().tobytes() == value.numpy().tobytes(), key


def _abstract_vars(arch: str, num_classes: int, image_shape):
  model = nnx.eval_shape(lambda: create_model(arch, num_classes, image_shape))
  return split_model(model)


def _paths(tree, prefix=()):
  if isinstance(tree, dict):
    out = []
    for key, sub in tree.items():
      out += _paths(sub, prefix + (key,))
    return out
  return [prefix]


@pytest.mark.parametrize('arch', convert.ARCHS)
def test_table_matches_both_models(arch):
  """The table lists torch's keys in order and exactly our variables."""
  table = convert.key_table(arch)
  assert [row.torch_key for row in table] == list(_twin(arch).state_dict())
  _, variables = _abstract_vars(arch, 10, SHAPES[arch])
  ours = sorted(map(str, [('params',) + p for p in _paths(variables.params)]
                    + [('batch_stats',) + p for p in _paths(variables.batch_stats)]))
  assert sorted(str((row.collection,) + row.path) for row in table) == ours


def test_resnet18_imagenet_parameter_count():
  twin = torch_models.create_model('resnet18', 1000, (224, 224, 3))
  assert sum(p.numel() for p in twin.parameters()) == 11_689_512
  _, variables = _abstract_vars('resnet18', 1000, (224, 224, 3))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables.params)) == 11_689_512


@pytest.mark.parametrize('arch,dtype', [('cnn', torch.float32), ('cnn', torch.float64),
                                        ('resnet18_cifar', torch.float32),
                                        ('resnet18', torch.float32)])
def test_round_trip_through_flax_and_orbax_is_bitwise(arch, dtype, tmp_path):
  twin = _twin(arch, dtype=dtype)
  original = twin.state_dict()
  variables = convert.torch_to_flax(original, arch, 10, SHAPES[arch])
  # Through a live NNX model: merge, then split again.
  graphdef, _ = _abstract_vars(arch, 10, SHAPES[arch])
  with jax.enable_x64(dtype == torch.float64):
    model = nnx.merge(graphdef, jax.tree.map(jnp.asarray, variables.params),
                      jax.tree.map(jnp.asarray, variables.batch_stats))
    _, through_model = split_model(model)
    assert jax.tree.leaves(through_model.params)[0].dtype == np.dtype(str(dtype)[6:])
  _assert_bitwise_equal(convert.flax_to_torch(through_model, arch), original)
  # Through the Orbax files.
  convert.save_converted(variables, tmp_path / 'out', arch, 10, SHAPES[arch],
                         source='twin')
  restored, meta = convert.load_converted(tmp_path / 'out')
  assert meta == {'arch': arch, 'num_classes': 10, 'image_shape': list(SHAPES[arch]),
                  'source': 'twin'}
  _assert_bitwise_equal(convert.flax_to_torch(restored, arch), original)


def test_refuses_missing_unexpected_and_misshaped_keys():
  state = dict(_twin('resnet18_cifar').state_dict())
  del state['layer3.1.bn2.running_var']
  state['layer5.0.conv1.weight'] = torch.zeros(1)
  with pytest.raises(UserError) as info:
    convert.torch_to_flax(state, 'resnet18_cifar')
  lines = str(info.value).splitlines()
  assert lines[1:] == ['  missing key: layer3.1.bn2.running_var',
                       '  unexpected key: layer5.0.conv1.weight']
  state = dict(_twin('resnet18_cifar').state_dict())
  state['conv1.weight'] = torch.zeros(64, 3, 7, 7)
  state['layer1.0.bn1.num_batches_tracked'] = torch.tensor(1.5)
  state['fc.bias'] = torch.zeros(11)
  del state['layer4.1.bn1.weight']
  with pytest.raises(UserError) as info:
    convert.torch_to_flax(state, 'resnet18_cifar', num_classes=10)
  message = str(info.value)
  assert '4 problem(s)' in message
  assert '  missing key: layer4.1.bn1.weight' in message.splitlines()
  assert 'shape mismatch: conv1.weight has (64, 3, 7, 7)' in message
  assert 'expects (64, 3, 3, 3)' in message
  assert 'dtype mismatch: layer1.0.bn1.num_batches_tracked' in message
  assert 'shape mismatch: fc.bias has (11,)' in message


def test_refuses_wrong_variables_on_the_way_back():
  variables = convert.torch_to_flax(_twin('cnn').state_dict(), 'cnn')
  del variables.params['fc2']['bias']
  variables.batch_stats['bn3'] = {'mean': np.zeros(3)}
  with pytest.raises(UserError) as info:
    convert.flax_to_torch(variables, 'cnn')
  assert str(info.value).splitlines()[1:] == [
      '  missing variable: params/fc2/bias (torch fc2.bias)',
      '  unexpected variable: batch_stats/bn3/mean']


def test_infers_model_size():
  state = torch_models.create_model('cnn', 7, (28, 28, 1)).state_dict()
  assert convert.infer_model_args(state, 'cnn') == (7, (28, 28, 1))
  state = torch_models.create_model('resnet18', 100, (224, 224, 3)).state_dict()
  assert convert.infer_model_args(state, 'resnet18') == (100, (224, 224, 3))
  assert convert.infer_model_args(state, 'resnet18_cifar') == (100, (32, 32, 3))


def test_loads_every_file_format(tmp_path):
  twin = _twin('cnn')
  original = twin.state_dict()
  torch.save(original, tmp_path / 'plain.pth')
  torch.save({'state_dict': original, 'epoch': 3}, tmp_path / 'wrapped.pth')
  torch.save({'model': original}, tmp_path / 'model_key.pth')
  parallel = collections.OrderedDict(('module.' + k, v) for k, v in original.items())
  torch.save(parallel, tmp_path / 'data_parallel.pth')
  for name in ('plain', 'wrapped', 'model_key', 'data_parallel'):
    state = convert.load_torch_checkpoint(str(tmp_path / f'{name}.pth'))
    variables = convert.torch_to_flax(state, 'cnn')
    _assert_bitwise_equal(convert.flax_to_torch(variables, 'cnn'), original)

  torch.save(twin, tmp_path / 'module.pt')
  with pytest.raises(UserError, match='--trust-pickle'):
    convert.load_torch_checkpoint(str(tmp_path / 'module.pt'))
  state = convert.load_torch_checkpoint(str(tmp_path / 'module.pt'), trust_pickle=True)
  _assert_bitwise_equal(convert.flax_to_torch(convert.torch_to_flax(state, 'cnn'), 'cnn'),
                        original)

  with pytest.raises(UserError, match='does not exist'):
    convert.load_torch_checkpoint(str(tmp_path / 'absent.pth'))
  (tmp_path / 'garbage.pth').write_text('not a checkpoint')
  with pytest.raises(UserError, match='cannot read'):
    convert.load_torch_checkpoint(str(tmp_path / 'garbage.pth'))
  torch.save({'epoch': 3}, tmp_path / 'no_weights.pth')
  with pytest.raises(UserError, match="keys: 'epoch'"):
    convert.load_torch_checkpoint(str(tmp_path / 'no_weights.pth'))


def _train_twin_on_digits(dataset, steps: int = 150, batch: int = 64):
  """A few SGD steps on digits so that predictions mean something."""
  torch.manual_seed(0)
  model = torch_models.create_model('cnn', dataset.num_classes, (8, 8, 1))
  optimizer = torch_steps.make_sgd(model, 0.05, momentum=0.9, weight_decay=5e-4)
  images = _normalised_nchw(dataset.train_images, dataset)
  labels = torch.from_numpy(dataset.train_labels).long()
  order = np.random.RandomState(0).permutation(len(labels))
  for i in range(steps):
    idx = torch.from_numpy(np.take(order, range(i * batch, (i + 1) * batch), mode='wrap'))
    torch_steps.pretrain_step(model, optimizer, images[idx], labels[idx])
  return model.eval()


def _normalised_nchw(images_uint8: np.ndarray, dataset) -> torch.Tensor:
  # What delete_jax.preprocess.Preprocess computes: (x / 255 - mean) / std.
  x = images_uint8.astype(np.float32) / np.float32(255.0)
  x = (x - np.asarray(dataset.mean, np.float32)) / np.asarray(dataset.std, np.float32)
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def test_cli_round_trip_and_digits_predictions(tmp_path, capsys):
  dataset = load_dataset('digits')
  twin = _train_twin_on_digits(dataset)
  torch.save(twin.state_dict(), tmp_path / 'cnn.pth')

  assert convert.main(['--arch', 'cnn', '--torch', str(tmp_path / 'cnn.pth'),
                       '--out', str(tmp_path / 'converted')]) == 0
  meta = json.loads((tmp_path / 'converted' / 'meta.json').read_text())
  assert meta['image_shape'] == [8, 8, 1] and meta['num_classes'] == 10
  assert meta['source'] == os.path.abspath(tmp_path / 'cnn.pth')
  assert convert.main(['--to-torch', '--checkpoint', str(tmp_path / 'converted'),
                       '--out', str(tmp_path / 'back.pth')]) == 0
  back = torch.load(tmp_path / 'back.pth', weights_only=True)
  _assert_bitwise_equal(back, twin.state_dict())
  # Refusals come back as one message and exit status 2, without a traceback.
  assert convert.main(['--arch', 'cnn', '--torch', str(tmp_path / 'cnn.pth'),
                       '--out', str(tmp_path / 'converted')]) == 2
  assert '--overwrite' in capsys.readouterr().err
  assert convert.main(['--arch', 'resnet18', '--torch', str(tmp_path / 'cnn.pth'),
                       '--out', str(tmp_path / 'other')]) == 2
  assert 'missing key: layer1.0.conv1.weight' in capsys.readouterr().err

  variables, meta = convert.load_converted(tmp_path / 'converted')
  variables = jax.tree.map(jnp.asarray, variables)
  graphdef, _ = _abstract_vars('cnn', meta['num_classes'], tuple(meta['image_shape']))
  batch = {'image': jnp.asarray(dataset.test_images),
           'label': jnp.asarray(dataset.test_labels),
           'mask': jnp.ones(len(dataset.test_labels), bool)}
  ours = predict_step(variables, batch, graphdef=graphdef,
                      preprocess=Preprocess(mean=dataset.mean, std=dataset.std))
  with torch.no_grad():
    ref_prob = torch.softmax(twin(_normalised_nchw(dataset.test_images, dataset)), 1)
  ref_pred = ref_prob.argmax(1).numpy()
  assert np.mean(ref_pred == dataset.test_labels) > 0.8  # a trained model
  np.testing.assert_array_equal(np.asarray(ours['pred']), ref_pred)
  err = np.linalg.norm(np.asarray(ours['prob']) - ref_prob.numpy()) / np.linalg.norm(
      ref_prob.numpy())
  assert err <= 1e-5
