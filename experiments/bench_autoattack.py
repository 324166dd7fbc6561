r"""APGD-CE, Square and the AutoAttack cascade: tinyrobust vs torchattacks.

How to run (benchmark-only venv with torch, see requirements-bench.txt; the
package's own venv stays free of torch):

  python3 -m venv /work/benchvenv
  /work/benchvenv/bin/pip install -r requirements.txt
  /work/benchvenv/bin/pip install -e . --no-deps
  /work/benchvenv/bin/pip install -r requirements-bench.txt
  TINYROBUST_DATA_DIR=/work/shared/data nice -n 5 \
    /work/benchvenv/bin/python -m experiments.bench_autoattack

What it does, all in one process:

1. Models (`experiments/bench_models.py`): the digits CNN (8x8x1, `--n_test`
   1,000 held-out images) and tinyrobust's zoo ResNet8 (32x32x3, briefly
   trained on the shared CIFAR-10 subset, `--n_test_resnet8` of its test
   images), each copied into PyTorch (conv, batch norm in eval mode with the
   running statistics, dense) with max |logit diff| < 1e-4 asserted on the
   attacked examples.
2. Ours is the toolkit's own path: `RobustnessEvaluator(..., engine=
   'scheduler')` (`tinyrobust.evaluation.robustness`; eps in a one-value
   grid, batch size = the number of examples, so one bucket per stage; on
   CPU every kernel's steps are host-driven, `loop='auto'`, and the CPU is
   split into one JAX device per core as the toolkit's commands do
   (`tinyrobust.cpu_devices`; each device runs its half of a bucket as its
   own program; `TINYROBUST_CPU_DEVICES=1` keeps one device), on the attack
   records of the registry:
   * 'apgd-ce' (`--apgd_steps` 100, 1 restart, rho 0.75, eot 1) vs
     `torchattacks.APGD(loss='ce', steps=100, n_restarts=1, eot_iter=1,
     rho=.75, seed)`;
   * 'square' (`--queries` 1,000, p_init 0.8, margin loss) vs
     `torchattacks.Square(n_queries=1000, p_init=.8, loss='margin',
     n_restarts=1, resc_schedule=True, seed)`;
   * 'cascade': our 'autoattack' (version 'standard': APGD-CE, APGD-T,
     FAB-T, Square; `--apgd_steps` 100 steps for APGD and FAB, 9 targets,
     `--cascade_queries` 5,000 queries) vs `torchattacks.MultiAttack([APGD
     (ce, 100 steps), APGDT(100 steps, n_classes=10: 9 targets), FAB
     (multi_targeted, 100 steps, n_classes=10: 9 targets), Square(5000)])`
     with the same budgets, and ALSO `torchattacks.AutoAttack(norm='Linf',
     eps, version='standard', n_classes=10, seed=0)` with its real defaults:
     APGD-CE 10 steps (torchattacks' APGD default `steps=10`, not the
     paper's 100), APGD-T 10 steps x 9 targets, FAB multi-targeted 10 steps
     x 9 targets, Square 5,000 queries, one restart each, rho 0.75, FAB
     alpha_max 0.1, eta 1.05, beta 0.9 (so its budget is a tenth of ours for
     the gradient stages).
3. Robust accuracy on each side is judged by the Flax model: ours is
   rebuilt from the adversarial examples our kernels returned (a recording
   wrapper around each stage, mapped back through the scheduler's call log)
   and asserted equal to the scheduler's count; every example of both sides
   is checked to lie in the eps-ball and in [0, 1]. The difference is in
   points; `--spread_seeds` other seeds of ours (untimed) give the
   seed-to-seed range to read it against.
4. Times: ours is one `evaluator.run` (clean pass, bucket gathering, kernels,
   scatter); its first call (trace + compile + run) is timed apart and the
   compile time reported as first call - best (the kernels take eps as an
   argument and the attack records are shared across eps, so later eps
   reuse the compiled chunks: 'reused'); `compile(jax)` is the sum of JAX's
   compile events in that first call. torchattacks gets a small warm-up.
   Then `--repeats` rounds of ours, torch (each `--torch_threads` setting)
   alternate; the best of each is kept, ratio = torch / ours. torch threads
   (`--torch_threads`, default 1 and 2, each a row, and a 'best' row with
   the faster: read that one): on the loaded 2-core machine this was first
   run on, torch's input gradient ran 2.5-4x slower with 2 threads than with
   1, while on the idle machine 2 threads were faster (ResNet8, 200 images:
   229 vs 337 ms; the one-gradient floor is printed for both,
   `--grad_threads`), so neither is the stronger baseline everywhere. The cascade's
   step budget is `--cascade_steps` (100 = standard; stated in the table).
5. Profile lines: per stage of ours, the points attacked, the padded bucket
   sizes, run and compile seconds (`RobustnessRun.timing`'s figures); per
   sub-attack of torchattacks' MultiAttack/AutoAttack, points and seconds.

Known algorithmic differences (torchattacks 3.5.1): our APGD checkpoints are
ceil(p_j * steps) and condition 2 also applies at the first one; our Square
draws windows per example and by default can place one at the last
position (`--square_corners=authors`, the default here, draws corners as
torchattacks does for Square alone; on the 8x8 digits 'all' left 38.0% robust
at eps 0.1 against torchattacks' 49.4%); our
one-stage attacks run with `consistency=False`, so like torchattacks they
attack only the clean-correct points (the toolkit's studies keep the default
`consistency=True`, which also attacks the misclassified ones to measure
consistency: more work, not timed here); random streams differ.
"""

from __future__ import annotations

import os
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchattacks

from experiments import bench_models
from experiments import bench_record
from tinyrobust import cpu_devices
from tinyrobust.attacks import registry
from tinyrobust.evaluation import robustness

_MODELS = flags.DEFINE_list('models', ['cnn', 'resnet8'], 'cnn, resnet8.')
_EPS = flags.DEFINE_list('eps', ['0.05', '0.1'], 'L-inf eps, digits CNN.')
_EPS_R8 = flags.DEFINE_list('eps_resnet8', ['2/255'], 'L-inf eps, ResNet8.')
_N_TEST = flags.DEFINE_integer('n_test', 1000, 'Digits images attacked.')
_N_TEST_R8 = flags.DEFINE_integer('n_test_resnet8', 200,
                                  'CIFAR-10 test images attacked.')
_STEPS = flags.DEFINE_integer('train_steps', 400, 'Adam steps, digits CNN.')
_STEPS_R8 = flags.DEFINE_integer('train_steps_resnet8', 200,
                                 'Adam steps, ResNet8.')
_CACHE = flags.DEFINE_string('model_cache', '/tmp/tinyrobust_bench_models',
                             'Folder for the trained variables ("": none).')
_ATTACKS = flags.DEFINE_list('attacks', ['apgd-ce', 'square', 'cascade'],
                             'apgd-ce, square, cascade.')
_APGD_STEPS = flags.DEFINE_integer('apgd_steps', 100, 'APGD/FAB steps.')
_QUERIES = flags.DEFINE_integer('queries', 1000, 'Square alone: queries.')
_P_INIT = flags.DEFINE_float('p_init', 0.8, 'Square p_init.')
_CORNERS = flags.DEFINE_enum(
    'square_corners', 'authors', ['authors', 'all'],
    "Square alone: window corners (`make_square(corners=)`): 'authors' as "
    "torchattacks draws them, 'all' the toolkit's default.")
_CQUERIES = flags.DEFINE_integer('cascade_queries', 5000,
                                 'Square queries inside the cascade.')
_CSTEPS = flags.DEFINE_integer('cascade_steps', 100, 'APGD-CE/APGD-T/FAB-T '
                                'steps inside the cascade.')
_TARGETS = flags.DEFINE_integer('n_target_classes', 9, 'APGD-T/FAB-T.')
_TORCH_AA = flags.DEFINE_bool('torch_autoattack', True, 'Also time '
                              'torchattacks.AutoAttack (its defaults).')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Timed rounds (best kept).')
_THREADS = flags.DEFINE_list('torch_threads', ['1', '2'],
                             'torch.set_num_threads values, each timed; '
                             "with several, a 'best' row takes the fastest.")
_GRAD_THREADS = flags.DEFINE_list(
    'grad_threads', ['1', '2'], 'torch thread counts of the one-gradient '
    'floor measurement.')
_SEED = flags.DEFINE_integer('seed', 0, 'Data split, init, attack seed.')
_SPREAD = flags.DEFINE_integer('spread_seeds', 2, 'Other seeds of ours '
                               '(untimed) for apgd-ce and square.')
_ATOL = 1e-6  # float32 slack of the ball check


def _eps(text: str) -> float:
  num, _, den = text.partition('/')
  value = float(num) / (float(den) if den else 1.0)
  if not 0.0 < value <= 1.0:
    raise ValueError(f'eps must be in (0, 1] (or a/b), got {text!r}.')
  return value


def _ours_attack(kind: str, apply_fn) -> registry.Attack:
  clip = (0.0, 1.0)
  if kind == 'apgd-ce':
    return registry.get_attack('apgd-ce', apply_fn, steps=_APGD_STEPS.value,
                               restarts=1, rho=0.75, clip=clip)
  if kind == 'square':
    return registry.get_attack('square', apply_fn, queries=_QUERIES.value,
                               p_init=_P_INIT.value, loss='margin', clip=clip,
                               corners=_CORNERS.value)
  return registry.get_attack(
      'autoattack', apply_fn, version='standard', steps=_CSTEPS.value,
      n_target_classes=_TARGETS.value, queries=_CQUERIES.value, clip=clip)


class _Ours:
  """`run(seed) -> counts` through the scheduler engine, with the stage
  outputs recorded; `judge()` rebuilds the per-example adversarial set."""

  def __init__(self, bench, kind, eps, shared):
    if (bench.name, kind) not in shared:  # one kernel set per model/attack
      rec = bench_record.Recorder()
      shared[(bench.name, kind)] = rec, rec.wrap(
          _ours_attack(kind, bench.apply_fn))
    self.rec, attack = shared[(bench.name, kind)]
    self.bench, self.kind, self.eps = bench, kind, eps
    self.ev = robustness.RobustnessEvaluator(
        bench.apply_fn, {kind: attack}, [eps], batch_size=len(bench.x),
        engine='scheduler', consistency=False)
    self.out, self.calls, self.records = None, [], []

  def run(self, seed: int | None = None):
    self.rec.out.clear()
    sched = self.ev._scheduler  # pylint: disable=protected-access
    n0 = len(sched.calls)
    b = self.bench
    self.out = self.ev.run(b.variables, b.x, b.y,
                           seed=_SEED.value if seed is None else seed
                           )[self.kind]
    self.calls = sched.calls[n0:]
    self.records = bench_record.per_call(self.calls, list(self.rec.out),
                             sched.workers.size, b.x)
    return self.out

  def judge(self) -> float:
    """Flax accuracy on the rebuilt adversarial set (ball/range checked);
    asserts it equals the scheduler's robust count."""
    b = self.bench
    pred0 = _predict(b, b.x)
    ok = pred0 == b.y
    x_adv, done = b.x.copy(), ~ok
    for (_, _, _, idx), (_, adv) in zip(self.calls, self.records):
      adv = adv[:len(idx)]
      _check_ball(adv, b.x[idx], self.eps)
      hit = (_predict(b, adv) != b.y[idx]) & ~done[idx]
      x_adv[idx[hit]] = adv[hit]
      done[idx[hit]] = True
    acc = float(np.mean(_predict(b, x_adv) == b.y))
    if round(acc * len(b.y)) != self.out['robust'][0]:
      raise AssertionError(f'rebuilt robust count {acc * len(b.y)} != '
                           f'scheduler {self.out["robust"][0]}.')
    return acc

  def profile(self) -> str:
    """Per stage: points attacked, bucket sizes, run / compile seconds."""
    parts = []
    for stage in dict.fromkeys(c[1] for c in self.calls):
      calls = [c for c in self.calls if c[1] == stage]
      sizes = [len(r[0]) for c, r in zip(self.calls, self.records)
               if c[1] == stage]
      parts.append(
          f'{stage}: {sum(len(c[3]) for c in calls)} pts in buckets {sizes},'
          f' run {self.out["stage_seconds"].get(stage, 0.0):.2f} s, compile '
          f'{self.out["compile_seconds"].get(stage, 0.0):.2f} s')
    return '; '.join(parts)


def _predict(bench, x) -> np.ndarray:
  return np.argmax(np.asarray(bench.apply_fn(bench.variables,
                                             jnp.asarray(x))), -1)


def _check_ball(x_adv, x, eps):
  linf = float(np.max(np.abs(x_adv - x))) if len(x) else 0.0
  if not (np.all(np.isfinite(x_adv)) and linf <= eps + _ATOL and
          x_adv.min(initial=0.0) >= 0.0 and x_adv.max(initial=1.0) <= 1.0):
    raise AssertionError(f'x_adv leaves the eps={eps} ball or [0, 1]: '
                         f'linf={linf}.')


def _theirs(kind, net, eps):
  """{label: torchattacks attack} for one comparison."""
  ta, s, seed = torchattacks, _APGD_STEPS.value, _SEED.value
  apgd = lambda s=s: ta.APGD(net, norm='Linf', eps=eps, steps=s, n_restarts=1,
                         seed=seed, loss='ce', eot_iter=1, rho=0.75)
  square = lambda q: ta.Square(net, norm='Linf', eps=eps, n_queries=q,
                               n_restarts=1, p_init=_P_INIT.value,
                               loss='margin', resc_schedule=True, seed=seed)
  if kind == 'apgd-ce':
    return {'APGD': apgd()}
  if kind == 'square':
    return {'Square': square(_QUERIES.value)}
  n_cls = _TARGETS.value + 1  # torchattacks: n_classes - 1 targets
  s = _CSTEPS.value
  out = {'MultiAttack': ta.MultiAttack([
      apgd(s),
      ta.APGDT(net, norm='Linf', eps=eps, steps=s, n_restarts=1, seed=seed,
               eot_iter=1, rho=0.75, n_classes=n_cls),
      ta.FAB(net, norm='Linf', eps=eps, steps=s, n_restarts=1,
             alpha_max=0.1, eta=1.05, beta=0.9, seed=seed,
             multi_targeted=True, n_classes=n_cls),
      square(_CQUERIES.value)])}
  if _TORCH_AA.value:
    out['AutoAttack(defaults)'] = ta.AutoAttack(
        net, norm='Linf', eps=eps, version='standard', n_classes=10, seed=0)
  return out


def _stage_clock(attack) -> list:
  """For a MultiAttack (or AutoAttack), logs (stage, points, seconds) of
  each sub-attack call; returns the (cleared per run) log."""
  log = []
  multi = getattr(attack, '_autoattack', attack)
  for sub in getattr(multi, 'attacks', ()):
    def forward(images, labels, sub=sub, orig=sub.forward):
      t0 = time.perf_counter()
      out = orig(images, labels)
      log.append((sub.attack, len(images), time.perf_counter() - t0))
      return out
    sub.forward = forward
  return log


def _timed(fn):
  t0 = time.perf_counter()
  out = fn()  # host numpy (counts, torch outputs): nothing to block on
  return time.perf_counter() - t0, out


def _torch_run(attack, bench, n=None):
  xt = bench_models.nchw(bench.x[:n])
  yt = torch.from_numpy(bench.y[:n].astype(np.int64))
  return lambda: np.transpose(attack(xt, yt).detach().numpy(), (0, 2, 3, 1))


def _budget(kind: str) -> str:
  s = _APGD_STEPS.value
  if kind == 'apgd-ce':
    return f'{s} steps'
  if kind == 'square':
    return f'{_QUERIES.value} q, {_CORNERS.value}'
  return f'{_CSTEPS.value}st/{_TARGETS.value}t/{_CQUERIES.value}q'


def _compare(bench, kind, eps, shared, rows):
  """Times ours and every torch side at one eps, interleaved; adds rows."""
  ours = _Ours(bench, kind, eps, shared)
  first = None
  if (bench.name, kind, 'compiled') not in shared:
    first, out = _timed(ours.run)
    first_jax = sum(out['compile_seconds'].values())
    print(f'  first call {first:.1f} s: {ours.profile()}', flush=True)
    shared[(bench.name, kind, 'compiled')] = True
  theirs = _theirs(kind, bench.net, eps)
  threads = [int(t) for t in _THREADS.value]
  for atk in theirs.values():
    _torch_run(atk, bench, 8)()  # warm-up
  stage_log = {l: _stage_clock(a) for l, a in theirs.items()}
  t_ours, t_th = [], {(l, t): [] for l in theirs for t in threads}
  adv = {}
  for _ in range(_REPEATS.value):
    t_ours.append(_timed(ours.run)[0])
    for label, atk in theirs.items():
      for t in threads:
        stage_log[label].clear()
        torch.set_num_threads(t)
        dt, adv[label] = _timed(_torch_run(atk, bench))
        t_th[(label, t)].append(dt)
  best = min(t_ours)
  acc_ours = ours.judge()
  comp = 'reused' if first is None else (
      f'{first - best:.1f} ({first_jax:.1f} jax)')
  spread = ''
  if kind != 'cascade' and _SPREAD.value:
    accs = []
    for i in range(_SPREAD.value):
      ours.run(seed=_SEED.value + 1 + i)
      accs.append(ours.judge())
    spread = f'{100 * min(accs):.1f}-{100 * max(accs):.1f}'
    ours.run()  # leave the main seed's outputs for the profile
  for label in theirs:
    _check_ball(adv[label], bench.x, eps)
    acc_t = float(np.mean(_predict(bench, adv[label]) == bench.y))
    torch_pred = np.argmax(bench_models.torch_logits(bench.net, adv[label]),
                           -1)
    disagree = int(np.sum(torch_pred != _predict(bench, adv[label])))
    best_t = min(threads, key=lambda t: min(t_th[(label, t)]))
    for t in threads + (['best'] if len(threads) > 1 else []):
      tt = min(t_th[(label, best_t if t == 'best' else t)])
      rows.append((bench.name, f'{kind} vs {label}', f'{eps:.4g}',
                   'torchattacks defaults' if label.startswith('AutoAttack')
                   else _budget(kind), f'{best:.2f}', comp, t, f'{tt:.2f}',
                   f'{tt / best:.2f}', f'{100 * acc_ours:.1f}',
                   f'{100 * acc_t:.1f}', f'{100 * (acc_ours - acc_t):+.1f}',
                   spread, disagree))
      print('  row: ' + ' | '.join(map(str, rows[-1])), flush=True)
  print(f'[{bench.name} {kind} eps={eps:.4g}] ours runs '
        f'{", ".join(f"{t:.2f}" for t in t_ours)} s; '
        + '; '.join(f'{l}@{t}: {", ".join(f"{v:.2f}" for v in ts)} s'
                    for (l, t), ts in t_th.items()), flush=True)
  print(f'  last run: {ours.profile()}', flush=True)
  for label, log in stage_log.items():
    if log:
      print(f'  torch {label} last run: ' + '; '.join(
          f'{n}: {k} pts, {t:.2f} s' for n, k, t in log), flush=True)


_HEAD = ('model', 'attack', 'eps', 'budget', 'ours s', 'compile s',
         'thr', 'torch s', 'torch/ours', 'acc ours', 'acc torch', 'diff pts',
         'ours seeds', 'torch!=flax')


def _print_table(rows):
  widths = [max(len(str(r[i])) for r in rows + [_HEAD])
            for i in range(len(_HEAD))]
  for r in [_HEAD] + rows:
    print('  '.join(str(v).ljust(w) for v, w in zip(r, widths)))


def main(argv):
  del argv
  cpu_devices.enable()  # one JAX device per core, before any JAX op
  for m in _MODELS.value:
    if m not in bench_models.LOADERS:
      raise ValueError(f'Unknown model {m!r}. Valid: cnn, resnet8.')
  for a in _ATTACKS.value:
    if a not in ('apgd-ce', 'square', 'cascade'):
      raise ValueError(f'Unknown attack {a!r}. Valid: apgd-ce, square, '
                       'cascade.')
  eps = {'cnn': [_eps(e) for e in _EPS.value],
         'resnet8': [_eps(e) for e in _EPS_R8.value]}
  threads = [int(t) for t in _THREADS.value]
  if not threads or min(threads) < 1:
    raise ValueError(f'torch_threads must be ints >= 1, got {threads}.')
  print(f'jax {jax.__version__} ({jax.devices()}), torch {torch.__version__} '
        f'(default threads {torch.get_num_threads()}), torchattacks '
        f'{torchattacks.__version__}; {os.cpu_count()} CPUs, '
        f'load average {os.getloadavg()[0]:.1f} at start')
  rows, shared = [], {}
  t_start = time.perf_counter()
  for m in _MODELS.value:
    n, steps = ((_N_TEST.value, _STEPS.value) if m == 'cnn' else
                (_N_TEST_R8.value, _STEPS_R8.value))
    bench = bench_models.LOADERS[m](n, steps, _SEED.value,
                                    _CACHE.value or None)
    print(bench.info, flush=True)
    print(f'  one input gradient on the {n} examples: '
          f'{bench_models.grad_ms(bench, map(int, _GRAD_THREADS.value))}',
          flush=True)
    for kind in _ATTACKS.value:
      for e in eps[m]:
        _compare(bench, kind, e, shared, rows)
  print(f'\nbudgets: APGD-CE {_APGD_STEPS.value} steps, 1 restart, rho .75; '
        f'Square {_QUERIES.value} queries, p_init {_P_INIT.value}, margin; '
        f'cascade = APGD-CE, APGD-T, FAB-T ({_CSTEPS.value} steps, '
        f'{_TARGETS.value} targets), Square ({_CQUERIES.value} queries); '
        'torchattacks.AutoAttack defaults = APGD 10 steps, APGD-T/FAB-T 10 '
        'steps x 9 targets, Square 5000 queries. Best of '
        f'{_REPEATS.value} interleaved rounds; compile = first call - best '
        f'(jax compile events); load average at end '
        f'{os.getloadavg()[0]:.1f}; total '
        f'{time.perf_counter() - t_start:.0f} s\n')
  _print_table(rows)


if __name__ == '__main__':
  app.run(main)
