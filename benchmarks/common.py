"""Shared helpers of the benchmark workers: timing, machine facts, memory, I/O.

Imports neither JAX nor torch, so the orchestrator (`bench.py`) stays light and
every framework is loaded only inside its own worker process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any, Callable, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

# The benchmark's shapes and protocol constants (one place for both frameworks).
BATCH = 128
NUM_CLASSES = 10
SHAPES = {'cnn': (28, 28, 1), 'resnet18_cifar': (32, 32, 3)}
# Preprocessing per architecture: the Fashion-MNIST CNN config (flip only) and the
# published CIFAR recipe (4-pixel zero-padded random crop + flip).
FMNIST_MEAN, FMNIST_STD = (0.286,), (0.353,)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
PREPROCESS = {
    'cnn': {'mean': FMNIST_MEAN, 'std': FMNIST_STD, 'crop_padding': 0, 'flip': True},
    'resnet18_cifar': {'mean': CIFAR_MEAN, 'std': CIFAR_STD, 'crop_padding': 4,
                       'flip': True},
}
# Fashion-MNIST unlearning protocol (configs/fashion_mnist_cnn.py, published SGD).
UNLEARN_LR = 1e-3
MOMENTUM = 0.9
TRAIN_LR = 0.05
WEIGHT_DECAY = 5e-4
# The fixed permutation's prefix for Fashion-MNIST (delete_jax.data.forget_permutation).
FORGET_ORDER = (4, 6, 2, 7)


def load_average() -> list[float]:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return []


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown'


def cpu_flags() -> list[str]:
  """The vector-ISA flags that matter for conv kernels (AVX-512, AMX, VNNI)."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('flags'):
          flags = line.split(':', 1)[1].split()
          return sorted(f for f in flags if f.startswith(('avx', 'amx', 'fma')))
  except OSError:
    pass
  return []


def mem_total_gb() -> Optional[float]:
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemTotal:'):
          return round(int(line.split()[1]) / 2**20, 1)
  except OSError:
    pass
  return None


def machine() -> dict[str, Any]:
  """What the host is, as far as the numbers depend on it (no framework imports)."""
  affinity = None
  if hasattr(os, 'sched_getaffinity'):
    affinity = len(os.sched_getaffinity(0))
  return {
      'cpu_model': cpu_model(),
      'cpu_flags': cpu_flags(),
      'logical_cpus': os.cpu_count(),
      'cpus_usable': affinity,
      'mem_total_gb': mem_total_gb(),
      'python': platform.python_version(),
      'platform': platform.platform(),
      'env': {k: os.environ.get(k) for k in ('XLA_FLAGS', 'OMP_NUM_THREADS',
                                              'MKL_NUM_THREADS', 'JAX_PLATFORMS',
                                              'CUDA_VISIBLE_DEVICES')
              if os.environ.get(k) is not None},
      'load_average': load_average(),
  }


def peak_rss_mb() -> float:
  """This process's peak resident set (Linux ru_maxrss is in KiB)."""
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def median(xs: list[float]) -> float:
  return float(statistics.median(xs)) if xs else float('nan')


def time_calls(fn: Callable[[], Any], sync: Callable[[Any], Any], *, warmup: int,
               repeats: int, min_seconds: float = 0.0) -> tuple[float, list[float]]:
  """Times `sync(fn())`: the first call, then `repeats` (or ≥ min_seconds) steady calls.

  Returns (first-call seconds, steady per-call seconds). Warm-up calls after the
  first are untimed.
  """
  t = time.perf_counter()
  sync(fn())
  first = time.perf_counter() - t
  for _ in range(warmup):
    sync(fn())
  times: list[float] = []
  start = time.perf_counter()
  while len(times) < repeats or time.perf_counter() - start < min_seconds:
    t = time.perf_counter()
    sync(fn())
    times.append(time.perf_counter() - t)
    if len(times) >= 10 * max(repeats, 1):
      break
  return first, times


def summary(first: float, times: list[float], batch: int) -> dict[str, Any]:
  med = median(times)
  return {
      'first_call_s': round(first, 4),
      'median_s': med,
      'min_s': min(times) if times else float('nan'),
      'max_s': max(times) if times else float('nan'),
      'repeats': len(times),
      'images_per_s': batch / med if med > 0 else float('nan'),
      # First call = trace + compile (JAX) or lazy init / allocator warm-up (torch)
      # plus one steady call.
      'first_minus_steady_s': round(first - med, 4),
  }


def write_json(path: str, obj: Any) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1, default=_jsonable)
  os.replace(tmp, path)


def _jsonable(x):
  try:
    return float(x)
  except (TypeError, ValueError):
    return str(x)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def worker_footer(result: dict[str, Any], t_process: float) -> dict[str, Any]:
  """Adds the process's own peak memory, wall time and load average."""
  result['process'] = {
      'peak_rss_mb_self': peak_rss_mb(),
      'wall_s': round(time.time() - t_process, 2),
      'load_average_end': load_average(),
  }
  return result


def scaling_points(ds, class_split_fn) -> list[dict]:
  """×1, ×2, ×4 of one class's images (indices repeated) and 2 and 4 forget classes."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  one = class_split_fn(ds, FORGET_ORDER[:1]).train_forget
  points = [{'name': f'size x{k}', 'classes': FORGET_ORDER[:1],
             'indices': np.tile(one, k)} for k in (1, 2, 4)]
  for k in (2, 4):
    classes = FORGET_ORDER[:k]
    points.append({'name': f'classes {k}', 'classes': classes,
                   'indices': class_split_fn(ds, classes).train_forget})
  return points


def scaling_row(p, epochs, train_s) -> dict:
  n = len(p['indices'])
  return {'name': p['name'], 'forget_classes': [int(c) for c in p['classes']],
          'forget_images': n, 'train_s': train_s, 'train_images_per_s': n * epochs / train_s}


def worker_parser(*, eval_batch_default: int, eval_batch_help: str) -> argparse.ArgumentParser:
  """The arguments both workers take (bench.py passes the same ones to each)."""
  parser = argparse.ArgumentParser()
  parser.add_argument('--task', required=True, choices=('prep', 'steps', 'e2e', 'scaling'))
  parser.add_argument('--out', required=True)
  parser.add_argument('--weights', required=True)
  parser.add_argument('--arch', default='cnn')
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--min_seconds', type=float, default=0.0)
  parser.add_argument('--epochs', type=int, default=20)
  parser.add_argument('--eval_every', type=int, default=1)
  parser.add_argument('--eval_batch', type=int, default=eval_batch_default, help=eval_batch_help)
  return parser


def run_worker_task(args, tasks: dict[str, Callable], framework: str, t_process: float,
                    info: Callable[[], dict], device_peak: Callable[[], Optional[float]]):
  """Runs `tasks[args.task]` and writes its result with the process footer to args.out."""
  load_start = load_average()
  result = tasks[args.task](args)
  result.update(framework=framework, task=args.task, info=info(),
                load_average_start=load_start, device_peak_mb=device_peak())
  write_json(args.out, worker_footer(result, t_process))
