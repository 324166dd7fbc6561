r"""APGD-CE and Square: tinyrobust vs torchattacks on the same small CNN.

How to run (benchmark-only venv, see requirements-bench.txt; the package's
own venv stays free of torch):

  python3 -m venv /work/benchvenv
  /work/benchvenv/bin/pip install -r requirements.txt
  /work/benchvenv/bin/pip install -e . --no-deps
  /work/benchvenv/bin/pip install -r requirements-bench.txt
  nice -n 10 /work/benchvenv/bin/python -m experiments.bench_autoattack

What it does, all in one process:

1. Trains a small Flax CNN (NHWC: conv 3x3 16 + ReLU + 2x2 average pool,
   conv 3x3 32 + ReLU + 2x2 average pool, dense 10) with optax Adam on
   scikit-learn's digits (8x8 grayscale scaled to [0, 1]); the last
   `--n_test` (1,000) of a fixed shuffle of the 1,797 images are held out
   and attacked, the rest train it.
2. Copies the weights into a PyTorch module (NCHW; conv kernels HWIO ->
   OIHW; the dense kernel's rows re-ordered from the NHWC flatten (h, w, c)
   to the NCHW flatten (c, h, w)) and asserts that the torch copy
   reproduces the Flax logits on the held-out set (max abs diff < 1e-4).
3. Per L-inf eps (`--eps`): tinyrobust's `make_apgd(loss='ce')` vs
   `torchattacks.APGD(loss='ce')` with the same steps, one restart,
   rho = 0.75, eot_iter = 1, and tinyrobust's `make_square` vs
   `torchattacks.Square` with the same query budget, p_init and the margin
   loss; both clip to [0, 1]. Robust accuracy is the accuracy of the Flax
   model on each side's adversarial examples (clean errors count as broken;
   the torch model's verdict on torchattacks' examples is cross-checked),
   after checking that every example stays in the eps-ball and in [0, 1].
4. Times: ours is one jitted batched call; its first call (trace + XLA
   compile + run) is timed separately and the compile time reported as
   first call - best timed call (the kernel takes eps as an argument, so
   later eps reuse the compiled code). torchattacks gets a small warm-up
   call. Both sides are then run `--repeats` times alternately (so load
   from other jobs hits both alike) and the best is kept; the speed ratio is
   torchattacks' time / ours, measured in this run.

Alignment with torchattacks 3.5.1 (its defaults differ from ours): APGD
`steps` defaults to 10 there and 100 here, so both get `--apgd_steps`;
`n_restarts=1`, `rho=.75`, `eot_iter=1`, `seed=0`, `loss='ce'`. Square's
`n_queries` (torchattacks: 5000 by default) = our `queries` (both count the
search iterations after the one initial query), `p_init=0.8`,
`loss='margin'`, `n_restarts=1`, `resc_schedule=True` (our p schedule is
always rescaled to the budget). Known differences that remain: our APGD
checkpoints are `ceil(p_j * steps)` and its condition 2 also applies at the
first checkpoint (the authors' code, which torchattacks copies, rounds
down and skips it); our Square draws window positions and signs per example
(torchattacks: one per iteration for the whole batch) and can place a
window at the last position. Random streams differ (JAX keys vs torch's
generator), so per-example outcomes differ even where the algorithms agree.
"""

from __future__ import annotations

import functools
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tinyrobust.attacks import apgd
from tinyrobust.attacks import square

_EPS = flags.DEFINE_list('eps', ['0.05', '0.1'], 'L-inf eps values.')
_N_TEST = flags.DEFINE_integer('n_test', 1000, 'Held-out examples attacked.')
_TRAIN_STEPS = flags.DEFINE_integer('train_steps', 400, 'optax Adam steps.')
_APGD_STEPS = flags.DEFINE_integer('apgd_steps', 100, 'APGD steps.')
_QUERIES = flags.DEFINE_integer('queries', 1000, 'Square query budget.')
_P_INIT = flags.DEFINE_float('p_init', 0.8, 'Square p_init.')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Timed runs per side (best).')
_SEED = flags.DEFINE_integer('seed', 0, 'Data split, init and attack seed.')
_ATTACKS = flags.DEFINE_list('attacks', ['apgd-ce', 'square'],
                             'Attacks to compare.')
_TORCH_THREADS = flags.DEFINE_integer(
    'torch_threads', 1, 'torch.set_num_threads (0: leave torch\'s default).')
_LAST_POSITION = flags.DEFINE_bool(
    'square_last_position', True, 'Also run torchattacks\' Square with the '
    'last window position reachable (as ours), untimed, to isolate that '
    'difference.')
_SPREAD = flags.DEFINE_integer(
    'spread_seeds', 3, 'Extra attack seeds for ours (untimed): the '
    'seed-to-seed range of our robust accuracy, to read the diff against.')
_TOL = 1e-4


class SmallCNN(nn.Module):
  """conv3x3(16) - avgpool2 - conv3x3(32) - avgpool2 - dense, NHWC."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    for features in (16, 32):
      x = nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)))(x)
      x = nn.avg_pool(nn.relu(x), (2, 2), strides=(2, 2))
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


def _digits(n_test: int, seed: int):
  """(x_train, y_train, x_test, y_test): NHWC float32 in [0, 1]."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  d = datasets.load_digits()
  x = (d.images / 16.0).astype(np.float32)[..., None]
  y = d.target.astype(np.int32)
  if not 0 < n_test < len(x):
    raise ValueError(f'n_test must be in [1, {len(x) - 1}], got {n_test}.')
  order = np.random.default_rng(seed).permutation(len(x))
  train, test = order[:-n_test], order[-n_test:]
  return x[train], y[train], x[test], y[test]


def _train(module, x, y, *, steps: int, seed: int, batch: int = 64):
  """Adam(3e-3) on the mean cross-entropy; returns the variables."""
  variables = module.init(jax.random.key(seed), x[:1])
  tx = optax.adam(3e-3)
  opt_state = tx.init(variables)

  @jax.jit
  def step(variables, opt_state, xb, yb):
    def loss(v):
      logits = module.apply(v, xb)
      return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                             yb).mean()
    grads = jax.grad(loss)(variables)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(variables, updates), opt_state

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(0, len(x), batch)
    variables, opt_state = step(variables, opt_state, x[idx], y[idx])
  return variables


def _torch_copy(variables, spatial: tuple[int, int]):
  """The PyTorch twin of `SmallCNN` with the Flax weights copied."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn as tnn  # pylint: disable=g-import-not-at-top
  p = jax.tree.map(np.array, variables['params'])  # writable copies
  conv = [p['Conv_0'], p['Conv_1']]
  c_in = conv[0]['kernel'].shape[2]
  net = tnn.Sequential(
      tnn.Conv2d(c_in, 16, 3, padding=1), tnn.ReLU(), tnn.AvgPool2d(2),
      tnn.Conv2d(16, 32, 3, padding=1), tnn.ReLU(), tnn.AvgPool2d(2),
      tnn.Flatten(), tnn.Linear(32 * (spatial[0] // 4) * (spatial[1] // 4),
                                p['Dense_0']['kernel'].shape[1]))
  h, w = spatial[0] // 4, spatial[1] // 4
  dense = p['Dense_0']['kernel']                      # [(h, w, c), out]
  dense = dense.reshape(h, w, 32, -1).transpose(3, 2, 0, 1).reshape(
      dense.shape[1], -1)                             # [out, (c, h, w)]
  with torch.no_grad():
    for layer, c in zip((net[0], net[3]), conv):
      layer.weight.copy_(torch.from_numpy(
          np.ascontiguousarray(c['kernel'].transpose(3, 2, 0, 1))))
      layer.bias.copy_(torch.from_numpy(c['bias']))
    net[7].weight.copy_(torch.from_numpy(np.ascontiguousarray(dense)))
    net[7].bias.copy_(torch.from_numpy(p['Dense_0']['bias']))
  return net.eval()


def _nchw(x):
  import torch  # pylint: disable=g-import-not-at-top
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def _torch_logits(net, x_nhwc):
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    return net(_nchw(x_nhwc)).numpy()


def _block(tree):
  return jax.tree.map(lambda a: a.block_until_ready()
                      if hasattr(a, 'block_until_ready') else a, tree)


def _timed(fn):
  t0 = time.perf_counter()
  out = _block(fn())
  return time.perf_counter() - t0, out


def _ours_attack(name, apply_fn):
  if name == 'apgd-ce':
    return apgd.make_apgd(apply_fn, norm='linf', loss='ce',
                          steps=_APGD_STEPS.value, restarts=1, rho=0.75,
                          clip=(0.0, 1.0))
  return square.make_square(apply_fn, norm='linf', queries=_QUERIES.value,
                            p_init=_P_INIT.value, loss='margin',
                            clip=(0.0, 1.0))


def _theirs_attack(name, net, eps):
  import torchattacks  # pylint: disable=g-import-not-at-top
  if name == 'apgd-ce':
    return torchattacks.APGD(net, norm='Linf', eps=eps,
                             steps=_APGD_STEPS.value, n_restarts=1,
                             seed=_SEED.value, loss='ce', eot_iter=1,
                             rho=0.75)
  return torchattacks.Square(net, norm='Linf', eps=eps,
                             n_queries=_QUERIES.value, n_restarts=1,
                             p_init=_P_INIT.value, loss='margin',
                             resc_schedule=True, seed=_SEED.value)


def _runner(attack, x, y):
  """`run(n=None) -> NHWC x_adv` of a torchattacks attack on x[:n]."""
  import torch  # pylint: disable=g-import-not-at-top
  xt, yt = _nchw(x), torch.from_numpy(y.astype(np.int64))

  def run(n=None):
    return np.transpose(attack(xt[:n], yt[:n]).detach().numpy(),
                        (0, 2, 3, 1))

  return run


def _sides(name, apply_fn, variables, net, x, y, eps):
  """(ours, theirs): zero-argument callables -> NHWC x_adv; theirs takes an
  optional example count (for the warm-up)."""
  ours_attack = _ours_attack(name, apply_fn)
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  key, eps_j = jax.random.key(_SEED.value), jnp.float32(eps)

  def ours():
    return ours_attack(variables, xj, yj, key, eps_j)

  return ours, _runner(_theirs_attack(name, net, eps), x, y)


def _last_position_reachable(attack):
  """Patches a torchattacks Square so `random_int(low, high)` draws from
  [low, high] (the shipped one, like the authors' code, never draws high,
  so a window never touches the last row or column)."""
  import torch  # pylint: disable=g-import-not-at-top

  def random_int(low=0, high=1, shape=(1,)):
    t = low + (high - low + 1) * torch.rand(list(shape)).to(attack.device)
    return t.long().clamp(max=high)

  attack.random_int = random_int
  return attack


def _grad_step_ms(apply_fn, variables, net, x, y, repeats: int = 10):
  """Milliseconds of one input gradient of the summed cross-entropy on the
  whole batch: jitted JAX, and torch autograd (APGD's per-step floor)."""
  import torch  # pylint: disable=g-import-not-at-top
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  grad = jax.jit(jax.grad(lambda xx: jnp.sum(
      optax.softmax_cross_entropy_with_integer_labels(
          apply_fn(variables, xx), yj))))
  grad(xj).block_until_ready()
  xt, yt = _nchw(x).requires_grad_(), torch.from_numpy(y.astype(np.int64))

  def torch_grad():
    loss = torch.nn.functional.cross_entropy(net(xt), yt, reduction='sum')
    return torch.autograd.grad(loss, [xt])[0]

  torch_grad()
  out = []
  for fn in (lambda: grad(xj), torch_grad):
    best = min(_timed(fn)[0] for _ in range(repeats))
    out.append(1000 * best)
  return tuple(out)


def _spread(name, apply_fn, variables, x, y, eps) -> str:
  """Our robust accuracy over `--spread_seeds` other attack seeds."""
  if _SPREAD.value < 1:
    return ''
  attack = _ours_attack(name, apply_fn)
  accs = [_robust(apply_fn, variables, x, attack(
      variables, jnp.asarray(x), jnp.asarray(y),
      jax.random.key(_SEED.value + 1 + i), jnp.float32(eps)), y, eps)
          for i in range(_SPREAD.value)]
  return (f'; ours over {_SPREAD.value} other seeds '
          f'{100 * min(accs):.1f}-{100 * max(accs):.1f}%')


def _robust(apply_fn, variables, x, x_adv, y, eps) -> float:
  """Accuracy of the Flax model on x_adv, after the ball/range checks."""
  x_adv = np.asarray(x_adv)
  linf = np.max(np.abs(x_adv - x))
  if not (np.all(np.isfinite(x_adv)) and linf <= eps + 1e-6 and
          x_adv.min() >= 0.0 and x_adv.max() <= 1.0):
    raise AssertionError(f'x_adv leaves the eps={eps} ball or [0, 1]: '
                         f'linf={linf}, range=[{x_adv.min()}, '
                         f'{x_adv.max()}].')
  pred = np.argmax(np.asarray(apply_fn(variables, jnp.asarray(x_adv))), -1)
  return float(np.mean(pred == y))


def _compare(name, eps, apply_fn, variables, net, x, y, compiled: set,
             floor_ms: float):
  """Runs and times both sides of one attack at one eps; prints a row."""
  ours, theirs = _sides(name, apply_fn, variables, net, x, y, eps)
  first = None
  if name not in compiled:
    first, _ = _timed(ours)
    compiled.add(name)
  _timed(functools.partial(theirs, 8))
  t_ours, t_theirs = [], []
  for _ in range(_REPEATS.value):
    t, adv_ours = _timed(ours)
    t_ours.append(t)
    t, adv_theirs = _timed(theirs)
    t_theirs.append(t)
  acc_ours = _robust(apply_fn, variables, x, adv_ours, y, eps)
  acc_theirs = _robust(apply_fn, variables, x, adv_theirs, y, eps)
  torch_pred = np.argmax(_torch_logits(net, adv_theirs), -1)
  flax_pred = np.argmax(np.asarray(apply_fn(variables, adv_theirs)), -1)
  diff = 100 * (acc_ours - acc_theirs)
  best_ours, best_theirs = min(t_ours), min(t_theirs)
  compile_s = 'reused' if first is None else f'{first - best_ours:.2f} s'
  print(f'{name:8s} eps={eps:<6g} robust acc ours {100 * acc_ours:5.1f}% '
        f'torchattacks {100 * acc_theirs:5.1f}%  diff {diff:+.1f} pts '
        f'(within 1 pt: {"yes" if abs(diff) <= 1.0 else "NO"})'
        f'{_spread(name, apply_fn, variables, x, y, eps)}')
  print(f'{"":8s} time ours {best_ours:.3f} s (compile {compile_s}'
        f'{"" if first is None else f", first call {first:.2f} s"})  '
        f'torchattacks {best_theirs:.3f} s  ratio theirs/ours '
        f'{best_theirs / best_ours:.1f}x  [all runs: ours '
        f'{", ".join(f"{t:.3f}" for t in t_ours)}; theirs '
        f'{", ".join(f"{t:.3f}" for t in t_theirs)}]')
  if name == 'apgd-ce':
    floor = floor_ms * _APGD_STEPS.value / 1e3
    print(f'{"":8s} ours / (steps x one jitted gradient) = '
          f'{best_ours / floor:.1f}')
  print(f'{"":8s} torch vs Flax verdicts on torchattacks\' x_adv differ on '
        f'{int(np.sum(torch_pred != flax_pred))} examples')
  if name == 'square' and _LAST_POSITION.value:
    patched = _last_position_reachable(_theirs_attack(name, net, eps))
    t, adv = _timed(_runner(patched, x, y))
    acc = _robust(apply_fn, variables, x, adv, y, eps)
    print(f'{"":8s} torchattacks with the last window position reachable: '
          f'{100 * acc:5.1f}% (ours - it {100 * (acc_ours - acc):+.1f} pts; '
          f'one run, {t:.3f} s)')


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top
  import torchattacks  # pylint: disable=g-import-not-at-top
  eps_values = [float(e) for e in _EPS.value]
  for e in eps_values:
    if not 0.0 < e <= 1.0:
      raise ValueError(f'eps must be in (0, 1], got {e}.')
  for a in _ATTACKS.value:
    if a not in ('apgd-ce', 'square'):
      raise ValueError(f'Unknown attack {a!r}. Valid: apgd-ce, square.')
  if _TORCH_THREADS.value:
    torch.set_num_threads(_TORCH_THREADS.value)
  print(f'jax {jax.__version__}, torch {torch.__version__}, torchattacks '
        f'{torchattacks.__version__}; torch threads '
        f'{torch.get_num_threads()}, jax devices {jax.devices()}')
  x_tr, y_tr, x, y = _digits(_N_TEST.value, _SEED.value)
  module = SmallCNN(10)
  t0 = time.perf_counter()
  variables = _train(module, x_tr, y_tr, steps=_TRAIN_STEPS.value,
                     seed=_SEED.value)
  apply_fn = module.apply
  logits = np.asarray(apply_fn(variables, jnp.asarray(x)))
  print(f'digits: {len(x_tr)} train / {len(x)} held-out 8x8x1 in [0, 1]; '
        f'{_TRAIN_STEPS.value} Adam steps in {time.perf_counter() - t0:.1f} '
        f's; clean accuracy {100 * np.mean(logits.argmax(-1) == y):.1f}%')
  net = _torch_copy(variables, x.shape[1:3])
  max_diff = float(np.max(np.abs(_torch_logits(net, x) - logits)))
  print(f'torch copy vs Flax logits: max abs diff {max_diff:.2e}')
  if not max_diff < _TOL:
    raise AssertionError(f'torch copy differs from Flax by {max_diff}.')
  print(f'APGD-CE: {_APGD_STEPS.value} steps, 1 restart, rho 0.75, eot 1; '
        f'Square: {_QUERIES.value} queries, p_init {_P_INIT.value}, margin '
        f'loss; L-inf, clip [0, 1]; best of {_REPEATS.value} timed runs')
  jax_ms, torch_ms = _grad_step_ms(apply_fn, variables, net, x, y)
  print(f'one input gradient on the {len(x)} examples (APGD\'s per-step '
        f'floor): jitted JAX {jax_ms:.1f} ms, torch {torch_ms:.1f} ms; '
        f'x {_APGD_STEPS.value} steps = {jax_ms * _APGD_STEPS.value / 1e3:.2f}'
        f' s / {torch_ms * _APGD_STEPS.value / 1e3:.2f} s')
  compiled: set[str] = set()
  for name in _ATTACKS.value:
    for eps in eps_values:
      _compare(name, eps, apply_fn, variables, net, x, y, compiled, jax_ms)


if __name__ == '__main__':
  app.run(main)
