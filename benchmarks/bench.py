"""delete_jax vs. the PyTorch twins: steps, end-to-end unlearning, memory, compile, scaling.

  python benchmarks/bench.py            # full CPU run (< 10 min on 2 cores)
  python benchmarks/bench.py --quick    # smoke run (~4 min)
  python benchmarks/bench.py --device gpu   # on a machine with an accelerator

Every measurement runs in its own subprocess (benchmarks/jax_worker.py or
benchmarks/torch_worker.py), so each framework's peak resident memory is that
process's own `ru_maxrss` (read with os.wait4) and no framework's thread pool
disturbs the other's. All comparisons are ratios within one run on one machine;
on a shared machine rerun when `uptime` shows a low load (the load average at the
start and end of every part is recorded).

Writes benchmarks/results/<tag>.json and <tag>.md (tag: cpu, cpu_quick, gpu, ...).
Ratios are JAX time / torch time: below 1 means JAX is faster.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))
STEP_NAMES = ('delete', 'train', 'eval')
ARCH_LABEL = {'cnn': 'CNN 28×28×1', 'resnet18_cifar': 'ResNet-18 32×32×3'}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true',
                 help='fewer repeats and epochs (a smoke run of every part)')
  p.add_argument('--device', default='cpu', choices=('cpu', 'gpu'),
                 help='gpu: JAX on its default backend, torch on cuda if available')
  p.add_argument('--parts', default='steps,e2e,scaling')
  p.add_argument('--archs', default='cnn,resnet18_cifar')
  p.add_argument('--e2e_epochs', type=int, default=None, help='default 20 (quick: 3)')
  p.add_argument('--scale_epochs', type=int, default=None, help='default 1')
  p.add_argument('--original', default='train1', choices=('train1', 'random'),
                 help='original model: delete_jax.train for 1 epoch, or random init')
  p.add_argument('--torch_num_workers', type=int, default=0,
                 help='DataLoader workers of the torch loop (0: in-process, as fits 2 cores)')
  p.add_argument('--torch_eval_batch', type=int, default=128,
                 help='the published code evaluates with its training batch size, 128')
  p.add_argument('--torch_alt_threads', type=int, default=1,
                 help='also time the torch steps with this many threads (CPU only; 0: '
                      'skip), for the archs in --alt_threads_archs')
  p.add_argument('--alt_threads_archs', default='cnn')
  p.add_argument('--jax_before', type=int, default=1,
                 help="CPU: also time the JAX steps with config.cpu_convolutions="
                      "'xla_default' (XLA's default convolution kernels; 0: skip)")
  p.add_argument('--results_dir', default=os.path.join(HERE, 'results'))
  p.add_argument('--tag', default=None, help='output name; default <device>[_quick]')
  p.add_argument('--wait_load', type=float, default=0.0,
                 help='wait until the 1-min load average is at most this (0: do not wait)')
  p.add_argument('--wait_max_s', type=float, default=900.0)
  p.add_argument('--cache_dir', default=os.path.join(tempfile.gettempdir(),
                                                     'delete_jax_bench'))
  p.add_argument('--report_only', default='',
                 help='re-render the markdown of an existing results JSON and exit')
  args = p.parse_args(argv)
  q = args.quick
  args.e2e_epochs = args.e2e_epochs or (3 if q else 20)
  args.scale_epochs = args.scale_epochs or 1
  args.tag = args.tag or (args.device + ('_quick' if q else ''))
  # (warmup, repeats, min_seconds) per architecture's step timing.
  args.step_timing = {'cnn': (3, 10, 0.5) if q else (3, 20, 1.0),
                      'resnet18_cifar': (0, 1, 0.0) if q else (0, 2, 0.0)}
  return args


class Runner:
  """Runs worker subprocesses and records each one's own peak memory."""

  def __init__(self, args, workdir: str):
    self.args = args
    self.workdir = workdir
    self.count = 0
    self.log: list[dict] = []

  def env(self, framework: str) -> dict:
    env = dict(os.environ)
    env['PYTHONPATH'] = common.REPO + os.pathsep + env.get('PYTHONPATH', '')
    env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    if framework == 'jax':
      if self.args.device == 'cpu':
        env['JAX_PLATFORMS'] = 'cpu'
      else:
        # Allocate on demand so the device peak is what the run needs.
        env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
    elif self.args.device == 'cpu':
      env['CUDA_VISIBLE_DEVICES'] = ''
    return env

  def run(self, framework: str, task: str, *extra: str) -> dict:
    self.count += 1
    out = os.path.join(self.workdir, f'{self.count:02d}_{framework}_{task}.json')
    log = out[:-5] + '.log'
    cmd = [sys.executable, os.path.join(HERE, f'{framework}_worker.py'), '--task', task,
           '--out', out, *extra]
    if framework == 'torch':
      cmd += ['--device', self.args.device]
    label = f'{framework} {task} {" ".join(extra)}'
    load = common.load_average()
    print(f'[bench] {label} (load {load})', flush=True)
    t0 = time.perf_counter()
    with open(log, 'w') as logf:
      proc = subprocess.Popen(cmd, env=self.env(framework), stdout=logf,
                              stderr=subprocess.STDOUT, cwd=common.REPO)
      _, status, usage = os.wait4(proc.pid, 0)
      proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
      with open(log) as f:
        tail = f.read()[-4000:]
      raise RuntimeError(f'{label} failed with exit code {proc.returncode}:\n{tail}')
    result = common.read_json(out)
    result['process']['peak_rss_mb'] = round(usage.ru_maxrss / 1024, 1)
    result['process']['wall_s_outer'] = round(wall, 2)
    print(f'[bench]   done in {wall:.1f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MB',
          flush=True)
    opts = dict(zip(extra[::2], extra[1::2]))
    short = ' '.join(f'{k[2:]}={opts[k]}' for k in ('--arch', '--eval_every', '--threads', '--cpu_convolutions')
                     if k in opts)
    self.log.append({'run': f'{framework} {task} {short}'.strip(),
                     'load_1min_start': load[0] if load else None, 'wall_s': round(wall, 1)})
    return result


def wait_for_load(args) -> None:
  if not args.wait_load:
    return
  t0 = time.time()
  while True:
    load = common.load_average()
    if not load or load[0] <= args.wait_load or time.time() - t0 > args.wait_max_s:
      print(f'[bench] starting at load {load}', flush=True)
      return
    print(f'[bench] load {load[0]} > {args.wait_load}: waiting', flush=True)
    time.sleep(20)


def prepare_weights(args, runner: Runner) -> dict:
  """The original models, in torch layout, shared by both frameworks (cached)."""
  os.makedirs(args.cache_dir, exist_ok=True)
  paths = {'cnn': os.path.join(args.cache_dir, f'cnn_{args.original}.npz'),
           'resnet18_cifar': os.path.join(args.cache_dir, 'resnet18_cifar_init.npz')}
  info = {'cnn': {'path': paths['cnn'], 'origin': args.original},
          'resnet18_cifar': {'path': paths['resnet18_cifar'], 'origin': 'torch init, seed 0'}}
  if not os.path.exists(paths['resnet18_cifar']):
    runner.run('torch', 'prep', '--arch', 'resnet18_cifar', '--weights',
               paths['resnet18_cifar'])
  prep_json = paths['cnn'][:-4] + '.json'
  if not os.path.exists(paths['cnn']):
    if args.original == 'train1':
      res = runner.run('jax', 'prep', '--weights', paths['cnn'])
      common.write_json(prep_json, {k: res[k] for k in ('train_1_epoch_s', 'history')})
    else:
      runner.run('torch', 'prep', '--arch', 'cnn', '--weights', paths['cnn'])
  else:
    info['cnn']['cached'] = True
  if os.path.exists(prep_json):
    info['cnn']['prep'] = common.read_json(prep_json)
  return info


def derived_final_only(published: dict) -> dict:
  """torch with one final evaluation: (a)'s training time + one of its evaluations.

  The loop is the same; only the evaluation count differs, so this is derived
  from (a) rather than run again (it would cost another ~minute).
  """
  one_eval = published['eval_s'] / max(published['evaluations'], 1)
  return {'derived_from': 'torch_published', 'total_s': published['unlearn_loop_s'] + one_eval,
          'unlearn_loop_s': published['unlearn_loop_s'], 'eval_s': one_eval,
          'evaluations': 1, 'final_accuracy': published['final_accuracy']}


def run_all(args) -> dict:
  parts = [p.strip() for p in args.parts.split(',') if p.strip()]
  archs = [a.strip() for a in args.archs.split(',') if a.strip()]
  result = {'command': ' '.join([os.path.relpath(sys.argv[0], common.REPO)] + sys.argv[1:]),
            'started': datetime.datetime.now().isoformat(timespec='seconds'),
            'device': args.device, 'quick': args.quick, 'machine': common.machine(),
            'settings': {'batch': common.BATCH, 'e2e_epochs': args.e2e_epochs,
                         'scale_epochs': args.scale_epochs,
                         'step_timing_warmup_repeats_minseconds': args.step_timing,
                         'torch_num_workers': args.torch_num_workers,
                         'torch_eval_batch': args.torch_eval_batch,
                         'torch_alt_threads': args.torch_alt_threads,
                         'jax_eval_batch': 1024}}
  t_start = time.perf_counter()
  with tempfile.TemporaryDirectory(prefix='bench_') as workdir:
    runner = Runner(args, workdir)
    result['weights'] = prepare_weights(args, runner)
    w = {a: result['weights'][a]['path'] for a in result['weights']}
    if 'steps' in parts:
      result['steps'] = {}
      for arch in archs:
        warmup, repeats, min_s = args.step_timing[arch]
        flags = ['--arch', arch, '--weights', w[arch], '--warmup', str(warmup),
                 '--repeats', str(repeats), '--min_seconds', str(min_s)]
        # Alternate which framework goes first, so slow drift of the load
        # does not always favour the same one.
        order = ('jax', 'torch') if archs.index(arch) % 2 == 0 else ('torch', 'jax')
        result['steps'][arch] = {fw: runner.run(fw, 'steps', *flags) for fw in order}
        if args.device == 'cpu' and args.jax_before:
          # The package before issue 9's CPU work: XLA's default convolution kernels.
          result['steps'][arch]['jax_before'] = runner.run(
              'jax', 'steps', *flags, '--cpu_convolutions', 'xla_default')
        if (args.device == 'cpu' and args.torch_alt_threads
            and arch in args.alt_threads_archs.split(',')):
          result['steps'][arch]['torch_alt'] = runner.run(
              'torch', 'steps', *flags, '--threads', str(args.torch_alt_threads))
    if 'e2e' in parts:
      e2e = {}
      base = ['--weights', w['cnn'], '--epochs', str(args.e2e_epochs)]
      tflags = ['--eval_batch', str(args.torch_eval_batch),
                '--num_workers', str(args.torch_num_workers)]
      # The published code evaluates at its training batch size (128); delete_jax's
      # default is 1024 (run (b)).
      e2e['jax_published'] = runner.run('jax', 'e2e', *base, '--eval_every', '1',
                                        '--eval_batch', str(args.torch_eval_batch))
      e2e['torch_published'] = runner.run('torch', 'e2e', *base, '--eval_every', '1', *tflags)
      e2e['jax_default'] = runner.run('jax', 'e2e', *base, '--eval_every', '0')
      e2e['torch_final_only'] = derived_final_only(e2e['torch_published'])
      result['e2e'] = e2e
    if 'scaling' in parts:
      base = ['--weights', w['cnn'], '--epochs', str(args.scale_epochs)]
      result['scaling'] = {
          'jax': runner.run('jax', 'scaling', *base),
          'torch': runner.run('torch', 'scaling', *base, '--eval_batch',
                              str(args.torch_eval_batch), '--num_workers',
                              str(args.torch_num_workers)),
      }
    result['runs'] = runner.log
  result['total_wall_s'] = round(time.perf_counter() - t_start, 1)
  result['load_average_end'] = common.load_average()
  return result


# ---------------------------------------------------------------------------
# Report.


def _ratio(a, b) -> float:
  return a / b if b else float('nan')


def _f(x, digits=2) -> str:
  if x is None:
    return '–'
  if isinstance(x, float) and x != x:
    return 'n/a'
  return f'{x:.{digits}f}'


def _ms(s) -> str:
  return f'{1000 * s:.1f}' if s < 10 else f'{1000 * s:.0f}'


def headline(result: dict) -> dict:
  """The ratios README quotes (JAX time / torch time)."""
  h = {}
  for arch, by_fw in result.get('steps', {}).items():
    for name in STEP_NAMES:
      h[f'{arch} {name} step'] = _ratio(by_fw['jax']['steps'][name]['median_s'],
                                        by_fw['torch']['steps'][name]['median_s'])
      if 'jax_before' in by_fw:
        h[f'{arch} {name} step, XLA default convolutions (before)'] = _ratio(
            by_fw['jax_before']['steps'][name]['median_s'],
            by_fw['torch']['steps'][name]['median_s'])
      if 'torch_alt' in by_fw:
        alt = by_fw['torch_alt']
        h[f'{arch} {name} step vs torch {alt["info"]["intra_op_threads"]} thread'] = _ratio(
            by_fw['jax']['steps'][name]['median_s'], alt['steps'][name]['median_s'])
  e2e = result.get('e2e')
  if e2e:
    h['e2e published protocol'] = _ratio(e2e['jax_published']['total_s'],
                                         e2e['torch_published']['total_s'])
    h['e2e delete_jax default vs torch published'] = _ratio(
        e2e['jax_default']['total_s'], e2e['torch_published']['total_s'])
    h['e2e final eval only, both'] = _ratio(e2e['jax_default']['total_s'],
                                            e2e['torch_final_only']['total_s'])
  sc = result.get('scaling')
  if sc:
    for pj, pt in zip(sc['jax']['points'], sc['torch']['points']):
      h[f'scaling {pj["name"]} (unlearning epochs)'] = _ratio(pj['train_s'], pt['train_s'])
  return h


def markdown(result: dict) -> str:
  m = result['machine']
  lines = [f'# delete_jax vs. PyTorch twins — {result["device"]}'
           f'{" (quick)" if result["quick"] else ""}', '',
           f'Command: `python {result["command"]}` — started {result["started"]}, '
           f'{result["total_wall_s"]:.0f} s in all.', '',
           'Ratios are **JAX time / torch time** (below 1: JAX faster). Every number '
           'comes from one run on one machine; absolute times on a shared CPU are '
           'not comparable across runs, ratios within a run are.', '',
           '## Machine', '',
           f'- CPU: {m["cpu_model"]}, {m["logical_cpus"]} logical CPUs '
           f'({m["cpus_usable"]} usable), {m["mem_total_gb"]} GB RAM; ISA: '
           f'{" ".join(m["cpu_flags"]) or "n/a"}',
           f'- Python {m["python"]}, {m["platform"]}']
  info = _framework_infos(result)
  if 'jax' in info:
    j = info['jax']
    lines.append(f'- JAX {j["jax"]}, Flax {j["flax"]}, backend {j["backend"]} '
                 f'({j["device"]}); threads: {j["threads"]}; XLA_FLAGS='
                 f'`{j["xla_flags"] or "(unset)"}`; package compiler options (default '
                 f'`cpu_convolutions=\'{j.get("cpu_convolutions", "?")}\'`): '
                 f'`{j.get("compiler_options")}`')
  if 'torch' in info:
    t = info['torch']
    lines.append(f'- torch {t["torch"]} on {t["device_name"]}; threads: {t["threads"]}: '
                 f'intra-op {t["intra_op_threads"]}, inter-op {t["interop_threads"]}; '
                 f'oneDNN (mkldnn) {t["mkldnn"]}')
  lines.append(f'- Environment: {m["env"] or "(no thread or platform variables set)"}')
  lines.append(f'- Load average (1, 5, 15 min): start {m["load_average"]}, end '
               f'{result["load_average_end"]}. This run\'s own processes keep about 2 '
               'runnable; more means other work shared the cores.')
  if result.get('runs'):
    lines.append('- Worker processes (1-min load when each started, wall time): ' + '; '.join(
        f'{r["run"]} ({r["load_1min_start"]}, {r["wall_s"]:.0f} s)' for r in result['runs']))
  w = result['weights']['cnn']
  origin = ('trained with delete_jax.train for 1 epoch' if w['origin'] == 'train1'
            else 'random init (torch, seed 0)')
  if 'prep' in w:
    origin += f' (test accuracy {w["prep"]["history"][-1]["test"]:.1f} %)'
  lines.append(f'- Original CNN: {origin}; ResNet-18: torch init (seed 0); the same '
               'weights in both frameworks (npz in torch layout, read with '
               '`delete_jax.convert.torch_to_flax`).')
  lines.append('')

  alt_threads = result['settings'].get('torch_alt_threads') or '–'
  if 'steps' in result:
    lines += ['## Steps (batch 128)', '',
              'Medians of steady-state calls. Each step includes its input preprocessing '
              '(uint8 → float, flip; CIFAR also 4-pixel crop) in both frameworks; the '
              'JAX step is the package\'s (`parallel.jit_step` with donated state, '
              'device-resident batch). Compile = first call − median (JAX: trace + '
              'compile); torch\'s first call is lazy initialisation.', '',
              '| model | step | JAX ms | torch ms | JAX img/s | torch img/s | '
              '**JAX/torch** | JAX compile s | torch 1st-call extra s | '
              'JAX before ms | before/torch | '
              f'torch {alt_threads} thread ms | JAX/torch {alt_threads} thread |',
              '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for arch, by_fw in result['steps'].items():
      for name in STEP_NAMES:
        j, t = by_fw['jax']['steps'][name], by_fw['torch']['steps'][name]
        alt = by_fw.get('torch_alt', {}).get('steps', {}).get(name)
        before = by_fw.get('jax_before', {}).get('steps', {}).get(name)
        lines.append(f'| {ARCH_LABEL.get(arch, arch)} | {name} | {_ms(j["median_s"])} | '
                     f'{_ms(t["median_s"])} | {j["images_per_s"]:.0f} | '
                     f'{t["images_per_s"]:.0f} | **{_f(_ratio(j["median_s"], t["median_s"]))}** | '
                     f'{_f(j["first_minus_steady_s"])} | {_f(t["first_minus_steady_s"])} | '
                     + (f'{_ms(before["median_s"])} | {_f(_ratio(before["median_s"], t["median_s"]))} | '
                        if before else '– | – | ')
                     + (f'{_ms(alt["median_s"])} | {_f(_ratio(j["median_s"], alt["median_s"]))} |'
                        if alt else '– | – |'))
    lines += ['', '"JAX before" is the same JAX step compiled with XLA\'s default '
              'convolution kernels (`config.cpu_convolutions=\'xla_default\'`: YNNPACK, one '
              'core per convolution), as the package ran before its CPU tuning; the '
              'default `\'eigen\'` runs them in XLA:CPU\'s multi-threaded Eigen kernels.',
              '', f'The last two columns time the same torch steps with '
              f'`torch.set_num_threads({alt_threads})` (a reference, not the default): on a '
              'shared machine torch\'s OpenMP threads wait at every parallel region for '
              'a descheduled sibling, which costs most in the many small ops of a '
              'backward pass.', '']

  if 'e2e' in result:
    e = result['e2e']
    jp, tp, tf, jd = (e['jax_published'], e['torch_published'], e['torch_final_only'],
                      e['jax_default'])
    lines += ['## End to end: unlearn one class of Fashion-MNIST with the CNN and evaluate',
              '',
              f'{jp["epochs"]} DELETE epochs over the forget set ({jp["forget_images"]} '
              'images of class 4), batch 128, flip augmentation, SGD lr 1e-3 momentum 0.9; '
              'evaluation = accuracy on all four splits (70,000 images). JAX: '
              '`delete_jax.unlearn.unlearn` (timed from the call: compile, host batching, '
              'Orbax checkpoint per epoch, evaluation). torch: a DataLoader loop '
              f'(`benchmarks/torch_loop.py`: per-item transforms, shuffle, batch 128, '
              f'{result["settings"]["torch_num_workers"]} loader workers). Evaluation batch: '
              f'{jp.get("eval_batch")} for both in (a), as the published code evaluates at '
              f'its training batch size; delete_jax\'s default {jd.get("eval_batch")} in (b).',
              '',
              '| run | JAX s | torch s | **JAX/torch** | JAX train / eval s | '
              'torch train / eval s | evaluations |',
              '|---|---:|---:|---:|---:|---:|---:|']

    def row(name, j, t):
      return (f'| {name} | {j["total_s"]:.1f} | {t["total_s"]:.1f} | '
              f'**{_f(_ratio(j["total_s"], t["total_s"]))}** | '
              f'{j["unlearn_loop_s"]:.1f} / {j["eval_s"]:.1f} | '
              f'{t["unlearn_loop_s"]:.1f} / {t["eval_s"]:.1f} | '
              f'{j["evaluations"]} / {t["evaluations"]} |')

    lines.append(row('(a) published protocol, both (eval every epoch)', jp, tp))
    lines.append(row('(b) delete_jax default (final eval only) vs (a) torch', jd, tp))
    lines.append(row('(c) final eval only, both (torch: derived from (a))', jd, tf))
    lines += ['', '(c)\'s torch figure is (a)\'s training time plus one of its '
              'evaluations (the same loop with 19 fewer evaluations).', '',
              'Final accuracies (%, train-forget / train-remain / test-forget / '
              'test-remain):', '']
    for name, r in (('JAX (a)', jp), ('torch (a)', tp), ('JAX (b)', jd)):
      a = r['final_accuracy']
      lines.append(f'- {name}: {a["train_forget"]:.1f} / {a["train_remain"]:.1f} / '
                   f'{a["test_forget"]:.1f} / {a["test_remain"]:.1f}')
    lines.append('')

  if 'scaling' in result:
    sj, st = result['scaling']['jax'], result['scaling']['torch']
    lines += ['## Cost as the work grows', '',
              f'{sj["epochs"]} DELETE epoch(s) per point, steady state (JAX: the '
              'package\'s `loop.run_epochs` and step, every shape compiled beforehand, no '
              'checkpoints; torch: the DataLoader loop). "size ×k" repeats the indices of '
              'one class k times; "classes k" forgets k classes (6,000 images each). The '
              'evaluation (always 70,000 images) does not grow with the forget set; its '
              'cost is in the end-to-end table.', '',
              '| point | forget images | JAX s | torch s | **JAX/torch** | JAX img/s | '
              'torch img/s | JAX vs ×1 | torch vs ×1 |',
              '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    j1, t1 = sj['points'][0]['train_s'], st['points'][0]['train_s']
    for pj, pt in zip(sj['points'], st['points']):
      lines.append(f'| {pj["name"]} | {pj["forget_images"]} | {pj["train_s"]:.2f} | '
                   f'{pt["train_s"]:.2f} | **{_f(_ratio(pj["train_s"], pt["train_s"]))}** | '
                   f'{pj["train_images_per_s"]:.0f} | {pt["train_images_per_s"]:.0f} | '
                   f'{_f(_ratio(pj["train_s"], j1))}× | {_f(_ratio(pt["train_s"], t1))}× |')
    lines.append('')

  lines += ['## Peak resident memory (MB, per worker process)', '',
            '| process | JAX | torch | JAX device peak | torch device peak |',
            '|---|---:|---:|---:|---:|']
  for label, j, t in _memory_rows(result):
    lines.append(f'| {label} | {_f(j["process"]["peak_rss_mb"], 0)} | '
                 f'{_f(t["process"]["peak_rss_mb"], 0)} | {_f(j.get("device_peak_mb"), 0)} | '
                 f'{_f(t.get("device_peak_mb"), 0)} |')
  lines += ['', 'Both workers load Fashion-MNIST through `delete_jax.data` (TFDS '
            'metadata) where they use it; the JAX figure includes XLA\'s compiled '
            'programs.', '', '## Headline ratios (JAX / torch time)', '']
  for k, v in headline(result).items():
    lines.append(f'- {k}: {_f(v)}')
  lines.append('')
  return '\n'.join(lines)


def _framework_infos(result) -> dict:
  for by_fw in result.get('steps', {}).values():
    return {fw: r['info'] for fw, r in by_fw.items() if fw in ('jax', 'torch')}
  if 'e2e' in result:
    return {'jax': result['e2e']['jax_published']['info'],
            'torch': result['e2e']['torch_published']['info']}
  if 'scaling' in result:
    return {fw: r['info'] for fw, r in result['scaling'].items()}
  return {}


def _memory_rows(result):
  rows = []
  for arch, by_fw in result.get('steps', {}).items():
    rows.append((f'steps, {ARCH_LABEL.get(arch, arch)}', by_fw['jax'], by_fw['torch']))
  if 'e2e' in result:
    e = result['e2e']
    rows.append(('e2e published protocol', e['jax_published'], e['torch_published']))
    rows.append(('e2e delete_jax default (JAX) / published (torch)', e['jax_default'],
                 e['torch_published']))
  if 'scaling' in result:
    rows.append(('scaling (up to 24,000 forget images)', result['scaling']['jax'],
                 result['scaling']['torch']))
  return rows


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.report_only:
    result = common.read_json(args.report_only)
    result['headline'] = headline(result)
    common.write_json(args.report_only, result)
    with open(args.report_only[:-5] + '.md', 'w') as f:
      f.write(markdown(result))
    print(f'[bench] re-rendered {args.report_only[:-5]}.md')
    return 0
  if args.device == 'gpu':
    backend = subprocess.run(
        [sys.executable, '-c', 'import jax; print(jax.default_backend())'],
        capture_output=True, text=True, env=Runner(args, '').env('jax')).stdout.strip()
    if backend in ('', 'cpu'):
      print(f'error: --device gpu, but JAX finds no accelerator (default backend '
            f'{backend or "unknown"}): install jax with CUDA/TPU support there, or run '
            'without --device gpu', file=sys.stderr)
      return 2
  wait_for_load(args)
  result = run_all(args)
  result['headline'] = headline(result)
  os.makedirs(args.results_dir, exist_ok=True)
  base = os.path.join(args.results_dir, args.tag)
  common.write_json(base + '.json', result)
  text = markdown(result)
  with open(base + '.md', 'w') as f:
    f.write(text)
  print(text)
  print(f'[bench] wrote {base}.json and {base}.md')
  return 0


if __name__ == '__main__':
  sys.exit(main())
