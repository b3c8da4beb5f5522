"""Before/after measurements of ideas for making the JAX side faster on CPU.

  python benchmarks/profile_ideas.py flags          # XLA:CPU flag sweep (subprocesses)
  python benchmarks/profile_ideas.py variants       # step variants (one process)
  python benchmarks/profile_ideas.py loop           # host vs device-resident batching
  python benchmarks/profile_ideas.py eval           # evaluation variants

No package code is changed: each idea is written here as a variant of the
package's step, loop or evaluation and timed against the unchanged original in
the same process, in alternating rounds (A B A B ...) so that a drifting
machine load affects both alike. Medians; `--json` writes the numbers.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=wrong-import-position

WEIGHTS = {'cnn': os.path.join('/tmp', 'delete_jax_bench', 'cnn_train1.npz'),
           'resnet18_cifar': os.path.join('/tmp', 'delete_jax_bench',
                                          'resnet18_cifar_init.npz')}


def _jit(fn, **kwargs):
  """jax.jit with the package's compiler options (config.cpu_convolutions), like its steps."""
  from delete_jax import parallel  # pylint: disable=g-import-not-at-top
  return parallel.jit(fn, None, **kwargs)


def _weights(arch):
  path = WEIGHTS[arch]
  return path if os.path.exists(path) else ''


def alternate(fns: dict, rounds: int, per_round: int, sync) -> dict:
  """Median per-call seconds of each fn, timed in alternating rounds."""
  for f in fns.values():  # compile + warm
    sync(f())
    sync(f())
  times = {k: [] for k in fns}
  for _ in range(rounds):
    for k, f in fns.items():
      for _ in range(per_round):
        t = time.perf_counter()
        sync(f())
        times[k].append(time.perf_counter() - t)
  return {k: {'median_ms': 1000 * common.median(v), 'n': len(v)} for k, v in times.items()}


def _print(title, res, base):
  print(f'\n{title} (load {common.load_average()})')
  b = res[base]['median_ms']
  for k, v in res.items():
    print(f'  {k:58s} {v["median_ms"]:9.2f} ms  {v["median_ms"] / b:6.2f}× of {base}')


# ---------------------------------------------------------------------------
# Step variants.


def variants(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import jax_worker as jw  # pylint: disable=g-import-not-at-top
  from delete_jax import parallel  # pylint: disable=g-import-not-at-top
  from delete_jax.state import ModelVars, create_train_state, make_sgd  # pylint: disable=g-import-not-at-top
  from delete_jax.steps import apply_model, delete_objective, unlearn_step  # pylint: disable=g-import-not-at-top
  out = {}
  for arch in args.archs.split(','):
    graphdef = jw.graphdef_of(arch)
    w = _weights(arch)
    if w:
      variables = jw.load_vars(w, arch)
    else:
      from delete_jax.models import create_model  # pylint: disable=g-import-not-at-top
      from delete_jax.state import split_model  # pylint: disable=g-import-not-at-top
      variables = split_model(create_model(arch, 10, common.SHAPES[arch]))[1]
    pp = jw.preprocess_of(arch)
    mesh = parallel.make_mesh()
    tx = make_sgd(common.UNLEARN_LR, common.MOMENTUM, 0.0)
    host = jw.host_batch(arch, 1, np.array([common.FORGET_ORDER[0]]))
    batch = parallel.put_batch(host, mesh)
    teacher = parallel.put_replicated(variables, mesh)
    rng = jax.random.key(0)
    base_kw = dict(graphdef=graphdef, tx=tx, preprocess=pp, objective=delete_objective())
    holders = {}

    def stepper(name, fn, *extra):
      holders[name] = parallel.put_replicated(create_train_state(variables, tx), mesh)

      def call():
        holders[name], m = fn(holders[name], *extra)
        return holders[name], m
      return call

    fns = {}
    # A: the package's step as unlearn() runs it (jit_step: shardings, donated state).
    fns['A package step (jit_step, donated)'] = stepper(
        'A', parallel.jit_step(functools.partial(unlearn_step, **base_kw), mesh),
        teacher, batch, rng)
    # B: the same without donation.
    fns['B no donation'] = stepper(
        'B', _jit(functools.partial(unlearn_step, **base_kw)), teacher, batch, rng)

    # C: teacher logits precomputed once (as an input), no teacher forward in the step.
    logits, _ = _jit(lambda v, x: apply_model(graphdef, v, pp(x, None, augment=False),
                                                 train=False))(variables, batch['image'])
    batch_c = dict(batch, teacher_logits=logits)

    def prepare_c(teacher_fn, pixels, b, rng):
      del teacher_fn, rng
      return pixels, b['teacher_logits']

    fns['C precomputed teacher logits'] = stepper(
        'C', parallel.jit_step(functools.partial(unlearn_step, prepare=prepare_c, **base_kw),
                               mesh), None, batch_c, rng)
    # D: no augmentation (what the step costs without the on-device flip/crop).
    fns['D augment=False'] = stepper(
        'D', parallel.jit_step(functools.partial(unlearn_step, augment=False, **base_kw),
                               mesh), teacher, batch, rng)
    # E: student forward/backward only (no teacher, no optimizer): the floor.
    def grad_only(state, b, rng):
      x = pp(b['image'], rng, augment=True)

      def loss(params):
        lg, bs = apply_model(graphdef, ModelVars(params, state.batch_stats), x, train=True)
        return jnp.mean(jax.nn.log_softmax(lg)[:, 0]), bs
      g, _ = jax.grad(loss, has_aux=True)(state.params)
      return state, g

    fns['E student fwd+bwd only (no teacher, no update)'] = stepper(
        'E', _jit(grad_only), batch, rng)
    # F: teacher forward only.
    tfwd = _jit(lambda v, b: apply_model(graphdef, v, pp(b['image'], None, augment=False),
                                            train=False)[0])
    fns['F teacher forward only'] = lambda: tfwd(teacher, batch)
    rounds, per = (args.rounds, args.per_round) if arch == 'cnn' else (2, 2)
    res = alternate(fns, rounds, per, jax.block_until_ready)
    _print(f'{arch} DELETE step variants', res, 'A package step (jit_step, donated)')
    out[arch] = res
  return out


# ---------------------------------------------------------------------------
# Host batching vs a device-resident forget set.


def loop(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import jax_worker as jw  # pylint: disable=g-import-not-at-top
  from delete_jax import parallel  # pylint: disable=g-import-not-at-top
  from delete_jax.data import class_split, load_dataset  # pylint: disable=g-import-not-at-top
  from delete_jax.loop import LoopSpec, epoch_order, run_epochs  # pylint: disable=g-import-not-at-top
  from delete_jax.preprocess import Preprocess  # pylint: disable=g-import-not-at-top
  from delete_jax.state import create_train_state, make_sgd  # pylint: disable=g-import-not-at-top
  from delete_jax.steps import delete_objective, unlearn_step  # pylint: disable=g-import-not-at-top
  ds = load_dataset('fashion_mnist')
  split = class_split(ds, common.FORGET_ORDER[:1])
  graphdef = jw.graphdef_of('cnn')
  variables = jw.load_vars(_weights('cnn'), 'cnn') if _weights('cnn') else None
  pp = Preprocess(mean=tuple(ds.mean), std=tuple(ds.std), flip=True)
  mesh = parallel.make_mesh()
  tx = make_sgd(common.UNLEARN_LR, common.MOMENTUM, 0.0)
  teacher = parallel.put_replicated(variables, mesh)
  kw = dict(graphdef=graphdef, tx=tx, preprocess=pp, objective=delete_objective())
  step = parallel.jit_step(functools.partial(unlearn_step, **kw), mesh)
  spec = LoopSpec(name='delete', images=ds.train_images, labels=ds.train_labels,
                  indices=split.train_forget, batch_size=common.BATCH, epochs=1, seed=0,
                  log_every_steps=10**9)

  class NoCk:
    directory = ''

    def save(self, *a):
      del a

  def package_epoch():
    state = parallel.put_replicated(create_train_state(variables, tx), mesh)
    state, _ = run_epochs(spec, state, lambda s, b, r: step(s, teacher, b, r),
                          jax.random.key(3), mesh=mesh, checkpoints=NoCk(),
                          record={'step': 0})
    return state

  # Device-resident forget set: images/labels on the device once; each step gathers
  # its rows on the device from an index vector (same order as the package loop).
  images_dev = jax.device_put(ds.train_images[split.train_forget])
  labels_dev = jax.device_put(ds.train_labels[split.train_forget])
  pos = {int(g): i for i, g in enumerate(split.train_forget)}

  def gathered_step(state, teacher, idx, rng):
    b = {'image': jnp.take(images_dev, idx, axis=0), 'label': jnp.take(labels_dev, idx)}
    return unlearn_step(state, teacher, b, rng, **kw)

  gstep = _jit(gathered_step, donate_argnums=0)

  def device_epoch():
    state = parallel.put_replicated(create_train_state(variables, tx), mesh)
    order = epoch_order(spec, 0)
    local = np.array([pos[int(g)] for g in order], np.int32)
    rng = jax.random.key(3)
    for i in range(spec.steps_per_epoch):
      state, m = gstep(state, teacher, local[i * 128:(i + 1) * 128], rng)
    float(m['loss'])
    return state

  # Whole epoch as one lax.scan over the full batches (+ the partial one).
  n_full = len(split.train_forget) // 128

  def scan_epoch_fn(state, teacher, idx_full, idx_last, rng):
    def body(s, idx):
      s, m = gathered_step(s, teacher, idx, rng)
      return s, m['loss']
    state, losses = jax.lax.scan(body, state, idx_full)
    state, m = gathered_step(state, teacher, idx_last, rng)
    return state, losses

  scan_epoch = _jit(scan_epoch_fn, donate_argnums=0)

  def scanned_epoch():
    state = parallel.put_replicated(create_train_state(variables, tx), mesh)
    order = epoch_order(spec, 0)
    local = np.array([pos[int(g)] for g in order], np.int32)
    state, losses = scan_epoch(state, teacher, local[:n_full * 128].reshape(n_full, 128),
                               local[n_full * 128:], jax.random.key(3))
    return state

  fns = {'A package loop (host gather + put_batch)': package_epoch,
         'B device-resident forget set, on-device gather': device_epoch,
         'C one lax.scan per epoch (device-resident)': scanned_epoch}
  res = alternate(fns, args.rounds, 1, jax.block_until_ready)
  _print(f'one DELETE epoch over {len(split.train_forget)} images (CNN)', res,
         'A package loop (host gather + put_batch)')
  return res


# ---------------------------------------------------------------------------
# Evaluation variants.


def evaluation(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import jax_worker as jw  # pylint: disable=g-import-not-at-top
  from delete_jax import parallel  # pylint: disable=g-import-not-at-top
  from delete_jax.data import load_dataset  # pylint: disable=g-import-not-at-top
  from delete_jax.evaluation import accuracy as acc_lib  # pylint: disable=g-import-not-at-top
  from delete_jax.preprocess import Preprocess  # pylint: disable=g-import-not-at-top
  from delete_jax.steps import apply_model  # pylint: disable=g-import-not-at-top
  ds = load_dataset('fashion_mnist')
  graphdef = jw.graphdef_of('cnn')
  variables = jax.device_put(jw.load_vars(_weights('cnn'), 'cnn'))
  pp = Preprocess(mean=tuple(ds.mean), std=tuple(ds.std), flip=True)
  mesh = parallel.make_mesh()
  n = args.eval_images
  idx = np.arange(n)
  images, labels = ds.train_images[:n], ds.train_labels[:n]

  def package(bs, in_flight=acc_lib._IN_FLIGHT):  # pylint: disable=protected-access
    def run():
      saved, acc_lib._IN_FLIGHT = acc_lib._IN_FLIGHT, in_flight  # pylint: disable=protected-access
      try:
        return acc_lib.predict(variables, images, labels, idx, graphdef=graphdef,
                               preprocess=pp, batch_size=bs, mesh=mesh)['correct']
      finally:
        acc_lib._IN_FLIGHT = saved  # pylint: disable=protected-access
    return run

  # Device-resident images; one program over all batches returning only correctness.
  images_dev, labels_dev = jax.device_put(images), jax.device_put(labels)
  bs = 1024
  pad = (-n) % bs

  @_jit
  def correct_all(v, imgs, lbls):
    imgs = jnp.concatenate([imgs, jnp.zeros((pad,) + imgs.shape[1:], imgs.dtype)])
    lbls = jnp.concatenate([lbls, jnp.full((pad,), -1, lbls.dtype)])

    def body(_, xy):
      x, y = xy
      lg, _ = apply_model(graphdef, v, pp(x, None, augment=False), train=False)
      return None, jnp.argmax(lg, -1) == y
    _, c = jax.lax.scan(body, None, (imgs.reshape(-1, bs, *imgs.shape[1:]),
                                     lbls.reshape(-1, bs)))
    return c.reshape(-1)[:n]

  fns = {'A package predict, batch 1024': package(1024),
         'B package predict, batch 128': package(128),
         'B0 batch 128, fetched after every batch (no pipelining)': package(128, 0),
         'B2 package predict, batch 256': package(256),
         'B3 package predict, batch 512': package(512),
         'C package predict, batch 4096': package(4096),
         'D device-resident, one jit (scan), correct only': lambda: correct_all(
             variables, images_dev, labels_dev)}
  res = alternate(fns, args.rounds, 1, jax.block_until_ready)
  _print(f'evaluate {n} images (CNN)', res, 'A package predict, batch 1024')
  return res


# ---------------------------------------------------------------------------
# XLA flag sweep.

FLAG_SETS = {
    'default': '',
    'no multi-thread Eigen': '--xla_cpu_multi_thread_eigen=false',
    'oneDNN thunks (use_onednn)': '--xla_cpu_use_onednn=true',
    'oneDNN custom calls': '--xla_cpu_experimental_onednn_custom_call=true',
    'XNNPACK off': '--xla_cpu_use_xnnpack=false',
    'YNN + convolution': '--xla_cpu_experimental_ynn_fusion_type=+INDIVIDUAL_CONVOLUTION',
    'YNN fusions off': '--xla_cpu_experimental_ynn_fusion_type=INVALID',
    'YNN without convolution':
        '--xla_cpu_experimental_ynn_fusion_type=-INDIVIDUAL_CONVOLUTION',
    'YNN without convolution + oneDNN custom calls':
        '--xla_cpu_experimental_ynn_fusion_type=-INDIVIDUAL_CONVOLUTION '
        '--xla_cpu_experimental_onednn_custom_call=true',
    'YNN without reduce': '--xla_cpu_experimental_ynn_fusion_type=-REDUCE',
    'YNN without eltwise': '--xla_cpu_experimental_ynn_fusion_type=-ELTWISE',
    'YNN without dot': '--xla_cpu_experimental_ynn_fusion_type=-INDIVIDUAL_DOT',
    'XNN graph fusion greedy':
        '--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY',
    'fast math': '--xla_cpu_enable_fast_math=true',
    'concurrency scheduler off': '--xla_cpu_enable_concurrency_optimized_scheduler=false',
    'vector width 512': '--xla_cpu_prefer_vector_width=512',
}


def flags_child(args) -> dict:
  """One flag set: CNN and ResNet DELETE step + CNN eval step; HLO engine counts."""
  import jax  # pylint: disable=g-import-not-at-top
  import profile_trace as pt  # pylint: disable=g-import-not-at-top
  from delete_jax import parallel  # pylint: disable=g-import-not-at-top
  # The sweep starts from XLA's own defaults: the package's per-program option
  # (config.cpu_convolutions='eigen') would override XLA_FLAGS' YNN fusion types.
  # 'YNN without convolution' is what the package's default amounts to.
  parallel.set_cpu_convolutions('xla_default')
  out = {}
  for arch, step, rounds in (('cnn', 'delete', args.rounds), ('cnn', 'eval', args.rounds),
                             ('resnet18_cifar', 'delete', 1)):
    if arch not in args.archs:
      continue
    fn, call_args = pt.build(arch, step, _weights(arch))
    t = time.perf_counter()
    compiled = fn.lower(*call_args).compile()
    compile_s = time.perf_counter() - t
    hlo = compiled.as_text()
    engines = {e: hlo.count(f'"kind":"__{e}_fusion"') for e in ('ynn', 'xnn', 'onednn')}
    engines['eigen_conv'] = sum(1 for line in hlo.splitlines() if ' convolution(' in line
                                and 'fused_computation' not in line)
    res = alternate({'x': lambda: compiled(*call_args)}, rounds,
                    args.per_round if arch == 'cnn' else 2, jax.block_until_ready)
    out[f'{arch} {step}'] = {'median_ms': res['x']['median_ms'], 'compile_s': compile_s,
                             'fusions': engines}
  return out


def flags(args) -> dict:
  results = {}
  names = list(FLAG_SETS) if args.flag_sets == 'all' else args.flag_sets.split(',')
  # Two passes in opposite order, so load drift cancels out of the comparison.
  for rep, order in enumerate((names, names[::-1])[:args.passes]):
    for name in order:
      env = dict(os.environ, XLA_FLAGS=FLAG_SETS[name], PYTHONPATH=common.REPO,
                 JAX_PLATFORMS='cpu')
      cmd = [sys.executable, __file__, 'flags_child', '--archs', args.archs, '--rounds',
             str(args.rounds), '--per_round', str(args.per_round), '--json', '/dev/stdout']
      proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
      if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()[-3:]
        results.setdefault(name, []).append({'error': ' | '.join(err)})
        print(f'  {name}: failed: {err}', flush=True)
        continue
      line = [l for l in proc.stdout.splitlines() if l.startswith('{')][-1]
      r = json.loads(line)
      results.setdefault(name, []).append(r)
      print(f'  pass {rep} {name:32s} ' + ', '.join(
          f'{k} {v["median_ms"]:.1f} ms (compile {v["compile_s"]:.1f} s, {v["fusions"]})'
          for k, v in r.items()), flush=True)
  print(f'\nXLA flag sweep (median of passes; load {common.load_average()})')
  base = {}
  summary = {}
  for name, runs in results.items():
    runs = [r for r in runs if 'error' not in r]
    if not runs:
      summary[name] = {'error': results[name][0].get('error')}
      continue
    keys = runs[0].keys()
    summary[name] = {k: common.median([r[k]['median_ms'] for r in runs]) for k in keys}
    if name == 'default':
      base = summary[name]
  for name, s in summary.items():
    if 'error' in s:
      print(f'  {name:32s} error: {s["error"]}')
      continue
    print(f'  {name:32s} ' + '  '.join(
        f'{k} {v:8.1f} ms ({v / base[k]:.2f}×)' if base.get(k) else f'{k} {v:.1f}'
        for k, v in s.items()))
  return {'runs': results, 'summary': summary}


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument('what', choices=('flags', 'flags_child', 'variants', 'loop', 'eval'))
  p.add_argument('--archs', default='cnn,resnet18_cifar')
  p.add_argument('--rounds', type=int, default=5)
  p.add_argument('--per_round', type=int, default=5)
  p.add_argument('--passes', type=int, default=2)
  p.add_argument('--flag_sets', default='all')
  p.add_argument('--eval_images', type=int, default=20000)
  p.add_argument('--json', default='')
  args = p.parse_args()
  fn = {'flags': flags, 'flags_child': flags_child, 'variants': variants, 'loop': loop,
        'eval': evaluation}[args.what]
  res = fn(args)
  res = {'what': args.what, 'load_average': common.load_average(), 'result': res}
  if args.json == '/dev/stdout':
    print(json.dumps(res['result']))
  elif args.json:
    with open(args.json, 'w') as f:
      json.dump(res, f, indent=1)


if __name__ == '__main__':
  main()
