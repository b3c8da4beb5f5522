"""Scale-out: 1 device vs 8 devices vs 2 processes compute the same run.

The device count is fixed when JAX starts, so every run under test is a fresh
process (`tests/parallel_worker.py`, or the real entry point `delete_jax.main`)
with XLA_FLAGS / JAX_NUM_CPU_DEVICES set in its environment; this process only
compares what they leave in their Orbax checkpoints and prediction files.
"""

import glob
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from delete_jax import parallel
from delete_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5
# Shared by every run below (worker JSON and --config.* flags alike). Eval batches
# of 64 pad both splits (1437 train and 360 test examples; test-remain has 324),
# so the last batch of each carries padding; the forget set (145 examples) makes
# 4 full unlearning batches of 32 and a partial one of 17 (replicated, not
# sharded, since 17 is not divisible by 8 or 4).
OVERRIDES = {
    'train.epochs': 1, 'unlearn.epochs': 1, 'eval.batch_size': 64,
    'mia.features': 'confidence', 'log_every_steps': 1000,
}
RESUME_OVERRIDES = dict(OVERRIDES, **{'unlearn.epochs': 2, 'checkpoint_every_steps': 3})


def _env(devices: int, **extra) -> dict:
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  env.update(JAX_PLATFORMS='cpu', PYTHONPATH=REPO,
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}', **extra)
  return env


def _start_worker(devices: int, tasks: list[dict]) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, '-m', 'tests.parallel_worker', json.dumps(tasks)],
                          cwd=REPO, env=_env(devices), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[str]:
  outs = []
  for p in procs:
    try:
      out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    outs.append(out)
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-4000:]
  return outs


def _cli_flags(overrides: dict) -> list[str]:
  return [f'--config.{k}={v}' for k, v in overrides.items()]


def _main_cmd(workdir: str, mode: str, *extra: str) -> list[str]:
  return [sys.executable, '-m', 'delete_jax.main', '--config', 'configs/digits_cnn.py',
          '--workdir', workdir, f'--config.mode={mode}', *_cli_flags(OVERRIDES), *extra]


def checkpoint_state(stage_dir: str, step: int | None = None) -> dict[str, np.ndarray]:
  """Every array of a stage's checkpoint (latest step by default), by tree path."""
  steps = sorted(int(os.path.basename(d)) for d in glob.glob(f'{stage_dir}/checkpoints/*')
                 if os.path.basename(d).isdigit())
  path = os.path.join(stage_dir, 'checkpoints', str(steps[-1] if step is None else step),
                      'state')
  checkpointer = ocp.StandardCheckpointer()
  meta = checkpointer.metadata(path)
  meta = getattr(meta, 'item_metadata', meta)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        meta)
  state = checkpointer.restore(path, target)
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(state)[0]}


def max_relative_difference(a: dict, b: dict) -> dict[str, float]:
  """Per group (params, batch_stats, opt_state, step): max over arrays of ‖a−b‖∞/‖b‖∞.

  Integer arrays (step counters, BatchNorm batch counts) must match exactly.
  """
  assert sorted(a) == sorted(b)
  out: dict[str, float] = {}
  for key in a:
    x, y = a[key], b[key]
    assert x.shape == y.shape and x.dtype == y.dtype, key
    group = key.split("'")[1] if "'" in key else key
    if not np.issubdtype(x.dtype, np.floating):
      np.testing.assert_array_equal(x, y, err_msg=key)
      rel = 0.0
    else:
      scale = float(np.max(np.abs(y))) if y.size else 0.0
      diff = float(np.max(np.abs(x.astype(np.float64) - y))) if y.size else 0.0
      rel = diff / scale if scale > 0 else diff
    out[group] = max(out.get(group, 0.0), rel)
  return out


def _report(name: str, rel: dict[str, float]) -> None:
  print(f'{name}: max relative difference ' +
        ', '.join(f'{k} {v:.2e}' for k, v in sorted(rel.items())))


@pytest.fixture(scope='module')
def original_workdir(tmp_path_factory):
  """A workdir holding an original model trained by one single-device process."""
  workdir = str(tmp_path_factory.mktemp('trained'))
  proc = subprocess.run(_main_cmd(workdir, 'train'), cwd=REPO, env=_env(1),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir


def _copy_original(src: str, dst: str) -> str:
  os.makedirs(dst, exist_ok=True)
  shutil.copytree(os.path.join(src, 'original'), os.path.join(dst, 'original'))
  return dst


def test_one_vs_eight_devices_and_resume_across_device_counts(original_workdir, tmp_path):
  """5 training + 5 DELETE steps and evaluation agree on 1 and 8 devices; a run
  stopped on 8 devices resumes on 1 and ends like an uninterrupted 1-device run."""
  runs = {}
  for n in (1, 8):
    d = tmp_path / f'dev{n}'
    runs[n] = {
        'train': str(d / 'train'),
        'unlearn': _copy_original(original_workdir, str(d / 'unlearn')),
        'resume': _copy_original(original_workdir, str(d / 'resume')),
        'eval': str(d / 'eval.npz'),
    }
  tasks = {n: [
      {'task': 'train', 'workdir': r['train'], 'overrides': OVERRIDES, 'stop_at_step': 5},
      {'task': 'unlearn', 'workdir': r['unlearn'], 'overrides': OVERRIDES,
       'eval_out': r['eval']},
      # 1 device: the uninterrupted reference; 8 devices: stopped mid-epoch at step 4.
      {'task': 'unlearn', 'workdir': r['resume'], 'overrides': RESUME_OVERRIDES,
       'stop_at_step': None if n == 1 else 4},
  ] for n, r in runs.items()}
  _finish([_start_worker(1, tasks[1]), _start_worker(8, tasks[8])])

  # Training: 5 steps from the same initialisation on the same batches.
  one = checkpoint_state(os.path.join(runs[1]['train'], 'original'), 5)
  eight = checkpoint_state(os.path.join(runs[8]['train'], 'original'), 5)
  assert int(one["['step']"]) == 5
  rel = max_relative_difference(eight, one)
  _report('train, 8 vs 1 devices', rel)
  assert set(rel) >= {'params', 'batch_stats', 'opt_state'}
  assert max(rel.values()) <= TOL, rel

  # DELETE: 5 steps (4 sharded batches, 1 replicated partial batch) from one original.
  one = checkpoint_state(os.path.join(runs[1]['unlearn'], 'delete_forget-4'))
  eight = checkpoint_state(os.path.join(runs[8]['unlearn'], 'delete_forget-4'))
  assert int(one["['step']"]) == 5
  rel = max_relative_difference(eight, one)
  _report('unlearn, 8 vs 1 devices', rel)
  assert max(rel.values()) <= TOL, rel

  # Evaluation: every example counted once, whatever the padding.
  e1, e8 = np.load(runs[1]['eval']), np.load(runs[8]['eval'])
  assert int(e1['device_count']) == 1 and int(e8['device_count']) == 8
  sizes = {k: len(e1[f'{k}/pred']) for k in ('train', 'test', 'test_remain')}
  assert sizes == {'train': 1437, 'test': 360, 'test_remain': 324}
  assert sizes['train'] % 8 and sizes['test_remain'] % 8
  for k in e1.files:
    if k.endswith('/prob') or k.endswith('/logits'):
      np.testing.assert_allclose(e8[k], e1[k], rtol=0, atol=TOL, err_msg=k)
    elif k != 'device_count':
      np.testing.assert_array_equal(e8[k], e1[k], err_msg=k)
  accs = {k.split('/')[1]: float(e8[k]) for k in e8.files if k.startswith('accuracy/')}
  print('accuracies (identical on 1 and 8 devices):', accs)
  test_remain = 100.0 * e1['test_remain/correct'].mean()
  assert accs['test_remain'] == pytest.approx(test_remain, abs=1e-9)

  # Resume: stopped at step 4 on 8 devices, finished on 1 device.
  stage = os.path.join(runs[8]['resume'], 'delete_forget-4')
  assert int(checkpoint_state(stage, 4)["['step']"]) == 4
  resume = _start_worker(1, [{'task': 'unlearn', 'workdir': runs[8]['resume'],
                              'overrides': RESUME_OVERRIDES}])
  _finish([resume])
  resumed = checkpoint_state(stage)
  reference = checkpoint_state(os.path.join(runs[1]['resume'], 'delete_forget-4'))
  assert int(reference["['step']"]) == 10 and int(resumed["['step']"]) == 10
  rel = max_relative_difference(resumed, reference)
  _report('resume 8 → 1 devices vs uninterrupted 1 device', rel)
  assert max(rel.values()) <= TOL, rel


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_match_one_through_the_entry_point(original_workdir, tmp_path):
  """mode=unlearn on 2 processes × 2 CPU devices (gloo) ends where 1 process does."""
  multi = _copy_original(original_workdir, str(tmp_path / 'multi'))
  single = _copy_original(original_workdir, str(tmp_path / 'single'))
  port = _free_port()
  env = _env(2, JAX_NUM_CPU_DEVICES='2', JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')
  env.pop('XLA_FLAGS')
  procs = [subprocess.Popen(
      _main_cmd(multi, 'unlearn', f'--coordinator_address=127.0.0.1:{port}',
                '--num_processes=2', f'--process_id={i}'),
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  procs.append(subprocess.Popen(_main_cmd(single, 'unlearn'), cwd=REPO, env=_env(1),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=300))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-4000:]
  assert 'processes: 2 (this is 0); devices: 4 global, 2 local' in outs[0][1]
  assert 'processes: 2 (this is 1); devices: 4 global, 2 local' in outs[1][1]

  # One report, by process 0; it names the topology it ran on.
  assert '# delete_jax report' in outs[0][0] and '# delete_jax report' not in outs[1][0]
  with open(os.path.join(multi, 'report.json')) as f:
    run = json.load(f)['run']
  assert (run['process_count'], run['device_count']) == (2, 4)
  assert len(glob.glob(os.path.join(multi, '**', 'report*.json'), recursive=True)) == 1

  a = checkpoint_state(os.path.join(multi, 'delete_forget-4'))
  b = checkpoint_state(os.path.join(single, 'delete_forget-4'))
  assert int(a["['step']"]) == 5
  rel = max_relative_difference(a, b)
  _report('2 processes × 2 devices vs 1 process', rel)
  assert max(rel.values()) <= TOL, rel


_PLACEMENT_CHECK = """
import numpy as np
from jax.sharding import PartitionSpec as P
from delete_jax import parallel
mesh = parallel.make_mesh()
try:
  parallel.check_batch_size(12, mesh, 'config.train.batch_size')
except Exception as e:
  print(type(e).__name__, e)
batch = {'image': np.zeros((64, 8, 8, 1), np.uint8), 'label': np.arange(64)}
full = parallel.put_batch(batch, mesh)
assert full['label'].sharding.spec == P('data'), full['label'].sharding
assert {s.data.shape for s in full['label'].addressable_shards} == {(8,)}
part = parallel.put_batch({k: v[:17] for k, v in batch.items()}, mesh)
assert part['label'].sharding.is_fully_replicated
asked = []
parallel.gather_batch(64, lambda rows: asked.append(rows) or {'x': rows}, mesh)
assert list(asked[0]) == list(range(64))
step = parallel.jit_step(lambda s, b: (s + 1, {'n': b['label'].sum()}), mesh)
s, m = step(parallel.put_replicated(np.zeros(3), mesh), full)
s, m2 = step(s, part)
assert int(m['n']) == 2016 and int(m2['n']) == 136 and s.sharding.is_fully_replicated
print('placement ok')
"""


def test_placement_and_refusal_on_eight_devices():
  proc = subprocess.run([sys.executable, '-c', _PLACEMENT_CHECK], cwd=REPO, env=_env(8),
                        capture_output=True, text=True, timeout=120)
  assert proc.stdout.strip().splitlines() == [
      'UserError config.train.batch_size=12 is not divisible by the 8 devices: use a '
      'multiple of 8', 'placement ok'], proc.stderr[-3000:]


def test_distributed_flags_are_checked(monkeypatch):
  for var in ('SLURM_NTASKS', 'OMPI_MCA_orte_hnp_uri'):
    monkeypatch.delenv(var, raising=False)
  with pytest.raises(UserError, match='all three'):
    parallel.initialize_distributed('127.0.0.1:1234', 2, None)
  with pytest.raises(UserError, match='process_id=2'):
    parallel.initialize_distributed('127.0.0.1:1234', 2, 2)
  assert not parallel.initialize_distributed(None, 1, None)


def test_cluster_detection(monkeypatch):
  for var in ('SLURM_NTASKS', 'SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_PROCID',
              'SLURM_LOCALID', 'OMPI_MCA_orte_hnp_uri', 'OMPI_COMM_WORLD_SIZE'):
    monkeypatch.delenv(var, raising=False)
  if parallel.detected_cluster() == 'cloud-tpu':
    pytest.skip('running on a Cloud TPU VM')
  assert parallel.detected_cluster() is None
  slurm = {'SLURM_JOB_ID': '7', 'SLURM_STEP_NODELIST': 'n[1-2]', 'SLURM_PROCID': '0',
           'SLURM_LOCALID': '0', 'SLURM_NTASKS': '1'}
  for k, v in slurm.items():
    monkeypatch.setenv(k, v)
  assert parallel.detected_cluster() is None  # one task: a plain single process
  monkeypatch.setenv('SLURM_NTASKS', '2')
  assert parallel.detected_cluster() == 'slurm'
