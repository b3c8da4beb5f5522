"""PNG plots of unlearning results, for people to read.

Every function draws one figure and writes it to a PNG file. The figures are
built with `matplotlib.figure.Figure` and its Agg canvas directly, not with
pyplot: that needs no display, changes no global matplotlib state (a caller's
own backend choice is left alone) and keeps no figures alive after returning.

Titles are the caller's: a plot is only useful if its title says what was
measured (dataset, model, forget classes, method), and only the caller knows
that, so these functions render the given title verbatim.
"""

from collections.abc import Mapping, Sequence
import math
import os

from matplotlib import figure as mpl_figure
from matplotlib import patches
from matplotlib.backends import backend_agg
import numpy as np

from delete_jax.errors import UserError

EPOCH_CURVE_KEYS = ('train_forget', 'train_remain', 'test_forget',
                    'test_remain')
METHOD_COMPARISON_KEYS = ('test_forget', 'test_remain', 'mia_confidence')

_DPI = 120
# Forget classes are drawn in this colour everywhere, so a reader who has seen
# one plot recognises them in the next.
_FORGET_COLOUR = '#d62728'
_FORGET_SHADE = '#fbe3e3'
_CURVE_STYLES = {
    'train_forget': dict(color=_FORGET_COLOUR, linestyle='-'),
    'test_forget': dict(color=_FORGET_COLOUR, linestyle='--'),
    'train_remain': dict(color='#1f77b4', linestyle='-'),
    'test_remain': dict(color='#1f77b4', linestyle='--'),
}
# Above this many classes, per-cell numbers and per-class tick labels would
# overlap into an unreadable smear.
_MAX_ANNOTATED_CLASSES = 20
_MAX_LABELLED_TICKS = 40


def _new_figure(width: float, height: float) -> mpl_figure.Figure:
  # Constrained layout keeps outside legends and colorbars inside the canvas.
  fig = mpl_figure.Figure(figsize=(width, height), dpi=_DPI,
                          layout='constrained')
  backend_agg.FigureCanvasAgg(fig)
  return fig


def _save(fig: mpl_figure.Figure, path: str) -> None:
  """Writes `fig` as PNG to `path`, creating missing parent directories."""
  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  try:
    fig.savefig(path, format='png')
  except OSError as e:
    raise UserError(f'cannot write plot {path}: {e.strerror or e}.') from None


def _number_or_nan(value, what: str) -> float:
  """Returns value as a float (None becomes NaN), or raises UserError."""
  if value is None:
    return math.nan
  try:
    return float(value)
  except (TypeError, ValueError):
    raise UserError(f'{what} must be a number; got {value!r}.') from None


def plot_epoch_curves(history: Sequence[Mapping[str, float]], path: str,
                      title: str) -> None:
  """Plots the four accuracies after each unlearning epoch.

  Args:
    history: one row per evaluation, {'epoch': int, 'train_forget': float,
      'train_remain': float, 'test_forget': float, 'test_remain': float},
      accuracies in percent. A row with epoch 0 (before unlearning) is
      welcome; a missing value may be None and leaves a gap.
    path: where to write the PNG.
    title: the figure title, rendered as given.

  Raises:
    UserError: an empty history, a row lacking a key, or non-numeric values.
  """
  if not history:
    raise UserError('plot_epoch_curves needs at least one history row.')
  for i, row in enumerate(history):
    missing = [k for k in ('epoch',) + EPOCH_CURVE_KEYS if k not in row]
    if missing:
      raise UserError(f'plot_epoch_curves: history row {i} lacks '
                      f'{", ".join(missing)}.')
  epochs = [_number_or_nan(row['epoch'], 'epoch') for row in history]
  fig = _new_figure(7.0, 4.5)
  ax = fig.add_subplot()
  # Few points read better with markers; many would clutter the lines.
  marker = 'o' if len(history) <= 30 else None
  for key in EPOCH_CURVE_KEYS:
    values = [_number_or_nan(row[key], key) for row in history]
    ax.plot(epochs, values, marker=marker, markersize=3,
            label=key.replace('_', '-'), **_CURVE_STYLES[key])
  ax.set_xlabel('epoch')
  ax.set_ylabel('accuracy (%)')
  ax.set_ylim(-2.0, 102.0)
  ax.grid(True, alpha=0.3)
  ax.legend(loc='center right')
  ax.set_title(title, fontsize=10)
  _save(fig, path)


def plot_per_class(per_class: Mapping[str, np.ndarray],
                   forget_classes: Sequence[int], path: str,
                   title: str) -> None:
  """Draws per-class accuracy as grouped bars, one bar per model and class.

  Args:
    per_class: model name (e.g. 'original', 'retrain', 'delete') -> [C]
      accuracies as fractions in [0, 1], as `scores.per_class_accuracy`
      returns them; drawn in percent. NaN (a class with no examples) draws no
      bar.
    forget_classes: class ids to highlight (shaded background, red tick
      labels).
    path: where to write the PNG.
    title: the figure title, rendered as given.

  Raises:
    UserError: no models, arrays of different lengths, values outside
      [0, 1], or a forget class out of range.
  """
  if not per_class:
    raise UserError('plot_per_class needs per-class accuracies of at least '
                    'one model.')
  arrays = {}
  for name, values in per_class.items():
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
      raise UserError(f'plot_per_class: accuracies of {name!r} must be a '
                      f'non-empty 1-D array; got shape {values.shape}.')
    finite = values[~np.isnan(values)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
      raise UserError(
          f'plot_per_class expects fractions in [0, 1] (as per_class_accuracy '
          f'returns); {name!r} has values up to {finite.max():g}.')
    arrays[name] = values
  lengths = {values.size for values in arrays.values()}
  if len(lengths) > 1:
    raise UserError('plot_per_class: every model needs one accuracy per '
                    f'class; got lengths {sorted(lengths)}.')
  num_classes = lengths.pop()
  forget = sorted({int(c) for c in forget_classes})
  if forget and (forget[0] < 0 or forget[-1] >= num_classes):
    raise UserError(f'plot_per_class: forget classes must lie in '
                    f'[0, {num_classes - 1}]; got {forget}.')

  num_models = len(arrays)
  group_width = 0.8
  bar_width = group_width / num_models
  width = min(30.0, max(7.0, 0.18 * num_classes * num_models + 2.0))
  fig = _new_figure(width, 4.5)
  ax = fig.add_subplot()
  classes = np.arange(num_classes)
  for c in forget:
    ax.axvspan(c - 0.5, c + 0.5, color=_FORGET_SHADE, zorder=0)
  for i, (name, values) in enumerate(arrays.items()):
    offset = (i - (num_models - 1) / 2.0) * bar_width
    # Heights of NaN would draw invisible bars with a warning; drop them.
    shown = ~np.isnan(values)
    ax.bar(classes[shown] + offset, 100.0 * values[shown], width=bar_width,
           label=name, zorder=2)
  ax.set_xlim(-0.6, num_classes - 0.4)
  ax.set_ylim(0.0, 105.0)
  ax.set_xlabel('class')
  ax.set_ylabel('accuracy (%)')
  if num_classes <= _MAX_LABELLED_TICKS:
    ax.set_xticks(classes)
    for tick, c in zip(ax.get_xticklabels(), classes):
      if c in forget:
        tick.set_color(_FORGET_COLOUR)
        tick.set_fontweight('bold')
  ax.grid(True, axis='y', alpha=0.3, zorder=1)
  handles, labels = ax.get_legend_handles_labels()
  if forget:
    handles.append(patches.Patch(color=_FORGET_SHADE, label='forget class'))
    labels.append('forget class')
  ax.legend(handles, labels, loc='upper left', bbox_to_anchor=(1.0, 1.0))
  ax.set_title(title, fontsize=10)
  _save(fig, path)


def plot_confusion(cm: np.ndarray, path: str, title: str) -> None:
  """Draws a confusion matrix, coloured by the share of each true class.

  Colours are row-normalised so that classes with different numbers of
  examples compare fairly; with at most 20 classes each cell also shows its
  raw count.

  Args:
    cm: [C, C] counts, entry [t, p] = examples of true class t predicted p
      (as `scores.confusion_matrix` returns).
    path: where to write the PNG.
    title: the figure title, rendered as given.

  Raises:
    UserError: a matrix that is not square or holds negative counts.
  """
  cm = np.asarray(cm)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
    raise UserError('plot_confusion needs a non-empty square [C, C] matrix; '
                    f'got shape {cm.shape}.')
  if not np.all(np.isfinite(cm)) or np.any(cm < 0):
    raise UserError('plot_confusion needs finite, non-negative counts.')
  num_classes = cm.shape[0]
  row_totals = cm.sum(axis=1, keepdims=True)
  shares = np.divide(cm, row_totals, out=np.zeros(cm.shape),
                     where=row_totals > 0)
  side = min(14.0, max(5.0, 0.35 * num_classes + 2.0))
  fig = _new_figure(side + 1.0, side)
  ax = fig.add_subplot()
  image = ax.imshow(shares, cmap='Blues', vmin=0.0, vmax=1.0,
                    interpolation='nearest')
  fig.colorbar(image, ax=ax, label='share of true class')
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  if num_classes <= _MAX_LABELLED_TICKS:
    ax.set_xticks(np.arange(num_classes))
    ax.set_yticks(np.arange(num_classes))
  if num_classes <= _MAX_ANNOTATED_CLASSES:
    for t in range(num_classes):
      for p in range(num_classes):
        # White text on dark cells, black on light ones, so both stay legible.
        colour = 'white' if shares[t, p] > 0.5 else 'black'
        count = cm[t, p]
        text = f'{int(count)}' if float(count).is_integer() else f'{count:.3g}'
        ax.text(p, t, text, ha='center', va='center', fontsize=7,
                color=colour)
  ax.set_title(title, fontsize=10)
  _save(fig, path)


def plot_method_comparison(rows: Sequence[Mapping[str, float | None]],
                           path: str, title: str) -> None:
  """Compares methods by test-forget, test-remain accuracy and MIA rate.

  Args:
    rows: one per method, {'method': str, 'test_forget': float,
      'test_remain': float, 'mia_confidence': float | None}, all in percent;
      'mia_confidence' is the SVC attack's member rate on the forget-class
      training examples with the confidence feature. None (not measured)
      draws no bar and writes "n/a".
    path: where to write the PNG.
    title: the figure title, rendered as given.

  Raises:
    UserError: no rows, a row lacking a key, or values outside [0, 100].
  """
  if not rows:
    raise UserError('plot_method_comparison needs at least one method row.')
  methods = []
  table = np.full((len(rows), len(METHOD_COMPARISON_KEYS)), np.nan)
  for i, row in enumerate(rows):
    missing = [k for k in ('method', 'test_forget', 'test_remain')
               if k not in row]
    if missing:
      raise UserError(f'plot_method_comparison: row {i} lacks '
                      f'{", ".join(missing)}.')
    methods.append(str(row['method']))
    for j, key in enumerate(METHOD_COMPARISON_KEYS):
      value = _number_or_nan(row.get(key), f'{row["method"]} {key}')
      if not math.isnan(value) and not 0.0 <= value <= 100.0:
        raise UserError(f'plot_method_comparison expects percentages in '
                        f'[0, 100]; {row["method"]} {key} = {value:g}.')
      table[i, j] = value

  labels = {'test_forget': 'test-forget acc. (lower is better)',
            'test_remain': 'test-remain acc. (higher is better)',
            'mia_confidence': 'MIA member rate, confidence (lower is better)'}
  colours = {'test_forget': _FORGET_COLOUR, 'test_remain': '#1f77b4',
             'mia_confidence': '#7f7f7f'}
  num_keys = len(METHOD_COMPARISON_KEYS)
  bar_width = 0.8 / num_keys
  width = min(30.0, max(8.0, 1.2 * len(rows) + 5.0))
  fig = _new_figure(width, 4.8)
  ax = fig.add_subplot()
  positions = np.arange(len(rows))
  for j, key in enumerate(METHOD_COMPARISON_KEYS):
    offsets = positions + (j - (num_keys - 1) / 2.0) * bar_width
    values = table[:, j]
    shown = ~np.isnan(values)
    bars = ax.bar(offsets[shown], values[shown], width=bar_width,
                  label=labels[key], color=colours[key], zorder=2)
    ax.bar_label(bars, fmt='%.1f', fontsize=7, padding=1)
    for x in offsets[~shown]:
      ax.text(x, 1.0, 'n/a', ha='center', va='bottom', fontsize=7,
              rotation=90)
  ax.set_xticks(positions)
  ax.set_xticklabels(methods, rotation=30 if len(rows) > 6 else 0,
                     ha='right' if len(rows) > 6 else 'center')
  # Bars only span part of each slot, so fix the limits to keep the "n/a"
  # markers of the outermost methods inside the axes.
  ax.set_xlim(-0.5, len(rows) - 0.5)
  ax.set_ylim(0.0, 110.0)
  ax.set_ylabel('%')
  ax.grid(True, axis='y', alpha=0.3, zorder=1)
  ax.legend(loc='upper left', bbox_to_anchor=(1.0, 1.0), fontsize=8)
  ax.set_title(title, fontsize=10)
  _save(fig, path)
