"""End to end on digits: mode=all, evaluate, resume, and refusals of bad input."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import digits_cnn
from delete_jax import pipeline, train as train_lib, unlearn as unlearn_lib
from delete_jax.context import build_context
from delete_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(**overrides):
  c = digits_cnn.get_config()
  c.train.epochs = 3
  c.unlearn.epochs = 3
  c.mia.features = 'confidence,entropy'
  c.log_every_steps = 1000
  for key, value in overrides.items():
    section, _, field = key.rpartition('.')
    (c[section] if section else c)[field] = value
  return c


def _files(root):
  out = {}
  for d, _, names in os.walk(root):
    for n in names:
      p = os.path.join(d, n)
      out[p] = os.path.getmtime(p)
  return out


@pytest.fixture(scope='module')
def all_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('all'))
  report = pipeline.run(small_config(run_retrain=True, **{'unlearn.eval_every_epochs': 1}),
                        workdir)
  return workdir, report


def test_mode_all_produces_report_and_forgets(all_run):
  workdir, report = all_run
  models = report['models']
  assert set(models) == {'original', 'retrain', 'delete'}
  orig = models['original']['evaluation']['accuracy']
  dele = models['delete']['evaluation']['accuracy']
  assert orig['test_forget'] > 80 and dele['test_forget'] < orig['test_forget'] / 2
  assert dele['test_remain'] > 80
  assert 'confidence' in models['delete']['evaluation']['mia']['features']
  assert 'tow' in models['delete'] and 'avg_gap' in models['delete']
  with open(os.path.join(workdir, 'report.json')) as f:
    stored = json.load(f)
  assert stored['run']['forget_classes'] == [4]
  assert stored['run']['unlearn']['mask'] == 'label'
  assert stored['run']['device_count'] == jax.device_count()
  md = open(os.path.join(workdir, 'report.md')).read()
  assert '| delete |' in md and '| retrain |' in md
  history = models['delete']['history']
  assert [h['epoch'] for h in history] == [1, 2, 3]
  for name in ('per_class_accuracy.png', 'confusion_delete.png', 'epochs_delete.png'):
    path = os.path.join(workdir, 'plots', name)
    assert os.path.getsize(path) > 1000
  assert os.path.exists(os.path.join(workdir, 'metrics', 'metrics.jsonl'))


def test_mode_evaluate_reuses_checkpoints(all_run):
  workdir, report = all_run
  before = _files(os.path.join(workdir, 'original'))
  again = pipeline.run(small_config(mode='evaluate'), workdir)
  for name in ('original', 'retrain', 'delete'):
    assert again['models'][name]['evaluation']['accuracy'] == \
        report['models'][name]['evaluation']['accuracy']
  assert _files(os.path.join(workdir, 'original')) == before


def test_unlearn_without_original_is_refused(tmp_path):
  with pytest.raises(UserError, match='mode=train'):
    pipeline.run(small_config(mode='unlearn'), str(tmp_path))
  assert not os.path.exists(tmp_path / 'delete_forget-4' / 'checkpoints' / '0')


def test_changed_settings_or_model_are_refused_and_nothing_overwritten(all_run):
  workdir, _ = all_run
  before = _files(workdir)
  with pytest.raises(UserError, match='other settings'):
    pipeline.run(small_config(mode='train', **{'train.lr': 0.5}), workdir)
  with pytest.raises(UserError, match='model'):
    pipeline.run(small_config(mode='train', model='resnet18_cifar'), workdir)
  after = _files(workdir)
  assert {k: v for k, v in after.items() if k in before} == before


@pytest.mark.parametrize('override,match', [
    ({'dataset': 'imagenet_nope'}, 'unknown dataset'),
    ({'model': 'nope'}, 'unknown model'),
    ({'forget_classes': '12'}, 'outside'),
    ({'mode': 'dance'}, 'mode'),
    ({'cpu_convolutions': 'ynnpack'}, 'cpu_convolutions'),
])
def test_bad_input_is_one_line_error(tmp_path, override, match):
  with pytest.raises(UserError, match=match) as e:
    pipeline.run(small_config(**override), str(tmp_path))
  assert '\n' not in str(e.value)


def test_empty_forget_set_is_refused():
  from delete_jax.data import class_split, load_dataset  # pylint: disable=g-import-not-at-top
  ds = load_dataset('digits')
  keep = ds.train_labels != 4
  import dataclasses  # pylint: disable=g-import-not-at-top
  without_4 = dataclasses.replace(ds, train_images=ds.train_images[keep],
                                  train_labels=ds.train_labels[keep])
  with pytest.raises(UserError, match='empty'):
    class_split(without_4, (4,))


def _unlearned_params(workdir, stop_at_step=None):
  ctx = build_context(small_config(**{'unlearn.epochs': 2, 'checkpoint_every_steps': 3}),
                      workdir)
  original = train_lib.train(ctx, 'original')[0]
  return unlearn_lib.unlearn(ctx, original, stop_at_step=stop_at_step)


def test_resume_is_bit_identical(tmp_path):
  uninterrupted, rec = _unlearned_params(str(tmp_path / 'a'))
  assert rec['complete']
  # Stop at step 4 (between checkpoints at 3 and 6, mid-epoch) as a preemption would,
  # then rerun the same thing: it resumes from step 4 and must end identical.
  partial, rec = _unlearned_params(str(tmp_path / 'b'), stop_at_step=4)
  assert not rec['complete'] and rec['step'] == 4
  resumed, rec = _unlearned_params(str(tmp_path / 'b'))
  assert rec['complete']
  for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(partial), jax.tree.leaves(resumed)))


def test_cli_prints_one_line_error_and_exit_code(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'delete_jax.main', '--config', 'configs/digits_cnn.py',
       '--workdir', str(tmp_path), '--config.dataset=nope'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith('error: unknown dataset')


def test_converted_checkpoint_serves_as_original(all_run, tmp_path):
  from delete_jax import convert  # pylint: disable=g-import-not-at-top
  workdir, report = all_run
  ctx = build_context(small_config(), workdir)
  original = train_lib.load_kept_variables(ctx, 'original')
  convert.save_converted(jax.tree.map(np.asarray, original), str(tmp_path / 'conv'), 'cnn',
                         10, (8, 8, 1))
  fresh = str(tmp_path / 'run')
  again = pipeline.run(small_config(mode='unlearn', init_checkpoint=str(tmp_path / 'conv'),
                                    **{'mia.enabled': False, 'relearn.enabled': False}), fresh)
  assert again['models']['original']['evaluation']['accuracy'] == \
      report['models']['original']['evaluation']['accuracy']
  assert not os.path.exists(os.path.join(fresh, 'original'))  # nothing trained
  with pytest.raises(UserError, match='arch'):
    pipeline.run(small_config(mode='unlearn', model='resnet18_cifar',
                              init_checkpoint=str(tmp_path / 'conv')), fresh)


def test_train_init_from_warm_starts_all_but_the_head(all_run, tmp_path):
  workdir, _ = all_run
  pretrained = train_lib.load_kept_variables(build_context(small_config(), workdir),
                                             'original')
  ctx = build_context(small_config(**{'train.init_from': workdir, 'train.epochs': 0}),
                      str(tmp_path))
  warm, record = train_lib.train(ctx, 'original')
  assert record['complete']
  np.testing.assert_array_equal(warm.params['conv1']['kernel'],
                                pretrained.params['conv1']['kernel'])
  np.testing.assert_array_equal(warm.batch_stats['bn2']['var'],
                                pretrained.batch_stats['bn2']['var'])
  np.testing.assert_array_equal(warm.params['fc2']['kernel'],
                                ctx.init_vars.params['fc2']['kernel'])  # fresh head


def test_load_variables_of_finished_stages(all_run):
  workdir, _ = all_run
  delete = pipeline.load_variables(small_config(), workdir, 'delete')
  original = pipeline.load_variables(small_config(), workdir, 'original')
  assert not np.array_equal(delete.params['fc2']['kernel'], original.params['fc2']['kernel'])
  with pytest.raises(UserError, match='no finished ga run'):
    pipeline.load_variables(small_config(), workdir, 'ga')
