"""Convert PyTorch checkpoints to delete_jax variables and back.

Every supported architecture has an explicit table, `key_table(arch)`, of
`torch state_dict key → (collection, key path in our variables, transform)`.
It is generated per architecture by listing the modules in torchvision's order,
never by matching shapes. Conversion refuses missing, unexpected and mis-shaped
keys, naming every problem on its own line.

Layout conventions (torch → ours):

* conv weight OIHW → kernel HWIO; linear weight (out, in) → kernel (in, out);
  biases and BatchNorm vectors are copied; values are never changed, so
  torch → ours → torch is bitwise the identity.
* BatchNorm weight/bias → params scale/bias; running_mean/running_var/
  num_batches_tracked → batch_stats mean/var/num_batches_tracked (torch int64 →
  our int32, refused if it does not fit; int64 again on the way back).
  Our `BatchNorm` follows torch: eps 1e-5, momentum 0.1 as the weight of the new
  batch statistic, running variance updated with the unbiased batch variance.
* Our convolutions pad explicitly and symmetrically like torch's `padding=p`
  (Flax's 'SAME' would pad stride-2 3×3 convolutions (0, 1)); our small CNN
  flattens in torch's (C, H, W) order, so `fc1` needs a transpose only.
* VGG16-BN ('vgg16_bn'): the published CIFAR variant's keys (`features.N`,
  `classifier.0`, `classifier.2`, `fc`); it flattens in torch's order too.
* ViT-S/16 ('vit_s16') and Swin-T ('swin_t') use timm's keys. LayerNorm
  weight/bias → params scale/bias; `cls_token` (1, 1, D), `pos_embed`
  (1, 1 + N, D) and `relative_position_bias_table` ((2W−1)², heads) are copied
  in their torch shapes; the patch embedding is a convolution; timm's Swin
  `head.fc` is our top-level `head`. These models have no BatchNorm: their
  batch_stats are empty. `_canonical_layout` also accepts torchvision's ViT
  layout (as the published DELETE code saves it, with `fc` as output layer),
  the original / timm < 0.9 Swin layout, and the published DELETE Swin (whose
  extra, never-called `head.fc` is dropped); saved Swin `relative_position_index`
  and `attn_mask` buffers are checked against ours and dropped. The way back
  always writes timm's layout.

Accepted inputs (`load_torch_checkpoint`): a `state_dict` file, a dict holding
one under 'state_dict' or 'model', or a pickled whole `nn.Module`. Everything is
first read with `torch.load(weights_only=True)`, which cannot run code from the
file. A pickled whole module can only be read with `weights_only=False`, which
executes arbitrary code from the file, so it is used for that case only and only
when asked (`trust_pickle=True`, CLI `--trust-pickle`). A uniform 'module.'
prefix (`nn.DataParallel`) is stripped.

Output (`save_converted`): `out_dir/variables` is an Orbax StandardCheckpointer
tree `{'params': ..., 'batch_stats': ...}` (pure nested dicts, as
`delete_jax.state.split_model` returns) and `out_dir/meta.json` holds `arch`,
`num_classes`, `image_shape` and `source`. `load_converted` reads it back. A
later change hooks this layout into `config.init_checkpoint`.

Command line:

  python -m delete_jax.convert --arch resnet18 --torch model.pth --out DIR
  python -m delete_jax.convert --to-torch --checkpoint DIR --out model.pth

torch is imported lazily, only by the functions that read or write torch files:
it is an optional dependency of delete_jax.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import json
import math
import os
import pickle
import sys
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from delete_jax.errors import UserError

ARCHS = ('cnn', 'resnet18', 'resnet18_cifar')
# The published CIFAR VGG16-BN and timm's ViT-S/16 and Swin-T layouts. Kept out of
# ARCHS only because tests/convert_test.py parametrises over ARCHS with input
# shapes for the three above; tests/models_crosscheck_test.py covers these.
MORE_ARCHS = ('swin_t', 'vgg16_bn', 'vit_s16')
ALL_ARCHS = ARCHS + MORE_ARCHS

# How a tensor changes on the way from torch to us.
_CONV, _LINEAR, _COPY, _COUNT = 'conv', 'linear', 'copy', 'count'

_INT32_MAX = np.iinfo(np.int32).max


@dataclasses.dataclass(frozen=True)
class KeyMap:
  """One row of an architecture's conversion table.

  Attributes:
    torch_key: the key in torch's `state_dict`.
    collection: 'params' or 'batch_stats'.
    path: key path inside that collection, e.g. ('layer2', 0, 'downsample_bn',
      'scale').
    transform: 'conv' (OIHW ↔ HWIO), 'linear' ((out, in) ↔ (in, out)), 'copy',
      or 'count' (num_batches_tracked: int64 ↔ int32).
  """
  torch_key: str
  collection: str
  path: tuple[Any, ...]
  transform: str


def _conv_rows(torch_name: str, path: tuple[Any, ...]) -> list[KeyMap]:
  return [KeyMap(f'{torch_name}.weight', 'params', path + ('kernel',), _CONV)]


def _linear_rows(torch_name: str, path: tuple[Any, ...]) -> list[KeyMap]:
  return [KeyMap(f'{torch_name}.weight', 'params', path + ('kernel',), _LINEAR),
          KeyMap(f'{torch_name}.bias', 'params', path + ('bias',), _COPY)]


def _bn_rows(torch_name: str, path: tuple[Any, ...]) -> list[KeyMap]:
  return [KeyMap(f'{torch_name}.weight', 'params', path + ('scale',), _COPY),
          KeyMap(f'{torch_name}.bias', 'params', path + ('bias',), _COPY),
          KeyMap(f'{torch_name}.running_mean', 'batch_stats', path + ('mean',), _COPY),
          KeyMap(f'{torch_name}.running_var', 'batch_stats', path + ('var',), _COPY),
          KeyMap(f'{torch_name}.num_batches_tracked', 'batch_stats',
                 path + ('num_batches_tracked',), _COUNT)]


def _cnn_table() -> list[KeyMap]:
  return (_conv_rows('conv1', ('conv1',)) + _bn_rows('bn1', ('bn1',))
          + _conv_rows('conv2', ('conv2',)) + _bn_rows('bn2', ('bn2',))
          + _linear_rows('fc1', ('fc1',)) + _linear_rows('fc2', ('fc2',)))


def _resnet18_table() -> list[KeyMap]:
  # Same keys for both stems: the stem differs in kernel size only.
  rows = _conv_rows('conv1', ('conv1',)) + _bn_rows('bn1', ('bn1',))
  for layer in range(1, 5):
    for block in range(2):
      t = f'layer{layer}.{block}'
      p = (f'layer{layer}', block)
      rows += _conv_rows(f'{t}.conv1', p + ('conv1',)) + _bn_rows(f'{t}.bn1', p + ('bn1',))
      rows += _conv_rows(f'{t}.conv2', p + ('conv2',)) + _bn_rows(f'{t}.bn2', p + ('bn2',))
      if layer > 1 and block == 0:  # the blocks that change width and stride
        rows += _conv_rows(f'{t}.downsample.0', p + ('downsample_conv',))
        rows += _bn_rows(f'{t}.downsample.1', p + ('downsample_bn',))
  return rows + _linear_rows('fc', ('fc',))


def _conv_bias_rows(torch_name: str, path: tuple[Any, ...]) -> list[KeyMap]:
  return _conv_rows(torch_name, path) + [
      KeyMap(f'{torch_name}.bias', 'params', path + ('bias',), _COPY)]


def _ln_rows(torch_name: str, path: tuple[Any, ...]) -> list[KeyMap]:
  # torch.nn.LayerNorm weight/bias → nnx.LayerNorm scale/bias.
  return [KeyMap(f'{torch_name}.weight', 'params', path + ('scale',), _COPY),
          KeyMap(f'{torch_name}.bias', 'params', path + ('bias',), _COPY)]


def _param_row(torch_name: str, path: tuple[Any, ...]) -> list[KeyMap]:
  # A bare nn.Parameter stored in the same shape on both sides.
  return [KeyMap(torch_name, 'params', path, _COPY)]


# The published code's VGG16-BN: configuration "D" without its last max-pool.
_VGG16_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M',
              512, 512, 512)


def _vgg16_bn_table() -> list[KeyMap]:
  # features.N counts every module of torch's Sequential: a convolution takes three
  # indices (conv, BatchNorm, ReLU), a max-pool one; ours keeps torch's N.
  rows = []
  index = 0
  for v in _VGG16_CFG:
    if v == 'M':
      index += 1
      continue
    rows += _conv_rows(f'features.{index}', ('features', index))
    rows += _bn_rows(f'features.{index + 1}', ('features', index + 1))
    index += 3
  return (rows + _linear_rows('classifier.0', ('classifier', 0))
          + _linear_rows('classifier.2', ('classifier', 2)) + _linear_rows('fc', ('fc',)))


def _vit_table(depth: int = 12) -> list[KeyMap]:
  """timm's VisionTransformer (class token, no fc_norm); ViT-S/16 has depth 12."""
  rows = _param_row('cls_token', ('cls_token',)) + _param_row('pos_embed', ('pos_embed',))
  rows += _conv_bias_rows('patch_embed.proj', ('patch_embed', 'proj'))
  for i in range(depth):
    t, p = f'blocks.{i}', ('blocks', i)
    rows += _ln_rows(f'{t}.norm1', p + ('norm1',))
    rows += _linear_rows(f'{t}.attn.qkv', p + ('attn', 'qkv'))
    rows += _linear_rows(f'{t}.attn.proj', p + ('attn', 'proj'))
    rows += _ln_rows(f'{t}.norm2', p + ('norm2',))
    rows += _linear_rows(f'{t}.mlp.fc1', p + ('mlp', 'fc1'))
    rows += _linear_rows(f'{t}.mlp.fc2', p + ('mlp', 'fc2'))
  return rows + _ln_rows('norm', ('norm',)) + _linear_rows('head', ('head',))


def _swin_table(depths: Sequence[int] = (2, 2, 6, 2)) -> list[KeyMap]:
  """timm ≥ 0.9's SwinTransformer (patch merging opens stages 2+); Swin-T's depths.

  `relative_position_index` and `attn_mask` are derived buffers, not variables:
  timm does not save them; `_canonical_layout` checks and drops them where an
  older checkpoint holds them.
  """
  rows = _conv_bias_rows('patch_embed.proj', ('patch_embed', 'proj'))
  rows += _ln_rows('patch_embed.norm', ('patch_embed', 'norm'))
  for i, depth in enumerate(depths):
    if i > 0:
      t, p = f'layers.{i}.downsample', ('layers', i, 'downsample')
      rows += _ln_rows(f'{t}.norm', p + ('norm',))
      rows.append(KeyMap(f'{t}.reduction.weight', 'params', p + ('reduction', 'kernel'),
                         _LINEAR))
    for j in range(depth):
      t, p = f'layers.{i}.blocks.{j}', ('layers', i, 'blocks', j)
      rows += _ln_rows(f'{t}.norm1', p + ('norm1',))
      rows += _param_row(f'{t}.attn.relative_position_bias_table',
                         p + ('attn', 'relative_position_bias_table'))
      rows += _linear_rows(f'{t}.attn.qkv', p + ('attn', 'qkv'))
      rows += _linear_rows(f'{t}.attn.proj', p + ('attn', 'proj'))
      rows += _ln_rows(f'{t}.norm2', p + ('norm2',))
      rows += _linear_rows(f'{t}.mlp.fc1', p + ('mlp', 'fc1'))
      rows += _linear_rows(f'{t}.mlp.fc2', p + ('mlp', 'fc2'))
  # timm's ClassifierHead keeps the Linear at head.fc; ours is the top-level `head`.
  return rows + _ln_rows('norm', ('norm',)) + _linear_rows('head.fc', ('head',))


_TABLES = {'cnn': _cnn_table, 'resnet18': _resnet18_table,
           'resnet18_cifar': _resnet18_table, 'vgg16_bn': _vgg16_bn_table,
           'vit_s16': _vit_table, 'swin_t': _swin_table}


def key_table(arch: str) -> tuple[KeyMap, ...]:
  """The conversion table of `arch`, in torch's `state_dict` order."""
  _check_arch(arch)
  return tuple(_TABLES[arch]())


def _check_arch(arch: str) -> None:
  if arch not in ALL_ARCHS:
    raise UserError(f'unknown architecture {arch!r}: choose one of '
                    f'{", ".join(ALL_ARCHS)} (--arch)')


# ---------------------------------------------------------------------------
# Tensor transforms.


def _to_ours(value: np.ndarray, transform: str) -> np.ndarray:
  if transform == _CONV:
    return np.ascontiguousarray(np.transpose(value, (2, 3, 1, 0)))
  if transform == _LINEAR:
    return np.ascontiguousarray(value.T)
  if transform == _COUNT:
    return np.asarray(value, np.int32)
  return np.array(value, copy=True)


def _to_torch(value: np.ndarray, transform: str) -> np.ndarray:
  if transform == _CONV:
    return np.ascontiguousarray(np.transpose(value, (3, 2, 0, 1)))
  if transform == _LINEAR:
    return np.ascontiguousarray(value.T)
  if transform == _COUNT:
    return np.asarray(value, np.int64)
  return np.array(value, copy=True)


def _torch_shape(our_shape: tuple[int, ...], transform: str) -> tuple[int, ...]:
  if transform == _CONV:
    h, w, i, o = our_shape
    return (o, i, h, w)
  if transform == _LINEAR:
    return tuple(reversed(our_shape))
  return tuple(our_shape)


def _as_numpy(value: Any) -> np.ndarray:
  """A torch tensor, jax array or numpy array as a numpy array (no torch import)."""
  if hasattr(value, 'detach'):  # torch.Tensor
    value = value.detach().cpu().numpy()
  return np.asarray(value)


# ---------------------------------------------------------------------------
# Shapes our models expect.


def infer_model_args(state_dict: Mapping[str, Any], arch: str) -> tuple[int, tuple[int, int, int]]:
  """Guesses (num_classes, image_shape) from a torch `state_dict` of `arch`.

  num_classes is the row count of the last linear layer, the channels come from
  the first convolution. The spatial size does not change a ResNet's, VGG's or
  Swin's variables (32×32 for 'resnet18_cifar' and 'vgg16_bn', 224×224 for
  'resnet18' and 'swin_t' is assumed); for 'cnn' it is the square size the input
  width of `fc1` implies, for 'vit_s16' the square patch grid `pos_embed` holds.
  Pass them explicitly where these guesses are wrong.
  """
  _check_arch(arch)
  state_dict, _ = _canonical_layout(_strip_module_prefix(state_dict), arch)
  head, first_conv = _HEAD_AND_FIRST_CONV[arch]
  for key in (head, first_conv):
    if key not in state_dict:
      raise UserError(f'cannot infer the model size: {key} missing from the checkpoint '
                      f'(is it a {arch}?)')
  num_classes = int(_as_numpy(state_dict[head]).shape[0])
  channels = int(_as_numpy(state_dict[first_conv]).shape[1])
  if arch == 'cnn':
    if 'fc1.weight' not in state_dict or 'conv2.weight' not in state_dict:
      raise UserError('cannot infer the input size: fc1.weight or conv2.weight missing '
                      'from the checkpoint (pass --image-shape)')
    cells = _as_numpy(state_dict['fc1.weight']).shape[1] // _as_numpy(
        state_dict['conv2.weight']).shape[0]
    side = math.isqrt(cells)
    if side * side != cells:
      raise UserError(f'cannot infer a square input size from fc1.weight ({cells} cells '
                      'after pooling): pass --image-shape H,W,C')
    return num_classes, (4 * side, 4 * side, channels)
  if arch == 'vit_s16':
    if 'pos_embed' not in state_dict:
      raise UserError('cannot infer the input size: pos_embed missing from the '
                      'checkpoint (pass --image-shape)')
    patches = _as_numpy(state_dict['pos_embed']).shape[1] - 1
    side = math.isqrt(patches)
    if side * side != patches:
      raise UserError(f'cannot infer a square input size from pos_embed ({patches} '
                      'patches): pass --image-shape H,W,C')
    patch = int(_as_numpy(state_dict[first_conv]).shape[-1])
    return num_classes, (patch * side, patch * side, channels)
  size = 32 if arch in ('resnet18_cifar', 'vgg16_bn') else 224
  return num_classes, (size, size, channels)


# arch → (its output layer's weight, its first convolution's weight).
_HEAD_AND_FIRST_CONV = {
    'cnn': ('fc2.weight', 'conv1.weight'),
    'resnet18': ('fc.weight', 'conv1.weight'),
    'resnet18_cifar': ('fc.weight', 'conv1.weight'),
    'vgg16_bn': ('fc.weight', 'features.0.weight'),
    'vit_s16': ('head.weight', 'patch_embed.proj.weight'),
    'swin_t': ('head.fc.weight', 'patch_embed.proj.weight'),
}


# ---------------------------------------------------------------------------
# Other layouts of the same networks, renamed to the tables' (timm's) keys.


def _torchvision_vit_key(key: str) -> str:
  """torchvision's VisionTransformer key → timm's (identity for others).

  The published DELETE code builds ViT-S/16 with torchvision's class and names
  its output layer `fc` (torchvision: `heads.head`). `in_proj` of
  nn.MultiheadAttention stacks q, k, v in timm's qkv order; the computation is
  the same (LayerNorm eps 1e-6, exact GELU, class-token head).
  """
  fixed = {'conv_proj.weight': 'patch_embed.proj.weight',
           'conv_proj.bias': 'patch_embed.proj.bias', 'class_token': 'cls_token',
           'encoder.pos_embedding': 'pos_embed', 'encoder.ln.weight': 'norm.weight',
           'encoder.ln.bias': 'norm.bias', 'heads.head.weight': 'head.weight',
           'heads.head.bias': 'head.bias', 'fc.weight': 'head.weight',
           'fc.bias': 'head.bias'}
  if key in fixed:
    return fixed[key]
  prefix = 'encoder.layers.encoder_layer_'
  if not key.startswith(prefix):
    return key
  index, _, rest = key[len(prefix):].partition('.')
  parts = {'ln_1.': 'norm1.', 'ln_2.': 'norm2.', 'self_attention.out_proj.': 'attn.proj.',
           'mlp.0.': 'mlp.fc1.', 'mlp.3.': 'mlp.fc2.', 'mlp.linear_1.': 'mlp.fc1.',
           'mlp.linear_2.': 'mlp.fc2.'}
  whole = {'self_attention.in_proj_weight': 'attn.qkv.weight',
           'self_attention.in_proj_bias': 'attn.qkv.bias'}
  if rest in whole:
    return f'blocks.{index}.{whole[rest]}'
  for old, new in parts.items():
    if rest.startswith(old):
      return f'blocks.{index}.{new}{rest[len(old):]}'
  return key


def _swin_buffer_problem(key: str, value: np.ndarray) -> Optional[str]:
  """Checks a derived Swin buffer an older checkpoint saved; None if it is right."""
  from delete_jax.models import swin  # pylint: disable=g-import-not-at-top
  if key.endswith('relative_position_index'):
    win = math.isqrt(value.shape[0]) if value.ndim == 2 else 0
    if (win and win * win == value.shape[0] and value.shape == (win * win, win * win)
        and np.array_equal(value, swin.relative_position_index((win, win)))):
      return None
    return f'unexpected buffer value: {key} differs from the relative position index'
  # attn_mask [nW, N, N] of a shifted block: window √N, resolution √nW·√N, shift ⌊√N/2⌋.
  win = math.isqrt(value.shape[1]) if value.ndim == 3 else 0
  grid = math.isqrt(value.shape[0]) if value.ndim == 3 else 0
  if (win and grid and win * win == value.shape[1] and grid * grid == value.shape[0]
      and value.shape[1] == value.shape[2]):
    want = swin.shifted_window_mask((grid * win,) * 2, (win,) * 2, (win // 2,) * 2)
    if np.array_equal(value, want):
      return None
  return f'unexpected buffer value: {key} differs from the shifted-window mask'


def _canonical_layout(state_dict: Mapping[str, Any],
                      arch: str) -> tuple[Mapping[str, Any], list[str]]:
  """Renames other layouts of `arch` to its table's keys; returns (dict, problems).

  * 'vit_s16': torchvision's layout (the published DELETE ViT) → timm's.
  * 'swin_t': the original / timm < 0.9 layout (patch merging at the end of
    stages 1–3 as `layers.i.downsample`, output layer `head`) → timm ≥ 0.9's
    (`layers.{i+1}.downsample`, `head.fc`), as timm's own checkpoint filter
    does. The published DELETE Swin adds an output layer `fc` after timm's
    `head.fc`, which its forward never calls: `fc` becomes `head.fc` and the dead
    `head.fc` is dropped. Saved `relative_position_index` and `attn_mask`
    buffers are checked against ours and dropped (a mismatch is a problem).

  Other architectures and dicts already in the table's layout pass unchanged.
  """
  problems = []
  if arch == 'vit_s16' and any(k.startswith(('encoder.', 'conv_proj.')) for k in state_dict):
    return {_torchvision_vit_key(k): v for k, v in state_dict.items()}, problems
  if arch != 'swin_t':
    return state_dict, problems
  out = {}
  for key, value in state_dict.items():
    if key.endswith(('.relative_position_index', '.attn_mask')):
      problem = _swin_buffer_problem(key, _as_numpy(value))
      if problem:
        problems.append(problem)
      continue
    out[key] = value
  if 'fc.weight' in out and 'head.fc.weight' in out:  # the published DELETE Swin
    out = {('head.fc' + k[2:] if k.startswith('fc.') else k): v for k, v in out.items()
           if not k.startswith('head.fc.')}
  elif 'head.weight' in out and 'head.fc.weight' not in out:  # original / timm < 0.9
    renamed = {}
    for key, value in out.items():
      parts = key.split('.')
      if parts[0] == 'layers' and len(parts) > 2 and parts[2] == 'downsample':
        parts[1] = str(int(parts[1]) + 1)
      elif parts[0] == 'head':
        parts.insert(1, 'fc')
      renamed['.'.join(parts)] = value
    out = renamed
  return out, problems


def expected_variables(arch: str, num_classes: int, image_shape: Sequence[int]):
  """Our variables of `arch` as `ShapeDtypeStruct`s (no memory is allocated)."""
  return _expected_variables(arch, int(num_classes), tuple(int(d) for d in image_shape))


@functools.lru_cache(maxsize=16)
def _expected_variables(arch: str, num_classes: int, image_shape: tuple[int, ...]):
  # Imported here so that reading the tables needs neither Flax nor JAX.
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from delete_jax.models import create_model  # pylint: disable=g-import-not-at-top
  from delete_jax.state import split_model  # pylint: disable=g-import-not-at-top
  model = nnx.eval_shape(lambda: create_model(arch, num_classes, image_shape))
  return split_model(model)[1]


def _get_path(tree: Mapping[Any, Any], path: tuple[Any, ...]) -> Any:
  for key in path:
    if not isinstance(tree, Mapping) or key not in tree:
      return None
    tree = tree[key]
  return tree


def _set_path(tree: dict, path: tuple[Any, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _leaf_paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
  if isinstance(tree, Mapping):
    out = []
    for key, sub in tree.items():
      out += _leaf_paths(sub, prefix + (key,))
    return out
  return [prefix]


def _fail(what: str, problems: list[str]) -> None:
  if problems:
    lines = '\n'.join(f'  {p}' for p in problems)
    raise UserError(f'{what}: {len(problems)} problem(s):\n{lines}')


# ---------------------------------------------------------------------------
# torch → ours.


def _strip_module_prefix(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
  keys = list(state_dict)
  if keys and all(k.startswith('module.') for k in keys):
    return {k[len('module.'):]: v for k, v in state_dict.items()}
  return state_dict


def torch_to_flax(state_dict: Mapping[str, Any], arch: str,
                  num_classes: Optional[int] = None,
                  image_shape: Optional[Sequence[int]] = None):
  """Converts a torch `state_dict` of `arch` into our variables.

  Args:
    state_dict: torch key → tensor (torch tensors or numpy arrays).
    arch: one of `ALL_ARCHS`.
    num_classes: classes of the model; inferred from the last layer if None.
    image_shape: (H, W, C) of the inputs; inferred if None (`infer_model_args`).

  Returns:
    `delete_jax.state.ModelVars` of numpy arrays (pure nested dicts), in the
    checkpoint's float dtype; num_batches_tracked as int32.

  Raises:
    UserError: listing every missing, unexpected or mis-shaped key.
  """
  _check_arch(arch)
  state_dict = _strip_module_prefix(state_dict)
  state_dict, layout_problems = _canonical_layout(state_dict, arch)
  table = key_table(arch)
  problems = [f'missing key: {row.torch_key}' for row in table
              if row.torch_key not in state_dict]
  known = {row.torch_key for row in table}
  problems += [f'unexpected key: {key}' for key in state_dict if key not in known]
  problems += layout_problems

  if num_classes is None or image_shape is None:
    try:
      guessed_classes, guessed_shape = infer_model_args(state_dict, arch)
    except UserError:
      _fail(f'checkpoint does not match {arch}', problems)
      raise
    num_classes = guessed_classes if num_classes is None else num_classes
    image_shape = guessed_shape if image_shape is None else image_shape
  expected = expected_variables(arch, num_classes, image_shape)
  return _convert_by_table(
      state_dict, table, expected, problems, f'checkpoint does not match {arch}',
      f'{arch} with {num_classes} classes and input {tuple(image_shape)}')


def _convert_by_table(state_dict: Mapping[str, Any], table: Sequence[KeyMap],
                      expected: Any, problems: list[str], failure: str, model: str):
  """torch → ours by `table`, checking shapes against `expected` (ModelVars).

  `problems` (key problems found so far) are reported together with the shape,
  dtype and range problems found here, under the heading `failure`; `model`
  names the expected network in shape messages.
  """
  from delete_jax.state import ModelVars  # pylint: disable=g-import-not-at-top
  problems = list(problems)
  expected = {'params': expected.params, 'batch_stats': expected.batch_stats}
  out = {'params': {}, 'batch_stats': {}}
  for row in table:
    if row.torch_key not in state_dict:
      continue
    value = _as_numpy(state_dict[row.torch_key])
    want = _get_path(expected[row.collection], row.path)
    want_shape = _torch_shape(tuple(want.shape), row.transform)
    if tuple(value.shape) != want_shape:
      problems.append(f'shape mismatch: {row.torch_key} has {tuple(value.shape)}, '
                      f'{model} expects {want_shape}')
      continue
    if row.transform == _COUNT:
      if value.dtype.kind not in 'iu':
        problems.append(f'dtype mismatch: {row.torch_key} is {value.dtype}, expected an '
                        'integer count')
        continue
      if not 0 <= int(value) <= _INT32_MAX:
        problems.append(f'value out of range: {row.torch_key} = {int(value)} does not '
                        'fit in int32')
        continue
    elif value.dtype.kind != 'f':
      problems.append(f'dtype mismatch: {row.torch_key} is {value.dtype}, expected a '
                      'float tensor')
      continue
    _set_path(out[row.collection], row.path, _to_ours(value, row.transform))
  _fail(failure, problems)
  return ModelVars(out['params'], out['batch_stats'])


# ---------------------------------------------------------------------------
# ours → torch.


def _collections(variables: Any) -> dict[str, Any]:
  if isinstance(variables, Mapping):
    return {'params': variables['params'], 'batch_stats': variables['batch_stats']}
  return {'params': variables.params, 'batch_stats': variables.batch_stats}


def flax_to_numpy_state_dict(variables: Any, arch: str) -> dict[str, np.ndarray]:
  """Our variables of `arch` → torch `state_dict` layout, as numpy arrays.

  Args:
    variables: `ModelVars`, `TrainState` or a dict with 'params' and
      'batch_stats' (pure nested dicts of jax or numpy arrays).
    arch: one of `ALL_ARCHS`.

  Returns:
    An ordered dict torch key → numpy array (num_batches_tracked int64).

  Raises:
    UserError: listing every missing or unexpected variable.
  """
  return _numpy_state_dict_by_table(variables, key_table(arch),
                                    f'variables do not match {arch}')


def _numpy_state_dict_by_table(variables: Any, table: Sequence[KeyMap],
                               failure: str) -> dict[str, np.ndarray]:
  """ours → torch by `table`; refuses missing and unexpected variables."""
  trees = _collections(variables)
  problems = []
  for row in table:
    if _get_path(trees[row.collection], row.path) is None:
      path = '/'.join(str(k) for k in row.path)
      problems.append(f'missing variable: {row.collection}/{path} (torch {row.torch_key})')
  known = {(row.collection,) + row.path for row in table}
  for collection, tree in trees.items():
    for path in _leaf_paths(tree):
      if (collection,) + path not in known:
        problems.append('unexpected variable: '
                        + '/'.join(str(k) for k in (collection,) + path))
  _fail(failure, problems)
  out = collections.OrderedDict()
  for row in table:
    value = _as_numpy(_get_path(trees[row.collection], row.path))
    out[row.torch_key] = _to_torch(value, row.transform)
  return out


def flax_to_torch(variables: Any, arch: str):
  """Our variables of `arch` → a torch `state_dict` (OrderedDict of tensors)."""
  torch = _import_torch()
  return collections.OrderedDict(
      (key, torch.from_numpy(value))
      for key, value in flax_to_numpy_state_dict(variables, arch).items())


# ---------------------------------------------------------------------------
# Files.


def _import_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError('converting torch checkpoints needs PyTorch: pip install torch') from e
  return torch


def load_torch_checkpoint(path: str, trust_pickle: bool = False) -> dict[str, Any]:
  """Reads a torch checkpoint file and returns its `state_dict`.

  Args:
    path: a file written by `torch.save` holding a state_dict, a dict with a
      'state_dict' or 'model' entry, or a whole `nn.Module`.
    trust_pickle: allow `torch.load(weights_only=False)` for files that
      `weights_only=True` refuses (pickled whole modules). This runs code stored
      in the file: only for files you trust. The module's class must be
      importable.

  Raises:
    UserError: unreadable file, untrusted pickle, or no state_dict inside.
  """
  torch = _import_torch()
  if not os.path.isfile(path):
    raise UserError(f'torch checkpoint {path} does not exist (--torch)')
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    # weights_only refuses pickled class references ("Unsupported global"); any
    # other refusal means a corrupt or foreign file, which trust cannot fix.
    if 'unsupported global' not in str(e).lower():
      raise UserError(f'cannot read torch checkpoint {path}: not a torch file or '
                      'corrupt') from e
    if not trust_pickle:
      raise UserError(
          f'{path} holds pickled Python objects (e.g. a whole nn.Module), which can '
          'only be read by running code from the file; if you trust it, pass '
          '--trust-pickle (trust_pickle=True), or save model.state_dict() instead') from e
    try:
      # A whole pickled module: the only case read with weights_only=False.
      obj = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e2:  # pylint: disable=broad-except
      raise UserError(f'cannot unpickle {path}: {type(e2).__name__}: {e2} (the classes '
                      'it names must be importable)') from e2
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'cannot read torch checkpoint {path}: {type(e).__name__}: {e}') from e
  return _extract_state_dict(obj, path, torch)


def _extract_state_dict(obj: Any, path: str, torch) -> dict[str, Any]:
  if isinstance(obj, torch.nn.Module):
    return obj.state_dict()
  if isinstance(obj, Mapping):
    for key in ('state_dict', 'model'):
      if key in obj:
        return _extract_state_dict(obj[key], path, torch)
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
      return dict(obj)
    entries = ', '.join(repr(k) for k in list(obj)[:10])
    raise UserError(f'{path} is a dict without tensors or a state_dict/model entry '
                    f'(its keys: {entries})')
  raise UserError(f'{path} holds a {type(obj).__name__}, not a state_dict, a dict with '
                  'one, or an nn.Module')


def save_converted(variables: Any, out_dir: str, arch: str, num_classes: int,
                   image_shape: Sequence[int], source: Optional[str] = None,
                   overwrite: bool = False) -> None:
  """Writes converted variables as an Orbax checkpoint plus `meta.json`.

  Layout: `out_dir/variables` (Orbax StandardCheckpointer, tree
  {'params', 'batch_stats'}) and `out_dir/meta.json` ({arch, num_classes,
  image_shape, source}).

  Args:
    variables: `ModelVars` or a dict with 'params' and 'batch_stats'.
    out_dir: output folder (created).
    arch: architecture name.
    num_classes: classes of the model.
    image_shape: (H, W, C) of its inputs.
    source: where the variables came from (e.g. the torch file), for provenance.
    overwrite: replace an existing `out_dir/variables`.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  _check_arch(arch)
  out_dir = os.path.abspath(out_dir)
  target = os.path.join(out_dir, 'variables')
  if os.path.exists(target) and not overwrite:
    raise UserError(f'{target} exists: choose another --out or pass --overwrite')
  os.makedirs(out_dir, exist_ok=True)
  tree = {k: _numpy_tree(v) for k, v in _collections(variables).items()}
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(target, tree, force=overwrite)
  checkpointer.wait_until_finished()
  checkpointer.close()
  meta = {'arch': arch, 'num_classes': int(num_classes),
          'image_shape': [int(d) for d in image_shape], 'source': source}
  with open(os.path.join(out_dir, 'meta.json'), 'w') as f:
    json.dump(meta, f, indent=2)
    f.write('\n')


def _numpy_tree(tree: Any) -> Any:
  if isinstance(tree, Mapping):
    return {k: _numpy_tree(v) for k, v in tree.items()}
  return _as_numpy(tree)


def _int_keys(tree: Any) -> Any:
  # Orbax stores dict keys as strings; our layer lists have int keys 0, 1.
  if isinstance(tree, Mapping):
    return {(int(k) if isinstance(k, str) and k.isdigit() else k): _int_keys(v)
            for k, v in tree.items()}
  return tree


def load_converted(out_dir: str):
  """Reads what `save_converted` wrote: returns (ModelVars of numpy arrays, meta)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from delete_jax.state import ModelVars  # pylint: disable=g-import-not-at-top
  out_dir = os.path.abspath(out_dir)
  meta_path = os.path.join(out_dir, 'meta.json')
  if not os.path.isfile(meta_path):
    raise UserError(f'{out_dir} is not a converted checkpoint: no meta.json')
  with open(meta_path) as f:
    meta = json.load(f)
  checkpointer = ocp.StandardCheckpointer()
  tree = _int_keys(checkpointer.restore(os.path.join(out_dir, 'variables')))
  checkpointer.close()
  return ModelVars(tree['params'], tree['batch_stats']), meta


# ---------------------------------------------------------------------------
# Command line.


def _parse_shape(text: str) -> tuple[int, int, int]:
  try:
    shape = tuple(int(d) for d in text.split(','))
  except ValueError:
    shape = ()
  if len(shape) != 3 or min(shape) <= 0:
    raise UserError(f'--image-shape {text!r}: expected H,W,C such as 32,32,3')
  return shape


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m delete_jax.convert',
      description='Convert a torch checkpoint to delete_jax variables (Orbax), or back '
      'with --to-torch.')
  p.add_argument('--arch', choices=ALL_ARCHS,
                 help='architecture (required from torch; checked against meta.json '
                 'with --to-torch)')
  p.add_argument('--torch', dest='torch_path', help='torch checkpoint to convert')
  p.add_argument('--to-torch', action='store_true',
                 help='convert --checkpoint DIR into a torch state_dict file --out')
  p.add_argument('--checkpoint', help='with --to-torch: a folder written by this tool')
  p.add_argument('--out', required=True,
                 help='output folder (from torch) or .pth file (--to-torch)')
  p.add_argument('--num-classes', type=int, help='default: rows of the last layer')
  p.add_argument('--image-shape', help='H,W,C; default: inferred (see infer_model_args)')
  p.add_argument('--trust-pickle', action='store_true',
                 help='allow torch.load(weights_only=False) for a pickled whole module; '
                 'this runs code from the file')
  p.add_argument('--overwrite', action='store_true', help='replace existing outputs')
  return p


def run(args: argparse.Namespace) -> str:
  """Performs the conversion `args` asks for; returns a one-line summary."""
  if args.to_torch:
    if not args.checkpoint:
      raise UserError('--to-torch needs --checkpoint DIR (a folder this tool wrote)')
    variables, meta = load_converted(args.checkpoint)
    if args.arch and args.arch != meta['arch']:
      raise UserError(f'--arch {args.arch} but {args.checkpoint} holds a {meta["arch"]}')
    if os.path.exists(args.out) and not args.overwrite:
      raise UserError(f'{args.out} exists: choose another --out or pass --overwrite')
    torch = _import_torch()
    state_dict = flax_to_torch(variables, meta['arch'])
    torch.save(state_dict, args.out)
    return f'wrote {len(state_dict)} tensors of a {meta["arch"]} to {args.out}'
  if not args.arch or not args.torch_path:
    raise UserError('converting from torch needs --arch NAME and --torch FILE')
  state_dict = load_torch_checkpoint(args.torch_path, trust_pickle=args.trust_pickle)
  image_shape = _parse_shape(args.image_shape) if args.image_shape else None
  variables = torch_to_flax(state_dict, args.arch, args.num_classes, image_shape)
  num_classes, shape = args.num_classes, image_shape
  if num_classes is None or shape is None:
    guessed_classes, guessed_shape = infer_model_args(state_dict, args.arch)
    num_classes = guessed_classes if num_classes is None else num_classes
    shape = guessed_shape if shape is None else shape
  save_converted(variables, args.out, args.arch, num_classes, shape,
                 source=os.path.abspath(args.torch_path), overwrite=args.overwrite)
  return (f'wrote a {args.arch} ({num_classes} classes, input {tuple(shape)}) to '
          f'{os.path.abspath(args.out)}')


def main(argv: Optional[Sequence[str]] = None) -> int:
  """CLI entry point; prints a user error without a traceback and returns 2."""
  args = _parser().parse_args(argv)
  try:
    print(run(args))
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
