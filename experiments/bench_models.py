r"""The two models of `experiments/bench_autoattack.py`, in Flax and PyTorch.

Benchmark-only (imports torch; run from the benchmark venv, see
requirements-bench.txt). Each `load_*` trains the Flax model briefly, copies
its weights into a PyTorch twin and asserts that the twin reproduces the Flax
logits on the attacked examples (max abs diff < `TOL`), so both sides of the
benchmark attack the same function.

* 'cnn': `SmallCNN` (NHWC: conv 3x3 16 + ReLU + 2x2 average pool, conv 3x3
  32 + ReLU + 2x2 average pool, dense 10) trained with Adam(3e-3) on
  scikit-learn's digits (8x8x1 in [0, 1]); the last `n_test` of a fixed
  shuffle of the 1,797 images are held out and attacked.
* 'resnet8': tinyrobust's zoo `resnet8` (MLPerf Tiny ResNet8, 32x32x3, batch
  norm) trained with Adam(2e-3) on the shared CIFAR-10 subset
  (`cifar10_subset.npz` under $TINYROBUST_DATA_DIR: 9,000 train images of the
  10,000-image training part; JPEG-decoded, see `tinyrobust.data.cifar10`);
  `n_test` images of a fixed shuffle of its 2,000 official test images are
  attacked. A missing subset is an error (no synthetic stand-in). The torch
  twin uses batch norm in eval mode with the Flax running statistics and TF
  'SAME' padding (stride-2 convolutions pad one pixel at the bottom/right
  only, as XLA does).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

from flax import serialization
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from torch import nn as tnn
from torch.nn import functional as F

from tinyrobust import data as data_lib
from tinyrobust.models import resnet8 as resnet8_lib

TOL = 1e-4  # max |logit difference| Flax vs torch twin


@dataclasses.dataclass
class Bench:
  """One benchmark model: Flax apply/variables, the torch twin, the examples.

  Attributes:
    name: 'cnn' or 'resnet8'.
    apply_fn: `apply_fn(variables, x [B, H, W, C]) -> logits [B, 10]`.
    variables: the trained Flax variables.
    net: the torch twin (NCHW, eval mode).
    x, y: the attacked examples, NHWC float32 in [0, 1], int32 labels.
    info: one line (data, training, clean accuracy, logit diff).
  """
  name: str
  apply_fn: Callable
  variables: Any
  net: Any
  x: np.ndarray
  y: np.ndarray
  info: str


class SmallCNN(nn.Module):
  """conv3x3(16) - avgpool2 - conv3x3(32) - avgpool2 - dense, NHWC."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    for features in (16, 32):
      x = nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)))(x)
      x = nn.avg_pool(nn.relu(x), (2, 2), strides=(2, 2))
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


def nchw(x: np.ndarray) -> torch.Tensor:
  """NHWC numpy -> NCHW torch (a copy)."""
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def torch_logits(net, x_nhwc: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return net(nchw(x_nhwc)).numpy()


def _t(a) -> torch.Tensor:
  return torch.from_numpy(np.array(a, np.float32))  # a writable copy


def _conv_weight(kernel) -> torch.Tensor:
  """Flax HWIO -> torch OIHW."""
  return _t(np.asarray(kernel).transpose(3, 2, 0, 1))


def _train(loss_fn, variables, batches, *, steps: int, lr: float,
           cache: str | None = None):
  """Adam on `loss_fn(params, state, xb, yb) -> (loss, new_state)`; the
  variables are `{'params': ..., **state}`. With `cache` (a file path) the
  trained variables are read from it when it exists, else written to it."""
  if cache and os.path.exists(cache):
    with open(cache, 'rb') as f:
      return jax.tree.map(jnp.asarray,
                          serialization.msgpack_restore(f.read()))
  params = variables['params']
  state = {k: v for k, v in variables.items() if k != 'params'}
  tx = optax.adam(lr)
  opt = tx.init(params)

  @jax.jit
  def step(params, state, opt, xb, yb):
    (_, state), g = jax.value_and_grad(loss_fn, has_aux=True)(params, state,
                                                              xb, yb)
    updates, opt = tx.update(g, opt)
    return optax.apply_updates(params, updates), state, opt

  for i in range(steps):
    xb, yb = batches(i)
    params, state, opt = step(params, state, opt, xb, yb)
  out = {'params': params, **state}
  if cache:
    os.makedirs(os.path.dirname(cache) or '.', exist_ok=True)
    with open(f'{cache}.tmp', 'wb') as f:
      f.write(serialization.msgpack_serialize(
          jax.tree.map(np.asarray, out)))
    os.replace(f'{cache}.tmp', cache)
  return out


def _ce(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _finish(name, apply_fn, variables, net, x, y, what: str, secs: float
            ) -> Bench:
  """Checks the torch twin against Flax on (x, y) and builds the `Bench`."""
  logits = np.asarray(apply_fn(variables, jnp.asarray(x)))
  diff = float(np.max(np.abs(torch_logits(net, x) - logits)))
  if not diff < TOL:
    raise AssertionError(f'{name}: torch twin differs from Flax by {diff} '
                         f'(tolerance {TOL}).')
  acc = float(np.mean(logits.argmax(-1) == y))
  return Bench(name, apply_fn, variables, net, x, y,
               f'{what}; trained (or read from --model_cache) in {secs:.0f} s; '
               f'clean accuracy on the '
               f'{len(x)} attacked examples {100 * acc:.1f}%; torch twin '
               f'max |logit diff| {diff:.1e}')


def _cache_path(cache_dir, name, steps, seed):
  return os.path.join(cache_dir, f'{name}_steps{steps}_seed{seed}.msgpack'
                      ) if cache_dir else None


def load_cnn(n_test: int, steps: int, seed: int,
             cache_dir: str | None = None) -> Bench:
  """The digits CNN (see the module docstring)."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  d = datasets.load_digits()
  x = (d.images / 16.0).astype(np.float32)[..., None]
  y = d.target.astype(np.int32)
  if not 0 < n_test < len(x):
    raise ValueError(f'n_test must be in [1, {len(x) - 1}] for digits, got '
                     f'{n_test}.')
  order = np.random.default_rng(seed).permutation(len(x))
  tr, te = order[:-n_test], order[-n_test:]
  module = SmallCNN(10)
  t0 = time.perf_counter()
  rng = np.random.default_rng(seed)

  def loss_fn(params, state, xb, yb):
    return _ce(module.apply({'params': params, **state}, xb), yb), state

  def batches(_):
    idx = rng.integers(0, len(tr), 64)
    return x[tr][idx], y[tr][idx]

  variables = _train(loss_fn, module.init(jax.random.key(seed), x[:1]),
                     batches, steps=steps, lr=3e-3,
                     cache=_cache_path(cache_dir, 'cnn', steps, seed))
  secs = time.perf_counter() - t0
  net = _torch_small_cnn(variables, x.shape[1:3])
  return _finish('cnn', module.apply, variables, net, x[te], y[te],
                 f'digits CNN (8x8x1): {len(tr)} train / {n_test} attacked, '
                 f'{steps} Adam steps', secs)


def _torch_small_cnn(variables, spatial):
  """The torch twin of `SmallCNN` (dense rows re-ordered from the NHWC
  flatten (h, w, c) to the NCHW flatten (c, h, w))."""
  p = variables['params']
  h, w = spatial[0] // 4, spatial[1] // 4
  k = np.asarray(p['Dense_0']['kernel'])                 # [(h, w, c), out]
  net = tnn.Sequential(
      tnn.Conv2d(p['Conv_0']['kernel'].shape[2], 16, 3, padding=1), tnn.ReLU(),
      tnn.AvgPool2d(2), tnn.Conv2d(16, 32, 3, padding=1), tnn.ReLU(),
      tnn.AvgPool2d(2), tnn.Flatten(), tnn.Linear(32 * h * w, k.shape[1]))
  dense = k.reshape(h, w, 32, -1).transpose(3, 2, 0, 1).reshape(k.shape[1], -1)
  with torch.no_grad():
    for layer, c in zip((net[0], net[3]), (p['Conv_0'], p['Conv_1'])):
      layer.weight.copy_(_conv_weight(c['kernel']))
      layer.bias.copy_(_t(c['bias']))
    net[7].weight.copy_(_t(dense))
    net[7].bias.copy_(_t(p['Dense_0']['bias']))
  return net.eval()


class _SameConv(tnn.Conv2d):
  """Conv2d with TF/XLA 'SAME' padding (extra pixel at the end)."""

  def forward(self, x):
    pads = []
    for size, k, s in zip(x.shape[2:], self.kernel_size, self.stride):
      out = -(-size // s)
      total = max((out - 1) * s + k - size, 0)
      pads.append((total // 2, total - total // 2))
    x = F.pad(x, (*pads[1], *pads[0]))
    return F.conv2d(x, self.weight, self.bias, self.stride)


class TorchResNet8(tnn.Module):
  """The torch twin of `tinyrobust.models.resnet8.ResNet8` (eval mode)."""

  def __init__(self, filters=(16, 32, 64), num_classes=10, in_ch=3):
    super().__init__()
    bn = lambda f: tnn.BatchNorm2d(f, eps=1e-3)
    self.stem, self.stem_bn = _SameConv(in_ch, filters[0], 3), bn(filters[0])
    self.stacks = tnn.ModuleList()
    c = filters[0]
    for i, f in enumerate(filters):
      s = 1 if i == 0 else 2
      m = tnn.ModuleDict({'a': _SameConv(c, f, 3, stride=s), 'a_bn': bn(f),
                          'b': _SameConv(f, f, 3), 'b_bn': bn(f)})
      if s != 1 or c != f:
        m['short'] = _SameConv(c, f, 1, stride=s)
      self.stacks.append(m)
      c = f
    self.dense = tnn.Linear(c, num_classes)

  def forward(self, x):
    x = F.relu(self.stem_bn(self.stem(x)))
    for m in self.stacks:
      y = F.relu(m['a_bn'](m['a'](x)))
      y = m['b_bn'](m['b'](y))
      x = F.relu((m['short'](x) if 'short' in m else x) + y)
    return self.dense(x.mean(dim=(2, 3)))

  def load_flax(self, variables) -> 'TorchResNet8':
    """Copies Flax ResNet8 variables (Conv_i / BatchNorm_j in creation
    order: stem, then per stack conv a, bn a, conv b, bn b, shortcut)."""
    p, st = variables['params'], variables['batch_stats']
    convs, bns = [self.stem], [self.stem_bn]
    for m in self.stacks:
      convs += [m['a'], m['b']] + ([m['short']] if 'short' in m else [])
      bns += [m['a_bn'], m['b_bn']]
    with torch.no_grad():
      for i, c in enumerate(convs):
        c.weight.copy_(_conv_weight(p[f'Conv_{i}']['kernel']))
        c.bias.copy_(_t(p[f'Conv_{i}']['bias']))
      for j, b in enumerate(bns):
        name = f'BatchNorm_{j}'
        b.weight.copy_(_t(p[name]['scale']))
        b.bias.copy_(_t(p[name]['bias']))
        b.running_mean.copy_(_t(st[name]['mean']))
        b.running_var.copy_(_t(st[name]['var']))
      self.dense.weight.copy_(_t(np.asarray(p['Dense_0']['kernel']).T))
      self.dense.bias.copy_(_t(p['Dense_0']['bias']))
    return self.eval()


def load_resnet8(n_test: int, steps: int, seed: int,
                 cache_dir: str | None = None) -> Bench:
  """ResNet8 on the CIFAR-10 subset (see the module docstring)."""
  path = os.path.join(os.environ.get(data_lib.DATA_DIR_ENV, ''),
                      'cifar10_subset.npz')
  if not os.path.exists(path):
    raise ValueError(f'ResNet8 needs the CIFAR-10 subset {path!r}; set '
                     f'${data_lib.DATA_DIR_ENV} (e.g. /work/shared/data).')
  train = data_lib.load('cifar10', 'train', source='local', seed=seed)
  test = data_lib.load('cifar10', 'test', source='local')
  if not 0 < n_test <= len(test.y):
    raise ValueError(f'n_test must be in [1, {len(test.y)}] for ResNet8, got '
                     f'{n_test}.')
  pick = np.sort(np.random.default_rng(seed).permutation(len(test.y))[:n_test])
  x, y = test.x[pick], test.y[pick].astype(np.int32)
  xt, yt = np.asarray(train.x, np.float32), train.y.astype(np.int32)
  module = resnet8_lib.resnet8(10)
  t0 = time.perf_counter()
  rng = np.random.default_rng(seed)

  def loss_fn(params, state, xb, yb):
    logits, new = module.apply({'params': params, **state}, xb, train=True,
                               mutable=['batch_stats'])
    return _ce(logits, yb), new

  def batches(_):
    idx = rng.integers(0, len(yt), 64)
    xb = xt[idx]
    flip = rng.random(len(idx)) < 0.5          # horizontal flips
    xb[flip] = xb[flip, :, ::-1]
    return xb, yt[idx]

  variables = _train(loss_fn, module.init(jax.random.key(seed), xt[:2]),
                     batches, steps=steps, lr=2e-3,
                     cache=_cache_path(cache_dir, 'resnet8', steps, seed))
  secs = time.perf_counter() - t0
  net = TorchResNet8().load_flax(variables)
  return _finish('resnet8', module.apply, variables, net, x, y,
                 f'ResNet8 (32x32x3, CIFAR-10 subset): {len(yt)} train / '
                 f'{n_test} of 2,000 test images attacked, {steps} Adam steps '
                 'of 64 (flips)', secs)


def grad_ms(bench: Bench, threads, repeats: int = 5) -> str:
  """Best milliseconds of one input gradient of the summed cross-entropy on
  all of `bench.x`: jitted JAX, and torch autograd at each thread count
  (APGD's per-step floor)."""
  xj, yj = jnp.asarray(bench.x), jnp.asarray(bench.y)
  g = jax.jit(jax.grad(lambda xx: jnp.sum(
      optax.softmax_cross_entropy_with_integer_labels(
          bench.apply_fn(bench.variables, xx), yj))))
  g(xj).block_until_ready()

  def best(fn):
    fn()
    out = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      fn()
      out.append(time.perf_counter() - t0)
    return 1e3 * min(out)

  parts = [f'jax {best(lambda: g(xj).block_until_ready()):.1f}']
  xt = nchw(bench.x).requires_grad_()
  yt = torch.from_numpy(bench.y.astype(np.int64))

  def tg():
    loss = F.cross_entropy(bench.net(xt), yt, reduction='sum')
    return torch.autograd.grad(loss, [xt])[0].numpy()

  for t in threads:
    torch.set_num_threads(t)
    parts.append(f'torch@{t} {best(tg):.1f}')
  return ', '.join(parts) + ' ms'


LOADERS = {'cnn': load_cnn, 'resnet8': load_resnet8}
