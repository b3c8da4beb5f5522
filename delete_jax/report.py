"""report.json, report.md and PNG plots: what was measured, on what, by what."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from delete_jax.context import RunContext
from delete_jax.evaluation import plots, scores

_ACC_KEYS = ('train_forget', 'train_remain', 'test_forget', 'test_remain')


def run_description(ctx: RunContext) -> dict[str, Any]:
  cfg = ctx.config
  return {
      'dataset': ctx.dataset.name, 'dataset_source': ctx.dataset.source,
      'dataset_fingerprint': ctx.dataset.fingerprint(), 'model': cfg.model,
      'num_classes': ctx.dataset.num_classes,
      'forget_classes': list(ctx.split.forget_classes), 'split_sizes': ctx.split.sizes(),
      'method': cfg.unlearn.method,
      'unlearn': {k: v for k, v in cfg.unlearn.to_dict().items()},
      'train': cfg.train.to_dict(), 'augment': cfg.augment.to_dict(),
      'mia': cfg.mia.to_dict(), 'seed': cfg.seed, 'device_count': jax.device_count(),
      'process_count': jax.process_count(), 'platform': jax.devices()[0].platform,
  }


def _mia_conf(row: dict) -> float | None:
  feats = row.get('evaluation', {}).get('mia', {}).get('features', {})
  if 'confidence' in feats:
    return 100.0 * feats['confidence']['member_rate']
  return None


def build_report(ctx: RunContext, rows: dict[str, dict]) -> dict[str, Any]:
  """rows: model name → {'evaluation': evaluate_model(...), 'wall_seconds': float, ...}."""
  report = {'run': run_description(ctx), 'models': rows}
  retrain = rows.get('retrain')
  if retrain is not None:
    ref = retrain['evaluation']['accuracy']
    for name, row in rows.items():
      if name in ('retrain',):
        continue
      acc = row['evaluation']['accuracy']
      u = {'train_forget': acc['train_forget'] / 100, 'train_remain': acc['train_remain'] / 100,
           'test': acc['test_remain'] / 100}
      r = {'train_forget': ref['train_forget'] / 100, 'train_remain': ref['train_remain'] / 100,
           'test': ref['test_remain'] / 100}
      row['tow'] = scores.tow(u, r)
      mu, mr = _mia_conf(row), _mia_conf(retrain)
      if mu is not None and mr is not None:
        row['tow_mia'] = scores.tow_mia({**u, 'mia': mu / 100}, {**r, 'mia': mr / 100})
        row['avg_gap'] = scores.avg_gap(
            {'forget_acc': acc['train_forget'], 'mia': mu, 'remain_acc': acc['train_remain'],
             'test_acc': acc['test_remain']},
            {'forget_acc': ref['train_forget'], 'mia': mr, 'remain_acc': ref['train_remain'],
             'test_acc': ref['test_remain']})
  return report


def markdown(report: dict[str, Any]) -> str:
  run = report['run']
  u = run['unlearn']
  lines = [
      f"# delete_jax report: {run['dataset']} / {run['model']}",
      '',
      f"- data: {run['dataset_source']} (fingerprint {run['dataset_fingerprint']}); split "
      f"sizes {run['split_sizes']}",
      f"- forget classes: {run['forget_classes']}; method: {run['method']} (mask={u['mask']}, "
      f"bn={u['bn']}, T={u['temperature']}, lr={u['lr']}, epochs={u['epochs']}, "
      f"batch={u['batch_size']}, augment={u['augment']})",
      f"- devices: {run['device_count']} × {run['platform']} in {run['process_count']} "
      f"process(es); seed {run['seed']}; MIA: SVC, compat={run['mia']['compat']}",
      '',
      '| model | train-forget | train-remain | test-forget | test-remain | MIA member rate '
      '(confidence) | H-mean | ToW | Avg. Gap | relearn steps | wall (s) |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for name, row in report['models'].items():
    acc = row['evaluation']['accuracy']
    mia = _mia_conf(row)

    def f(x, fmt='{:.2f}'):
      return '—' if x is None else fmt.format(x)

    lines.append(
        f"| {name} | " + ' | '.join(f'{acc[k]:.2f}' for k in _ACC_KEYS) +
        f" | {f(mia)} | {f(100 * row['evaluation']['h_mean'])} | "
        f"{f(row.get('tow'), '{:.4f}')} | {f(row.get('avg_gap'))} | "
        f"{_relearn_cell(row)} | {f(row.get('wall_seconds'), '{:.1f}')} |")
  for name, why in report.get('failed', {}).items():
    lines.append(f'| {name} | failed: {why} |' + ' |' * 9)
  lines += _mia_lines(report)
  methods = [(n, r['method']) for n, r in report['models'].items() if 'method' in r]
  if methods:
    lines += ['', '| method | data read | lr (source) | epochs | own settings | what it does |',
              '|---|---|---|---|---|---|']
    for name, m in methods:
      lr = '—' if m['lr'] is None else f"{m['lr']:g}"
      own = ', '.join(f'{k}={v}' for k, v in m.get('settings', {}).items()) or '—'
      lines.append(f"| {name} | {m['data']} | {lr} ({m['lr_source']}) | "
                   f"{m['epochs']} | {own} | {m['description']} |")
  lines += ['', 'Accuracies in %. MIA member rate: fraction (%) of forget-class training '
            'examples the attack calls "member" (lower = more forgotten; MIA-efficacy = '
            '100 − it). ToW/Avg. Gap are relative to the retrain row. Relearn steps: SGD '
            'steps of fine-tuning on a fixed forget subset until test-forget accuracy '
            'regains the configured fraction of the original\'s.']
  return '\n'.join(lines) + '\n'


def _relearn_cell(row: dict) -> str:
  r = row.get('relearn')
  if not r:
    return '—'
  if r['steps'] is None:
    return f"> {r['max_steps']}"
  ratio = r.get('ratio_to_retrain')
  return f"{r['steps']}" + ('' if ratio is None else f' ({ratio:.2f}× retrain)')


def _mia_lines(report: dict[str, Any]) -> list[str]:
  """Every attack feature: member rate and MIA-efficacy, per model."""
  names = [n for n, r in report['models'].items() if 'mia' in r['evaluation']]
  if not names:
    return []
  first = report['models'][names[0]]['evaluation']['mia']
  feats = list(first['features'])
  lines = ['', f"SVC membership inference (compat={first['compat']}; shadow members "
           f"{first['shadow_members']} remaining-class training examples, non-members "
           f"{first['shadow_nonmembers']} test-remain, targets {first['targets']} forget-class "
           'training examples): member rate % / MIA-efficacy %', '',
           '| model | ' + ' | '.join(feats) + ' |', '|---|' + '---|' * len(feats)]
  for n in names:
    fs = report['models'][n]['evaluation']['mia']['features']
    lines.append(f'| {n} | ' + ' | '.join(
        f"{100 * fs[k]['member_rate']:.2f} / {100 * fs[k]['mia_efficacy']:.2f}" for k in feats)
                 + ' |')
  return lines


def write_report(ctx: RunContext, report: dict[str, Any]) -> str:
  """Writes report.json, report.md and plots (process 0 only); returns the markdown."""
  text = markdown(report)
  if not ctx.is_host0():
    return text
  os.makedirs(ctx.workdir, exist_ok=True)
  with open(os.path.join(ctx.workdir, 'report.json'), 'w') as f:
    json.dump(report, f, indent=1, default=_json_default)
  with open(os.path.join(ctx.workdir, 'report.md'), 'w') as f:
    f.write(text)
  _plots(ctx, report)
  return text


def _plots(ctx: RunContext, report: dict[str, Any]) -> None:
  run = report['run']
  what = (f"{run['dataset']} / {run['model']}, forget {run['forget_classes']}, "
          f"mask={run['unlearn']['mask']}, seed {run['seed']}")
  out = os.path.join(ctx.workdir, 'plots')
  models = report['models']
  per_class = {name: np.array([np.nan if a is None else a
                               for a in row['evaluation']['per_class_test_accuracy']])
               for name, row in models.items()}
  plots.plot_per_class(per_class, run['forget_classes'],
                       os.path.join(out, 'per_class_accuracy.png'),
                       f'Per-class test accuracy — {what}')
  compared = [n for n, r in models.items() if 'method' in r]
  if len(compared) > 1:
    plots.plot_method_comparison(
        [{'method': n, 'test_forget': models[n]['evaluation']['accuracy']['test_forget'],
          'test_remain': models[n]['evaluation']['accuracy']['test_remain'],
          'mia_confidence': _mia_conf(models[n])} for n in models],
        os.path.join(out, 'method_comparison.png'), f'Unlearning methods — {what}')
  method = run['method']
  if method in models:
    plots.plot_confusion(np.array(models[method]['evaluation']['confusion_test']),
                         os.path.join(out, f'confusion_{method}.png'),
                         f'Confusion matrix (test) after {method} — {what}')
    history = [h for h in models[method].get('history', []) if all(k in h for k in _ACC_KEYS)]
    if history:
      plots.plot_epoch_curves(history, os.path.join(out, f'epochs_{method}.png'),
                              f'Accuracy per unlearning epoch ({method}) — {what}')


def _json_default(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f'not JSON serialisable: {type(x)}')
