"""Sub-program timings, JAX vs torch: conv forward / input-grad / kernel-grad per
layer shape, BatchNorm, max-pool, optimizer update.

  python benchmarks/profile_ops.py              # both frameworks, one table
  python benchmarks/profile_ops.py --only cnn   # the CNN's shapes only

Each framework runs in its own subprocess (no thread-pool interference). Every
op is timed as a jitted program (JAX) or an eager call (torch), median of
repeated calls after warm-up; 'cpu' is process CPU time per call, so cpu/wall is
the number of cores kept busy. JAX also times NCHW-layout convolutions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=wrong-import-position

B = common.BATCH
# (name, H, W, Cin, Cout, kernel, stride, pad) of every distinct conv layer.
CONVS = {
    'cnn': [('cnn conv1', 28, 28, 1, 16, 3, 1, 1), ('cnn conv2', 14, 14, 16, 32, 3, 1, 1)],
    'resnet': [
        ('rn stem 3→64 @32', 32, 32, 3, 64, 3, 1, 1),
        ('rn l1 64→64 @32', 32, 32, 64, 64, 3, 1, 1),
        ('rn l2 64→128 s2 @32', 32, 32, 64, 128, 3, 2, 1),
        ('rn l2 128→128 @16', 16, 16, 128, 128, 3, 1, 1),
        ('rn l2 down 1×1 s2', 32, 32, 64, 128, 1, 2, 0),
        ('rn l3 128→256 s2 @16', 16, 16, 128, 256, 3, 2, 1),
        ('rn l3 256→256 @8', 8, 8, 256, 256, 3, 1, 1),
        ('rn l4 256→512 s2 @8', 8, 8, 256, 512, 3, 2, 1),
        ('rn l4 512→512 @4', 4, 4, 512, 512, 3, 1, 1),
    ],
}
# How many times each layer shape runs in one forward pass (for weighting).
CONV_COUNT = {'cnn conv1': 1, 'cnn conv2': 1, 'rn stem 3→64 @32': 1, 'rn l1 64→64 @32': 4,
              'rn l2 64→128 s2 @32': 1, 'rn l2 128→128 @16': 3, 'rn l2 down 1×1 s2': 1,
              'rn l3 128→256 s2 @16': 1, 'rn l3 256→256 @8': 3, 'rn l4 256→512 s2 @8': 1,
              'rn l4 512→512 @4': 3}
BNS = {'cnn': [('cnn bn1', 28, 28, 16)], 'resnet': [('rn bn @32×64', 32, 32, 64),
                                                     ('rn bn @4×512', 4, 4, 512)]}
POOLS = {'cnn': [('cnn pool1', 28, 28, 16)], 'resnet': []}


def timeit(fn, sync, repeats: int, min_s: float = 0.3) -> dict:
  sync(fn())
  sync(fn())
  times, cpus = [], []
  start = time.perf_counter()
  while len(times) < repeats or time.perf_counter() - start < min_s:
    c0, t0 = os.times(), time.perf_counter()
    sync(fn())
    t1, c1 = time.perf_counter(), os.times()
    times.append(t1 - t0)
    cpus.append((c1.user - c0.user) + (c1.system - c0.system))
    if len(times) >= 200:
      break
  times.sort()
  return {'ms': 1000 * times[len(times) // 2], 'cpu_ms': 1000 * sum(cpus) / len(cpus),
          'wall_mean_ms': 1000 * sum(times) / len(times)}


# ---------------------------------------------------------------------------


def run_jax(groups, repeats) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from delete_jax import parallel  # pylint: disable=g-import-not-at-top
  from delete_jax.models.layers import max_pool  # pylint: disable=g-import-not-at-top

  def _jit(fn, **kwargs):  # as the package jits: its compiler options for the CPU
    return parallel.jit(fn, None, **kwargs)

  sync = jax.block_until_ready
  rs = np.random.RandomState(0)
  out = {}
  for g in groups:
    for name, h, w, cin, cout, k, s, p in CONVS[g]:
      for layout in ('NHWC', 'NCHW'):
        if layout == 'NHWC':
          x = jnp.asarray(rs.randn(B, h, w, cin).astype(np.float32))
          kern = jnp.asarray(rs.randn(k, k, cin, cout).astype(np.float32) * 0.1)
          dn = ('NHWC', 'HWIO', 'NHWC')
        else:
          x = jnp.asarray(rs.randn(B, cin, h, w).astype(np.float32))
          kern = jnp.asarray(rs.randn(cout, cin, k, k).astype(np.float32) * 0.1)
          dn = ('NCHW', 'OIHW', 'NCHW')

        def conv(x, kern, dn=dn):
          return jax.lax.conv_general_dilated(x, kern, (s, s), ((p, p), (p, p)),
                                              dimension_numbers=dn)

        y = conv(x, kern)
        gy = jnp.ones_like(y)
        fwd = _jit(conv)
        igrad = _jit(lambda x, kern, gy: jax.vjp(lambda a: conv(a, kern), x)[1](gy)[0])
        kgrad = _jit(lambda x, kern, gy: jax.vjp(lambda b: conv(x, b), kern)[1](gy)[0])
        out[f'{name} fwd {layout}'] = timeit(lambda: fwd(x, kern), sync, repeats)
        out[f'{name} igrad {layout}'] = timeit(lambda: igrad(x, kern, gy), sync, repeats)
        out[f'{name} kgrad {layout}'] = timeit(lambda: kgrad(x, kern, gy), sync, repeats)
        if layout == 'NHWC':
          # Alternatives for the kernel gradient: im2col patches + one GEMM, and
          # k² shifted-slice GEMMs (no batch/feature transposes of activations).
          def kgrad_patches(x, gy):
            pt = jax.lax.conv_general_dilated_patches(
                x, (k, k), (s, s), ((p, p), (p, p)), dimension_numbers=dn)
            # patches' feature dim is ordered (cin, kh, kw).
            g = jnp.einsum('bhwp,bhwo->po', pt, gy)
            return g.reshape(cin, k, k, cout).transpose(1, 2, 0, 3)

          def kgrad_shifted(x, gy):
            xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
            ho, wo = gy.shape[1], gy.shape[2]
            rows = []
            for dy in range(k):
              cols = []
              for dx in range(k):
                sl = xp[:, dy:dy + s * (ho - 1) + 1:s, dx:dx + s * (wo - 1) + 1:s, :]
                cols.append(jnp.einsum('bhwi,bhwo->io', sl, gy))
              rows.append(jnp.stack(cols))
            return jnp.stack(rows)

          def fwd_patches(x, kern):
            pt = jax.lax.conv_general_dilated_patches(
                x, (k, k), (s, s), ((p, p), (p, p)), dimension_numbers=dn)
            return jnp.einsum('bhwp,po->bhwo', pt,
                              kern.transpose(2, 0, 1, 3).reshape(cin * k * k, cout))

          ref = kgrad(x, kern, gy)
          kp, ks = _jit(kgrad_patches), _jit(kgrad_shifted)
          assert jnp.allclose(kp(x, gy), ref, rtol=1e-3, atol=1e-2), name
          assert jnp.allclose(ks(x, gy), ref, rtol=1e-3, atol=1e-2), name
          fp = _jit(fwd_patches)
          assert jnp.allclose(fp(x, kern), y, rtol=1e-3, atol=1e-3), name
          out[f'{name} kgrad via im2col GEMM'] = timeit(lambda: kp(x, gy), sync, repeats)
          out[f'{name} kgrad via k² shifted GEMMs'] = timeit(lambda: ks(x, gy), sync, repeats)
          out[f'{name} fwd via im2col GEMM'] = timeit(lambda: fp(x, kern), sync, repeats)
    for name, h, w, c in BNS[g]:
      x = jnp.asarray(rs.randn(B, h, w, c).astype(np.float32))
      scale, bias = jnp.ones((c,)), jnp.zeros((c,))

      def bn(x, scale, bias):
        mean = jnp.mean(x, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
        return (x - mean) * (scale / jnp.sqrt(var + 1e-5)) + bias

      fb = _jit(jax.grad(lambda x, s_, b_: jnp.sum(bn(x, s_, b_) ** 2), argnums=(0, 1, 2)))
      out[f'{name} train fwd+bwd'] = timeit(lambda: fb(x, scale, bias), sync, repeats)
    for name, h, w, c in POOLS[g]:
      x = jnp.asarray(rs.randn(B, h, w, c).astype(np.float32))
      pool_fwd = _jit(lambda x: max_pool(x, 2, 2))
      pool_fb = _jit(jax.grad(lambda x: jnp.sum(max_pool(x, 2, 2) ** 2)))
      out[f'{name} maxpool fwd'] = timeit(lambda: pool_fwd(x), sync, repeats)
      out[f'{name} maxpool fwd+bwd'] = timeit(lambda: pool_fb(x), sync, repeats)
  if 'resnet' in groups:
    import optax  # pylint: disable=g-import-not-at-top
    from delete_jax.state import make_sgd  # pylint: disable=g-import-not-at-top
    from flax import nnx  # pylint: disable=g-import-not-at-top
    from delete_jax.models import create_model  # pylint: disable=g-import-not-at-top
    from delete_jax.state import split_model  # pylint: disable=g-import-not-at-top
    shapes = split_model(nnx.eval_shape(lambda: create_model(
        'resnet18_cifar', 10, (32, 32, 3))))[1].params
    params = jax.tree.map(lambda s: jnp.asarray(rs.randn(*s.shape).astype(np.float32)),
                          shapes)
    grads = jax.tree.map(lambda a: a * 0.01, params)
    tx = make_sgd(0.1, 0.9, 5e-4)
    opt_state = tx.init(params)

    @_jit
    def update(params, grads, opt_state):
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    out['rn optimizer update (11.2M params)'] = timeit(
        lambda: update(params, grads, opt_state), sync, repeats)
  return out


def run_torch(groups, repeats, threads=0) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  if threads:
    torch.set_num_threads(threads)
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top
  sync = lambda _: None  # pylint: disable=unnecessary-lambda-assignment
  rs = np.random.RandomState(0)
  out = {}
  for g in groups:
    for name, h, w, cin, cout, k, s, p in CONVS[g]:
      x = torch.from_numpy(rs.randn(B, cin, h, w).astype(np.float32))
      kern = torch.from_numpy(rs.randn(cout, cin, k, k).astype(np.float32) * 0.1)
      y = F.conv2d(x, kern, stride=s, padding=p)
      gy = torch.ones_like(y)
      with torch.no_grad():
        out[f'{name} fwd NCHW'] = timeit(lambda: F.conv2d(x, kern, stride=s, padding=p),
                                         sync, repeats)
      out[f'{name} igrad NCHW'] = timeit(
          lambda: torch.nn.grad.conv2d_input(x.shape, kern, gy, stride=s, padding=p),
          sync, repeats)
      out[f'{name} kgrad NCHW'] = timeit(
          lambda: torch.nn.grad.conv2d_weight(x, kern.shape, gy, stride=s, padding=p),
          sync, repeats)
    for name, h, w, c in BNS[g]:
      x = torch.from_numpy(rs.randn(B, c, h, w).astype(np.float32)).requires_grad_()
      scale = torch.ones(c, requires_grad=True)
      bias = torch.zeros(c, requires_grad=True)
      rm, rv = torch.zeros(c), torch.ones(c)

      def bn_fb():
        y = F.batch_norm(x, rm, rv, scale, bias, training=True)
        return torch.autograd.grad((y ** 2).sum(), (x, scale, bias))

      out[f'{name} train fwd+bwd'] = timeit(bn_fb, sync, repeats)
    for name, h, w, c in POOLS[g]:
      x = torch.from_numpy(rs.randn(B, c, h, w).astype(np.float32)).requires_grad_()
      with torch.no_grad():
        out[f'{name} maxpool fwd'] = timeit(lambda: F.max_pool2d(x, 2, 2), sync, repeats)
      out[f'{name} maxpool fwd+bwd'] = timeit(
          lambda: torch.autograd.grad((F.max_pool2d(x, 2, 2) ** 2).sum(), x), sync, repeats)
  if 'resnet' in groups:
    from tests.torch_reference import models as tm  # pylint: disable=g-import-not-at-top
    model = tm.create_model('resnet18_cifar', 10, (32, 32, 3))
    for prm in model.parameters():
      prm.grad = torch.randn_like(prm) * 0.01
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    out['rn optimizer update (11.2M params)'] = timeit(opt.step, sync, repeats)
  return out


def worker(args) -> None:
  groups = [g for g in ('cnn', 'resnet') if args.only in ('all', g)]
  if args.framework == 'jax':
    from delete_jax import parallel  # pylint: disable=g-import-not-at-top
    parallel.set_cpu_convolutions(args.cpu_convolutions)
    res = run_jax(groups, args.repeats)
  else:
    res = run_torch(groups, args.repeats, args.torch_threads)
  info = {}
  if args.framework == 'torch':
    import torch  # pylint: disable=g-import-not-at-top
    info = {'threads': torch.get_num_threads()}
  with open(args.json, 'w') as f:
    json.dump({'ops': res, 'info': info, 'xla_flags': os.environ.get('XLA_FLAGS', '')}, f)


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument('--framework', choices=('jax', 'torch'))
  p.add_argument('--only', default='all', choices=('all', 'cnn', 'resnet'))
  p.add_argument('--repeats', type=int, default=10)
  p.add_argument('--torch_threads', type=int, default=0,
                 help='torch.set_num_threads (0: torch default)')
  p.add_argument('--json', default='')
  p.add_argument('--cpu_convolutions', default='eigen', choices=('eigen', 'xla_default'),
                 help="the package's config.cpu_convolutions for the JAX side")
  args = p.parse_args()
  if args.framework:
    worker(args)
    return
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=common.REPO)
  res = {}
  with tempfile.TemporaryDirectory() as d:
    for fw in ('jax', 'torch'):
      path = os.path.join(d, fw + '.json')
      print(f'[profile_ops] {fw} (load {common.load_average()})', flush=True)
      subprocess.run([sys.executable, __file__, '--framework', fw, '--only', args.only,
                      '--repeats', str(args.repeats), '--cpu_convolutions',
                      args.cpu_convolutions, '--torch_threads',
                      str(args.torch_threads), '--json', path], check=True, env=env)
      with open(path) as f:
        res[fw] = json.load(f)
  j, t = res['jax']['ops'], res['torch']['ops']
  print(f'\nload {common.load_average()}; cpu_convolutions={args.cpu_convolutions}; '
        f'XLA_FLAGS={res["jax"]["xla_flags"]!r}; torch '
        f'threads {res["torch"]["info"].get("threads")}')
  print(f'{"op":44s} {"JAX NHWC ms":>11s} {"JAX NCHW":>9s} {"torch ms":>9s} '
        f'{"JAX/torch":>9s} {"JAX cores":>9s} {"torch cores":>11s}')
  rows = []
  for key in t:
    base = key[:-5] if key.endswith(' NCHW') else key
    jn = j.get(base + ' NHWC') or j.get(base)
    jc = j.get(base + ' NCHW')
    tv = t[key]
    ratio = jn['ms'] / tv['ms'] if jn else float('nan')
    rows.append({'op': base, 'jax_ms': jn and jn['ms'], 'jax_nchw_ms': jc and jc['ms'],
                 'torch_ms': tv['ms'], 'ratio': ratio,
                 'jax_cores': jn and jn['cpu_ms'] / max(jn['wall_mean_ms'], 1e-9),
                 'torch_cores': tv['cpu_ms'] / max(tv['wall_mean_ms'], 1e-9)})
    print(f'{base:44s} {jn["ms"] if jn else float("nan"):11.2f} '
          f'{jc["ms"] if jc else float("nan"):9.2f} {tv["ms"]:9.2f} {ratio:9.2f} '
          f'{rows[-1]["jax_cores"] or 0:9.2f} {rows[-1]["torch_cores"]:11.2f}')
  for key, v in j.items():
    if 'via' in key:
      base = key.split(' via')[0].rsplit(' ', 1)[0]
      kind = 'kgrad' if 'kgrad' in key else 'fwd'
      ref = j.get(f'{base} {kind} NHWC')
      print(f'{key:44s} {v["ms"]:11.2f} {"":9s} {"":9s} {"":9s} '
            f'(vs lax.conv {ref["ms"]:.2f} ms: {v["ms"] / ref["ms"]:.2f}×)')
  # Per-network totals: forward, input-grad, kernel-grad weighted by layer counts.
  for g, prefix in (('cnn', 'cnn '), ('resnet', 'rn ')):
    for kind in ('fwd', 'igrad', 'kgrad'):
      sj = st = 0.0
      for name, *_ in CONVS[g]:
        key = f'{name} {kind}'
        if key + ' NHWC' in j and key + ' NCHW' in t:
          sj += CONV_COUNT[name] * j[key + ' NHWC']['ms']
          st += CONV_COUNT[name] * t[key + ' NCHW']['ms']
      if st:
        print(f'{prefix}all convs {kind:5s} (weighted by use): JAX {sj:8.2f} ms, '
              f'torch {st:8.2f} ms, ratio {sj / st:.2f}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'rows': rows, 'raw': res, 'load_average': common.load_average()}, f, indent=1)


if __name__ == '__main__':
  main()
