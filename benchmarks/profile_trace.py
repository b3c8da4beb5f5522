"""Per-op time of the compiled XLA:CPU step programs (jax.profiler trace).

  XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true \
    python benchmarks/profile_trace.py --arch cnn --step delete

Runs the package's step (as benchmarks/jax_worker.py builds it) under
`jax.profiler.trace`, reads the trace back with `jax.profiler.ProfileData`, and
sums the duration of every XLA thunk (one per HLO instruction of the optimised
program; `--xla_cpu_enable_xprof_traceme=true` makes XLA:CPU emit them) per
instruction and per category (convolution forward / input-gradient /
kernel-gradient, dot, fusions, copies, ...). The optimised HLO tells which
instruction is which. Prints a table; `--json` writes the numbers.
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import json
import os
import re
import sys
import tempfile
import time

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position,wrong-import-order
import numpy as np  # pylint: disable=wrong-import-position,wrong-import-order

import jax_worker as jw  # pylint: disable=wrong-import-position
from delete_jax import parallel  # pylint: disable=wrong-import-position
from delete_jax.state import create_train_state, make_sgd  # pylint: disable=wrong-import-position
from delete_jax.steps import delete_objective, train_step, unlearn_step  # pylint: disable=wrong-import-position


def build(arch: str, step: str, weights: str):
  """(jitted fn, args) of one step, jitted with the package's compiler options but no
  donation (re-callable)."""
  graphdef = jw.graphdef_of(arch)
  variables = jw.load_vars(weights, arch) if weights else _init_vars(arch)
  pp = jw.preprocess_of(arch)
  rng = jax.random.key(0)
  if step == 'delete':
    tx = make_sgd(common.UNLEARN_LR, common.MOMENTUM, 0.0)
    fn = parallel.jit(functools.partial(unlearn_step, graphdef=graphdef, tx=tx,
                                        preprocess=pp, objective=delete_objective()), None)
    batch = jw.host_batch(arch, 1, np.array([common.FORGET_ORDER[0]]))
    args = (create_train_state(variables, tx), variables, batch, rng)
  elif step == 'train':
    tx = make_sgd(common.TRAIN_LR, common.MOMENTUM, common.WEIGHT_DECAY)
    fn = parallel.jit(functools.partial(train_step, graphdef=graphdef, tx=tx, preprocess=pp),
                      None)
    args = (create_train_state(variables, tx), jw.host_batch(arch, 2), rng)
  else:
    from delete_jax.steps import predict_step  # pylint: disable=g-import-not-at-top
    fn = parallel.jit(lambda v, b, r: predict_step(v, b, graphdef=graphdef, preprocess=pp,
                                                   rng=r), None)
    batch = jw.host_batch(arch, 3)
    batch['mask'] = np.ones((common.BATCH,), bool)
    args = (variables, batch, rng)
  args = jax.device_put(args)
  return fn, args


def _init_vars(arch):
  from delete_jax.models import create_model  # pylint: disable=g-import-not-at-top
  from delete_jax.state import split_model  # pylint: disable=g-import-not-at-top
  return split_model(create_model(arch, common.NUM_CLASSES, common.SHAPES[arch]))[1]


_INSTR = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\S+)\s+([\w\-]+)\((.*)$')
_COMP = re.compile(r'^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$')


def _parse(hlo_text: str) -> dict[str, list[dict]]:
  """computation name → its instructions (name, shape, opcode, rest of line)."""
  comps: dict[str, list[dict]] = {}
  current = None
  for line in hlo_text.splitlines():
    c = _COMP.match(line)
    if c and '=' not in line.split('(')[0]:
      current = c.group(1)
      comps[current] = []
      if line.startswith('ENTRY'):
        comps['__entry__'] = comps[current]
      continue
    m = _INSTR.match(line)
    if m and current is not None:
      name, shape, opcode, rest = m.groups()
      comps[current].append({'name': name, 'shape': shape, 'opcode': opcode, 'rest': rest})
  return comps


def _conv_kind(instr: dict) -> str:
  """fwd / input-grad / kernel-grad, from JAX's metadata and the window size."""
  op_name = re.search(r'op_name="([^"]*)"', instr['rest'])
  backward = op_name is not None and 'transpose(' in op_name.group(1)
  window = re.search(r'window=\{size=(\d+)x(\d+)', instr['rest'])
  big = window is not None and int(window.group(1)) > 7
  # A kernel gradient is a convolution whose window is the whole activation map.
  if big:
    return 'conv kernel-grad'
  return 'conv input-grad' if backward else 'conv forward'


def _main_op(instrs: list[dict]) -> tuple[str, str]:
  ops = [i['opcode'] for i in instrs]
  for i in instrs:
    if i['opcode'] == 'convolution':
      window = re.search(r'window=\{[^}]*\}', i['rest'])
      return _conv_kind(i), f'{i["shape"]} {window.group(0) if window else ""}'
  for op in ('dot', 'reduce-window', 'select-and-scatter', 'reduce', 'scatter', 'gather',
             'sort', 'transpose', 'copy'):
    if op in ops:
      return op, ''
  return 'elementwise', ''


def classify(hlo_text: str) -> dict[str, tuple[str, str]]:
  """top-level instruction name → (category, description) from optimised HLO text.

  Category = '<main op> [engine]' (dots: '<fwd|bwd> dot', bwd when JAX's
  metadata places the op under transpose(jvp(...))); the engine is the library
  a custom fusion calls (__ynn_fusion = YNNPACK, __xnn_fusion = XNNPACK,
  __onednn_fusion = oneDNN), otherwise XLA's own emitters (loop/input fusions,
  Eigen for plain convolutions and dots).
  """
  comps = _parse(hlo_text)
  out = {}
  for instr in comps.get('__entry__', []):
    op_name = re.search(r'op_name="([^"]*)"', instr['rest'])
    phase = 'bwd' if op_name and 'transpose(' in op_name.group(1) else 'fwd'
    opcode = instr['opcode']
    engine = ''
    detail = ''
    if opcode == 'fusion':
      calls = re.search(r'calls=%?([\w.\-]+)', instr['rest'])
      body = comps.get(calls.group(1), []) if calls else []
      main, detail = _main_op(body)
      kind = re.search(r'"kind":"(__\w+)"', instr['rest'])
      engine = kind.group(1).strip('_').replace('_fusion', '') if kind else 'xla'
    elif opcode == 'convolution':
      main, detail = _main_op([instr])
      engine = 'eigen'
    elif opcode == 'dot':
      main, engine = 'dot', 'eigen'
    elif opcode == 'custom-call':
      target = re.search(r'custom_call_target="([^"]+)"', instr['rest'])
      main = f'custom-call {target.group(1) if target else "?"}'
    else:
      main = opcode
    if main.startswith('conv') or main in ('elementwise', 'reduce', 'transpose', 'copy'):
      # A fusion's metadata names only its root op, so forward/backward cannot be
      # told apart reliably for these; convolutions are classified by shape.
      cat = f'{main} [{engine}]' if engine else main
    else:
      cat = f'{phase} {main}' + (f' [{engine}]' if engine else '')
    out[instr['name']] = (cat, f'{instr["shape"]} {detail}'.strip())
  return out


def run(args) -> dict:
  fn, call_args = build(args.arch, args.step, args.weights)
  compiled = fn.lower(*call_args).compile()
  hlo = compiled.as_text()
  kinds = classify(hlo)
  for _ in range(3):
    jax.block_until_ready(fn(*call_args))
  t = time.perf_counter()
  for _ in range(args.steps):
    jax.block_until_ready(fn(*call_args))
  wall_untraced = (time.perf_counter() - t) / args.steps
  cpu0 = os.times()
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d)
    t = time.perf_counter()
    for _ in range(args.steps):
      jax.block_until_ready(fn(*call_args))
    wall = (time.perf_counter() - t) / args.steps
    jax.profiler.stop_trace()
    cpu1 = os.times()
    files = glob.glob(os.path.join(d, '**', '*.xplane.pb'), recursive=True)
    data = jax.profiler.ProfileData.from_file(files[0])
    per_instr = collections.Counter()
    names_seen = collections.Counter()
    for plane in data.planes:
      for line in plane.lines:
        for ev in line.events:
          name = ev.name
          names_seen[name] += 1
          if name in kinds:
            per_instr[name] += ev.duration_ns
  per_cat = collections.Counter()
  for name, ns in per_instr.items():
    per_cat[kinds[name][0]] += ns
  total = sum(per_instr.values())
  cpu_per_step = ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / args.steps
  res = {
      'arch': args.arch, 'step': args.step, 'steps': args.steps,
      'wall_ms_per_step': 1000 * wall, 'wall_ms_untraced': 1000 * wall_untraced,
      'cpu_ms_per_step': 1000 * cpu_per_step,
      'cores_busy': cpu_per_step / wall if wall else None,
      'thunk_ms_per_step': total / 1e6 / args.steps,
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'categories_ms': {k: v / 1e6 / args.steps for k, v in per_cat.most_common()},
      'top_instructions': [
          {'name': n, 'category': kinds[n][0], 'desc': kinds[n][1],
           'ms': v / 1e6 / args.steps} for n, v in per_instr.most_common(args.top)],
      'hlo_opcode_counts': dict(collections.Counter(c for c, _ in kinds.values())),
  }
  if not per_instr:
    res['note'] = ('no per-instruction events found; event names seen: '
                   + ', '.join(n for n, _ in names_seen.most_common(15)))
  return res


def print_report(res: dict) -> None:
  print(f'\n{res["arch"]} {res["step"]} step: {res["wall_ms_per_step"]:.1f} ms wall traced '
        f'({res["wall_ms_untraced"]:.1f} untraced), {res["cpu_ms_per_step"]:.1f} ms CPU '
        f'({res["cores_busy"]:.2f} cores busy), thunks {res["thunk_ms_per_step"]:.1f} ms')
  print(f'{"category":34s} {"ms/step":>9s} {"share":>6s}')
  tot = res['thunk_ms_per_step'] or 1
  for k, v in res['categories_ms'].items():
    print(f'{k:34s} {v:9.2f} {100 * v / tot:5.1f}%')
  print('\ntop instructions:')
  for r in res['top_instructions']:
    print(f'  {r["ms"]:8.2f} ms  {r["category"]:20s} {r["desc"][:90]}')
  if 'note' in res:
    print(res['note'])


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument('--arch', default='cnn', choices=tuple(common.SHAPES))
  p.add_argument('--step', default='delete', choices=('delete', 'train', 'eval'))
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--top', type=int, default=15)
  p.add_argument('--weights', default='', help='.npz in torch layout; default: fresh init')
  p.add_argument('--json', default='')
  p.add_argument('--cpu_convolutions', default='eigen', choices=parallel.CPU_CONVOLUTIONS,
                 help="the package's config.cpu_convolutions (xla_default: XLA's choice)")
  args = p.parse_args()
  parallel.set_cpu_convolutions(args.cpu_convolutions)
  # XLA reads its flags when the backend starts (first computation), so this
  # still applies; imported as a module (profile_ideas) the flags stay untouched.
  if '--xla_cpu_enable_xprof_traceme' not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               ' --xla_cpu_enable_xprof_traceme=true').strip()
  res = run(args)
  print_report(res)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(res, f, indent=1)


if __name__ == '__main__':
  main()
