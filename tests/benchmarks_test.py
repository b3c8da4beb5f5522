"""The benchmark script still runs end to end (a smoke run; timings are not checked).

`benchmarks/bench.py` is not part of the test suite's measurements, but it is the
one command the README gives for speed numbers; this runs its smallest slice
(the CNN steps, random weights, minimum repeats) and its report renderer.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip('torch')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, 'benchmarks', 'bench.py')


def test_bench_cnn_steps_smoke(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  cmd = [sys.executable, BENCH, '--quick', '--parts', 'steps', '--archs', 'cnn',
         '--original', 'random', '--torch_alt_threads', '0', '--results_dir',
         str(tmp_path / 'results'), '--cache_dir', str(tmp_path / 'cache'), '--tag', 'smoke']
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  result = json.loads((tmp_path / 'results' / 'smoke.json').read_text())
  steps = result['steps']['cnn']
  for run in ('jax', 'torch', 'jax_before'):
    for name in ('delete', 'train', 'eval'):
      assert steps[run]['steps'][name]['median_s'] > 0
  assert steps['jax']['info']['cpu_convolutions'] == 'eigen'
  assert steps['jax_before']['info']['cpu_convolutions'] == 'xla_default'
  assert result['headline']['cnn delete step'] > 0
  md = (tmp_path / 'results' / 'smoke.md').read_text()
  assert '| CNN 28×28×1 | delete |' in md and 'Headline ratios' in md


def test_report_only_renders_the_committed_results(tmp_path):
  src = os.path.join(REPO, 'benchmarks', 'results', 'cpu.json')
  dst = tmp_path / 'cpu.json'
  dst.write_text(open(src).read())
  subprocess.run([sys.executable, BENCH, '--report_only', str(dst)], cwd=REPO, check=True,
                 capture_output=True, timeout=120)
  md = (tmp_path / 'cpu.md').read_text()
  for section in ('## Steps (batch 128)', '## End to end', '## Cost as the work grows',
                  '## Peak resident memory'):
    assert section in md


def test_gpu_variant_refuses_without_an_accelerator():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, BENCH, '--device', 'gpu'], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert 'no accelerator' in proc.stderr and '\n' not in proc.stderr.strip()
