"""config.cpu_convolutions: which kernels XLA:CPU runs the package's convolutions in.

'eigen' (default) compiles every package program with YNNPACK's individual
convolutions switched off, so XLA:CPU runs them in its multi-threaded Eigen
kernels; 'xla_default' leaves XLA's choice. The numbers must not change.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from delete_jax import parallel
from delete_jax.errors import UserError


@pytest.fixture(autouse=True)
def restore_mode():
  before = parallel.cpu_convolutions()
  yield
  parallel.set_cpu_convolutions(before)


def _conv(x, k):
  return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _loss(k, x):
  return jnp.sum(jnp.square(_conv(x, k)))


def _compiled(mode, x, k):
  parallel.set_cpu_convolutions(mode)
  fn = parallel.jit(jax.value_and_grad(_loss), parallel.make_mesh())
  return fn, fn.lower(k, x).compile().as_text()


def _ynn_convolutions(hlo_text: str) -> int:
  """Convolutions XLA placed inside YNNPACK fusions."""
  fused = re.findall(r'(\S+) = \S+ fusion\([^\n]*__ynn_fusion', hlo_text)
  count = 0
  for name in fused:
    called = re.search(rf'{re.escape(name)} = [^\n]*calls=(%?[\w.\-]+)', hlo_text).group(1)
    body = re.search(rf'{re.escape(called)} [^\n]*\{{\n(.*?)\n\}}', hlo_text, re.S)
    count += bool(body and 'convolution(' in body.group(1))
  return count


def test_modes_and_refusal():
  assert parallel.cpu_convolutions() in parallel.CPU_CONVOLUTIONS
  mesh = parallel.make_mesh()
  parallel.set_cpu_convolutions('eigen')
  opts = parallel.compiler_options(mesh)
  assert opts and 'INDIVIDUAL_CONVOLUTION' not in opts['xla_cpu_experimental_ynn_fusion_type']
  parallel.set_cpu_convolutions('xla_default')
  assert parallel.compiler_options(mesh) is None
  with pytest.raises(UserError, match="cpu_convolutions must be one of") as e:
    parallel.set_cpu_convolutions('ynnpack')
  assert '\n' not in str(e.value)
  assert parallel.cpu_convolutions() == 'xla_default'  # a refused value changes nothing


def test_eigen_keeps_convolutions_out_of_ynnpack_with_the_same_numbers():
  rs = np.random.RandomState(0)
  x = jnp.asarray(rs.randn(8, 16, 16, 32).astype(np.float32))
  k = jnp.asarray(rs.randn(3, 3, 32, 32).astype(np.float32) * 0.1)
  eigen_fn, eigen_hlo = _compiled('eigen', x, k)
  default_fn, default_hlo = _compiled('xla_default', x, k)
  assert _ynn_convolutions(eigen_hlo) == 0
  loss_e, grad_e = eigen_fn(k, x)
  loss_d, grad_d = default_fn(k, x)
  np.testing.assert_allclose(loss_e, loss_d, rtol=1e-5)
  np.testing.assert_allclose(grad_e, grad_d, rtol=1e-4, atol=1e-4 * float(jnp.abs(grad_d).max()))
  if _ynn_convolutions(default_hlo) == 0:
    pytest.skip('this jaxlib does not place convolutions in YNNPACK by default; '
                'the option has nothing to change')


def test_package_steps_use_the_options(monkeypatch):
  """The package's jits (jit_step and evaluation here) compile with the options."""
  seen = []
  real = parallel.jit

  def spy(fn, mesh, **kwargs):
    seen.append(parallel.compiler_options(mesh))
    return real(fn, mesh, **kwargs)

  monkeypatch.setattr(parallel, 'jit', spy)
  parallel.set_cpu_convolutions('eigen')
  from delete_jax.evaluation import accuracy  # pylint: disable=g-import-not-at-top
  from delete_jax.models import create_model  # pylint: disable=g-import-not-at-top
  from delete_jax.preprocess import Preprocess  # pylint: disable=g-import-not-at-top
  from delete_jax.state import split_model  # pylint: disable=g-import-not-at-top
  graphdef, variables = split_model(create_model('cnn', 10, (8, 8, 1)))
  accuracy._jitted_predict.cache_clear()  # pylint: disable=protected-access
  images = np.zeros((4, 8, 8, 1), np.uint8)
  accuracy.predict(variables, images, np.zeros(4, np.int32), np.arange(4),
                   graphdef=graphdef, preprocess=Preprocess(mean=(0.5,), std=(0.5,)),
                   batch_size=4, mesh=parallel.make_mesh())
  step = parallel.jit_step(lambda s, b: (s + b.sum(), {'loss': s}), parallel.make_mesh())
  step(jnp.zeros(()), np.ones((4,), np.float32))
  assert len(seen) == 2 and all(o and 'xla_cpu_experimental_ynn_fusion_type' in o for o in seen)
