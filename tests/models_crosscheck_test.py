"""Cross-checks of VGG16-BN, ViT-S/16 and Swin-T against independent PyTorch twins.

For each architecture: the conversion table lists the twin's `state_dict` keys
in order and exactly our variables; parameter counts match (timm: ViT-S/16
22,050,664 and Swin-T 28,288,354 with 1000 classes); torch → ours → torch is
bitwise the identity (through a live NNX model and through the Orbax files);
and in float64 the logits (eval and train mode), the BatchNorm statistics, one
DELETE step's loss and gradients, and the parameters after it agree with the
twin to relative error 1e-9.

VGG16-BN is checked whole at its native 32×32. ViT and Swin need 224×224
inputs; their numerics run on shallower variants built by the same code (ViT:
ViT-S/16 with 2 blocks; Swin: width 32, heads 1, 2, 4, 8, depths 2, 1, 1, 1:
a shifted block at 56×56, patch merging into every later stage, one window
covering stage 4), full size for tables, counts, round trips and every
shifted-window mask. XLA's compilation dominates the running time, so each
check compiles one program. Relative errors are per leaf, ‖ours − torch‖ / ‖torch‖; the
measured values are printed (`pytest -s`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from delete_jax import convert
from delete_jax.checkpointing import StageCheckpoints
from delete_jax.errors import UserError
from delete_jax.models import HEADS, create_model, expand_head, prune_head
from delete_jax.models import swin as swin_lib
from delete_jax.models import vgg as vgg_lib
from delete_jax.models.swin import SwinTransformer
from delete_jax.models.vit import VisionTransformer
from delete_jax.preprocess import Preprocess
from delete_jax.state import ModelVars, create_train_state, make_sgd, split_model
from delete_jax.steps import apply_model, delete_objective, unlearn_step
from tests.torch_reference import models as torch_models
from tests.torch_reference import steps as torch_steps

# One thread: torch's OpenMP threads spin-wait on a shared 2-core machine.
torch.set_num_threads(1)

NUM_CLASSES = 10
FORGET_CLASSES = (3, 7)
BATCH = 2
DELETE_LR = 1e-2
TOL64 = 1e-9

# Full-size models: (arch, classes for the count, input, expected parameter count).
FULL = {
    'vgg16_bn': (10, (32, 32, 3), 15_311_818),
    'vit_s16': (1000, (224, 224, 3), 22_050_664),
    'swin_t': (1000, (224, 224, 3), 28_288_354),
}


@dataclasses.dataclass(frozen=True)
class Variant:
  """A network checked numerically, in ours and the twin's form, with its table."""
  arch: str
  image_shape: tuple[int, int, int]
  ours: Callable[[nnx.Rngs], nnx.Module]
  twin: Callable[[], torch.nn.Module]
  table: Callable[[], list]


_VIT_SMALL = dict(depth=2)
_SWIN_SMALL = dict(embed_dim=32, depths=(2, 1, 1, 1), num_heads=(1, 2, 4, 8))

VARIANTS = {
    'vgg16_bn': Variant(
        'vgg16_bn', (32, 32, 3),
        lambda rngs: create_model('vgg16_bn', NUM_CLASSES, (32, 32, 3)),
        lambda: torch_models.create_model('vgg16_bn', NUM_CLASSES, (32, 32, 3)),
        lambda: convert.key_table('vgg16_bn')),
    'vit_s16': Variant(
        'vit_s16', (224, 224, 3),
        lambda rngs: VisionTransformer(NUM_CLASSES, (224, 224, 3), rngs=rngs, **_VIT_SMALL),
        lambda: torch_models.create_transformer('vit_s16', NUM_CLASSES, (224, 224, 3),
                                                **_VIT_SMALL),
        lambda: convert._vit_table(**_VIT_SMALL)),  # pylint: disable=protected-access
    'swin_t': Variant(
        'swin_t', (224, 224, 3),
        lambda rngs: SwinTransformer(NUM_CLASSES, (224, 224, 3), rngs=rngs, **_SWIN_SMALL),
        lambda: torch_models.create_transformer('swin_t', NUM_CLASSES, (224, 224, 3),
                                                **_SWIN_SMALL),
        lambda: convert._swin_table(_SWIN_SMALL['depths'])),  # pylint: disable=protected-access
}


# ---------------------------------------------------------------------------
# Helpers.


@contextlib.contextmanager
def _precision(dtype: str):
  with jax.enable_x64(dtype == 'float64'):
    yield


def _torch_dtype(dtype: str) -> torch.dtype:
  return torch.float64 if dtype == 'float64' else torch.float32


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  generator = torch.Generator().manual_seed(seed)
  if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
    torch_models.randomize_batch_norm(model, generator)
  else:
    torch_models.randomize_transformer(model, generator)
  return model


def _full_twin(arch: str, num_classes: int = NUM_CLASSES, seed: int = 0):
  torch.manual_seed(seed)
  model = torch_models.create_model(arch, num_classes, FULL[arch][1])
  return _randomize(model, seed + 1)


def _variant_twin(v: Variant, dtype: str, seed: int = 0) -> torch.nn.Module:
  torch.manual_seed(seed)
  return _randomize(v.twin().to(_torch_dtype(dtype)), seed + 1)


@functools.lru_cache(maxsize=None)
def _variant_split(arch: str):
  # eval_shape: the structure without initialising the weights.
  return split_model(nnx.eval_shape(lambda: VARIANTS[arch].ours(nnx.Rngs(0))))


def _to_ours(v: Variant, state: dict) -> ModelVars:
  """The twin's state in our layout, by the variant's table (shape-checked).

  VGG16-BN is full size and goes through the public `torch_to_flax`; the
  shallower transformers through the same conversion core with their tables.
  """
  if v.arch == 'vgg16_bn':
    return convert.torch_to_flax(state, v.arch, NUM_CLASSES, v.image_shape)
  table = v.table()
  known = {row.torch_key for row in table}
  problems = [f'missing key: {row.torch_key}' for row in table if row.torch_key not in state]
  problems += [f'unexpected key: {k}' for k in state if k not in known]
  return convert._convert_by_table(  # pylint: disable=protected-access
      state, table, _variant_split(v.arch)[1], problems, f'{v.arch} variant',
      f'{v.arch} variant')


@functools.lru_cache(maxsize=None)
def _abstract(arch: str, num_classes: int, image_shape: tuple[int, int, int]):
  return split_model(nnx.eval_shape(lambda: create_model(arch, num_classes, image_shape)))


def _paths(tree, prefix=()):
  if isinstance(tree, dict):
    out = []
    for key, sub in tree.items():
      out += _paths(sub, prefix + (key,))
    return out
  return [prefix]


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _assert_bitwise_equal(got: dict, want: dict) -> None:
  assert list(got) == list(want)
  for key, value in want.items():
    assert got[key].dtype == value.dtype, key
    assert tuple(got[key].shape) == tuple(value.shape), key
    assert got[key].numpy().tobytes() == value.numpy().tobytes(), key


def _nchw(images: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _rel_err(ours, ref) -> float:
  ours = np.asarray(ours, np.float64)
  ref = np.asarray(ref, np.float64)
  denom = np.linalg.norm(ref)
  return float(np.linalg.norm(ours - ref) / (denom if denom > 0 else 1.0))


def _worst_leaf(ours, ref) -> tuple[float, str]:
  flat_ours = {jax.tree_util.keystr(p): np.asarray(x)
               for p, x in jax.tree_util.tree_flatten_with_path(ours)[0]}
  flat_ref = {jax.tree_util.keystr(p): np.asarray(x)
              for p, x in jax.tree_util.tree_flatten_with_path(ref)[0]}
  assert set(flat_ours) == set(flat_ref)
  worst = (0.0, '')
  for key, ref_leaf in flat_ref.items():
    if ref_leaf.dtype.kind in 'iu':  # num_batches_tracked: must be equal
      assert np.array_equal(flat_ours[key], ref_leaf), key
      continue
    worst = max(worst, (_rel_err(flat_ours[key], ref_leaf), key))
  return worst


def _finish(title: str, report: dict[str, tuple[float, Any, str]]) -> None:
  print(f'\n{title}: ' + ', '.join(f'{k} {v[0]:.2e}' for k, v in report.items()))
  failures = [f'{what}: relative error {err:.3e} > {tol:.0e} {where}'.rstrip()
              for what, (err, tol, where) in report.items() if not err <= tol]
  assert not failures, f'{title}:\n' + '\n'.join(failures)


def _images(image_shape, dtype: str, seed: int) -> np.ndarray:
  return np.random.RandomState(seed).randn(BATCH, *image_shape).astype(dtype)


# ---------------------------------------------------------------------------
# Tables, counts, round trips (full size).


@pytest.mark.parametrize('arch', convert.MORE_ARCHS)
def test_table_matches_twin_and_model_and_counts(arch):
  """Table = twin's keys in order = our variables; parameter counts agree."""
  num_classes, image_shape, count = FULL[arch]
  twin = torch_models.create_model(arch, num_classes, image_shape)
  table = convert.key_table(arch)
  assert [row.torch_key for row in table] == list(twin.state_dict())
  _, variables = _abstract(arch, num_classes, image_shape)
  ours = sorted(map(str, [('params',) + p for p in _paths(variables.params)]
                    + [('batch_stats',) + p for p in _paths(variables.batch_stats)]))
  assert sorted(str((row.collection,) + row.path) for row in table) == ours
  assert sum(p.numel() for p in twin.parameters()) == count
  assert _count(variables.params) == count
  if arch == 'vgg16_bn':
    assert len(jax.tree.leaves(variables.batch_stats)) == 13 * 3
  else:
    assert variables.batch_stats == {}
  # The output layer where head surgery (boundary expanding) looks for it.
  head = variables.params[HEADS[arch]]
  assert head['kernel'].shape[1] == num_classes and head['bias'].shape == (num_classes,)
  print(f'\n{arch} ({num_classes} classes): {count:,} parameters')


@pytest.mark.parametrize('arch', convert.MORE_ARCHS)
def test_round_trip_is_bitwise(arch, tmp_path):
  num_classes, image_shape, _ = FULL[arch]
  original = _full_twin(arch).state_dict()
  assert convert.infer_model_args(original, arch) == (NUM_CLASSES, image_shape)
  variables = convert.torch_to_flax(original, arch)
  graphdef, _ = _abstract(arch, NUM_CLASSES, image_shape)
  model = nnx.merge(graphdef, jax.tree.map(jnp.asarray, variables.params),
                    jax.tree.map(jnp.asarray, variables.batch_stats))
  _, through_model = split_model(model)
  _assert_bitwise_equal(convert.flax_to_torch(through_model, arch), original)
  convert.save_converted(variables, tmp_path / 'out', arch, NUM_CLASSES, image_shape,
                         source='twin')
  restored, meta = convert.load_converted(tmp_path / 'out')
  assert meta['arch'] == arch and meta['image_shape'] == list(image_shape)
  _assert_bitwise_equal(convert.flax_to_torch(restored, arch), original)
  del num_classes


def _torchvision_vit_layout(state: dict) -> dict:
  """timm's ViT keys → torchvision's, as the published DELETE code saves them."""
  out = {}
  for key, value in state.items():
    new = {'cls_token': 'class_token', 'pos_embed': 'encoder.pos_embedding',
           'norm.weight': 'encoder.ln.weight', 'norm.bias': 'encoder.ln.bias',
           'head.weight': 'fc.weight', 'head.bias': 'fc.bias'}.get(key)
    if new is None and key.startswith('patch_embed.proj.'):
      new = 'conv_proj.' + key.rsplit('.', 1)[1]
    if new is None:
      _, i, rest = key.split('.', 2)
      rest = {'attn.qkv.weight': 'self_attention.in_proj_weight',
              'attn.qkv.bias': 'self_attention.in_proj_bias'}.get(rest, rest)
      for old, tv in (('norm1.', 'ln_1.'), ('norm2.', 'ln_2.'),
                      ('attn.proj.', 'self_attention.out_proj.'), ('mlp.fc1.', 'mlp.0.'),
                      ('mlp.fc2.', 'mlp.3.')):
        if rest.startswith(old):
          rest = tv + rest[len(old):]
      new = f'encoder.layers.encoder_layer_{i}.{rest}'
    out[new] = value
  return out


def test_vit_accepts_the_published_torchvision_layout():
  twin = _full_twin('vit_s16')
  state = twin.state_dict()
  want = convert.torch_to_flax(state, 'vit_s16')
  published = _torchvision_vit_layout(state)
  assert 'encoder.layers.encoder_layer_11.mlp.3.bias' in published
  assert convert.infer_model_args(published, 'vit_s16') == (NUM_CLASSES, (224, 224, 3))
  got = convert.torch_to_flax(published, 'vit_s16')
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_swin_accepts_older_and_published_layouts():
  twin = _full_twin('swin_t')
  state = twin.state_dict()
  want = convert.torch_to_flax(state, 'swin_t')
  # The original / timm < 0.9 layout saved the derived buffers too.
  buffers = {k: v for k, v in twin.named_buffers()
             if k.endswith(('relative_position_index', 'attn_mask'))}
  assert len(buffers) == 12 + 5  # every block's index; shifted blocks' masks (not stage 4)
  old = {}
  for key, value in {**state, **buffers}.items():
    parts = key.split('.')
    if parts[0] == 'layers' and parts[2] == 'downsample':
      parts[1] = str(int(parts[1]) - 1)
    if parts[:2] == ['head', 'fc']:
      del parts[1]
    old['.'.join(parts)] = value
  assert 'layers.0.downsample.reduction.weight' in old and 'head.weight' in old
  got = convert.torch_to_flax(old, 'swin_t')
  jax.tree.map(np.testing.assert_array_equal, got, want)
  # A derived buffer that is not ours is refused.
  old['layers.1.blocks.1.attn_mask'] = old['layers.1.blocks.1.attn_mask'] * 0.5
  with pytest.raises(UserError, match='attn_mask differs from the shifted-window mask'):
    convert.torch_to_flax(old, 'swin_t')
  # The published DELETE Swin: forward uses `fc`; timm's `head.fc` is never called.
  published = dict(state)
  published['fc.weight'] = state['head.fc.weight'].clone()
  published['fc.bias'] = state['head.fc.bias'].clone()
  published['head.fc.weight'] = torch.zeros_like(state['head.fc.weight'])
  published['head.fc.bias'] = torch.zeros_like(state['head.fc.bias'])
  got = convert.torch_to_flax(published, 'swin_t')
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_swin_derived_buffers_match_the_twin():
  """Our relative position index and shifted-window masks are timm's."""
  twin = torch_models.create_transformer('swin_t', NUM_CLASSES, (224, 224, 3))
  for name, block in twin.named_modules():
    if isinstance(block, torch_models.SwinBlock):
      np.testing.assert_array_equal(
          swin_lib.relative_position_index((block.win, block.win)),
          block.attn.relative_position_index.numpy(), err_msg=name)
      if block.attn_mask is not None:
        res = int(np.sqrt(block.attn_mask.shape[0])) * block.win
        np.testing.assert_array_equal(
            swin_lib.shifted_window_mask((res, res), (block.win,) * 2, (block.shift,) * 2),
            block.attn_mask.numpy(), err_msg=name)


# ---------------------------------------------------------------------------
# Numerics.


@pytest.mark.parametrize('size', [(2, 2), (3, 3), (5, 7), (4, 6)])
def test_adaptive_avg_pool_matches_torch(size):
  """VGG's pool to 2×2 for other input sizes: torch's overlapping cells."""
  x = np.random.RandomState(0).randn(2, *size, 3)
  want = torch.nn.functional.adaptive_avg_pool2d(_nchw(x), (2, 2)).numpy()
  with _precision('float64'):
    got = np.asarray(vgg_lib.adaptive_avg_pool(jnp.asarray(x), (2, 2)))
  np.testing.assert_allclose(got.transpose(0, 3, 1, 2), want, rtol=1e-14, atol=0)


# float32 for Swin too agrees to 2.5e-7; left out to save its compilation.
@pytest.mark.parametrize('arch,dtype', [(a, 'float64') for a in VARIANTS]
                         + [('vgg16_bn', 'float32'), ('vit_s16', 'float32')])
def test_logits_match(arch, dtype):
  v = VARIANTS[arch]
  tol = TOL64 if dtype == 'float64' else 1e-5
  model = _variant_twin(v, dtype).eval()
  images = _images(v.image_shape, dtype, seed=1)
  with torch.no_grad():
    ref_eval = model(_nchw(images)).numpy()
  train_model = copy.deepcopy(model).train()
  with torch.no_grad():
    ref_train = train_model(_nchw(images)).numpy()
  report = {}
  with _precision(dtype):
    graphdef = _variant_split(arch)[0]
    variables = jax.tree.map(jnp.asarray, _to_ours(v, model.state_dict()))

    @jax.jit
    def forward(variables, images):
      eval_logits, _ = apply_model(graphdef, variables, images, train=False)
      return eval_logits, apply_model(graphdef, variables, images, train=True)

    ours_eval, (ours_train, ours_stats) = forward(variables, jnp.asarray(images))
    assert ours_eval.dtype == images.dtype
  report['eval logits'] = (_rel_err(ours_eval, ref_eval), tol, '')
  report['train logits'] = (_rel_err(ours_train, ref_train), tol, '')
  ref_stats = _to_ours(v, train_model.state_dict()).batch_stats
  if arch == 'vgg16_bn':
    err, where = _worst_leaf(ours_stats, ref_stats)
    report['BN stats after a train forward'] = (err, tol, where)
  else:
    assert ours_stats == {} and ref_stats == {}
  _finish(f'{arch} {dtype} logits', report)


@pytest.mark.parametrize('arch', list(VARIANTS))
def test_delete_step_matches(arch):
  """One DELETE step in float64: loss, gradients, parameters and BN statistics."""
  v = VARIANTS[arch]
  student = _variant_twin(v, 'float64')
  teacher = copy.deepcopy(student)
  optimizer = torch_steps.make_sgd(student, DELETE_LR, momentum=0.9)
  rng = np.random.RandomState(2)
  images = _images(v.image_shape, 'float64', seed=2)
  labels = rng.choice(np.asarray(FORGET_CLASSES), size=BATCH).astype(np.int32)
  report = {}
  with _precision('float64'):
    variables = _to_ours(v, student.state_dict())
    teacher_vars = jax.tree.map(jnp.asarray, variables)
    tx = make_sgd(DELETE_LR, momentum=0.9)
    state = create_train_state(variables, tx)
    step = jax.jit(functools.partial(
        unlearn_step, graphdef=_variant_split(arch)[0], tx=tx, preprocess=Preprocess(),
        objective=delete_objective()))
    ref_loss = torch_steps.delete_step(student, teacher, optimizer, _nchw(images),
                                       torch.from_numpy(labels).long())
    state, metrics = step(state, teacher_vars, {'image': jnp.asarray(images),
                                                'label': jnp.asarray(labels)},
                          jax.random.key(0))
    assert metrics['loss'].dtype == np.float64
  grads = {name: p.grad for name, p in student.named_parameters()}
  state_dict = dict(student.state_dict())
  final = _to_ours(v, state_dict)
  report['loss'] = (_rel_err(metrics['loss'], ref_loss.numpy()), TOL64, '')
  for what, ours, ref in [
      ('gradients', optax.tree_utils.tree_get(state.opt_state, 'trace'),
       _to_ours(v, {**state_dict, **grads}).params),
      ('params after the step', state.params, final.params),
      ('param change', jax.tree.map(lambda a, b: np.asarray(a) - b, state.params,
                                    variables.params),
       jax.tree.map(lambda a, b: a - b, final.params, variables.params))]:
    err, where = _worst_leaf(ours, ref)
    report[what] = (err, TOL64, f'worst leaf {where}')
  if arch == 'vgg16_bn':
    err, where = _worst_leaf(state.batch_stats, final.batch_stats)
    report['BN stats after the step'] = (err, TOL64, f'worst leaf {where}')
  else:
    assert state.batch_stats == {}
  assert float(ref_loss) > 0
  _finish(f'{arch} float64 DELETE step', report)


# ---------------------------------------------------------------------------
# Models without BatchNorm through the rest of the machinery.


def test_empty_batch_stats_checkpoint_and_head_surgery(tmp_path):
  """A ViT TrainState (batch_stats == {}) saves and restores bit-exactly."""
  # eval_shape + numpy values: initialising eagerly compiles one program per variable.
  _, abstract = split_model(nnx.eval_shape(lambda: VisionTransformer(
      NUM_CLASSES, (32, 32, 3), rngs=nnx.Rngs(3), dim=32, depth=1, num_heads=2,
      mlp_dim=64)))
  rng = np.random.RandomState(3)
  variables = jax.tree.map(lambda s: rng.randn(*s.shape).astype(s.dtype), abstract)
  assert variables.batch_stats == {}
  tx = make_sgd(1e-3, momentum=0.9)
  state = create_train_state(variables, tx)
  provenance = {'stage': 'test', 'settings': {'lr': 1e-3}, 'model': 'vit_s16',
                'num_classes': NUM_CLASSES, 'image_shape': [32, 32, 3]}
  checkpoints = StageCheckpoints(str(tmp_path / 'stage'), provenance)
  checkpoints.save(1, state, {'epoch': 1})
  restored, meta = checkpoints.restore(state)
  checkpoints.close()
  assert meta['epoch'] == 1 and restored.batch_stats == {}
  jax.tree.map(np.testing.assert_array_equal, restored, state)

  # Boundary expanding's head surgery on every new architecture's output layer.
  for arch in convert.MORE_ARCHS:
    head = HEADS[arch]
    _, full = _abstract(arch, NUM_CLASSES, FULL[arch][1])
    params = {head: jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), full.params[head])}
    width = params[head]['kernel'].shape[0]
    wider = expand_head(params, head, jnp.ones((width,)))
    assert wider[head]['kernel'].shape == (width, NUM_CLASSES + 1)
    assert wider[head]['bias'].shape == (NUM_CLASSES + 1,)
    assert prune_head(wider, head, NUM_CLASSES)[head]['kernel'].shape == (
        width, NUM_CLASSES)
