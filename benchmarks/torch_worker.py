"""The PyTorch side of the benchmark (the twins of tests/torch_reference); one task per process.

  python benchmarks/torch_worker.py --task steps --arch cnn --out r.json --weights w.npz

Tasks:
  prep     seeded torch init of the CIFAR ResNet-18 twin, saved as .npz (both
           frameworks then time the same weights)
  steps    DELETE, training and eval step of one architecture at batch 128
  e2e      the DataLoader-style unlearn-and-evaluate loop (torch_loop.py)
  scaling  forget-set size ×1/×2/×4 and forget classes 1/2/4, final eval only

Threads: torch's defaults (intra-op = usable cores, OpenMP), never changed here;
the chosen values are recorded in the result.
"""

from __future__ import annotations

import os
import sys
import time

_T_PROCESS = time.time()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=wrong-import-position

import numpy as np  # pylint: disable=wrong-import-position,wrong-import-order
import torch  # pylint: disable=wrong-import-position,wrong-import-order
from torch.nn import functional as F  # pylint: disable=wrong-import-position,wrong-import-order

from tests.torch_reference import models as torch_models  # pylint: disable=wrong-import-position
from tests.torch_reference import steps as torch_steps  # pylint: disable=wrong-import-position


_DEFAULT_THREADS = torch.get_num_threads()


def device_of(args) -> torch.device:
  if args.device == 'gpu':
    if torch.cuda.is_available():
      return torch.device('cuda')
    print('torch: no CUDA device; running on CPU', file=sys.stderr)
  return torch.device('cpu')


def framework_info(dev: torch.device) -> dict:
  return {'torch': torch.__version__, 'device': str(dev),
          'device_name': torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu',
          'intra_op_threads': torch.get_num_threads(),
          'interop_threads': torch.get_num_interop_threads(),
          'mkldnn': torch.backends.mkldnn.is_available(),
          'threads': ('torch defaults (not changed)' if torch.get_num_threads() == _DEFAULT_THREADS
                      else f'set to {torch.get_num_threads()}')}


def model_fn(arch: str):
  return lambda: torch_models.create_model(arch, common.NUM_CLASSES, common.SHAPES[arch])


def load_model(path: str, arch: str, dev) -> torch.nn.Module:
  model = model_fn(arch)()
  with np.load(path) as f:
    model.load_state_dict({k: torch.from_numpy(f[k]) for k in f.files})
  return model.to(dev)


def sync_of(dev):
  if dev.type == 'cuda':
    return lambda _: torch.cuda.synchronize()
  return lambda _: None


class Preprocess:
  """uint8 NHWC → normalised float NCHW with per-example crop and flip, in torch ops.

  The same work the JAX step does on the device before its forward pass.
  """

  def __init__(self, arch: str, dev):
    p = common.PREPROCESS[arch]
    self.mean = torch.tensor(p['mean'], device=dev).view(1, -1, 1, 1)
    self.std = torch.tensor(p['std'], device=dev).view(1, -1, 1, 1)
    self.crop = p['crop_padding']
    self.flip = p['flip']

  def __call__(self, images: torch.Tensor, augment: bool) -> torch.Tensor:
    x = images.permute(0, 3, 1, 2).float().div(255.0)
    b, _, h, w = x.shape
    if augment and self.crop:
      c = self.crop
      padded = F.pad(x, (c, c, c, c))
      off = torch.randint(0, 2 * c + 1, (b, 2)).tolist()
      x = torch.stack([padded[i, :, oy:oy + h, ox:ox + w] for i, (oy, ox) in enumerate(off)])
    if augment and self.flip:
      flip = (torch.rand(b, device=x.device) < 0.5).view(b, 1, 1, 1)
      x = torch.where(flip, x.flip(3), x)
    return (x - self.mean) / self.std


def host_batch(arch: str, seed: int, labels_from=None):
  rs = np.random.RandomState(seed)
  labels_from = np.arange(common.NUM_CLASSES) if labels_from is None else labels_from
  images = rs.randint(0, 256, (common.BATCH,) + common.SHAPES[arch]).astype(np.uint8)
  labels = rs.choice(labels_from, common.BATCH).astype(np.int64)
  return torch.from_numpy(images), torch.from_numpy(labels)


def task_prep(args) -> dict:
  torch.manual_seed(0)
  model = model_fn(args.arch)()
  np.savez(args.weights, **{k: v.numpy() for k, v in model.state_dict().items()})
  return {'arch': args.arch}


def task_steps(args) -> dict:
  arch, dev = args.arch, device_of(args)
  sync = sync_of(dev)
  pp = Preprocess(arch, dev)
  out = {}
  student = load_model(args.weights, arch, dev)
  teacher = load_model(args.weights, arch, dev)
  optimizer = torch_steps.make_sgd(student, common.UNLEARN_LR, momentum=common.MOMENTUM)
  images, labels = host_batch(arch, 1, np.array([common.FORGET_ORDER[0]]))
  images, labels = images.to(dev), labels.to(dev)

  def delete_call():
    return torch_steps.delete_step(student, teacher, optimizer, pp(images, True), labels)

  out['delete'] = common.summary(*common.time_calls(
      delete_call, sync, warmup=args.warmup, repeats=args.repeats,
      min_seconds=args.min_seconds), common.BATCH)

  model = load_model(args.weights, arch, dev)
  optimizer = torch_steps.make_sgd(model, common.TRAIN_LR, momentum=common.MOMENTUM,
                                   weight_decay=common.WEIGHT_DECAY)
  images, labels = host_batch(arch, 2)
  images, labels = images.to(dev), labels.to(dev)

  def train_call():
    return torch_steps.pretrain_step(model, optimizer, pp(images, True), labels)

  out['train'] = common.summary(*common.time_calls(
      train_call, sync, warmup=args.warmup, repeats=args.repeats,
      min_seconds=args.min_seconds), common.BATCH)

  model = load_model(args.weights, arch, dev).eval()
  images, labels = host_batch(arch, 3)
  images, labels = images.to(dev), labels.to(dev)
  mask = torch.ones(common.BATCH, dtype=torch.bool, device=dev)

  @torch.no_grad()
  def eval_call():
    logits = model(pp(images, False))
    pred = logits.argmax(-1)
    return pred, torch.softmax(logits, -1), (pred == labels) & mask

  out['eval'] = common.summary(*common.time_calls(
      eval_call, sync, warmup=args.warmup, repeats=args.repeats,
      min_seconds=args.min_seconds), common.BATCH)
  return {'arch': arch, 'steps': out}


def _fmnist():
  from delete_jax.data import class_split, load_dataset  # pylint: disable=g-import-not-at-top
  ds = load_dataset('fashion_mnist')
  return ds, class_split


def task_e2e(args) -> dict:
  import torch_loop  # pylint: disable=g-import-not-at-top
  t = time.perf_counter()
  ds, class_split = _fmnist()
  split = class_split(ds, common.FORGET_ORDER[:1])
  with np.load(args.weights) as f:
    original = {k: torch.from_numpy(f[k]) for k in f.files}
  setup_s = time.perf_counter() - t
  p = common.PREPROCESS['cnn']
  res = torch_loop.unlearn_and_evaluate(
      ds, split, original, model_fn('cnn'), epochs=args.epochs, eval_every=args.eval_every,
      lr=common.UNLEARN_LR, momentum=common.MOMENTUM, mean=p['mean'], std=p['std'],
      batch_size=common.BATCH, eval_batch_size=args.eval_batch, device=str(device_of(args)),
      num_workers=args.num_workers)
  res.update(protocol='published (eval every epoch)' if args.eval_every
             else 'final eval only', epochs=args.epochs, eval_every=args.eval_every,
             setup_s=setup_s, unlearn_loop_s=res['total_s'] - res['eval_s'],
             eval_batch=args.eval_batch, num_workers=args.num_workers,
             includes='DataLoader per-item transforms + collate, DELETE steps, evaluation')
  res.pop('history', None)
  return res


def task_scaling(args) -> dict:
  """Unlearning epochs of the DataLoader loop as the forget set grows."""
  import types  # pylint: disable=g-import-not-at-top
  import torch_loop  # pylint: disable=g-import-not-at-top
  ds, class_split = _fmnist()
  with np.load(args.weights) as f:
    original = {k: torch.from_numpy(f[k]) for k in f.files}
  p = common.PREPROCESS['cnn']
  kw = dict(lr=common.UNLEARN_LR, momentum=common.MOMENTUM, mean=p['mean'], std=p['std'],
            batch_size=common.BATCH, eval_batch_size=args.eval_batch,
            device=str(device_of(args)), num_workers=args.num_workers)
  # Warm-up (allocator, OpenMP pool), untimed: a few steps.
  split = class_split(ds, common.FORGET_ORDER[:1])
  tiny = types.SimpleNamespace(**{k: getattr(split, k)[:256] for k in (
      'train_forget', 'train_remain', 'test_forget', 'test_remain')})
  torch_loop.unlearn_and_evaluate(ds, tiny, original, model_fn('cnn'), epochs=1,
                                  eval_every=0, evaluate=False, **kw)
  rows = []
  for point in common.scaling_points(ds, class_split):
    res = torch_loop.unlearn_and_evaluate(
        ds, class_split(ds, point['classes']), original, model_fn('cnn'),
        epochs=args.epochs, eval_every=0, forget_indices=point['indices'],
        evaluate=False, **kw)
    rows.append(common.scaling_row(point, args.epochs, res['train_s']))
  return {'epochs': args.epochs, 'points': rows}


def main() -> None:
  parser = common.worker_parser(eval_batch_default=128,
                                eval_batch_help='evaluation batch (the published code: 128)')
  parser.add_argument('--device', default='cpu', choices=('cpu', 'gpu'))
  parser.add_argument('--num_workers', type=int, default=0)
  parser.add_argument('--threads', type=int, default=0,
                      help='torch.set_num_threads(n) (0: keep torch\'s default)')
  args = parser.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  dev = device_of(args)
  common.run_worker_task(
      args, {'prep': task_prep, 'steps': task_steps, 'e2e': task_e2e,
             'scaling': task_scaling}, 'torch', _T_PROCESS, lambda: framework_info(dev),
      lambda: (round(torch.cuda.max_memory_allocated() / 2**20, 1) if dev.type == 'cuda'
               else None))


if __name__ == '__main__':
  main()
