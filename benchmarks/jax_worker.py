"""The JAX side of the benchmark; one task per process (see bench.py).

  python benchmarks/jax_worker.py --task steps --arch cnn --out r.json --weights w.npz

Tasks:
  prep     train the Fashion-MNIST CNN for one epoch with delete_jax.train (the
           original model of the end-to-end runs) and save it in torch layout (.npz)
  steps    DELETE, training and eval step of one architecture at batch 128
  e2e      unlearn one class and evaluate with delete_jax.unlearn.unlearn
           (--eval_every 1: published protocol; 0: package default, final eval only)
  scaling  forget-set size ×1/×2/×4 and forget classes 1/2/4, steady state
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
import time

_T_PROCESS = time.time()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=wrong-import-position

import jax  # pylint: disable=wrong-import-position,wrong-import-order
import jax.numpy as jnp  # pylint: disable=wrong-import-position,wrong-import-order
import numpy as np  # pylint: disable=wrong-import-position,wrong-import-order

from delete_jax import convert, parallel  # pylint: disable=wrong-import-position
from delete_jax.preprocess import Preprocess  # pylint: disable=wrong-import-position
from delete_jax.state import (ModelVars, create_train_state, make_sgd,  # pylint: disable=wrong-import-position
                              split_model)
from delete_jax.steps import delete_objective, train_step, unlearn_step  # pylint: disable=wrong-import-position


def framework_info() -> dict:
  dev = jax.devices()[0]
  import flax  # pylint: disable=g-import-not-at-top
  return {'jax': jax.__version__, 'flax': flax.__version__, 'backend': jax.default_backend(),
          'device': str(dev.device_kind), 'device_count': jax.device_count(),
          'xla_flags': os.environ.get('XLA_FLAGS', ''),
          'cpu_convolutions': parallel.cpu_convolutions(),
          'compiler_options': parallel.compiler_options(None),
          'threads': 'XLA:CPU default (Eigen pool over all usable cores)'
                     if jax.default_backend() == 'cpu' else 'n/a'}


def device_peak_mb() -> float | None:
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    return None
  peak = stats.get('peak_bytes_in_use')
  return None if peak is None else round(peak / 2**20, 1)


def graphdef_of(arch: str):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from delete_jax.models import create_model  # pylint: disable=g-import-not-at-top
  # eval_shape: the structure only (initialising a ResNet-18 costs seconds on CPU).
  return split_model(nnx.eval_shape(
      lambda: create_model(arch, common.NUM_CLASSES, common.SHAPES[arch])))[0]


def load_vars(path: str, arch: str) -> ModelVars:
  with np.load(path) as f:
    state_dict = {k: f[k] for k in f.files}
  return convert.torch_to_flax(state_dict, arch, common.NUM_CLASSES, common.SHAPES[arch])


def preprocess_of(arch: str) -> Preprocess:
  p = common.PREPROCESS[arch]
  return Preprocess(mean=p['mean'], std=p['std'], crop_padding=p['crop_padding'],
                    flip=p['flip'])


def host_batch(arch: str, seed: int, labels_from=None) -> dict:
  rs = np.random.RandomState(seed)
  labels_from = np.arange(common.NUM_CLASSES) if labels_from is None else labels_from
  return {'image': rs.randint(0, 256, (common.BATCH,) + common.SHAPES[arch]).astype(np.uint8),
          'label': rs.choice(labels_from, common.BATCH).astype(np.int32)}


def sync(x):
  return jax.block_until_ready(x)


# ---------------------------------------------------------------------------
# steps


def task_steps(args) -> dict:
  arch = args.arch
  graphdef = graphdef_of(arch)
  variables = load_vars(args.weights, arch)
  pp = preprocess_of(arch)
  mesh = parallel.make_mesh()
  out = {}

  # DELETE: teacher eval-mode forward + student train-mode forward/backward + SGD,
  # on the device-side flip (+crop) augmentation of a uint8 batch, as unlearn() runs it.
  tx = make_sgd(common.UNLEARN_LR, common.MOMENTUM, 0.0)
  step = parallel.jit_step(functools.partial(
      unlearn_step, graphdef=graphdef, tx=tx, preprocess=pp, objective=delete_objective(),
      bn_mode='train', augment=True), mesh)
  holder = {'state': parallel.put_replicated(create_train_state(variables, tx), mesh)}
  teacher = parallel.put_replicated(variables, mesh)
  batch = parallel.put_batch(host_batch(arch, 1, np.array([common.FORGET_ORDER[0]])), mesh)
  rng = jax.random.key(0)

  def delete_call():
    holder['state'], metrics = step(holder['state'], teacher, batch, rng)
    return holder['state'], metrics

  out['delete'] = common.summary(*common.time_calls(
      delete_call, sync, warmup=args.warmup, repeats=args.repeats,
      min_seconds=args.min_seconds), common.BATCH)
  del holder['state']

  # Training: cross entropy, weight decay, BN train mode (delete_jax.train).
  tx = make_sgd(common.TRAIN_LR, common.MOMENTUM, common.WEIGHT_DECAY)
  tstep = parallel.jit_step(functools.partial(train_step, graphdef=graphdef, tx=tx,
                                              preprocess=pp), mesh)
  holder['state'] = parallel.put_replicated(create_train_state(variables, tx), mesh)
  batch = parallel.put_batch(host_batch(arch, 2), mesh)

  def train_call():
    holder['state'], metrics = tstep(holder['state'], batch, rng)
    return holder['state'], metrics

  out['train'] = common.summary(*common.time_calls(
      train_call, sync, warmup=args.warmup, repeats=args.repeats,
      min_seconds=args.min_seconds), common.BATCH)
  del holder['state']

  # Eval: the package's jitted predict (pred, softmax prob, masked correct).
  from delete_jax.evaluation import accuracy as acc_lib  # pylint: disable=g-import-not-at-top
  predict = acc_lib._jitted_predict(graphdef, pp, False, mesh)  # pylint: disable=protected-access
  ebatch = host_batch(arch, 3)
  ebatch['mask'] = np.ones((common.BATCH,), bool)
  ebatch = parallel.put_batch(ebatch, mesh)
  evars = parallel.put_replicated(variables, mesh)
  out['eval'] = common.summary(*common.time_calls(
      lambda: predict(evars, ebatch, rng), sync, warmup=args.warmup,
      repeats=args.repeats, min_seconds=args.min_seconds), common.BATCH)
  return {'arch': arch, 'steps': out}


# ---------------------------------------------------------------------------
# end to end


def fmnist_config(epochs: int, eval_every: int, eval_batch: int = 0):
  from configs import fashion_mnist_cnn  # pylint: disable=g-import-not-at-top
  config = fashion_mnist_cnn.get_config()
  config.forget_classes = str(common.FORGET_ORDER[0])
  config.unlearn.epochs = epochs
  config.unlearn.eval_every_epochs = eval_every
  config.unlearn.lr = common.UNLEARN_LR
  config.train.epochs = 1
  config.log_every_steps = 10**9
  config.cpu_convolutions = parallel.cpu_convolutions()  # the worker's --cpu_convolutions
  if eval_batch:
    config.eval.batch_size = eval_batch
  return config


def task_prep(args) -> dict:
  """One epoch of delete_jax.train on Fashion-MNIST: the original model of e2e runs."""
  from delete_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  from delete_jax.context import build_context  # pylint: disable=g-import-not-at-top
  config = fmnist_config(1, 0)
  with tempfile.TemporaryDirectory() as workdir:
    ctx = build_context(config, workdir)
    t0 = time.perf_counter()
    variables, record = train_lib.train(ctx, 'original')
    seconds = time.perf_counter() - t0
  state_dict = convert.flax_to_numpy_state_dict(variables, 'cnn')
  np.savez(args.weights, **state_dict)
  return {'train_1_epoch_s': seconds, 'history': record.get('history'),
          'images': len(ctx.dataset.train_labels)}


def task_e2e(args) -> dict:
  """unlearn() + four accuracies, timed from the call (data already loaded)."""
  from delete_jax.context import build_context  # pylint: disable=g-import-not-at-top
  from delete_jax.evaluation.evaluate import four_accuracies  # pylint: disable=g-import-not-at-top
  from delete_jax.unlearn import unlearn  # pylint: disable=g-import-not-at-top
  config = fmnist_config(args.epochs, args.eval_every, args.eval_batch)
  t_setup = time.perf_counter()
  with tempfile.TemporaryDirectory() as workdir:
    ctx = build_context(config, workdir)
    original = load_vars(args.weights, 'cnn')
    setup_s = time.perf_counter() - t_setup
    eval_time = [0.0, 0]

    def evaluate(v):
      t = time.perf_counter()
      accs = four_accuracies(ctx, v)
      eval_time[0] += time.perf_counter() - t
      eval_time[1] += 1
      return accs

    t0 = time.perf_counter()
    final, record = unlearn(ctx, original,
                            evaluate_fn=evaluate if args.eval_every else None)
    if args.eval_every:
      accs = record['history'][-1]
    else:
      accs = evaluate(final)
    total = time.perf_counter() - t0
  return {'protocol': 'published (eval every epoch)' if args.eval_every
                      else 'delete_jax default (final eval only)',
          'epochs': args.epochs, 'eval_every': args.eval_every,
          'forget_images': int(len(ctx.split.train_forget)),
          'eval_batch': int(config.eval.batch_size), 'total_s': total, 'eval_s': eval_time[0], 'evaluations': eval_time[1],
          'unlearn_loop_s': total - eval_time[0], 'setup_s': setup_s,
          'final_accuracy': {k: v for k, v in accs.items() if k != 'epoch'},
          'includes': 'compile of both step shapes, Orbax checkpoint per epoch, '
                      'host batching, evaluation'}


# ---------------------------------------------------------------------------
# scaling


class _NoCheckpoints:
  directory = '(benchmark: no checkpoints)'

  def save(self, *args, **kwargs):
    del args, kwargs


def task_scaling(args) -> dict:
  """Steady-state unlearning epochs as the forget set grows.

  Uses the package's loop (`loop.run_epochs`: epoch order, host batching,
  put_batch, metric syncs) and step, without checkpoints; every step shape is
  compiled before timing (compile is in the steps table). The evaluation does not
  grow with the forget set; its cost is in the end-to-end part.
  """
  from delete_jax.context import build_context  # pylint: disable=g-import-not-at-top
  from delete_jax.data import class_split  # pylint: disable=g-import-not-at-top
  from delete_jax.loop import LoopSpec, run_epochs  # pylint: disable=g-import-not-at-top
  config = fmnist_config(args.epochs, 0)
  ctx = build_context(config, tempfile.gettempdir())
  ds = ctx.dataset
  original = load_vars(args.weights, 'cnn')
  tx = make_sgd(common.UNLEARN_LR, common.MOMENTUM, 0.0)
  jitted = parallel.jit_step(functools.partial(
      unlearn_step, graphdef=ctx.graphdef, tx=tx, preprocess=ctx.preprocess,
      objective=delete_objective(), bn_mode='train', augment=True), ctx.mesh)
  teacher = parallel.put_replicated(original, ctx.mesh)

  def step_fn(state, batch, rng):
    return jitted(state, teacher, batch, rng)

  points = common.scaling_points(ds, class_split)
  # Warm-up: compile the full batch and every partial last batch.
  sizes = {common.BATCH} | {len(p['indices']) % common.BATCH for p in points} - {0}
  for n in sorted(sizes):
    state = parallel.put_replicated(create_train_state(original, tx), ctx.mesh)
    idx = points[0]['indices'][:n]
    sync(step_fn(state, parallel.put_batch({'image': ds.train_images[idx],
                                             'label': ds.train_labels[idx]}, ctx.mesh),
                 jax.random.key(0)))

  results = []
  for p in points:
    state = parallel.put_replicated(create_train_state(original, tx), ctx.mesh)
    spec = LoopSpec(name='delete', images=ds.train_images, labels=ds.train_labels,
                    indices=p['indices'], batch_size=common.BATCH, epochs=args.epochs,
                    seed=0, log_every_steps=10**9)
    t0 = time.perf_counter()
    state, _ = run_epochs(spec, state, step_fn, jax.random.key(3), mesh=ctx.mesh,
                          checkpoints=_NoCheckpoints(), record={'step': 0})
    sync(state)
    results.append(common.scaling_row(p, args.epochs, time.perf_counter() - t0))
  return {'epochs': args.epochs, 'points': results}


# ---------------------------------------------------------------------------


def main() -> None:
  parser = common.worker_parser(eval_batch_default=0,
                                eval_batch_help='config.eval.batch_size (0: the package default)')
  parser.add_argument('--cpu_convolutions', default='eigen',
                      help="parallel.set_cpu_convolutions: 'eigen' (package default) or "
                           "'xla_default' (XLA's own choice: the state before issue 9)")
  args = parser.parse_args()
  parallel.set_cpu_convolutions(args.cpu_convolutions)
  logging.basicConfig(level=logging.WARNING)
  common.run_worker_task(args, {'prep': task_prep, 'steps': task_steps, 'e2e': task_e2e,
                                'scaling': task_scaling}, 'jax', _T_PROCESS,
                         framework_info, device_peak_mb)


if __name__ == '__main__':
  main()
