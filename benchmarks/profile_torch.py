"""Per-op time of the PyTorch twin's steps (torch.profiler), for comparison with
profile_trace.py's XLA per-op table.

  python benchmarks/profile_torch.py --arch cnn --step delete [--threads 1]

Runs the twin's step exactly as torch_worker.py times it and prints torch's
self-CPU time per aten op, grouped the way profile_trace.py groups XLA ops
(conv forward / input-grad / kernel-grad, batch norm, pooling, elementwise,
optimizer, ...).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position,wrong-import-order
import torch  # pylint: disable=wrong-import-position,wrong-import-order

import torch_worker as tw  # pylint: disable=wrong-import-position
from tests.torch_reference import steps as torch_steps  # pylint: disable=wrong-import-position

# aten op name fragments → category (first match wins).
GROUPS = [
    ('convolution_backward', 'conv backward (input+kernel grad)'),
    ('mkldnn_convolution', 'conv forward'), ('_convolution', 'conv forward'),
    ('conv2d', 'conv forward'), ('convolution', 'conv forward'),
    ('batch_norm_backward', 'batch norm backward'), ('batch_norm', 'batch norm forward'),
    ('max_pool2d_with_indices_backward', 'max-pool backward'), ('max_pool', 'max-pool forward'),
    ('addmm', 'dot'), ('mm', 'dot'), ('linear', 'dot'),
    ('threshold_backward', 'relu backward'), ('relu', 'relu'),
    ('sgd', 'optimizer'), ('_foreach', 'optimizer'),
    ('softmax', 'softmax/loss'), ('kl_div', 'softmax/loss'), ('nll', 'softmax/loss'),
    ('log_softmax', 'softmax/loss'),
    ('copy_', 'copy'), ('clone', 'copy'), ('contiguous', 'copy'),
]


def group(name: str) -> str:
  n = name.lower()
  for frag, cat in GROUPS:
    if frag in n:
      return cat
  return 'other (' + name + ')'


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument('--arch', default='cnn', choices=tuple(common.SHAPES))
  p.add_argument('--step', default='delete', choices=('delete', 'train'))
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--threads', type=int, default=0)
  p.add_argument('--weights', default='')
  p.add_argument('--json', default='')
  args = p.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  dev = torch.device('cpu')
  arch = args.arch
  pp = tw.Preprocess(arch, dev)
  weights = args.weights or os.path.join('/tmp', 'delete_jax_bench',
                                         'cnn_train1.npz' if arch == 'cnn'
                                         else 'resnet18_cifar_init.npz')
  student = tw.load_model(weights, arch, dev)
  teacher = tw.load_model(weights, arch, dev)
  if args.step == 'delete':
    opt = torch_steps.make_sgd(student, common.UNLEARN_LR, momentum=common.MOMENTUM)
    images, labels = tw.host_batch(arch, 1, np.array([common.FORGET_ORDER[0]]))
    call = lambda: torch_steps.delete_step(student, teacher, opt, pp(images, True), labels)  # pylint: disable=unnecessary-lambda-assignment
  else:
    opt = torch_steps.make_sgd(student, common.TRAIN_LR, momentum=common.MOMENTUM,
                               weight_decay=common.WEIGHT_DECAY)
    images, labels = tw.host_batch(arch, 2)
    call = lambda: torch_steps.pretrain_step(student, opt, pp(images, True), labels)  # pylint: disable=unnecessary-lambda-assignment
  for _ in range(3):
    call()
  import time  # pylint: disable=g-import-not-at-top
  t = time.perf_counter()
  for _ in range(args.steps):
    call()
  wall_untraced = (time.perf_counter() - t) / args.steps
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    t = time.perf_counter()
    for _ in range(args.steps):
      call()
    wall = (time.perf_counter() - t) / args.steps
  per_cat = collections.Counter()
  per_op = collections.Counter()
  for ev in prof.key_averages():
    per_op[ev.key] += ev.self_cpu_time_total
    per_cat[group(ev.key)] += ev.self_cpu_time_total
  total = sum(per_cat.values())
  print(f'\n{arch} {args.step} step (torch, {torch.get_num_threads()} threads, load '
        f'{common.load_average()}): {1000 * wall_untraced:.1f} ms untraced, '
        f'{1000 * wall:.1f} ms traced, self CPU of ops {total / 1000 / args.steps:.1f} ms')
  for k, v in per_cat.most_common():
    if v / args.steps >= 10:  # ≥ 10 µs per step
      print(f'  {k:40s} {v / 1000 / args.steps:8.2f} ms  {100 * v / total:5.1f}%')
  print('top aten ops:')
  for k, v in per_op.most_common(15):
    print(f'  {v / 1000 / args.steps:8.2f} ms  {k}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'wall_ms': 1000 * wall, 'wall_ms_untraced': 1000 * wall_untraced,
                 'threads': torch.get_num_threads(),
                 'categories_ms': {k: v / 1000 / args.steps for k, v in per_cat.items()},
                 'ops_ms': {k: v / 1000 / args.steps for k, v in per_op.most_common(40)}},
                f, indent=1)


if __name__ == '__main__':
  main()
