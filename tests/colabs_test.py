"""Runs every notebook in colabs/ top to bottom with its small switch on.

Each notebook has one code cell tagged `parameters` (`SMALL = False`, `WORKDIR = ''`,
...). As papermill does, the test inserts a cell right after it that sets
`SMALL = True` (offline digits, tiny epochs) and a `WORKDIR` under pytest's temp dir,
then executes the notebook with nbclient in a `python3` kernel started in the
repository root. Any cell error fails the test with the cell's traceback.

The kernels share one JAX persistent compilation cache in a temp dir (unless
JAX_COMPILATION_CACHE_DIR is already set): the notebooks compile the same digits-CNN
steps, and on a 2-core machine compilation is most of their run time.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
pytest.importorskip('ipykernel')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLABS = os.path.join(REPO, 'colabs')
NOTEBOOKS = ('quickstart', 'compare_methods', 'bring_your_own_model')
KERNEL = 'python3'
# Seconds one cell may run; the small settings need a fraction of this.
CELL_TIMEOUT = 600


@pytest.fixture(scope='module', autouse=True)
def _shared_compilation_cache(tmp_path_factory):
  with pytest.MonkeyPatch.context() as mp:
    if not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
      mp.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path_factory.mktemp('jax_cache')))
    yield


def _read(name: str):
  return nbformat.read(os.path.join(COLABS, f'{name}.ipynb'), as_version=4)


def _parameter_cell_index(nb) -> int:
  tagged = [i for i, c in enumerate(nb.cells)
            if c.cell_type == 'code' and 'parameters' in c.metadata.get('tags', [])]
  assert len(tagged) == 1, f'expected one code cell tagged "parameters", found {len(tagged)}'
  return tagged[0]


def _with_small_parameters(nb, workdir: str):
  """The notebook with an injected cell after the parameters cell (in memory only)."""
  cell = nbformat.v4.new_code_cell(f'SMALL = True\nWORKDIR = {workdir!r}')
  cell.metadata['tags'] = ['injected-parameters']
  nb.cells.insert(_parameter_cell_index(nb) + 1, cell)
  return nb


def _ensure_kernel() -> None:
  """A `python3` kernel spec; registered for the user only if none exists."""
  from jupyter_client.kernelspec import KernelSpecManager  # pylint: disable=g-import-not-at-top
  if KERNEL not in KernelSpecManager().find_kernel_specs():
    subprocess.run([sys.executable, '-m', 'ipykernel', 'install', '--user'], check=True,
                   capture_output=True)


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_committed_without_outputs(name):
  nb = _read(name)
  _parameter_cell_index(nb)
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == 'code':
      assert cell.outputs == [] and cell.execution_count is None, \
          f'{name}.ipynb cell {i} has outputs: strip them before committing'


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, tmp_path):
  if name == 'bring_your_own_model':
    pytest.importorskip('torch')
  _ensure_kernel()
  nb = _with_small_parameters(_read(name), str(tmp_path / name))
  client = nbclient.NotebookClient(
      nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT, allow_errors=False,
      resources={'metadata': {'path': REPO}})
  client.execute()
  errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
            if o.output_type == 'error']
  assert not errors
  # The run wrote its report under the injected temp workdir.
  assert any('report.md' in files for _, _, files in os.walk(tmp_path / name))
