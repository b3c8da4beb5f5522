"""Runs pipeline stages in a fresh process for parallel_test.py.

The device count is fixed before JAX starts, so each device count needs its
own process: the test sets XLA_FLAGS=--xla_force_host_platform_device_count=N
and runs `python -m tests.parallel_worker '<json>'`, where the JSON is a list of
tasks, run in order in this one process:

  {"task": "train", "workdir": W, "overrides": {...}, "stop_at_step": 5}
      trains the original model in W (stops after `stop_at_step` steps).
  {"task": "unlearn", "workdir": W, "overrides": {...}, "stop_at_step": null,
   "eval_out": "x.npz" or null}
      unlearns from the original model already in W; with `eval_out`, writes the
      unlearned model's eval-mode predictions on whole splits there.

The test reads the resulting states from the Orbax checkpoints in W.
"""

import json
import sys

import jax
import numpy as np

from configs import digits_cnn
from delete_jax import train as train_lib
from delete_jax import unlearn as unlearn_lib
from delete_jax.context import build_context
from delete_jax.evaluation import accuracy as acc_lib
from delete_jax.evaluation.evaluate import four_accuracies


def make_config(overrides):
  """digits_cnn with `overrides` ({'unlearn.epochs': 1, ...}) applied."""
  c = digits_cnn.get_config()
  for key, value in overrides.items():
    section, _, field = key.rpartition('.')
    node = c
    for part in filter(None, section.split('.')):
      node = node[part]
    node[field] = value
  return c


def predictions(ctx, variables) -> dict[str, np.ndarray]:
  """Eval-mode predictions on all train, all test and test-remain examples."""
  ds = ctx.dataset
  out = {}
  for name, images, labels, indices in (
      ('train', ds.train_images, ds.train_labels, np.arange(len(ds.train_labels))),
      ('test', ds.test_images, ds.test_labels, np.arange(len(ds.test_labels))),
      ('test_remain', ds.test_images, ds.test_labels, ctx.split.test_remain)):
    pred = acc_lib.predict(variables, images, labels, indices, graphdef=ctx.graphdef,
                           preprocess=ctx.preprocess,
                           batch_size=ctx.config.eval.batch_size, mesh=ctx.mesh)
    for k, v in pred.items():
      out[f'{name}/{k}'] = v
  return out


def run_task(task: dict) -> None:
  ctx = build_context(make_config(task['overrides']), task['workdir'])
  if task['task'] == 'train':
    train_lib.train(ctx, 'original', stop_at_step=task.get('stop_at_step'))
    return
  original = train_lib.load_kept_variables(ctx, 'original')
  variables, _ = unlearn_lib.unlearn(ctx, original, stop_at_step=task.get('stop_at_step'))
  if task.get('eval_out'):
    out = predictions(ctx, variables)
    for k, v in four_accuracies(ctx, variables).items():
      out[f'accuracy/{k}'] = np.float64(v)
    out['device_count'] = np.int64(jax.device_count())
    np.savez(task['eval_out'], **out)


def main(argv):
  for task in json.loads(argv[1]):
    run_task(task)


if __name__ == '__main__':
  main(sys.argv)
