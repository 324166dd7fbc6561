"""Auto-PGD (Croce and Hein, ICML 2020), L-inf and L2, as a pure JAX kernel.

APGD is PGD without a step-size to tune. From a random point x^(0) on the
eps-sphere it takes `steps` gradient steps with momentum

    z^(k+1) = P(x^(k) + eta^(k) dir(grad f(x^(k))))
    x^(k+1) = P(x^(k) + a (z^(k+1) - x^(k)) + (1 - a) (x^(k) - x^(k-1)))

(`a = 1` for the first step, then `ALPHA = 0.75`), starting from the step
size `eta = 2 eps`, and at the checkpoints w_j = ceil(p_j * steps),
p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
(`apgd_checkpoints`), halves eta and restarts from the best point x_max
found so far when

  1. the loss increased at fewer than `rho * (w_j - w_{j-1})` of the steps
     since the last checkpoint, or
  2. eta was not halved at the last checkpoint and the best loss f_max did
     not improve since then.

Everything is per example (eta, counters, best point) and pure, so the
kernel jits and vmaps over eps; the steps run through `loops.run_loop`
(`loop=`: host-driven jitted chunks on CPU, `lax.fori_loop` on GPU/TPU and
under an outer jit/vmap, all giving the same output for the same key), and
`eot_iter`/`random_apply` give AutoAttack's EOT variant (`make_apgd`).

Where the paper leaves a detail open this follows the authors' code: the
start point is `x + eps * t / ||t||` (t uniform for L-inf, Gaussian for L2);
the check at w_j looks at the iterates x^(w_{j-1}) .. x^(w_j) and, when it
halves eta, the next step starts from x_max with x_max's gradient (keeping
the momentum term of the last iterate). Where the two differ, the paper is
followed: checkpoints are `ceil(p_j * steps)` (the code's integer
decrements round down) and condition 2 already applies at w_1 (the code
skips it there). The output is a misclassified iterate when one was found
(the last found), else x_max; a targeted pass still succeeds on any
misclassification (as in AutoAttack's APGD-T).
Inside `loops.retire_as` (the evaluation scheduler's path) host-driven
passes stop stepping a clean-correct example once found and skip one found
by an earlier pass (the example returned may then be an earlier iterate or
another pass's; whether one is found does not change).

Losses: 'ce', 'dlr' (needs K >= 3), any other name in `LOSSES`, and
'dlr-targeted' (needs K >= 4), one pass per target (`passes.pass_targets`)
times `restarts`, several side by side when host-driven (`passes`); per
example the first successful pass is kept, else the lowest label margin.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust.attacks import build
from tinyrobust.attacks import checks
from tinyrobust.attacks import loops
from tinyrobust.attacks import losses
from tinyrobust.attacks import norms
from tinyrobust.attacks import passes
from tinyrobust.attacks import registry
from tinyrobust.attacks import threat as threat_lib

ApplyFn = Callable[[Any, jax.Array], jax.Array]
ALPHA = 0.75
APGD_LOSSES = tuple(losses.LOSSES) + ('dlr-targeted',)
NAMES = {'ce': 'apgd-ce', 'dlr': 'apgd-dlr', 'dlr-targeted': 'apgd-t'}


def apgd_checkpoints(steps: int) -> tuple[int, ...]:
  """The checkpoints `w_0 = 0 < w_1 < ... <= steps` of APGD's schedule.

  `w_j = ceil(p_j * steps)` with `p_0 = 0`, `p_1 = 0.22` and
  `p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`, computed exactly in
  hundredths (e.g. steps=100: 0, 22, 41, 57, 70, 80, 87, 93, 99).
  """
  p_prev, p = 0, 22
  out = [0]
  while True:
    w = -(-p * steps // 100)  # ceil(p * steps / 100) in integers
    if w > steps:
      return tuple(out)
    if w > out[-1]:
      out.append(w)
    p_prev, p = p, p + max(p - p_prev - 3, 6)


def _checkpoint_tables(steps: int) -> tuple[np.ndarray, np.ndarray]:
  """Per step index i (the step producing x^(i+1)): is i+1 a checkpoint,
  and the length w_j - w_{j-1} of the interval it closes."""
  w = apgd_checkpoints(steps)
  at = np.zeros(steps, bool)
  length = np.zeros(steps, np.float32)
  for prev, cur in zip(w[:-1], w[1:]):
    at[cur - 1] = True
    length[cur - 1] = cur - prev
  return at, length


def _rows(mask: jax.Array, a: jax.Array) -> jax.Array:
  return mask.reshape(mask.shape + (1,) * (a.ndim - 1))


def _select(mask: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """Per example: `a` where `mask [B]`, else `b`."""
  return jnp.where(_rows(mask, a), a, b)


def _start(key: jax.Array, x: jax.Array, eps_b: jax.Array,
           threat: threat_lib.Threat) -> jax.Array:
  """x^(0): `x + eps * t / ||t||` in the threat's (scaled) norm."""
  u = eps_b * norms.random_unit(key, x, threat.norm)
  return threat.project(x, x + threat.to_delta(u), eps_b)


def _loss_fn(loss: str):
  """`f(logits, y, target) -> [B]`, larger is better for the attacker."""
  if loss == 'dlr-targeted':
    return losses.dlr_targeted_loss
  fn = losses.get_loss(loss)
  return lambda logits, y, target: fn(logits, y)


def _model(apply_fn: ApplyFn, random_apply: bool):
  """`(model(variables, x, key), fixed(variables, x))`: the model with a key
  (ignored unless `random_apply`) and one fixed draw (key 0)."""
  if not random_apply:
    return (lambda variables, x, key: apply_fn(variables, x)), apply_fn
  fixed = lambda variables, x: apply_fn(variables, x, jax.random.key(0))
  return apply_fn, fixed


def _evaluator(apply_fn: ApplyFn, loss: str, *, eot_iter: int,
               random_apply: bool):
  """`evaluate(variables, x, y, target, key) -> (loss [B], grad, miscl [B])`;
  with `eot_iter > 1` loss and gradient are means over draws (keys split
  from `key`, a rolled loop), `miscl` the last draw's (as AutoAttack)."""
  loss_fn = _loss_fn(loss)
  model, _ = _model(apply_fn, random_apply)

  def total(x, variables, y, target, key):
    logits = model(variables, x, key)
    per_example = loss_fn(logits, y, target)
    return jnp.sum(per_example), (per_example, logits)

  value_and_grad = jax.value_and_grad(total, has_aux=True)

  def one(variables, x, y, target, key):
    (_, (per_example, logits)), g = value_and_grad(x, variables, y, target,
                                                   key)
    return per_example, g, jnp.argmax(logits, axis=-1) != y

  def evaluate(variables, x, y, target, key):
    if eot_iter == 1:
      return one(variables, x, y, target, key)
    keys = jax.random.split(key, eot_iter)

    def draw(k, c):
      l, g, m = one(variables, x, y, target, keys[k])
      return c[0] + l, c[1] + g, m

    b = x.shape[0]
    l, g, m = jax.lax.fori_loop(0, eot_iter, draw, (
        jnp.zeros(b, jnp.float32), jnp.zeros_like(x), jnp.zeros(b, bool)))
    return l / eot_iter, g / eot_iter, m

  return evaluate


def _init_state(x0, l0, g0, miscl0, eps_b, prior, correct):
  b = x0.shape[0]
  return dict(
      prior=prior, correct=correct, x_cur=x0, x_prev=x0, grad=g0, loss_cur=l0,
      x_best=x0, grad_best=g0, loss_best=l0, best_at_check=l0,
      x_found=x0, found=miscl0,
      eta=2.0 * eps_b.reshape(b), n_inc=jnp.zeros(b, jnp.int32),
      reduced_last=jnp.zeros(b, bool), n_halved=jnp.zeros(b, jnp.int32))


def _move(s, x, eps_b, a, threat):
  """One momentum step from `s['x_cur']`, projected (ball, then clip)."""
  eta = s['eta'].reshape(eps_b.shape)
  x_cur = s['x_cur']
  z = threat.project(x, x_cur + eta * threat.direction(s['grad']), eps_b)
  x_new = x_cur + a * (z - x_cur) + (1.0 - a) * (x_cur - s['x_prev'])
  return threat.project(x, x_new, eps_b)


def _record(s, x_new, l_new, g_new, miscl):
  """Bookkeeping after evaluating the new iterate."""
  improved = l_new > s['loss_best']
  return dict(
      s,
      x_found=_select(miscl, x_new, s['x_found']), found=s['found'] | miscl,
      n_inc=s['n_inc'] + (l_new > s['loss_cur']).astype(jnp.int32),
      x_best=_select(improved, x_new, s['x_best']),
      grad_best=_select(improved, g_new, s['grad_best']),
      loss_best=jnp.where(improved, l_new, s['loss_best']),
      x_prev=s['x_cur'], x_cur=x_new, grad=g_new, loss_cur=l_new)


def _checkpoint(s, at, length, rho):
  """At a checkpoint: halve eta and restart from x_max where condition 1 or
  2 holds; reset the interval's counters."""
  cond1 = s['n_inc'].astype(jnp.float32) < rho * length
  cond2 = ~s['reduced_last'] & (s['loss_best'] <= s['best_at_check'])
  halve = at & (cond1 | cond2)
  return dict(
      s,
      eta=jnp.where(halve, 0.5 * s['eta'], s['eta']),
      x_cur=_select(halve, s['x_best'], s['x_cur']),
      grad=_select(halve, s['grad_best'], s['grad']),
      loss_cur=jnp.where(halve, s['loss_best'], s['loss_cur']),
      reduced_last=jnp.where(at, halve, s['reduced_last']),
      best_at_check=jnp.where(at, s['loss_best'], s['best_at_check']),
      n_inc=jnp.where(at, 0, s['n_inc']),
      n_halved=s['n_halved'] + halve.astype(jnp.int32))


EOT_SALT = 0x5EED   # the EOT draws' keys: fold_in(fold_in(key, EOT_SALT), i)
# Per-pass argument has a batch axis: variables, x, y, target, eps_b, k_eot.
_BATCHED = (False, True, True, True, True, False)


def _decided(s):
  """Examples a pass may stop stepping (`loops.retire_as`): decided by an
  earlier pass, or found now by any of the example's stacked rows and
  correct clean (a clean misclassification runs to the end)."""
  hit = passes.same_example_any(s['example'], s['found'] & s['correct'])
  return hit | s['prior']


def _apgd_pass(apply_fn: ApplyFn, threat: threat_lib.Threat, *, loss: str,
               steps: int, rho: float, eot_iter: int, random_apply: bool,
               loop, chunk):
  """n APGD passes side by side (`passes`): `run(variables, x, y, targets
  [n, B], keys [n], eps_b, prior, correct) -> state` (the `_init_state`
  dict over `n * B` rows after `steps` steps driven by `loops.run_loop`;
  `prior`, `correct` [B]: found by an earlier pass, and correct on the
  clean input, see `_decided`); start and step are built once, here. With
  `random_apply` n must be 1 (the step keys are per pass)."""
  evaluate = _evaluator(apply_fn, loss, eot_iter=eot_iter,
                        random_apply=random_apply)
  at_table, length_table = _checkpoint_tables(steps)

  @jax.jit
  def start(variables, x, y, targets, keys, eps_b, prior, correct):
    n, b = targets.shape
    x0 = jax.vmap(lambda k: _start(k, x, eps_b, threat))(keys)
    x0 = x0.reshape((n * b,) + x.shape[1:])
    y_n, eps_n, prior_n, correct_n = passes.stack((y, eps_b, prior,
                                                   correct), n)
    t_n = targets.reshape(-1)
    k_eot = jax.random.fold_in(keys[0], EOT_SALT)
    s = _init_state(x0, *evaluate(variables, x0, y_n, t_n,
                                  jax.random.fold_in(k_eot, 0)),
                    eps_n, prior_n, correct_n)
    x_n = passes.stack(x, n)
    return dict(s, example=passes.example_ids(n, b)), (x_n, y_n, t_n,
                                                        eps_n), k_eot

  def body(i, s, variables, x, y, target, eps_b, k_eot):
    at_t, len_t = jnp.asarray(at_table), jnp.asarray(length_table)
    a = jnp.where(i == 0, 1.0, ALPHA).astype(x.dtype)
    x_new = jax.lax.stop_gradient(_move(s, x, eps_b, a, threat))
    k_i = jax.random.fold_in(k_eot, i + 1) if random_apply else k_eot
    s = _record(s, x_new, *evaluate(variables, x_new, y, target, k_i))
    return _checkpoint(s, at_t[i], len_t[i], rho)

  def run(variables, x, y, targets, keys, eps_b, prior, correct):
    s, stacked, k_eot = start(variables, x, y, targets, keys, eps_b, prior,
                              correct)
    return loops.run_loop(body, s, steps, args=(variables, *stacked, k_eot),
                          loop=loop, chunk=chunk, batched=_BATCHED,
                          done=None if random_apply else _decided)

  return run


def _apgd_run(apply_fn: ApplyFn, threat: threat_lib.Threat, *, loss: str,
              steps: int, rho: float, n_target_classes: int, restarts: int,
              eot_iter: int, random_apply: bool, loop, chunk):
  """All passes (targets x restarts): a `lax.scan` or, when the steps are
  host-driven, a Python loop over groups of passes run side by side
  (`passes.groups`; one pass at a time with `random_apply`); per example
  the first successful pass, else the one with the lowest label margin."""
  one_pass = _apgd_pass(apply_fn, threat, loss=loss, steps=steps, rho=rho,
                        eot_iter=eot_iter, random_apply=random_apply,
                        loop=loop, chunk=chunk)
  fixed = _model(apply_fn, random_apply)[1]

  @jax.jit
  def prepare(variables, x, y, key):
    logits = fixed(variables, x)
    targets = passes.pass_targets(
        logits, y, targeted=loss == 'dlr-targeted',
        n_target_classes=n_target_classes, restarts=restarts)
    b = x.shape[0]
    init = dict(x=x, found=jnp.zeros(b, bool),
                margin=jnp.full((b,), jnp.inf, jnp.float32),
                step_size=jnp.zeros(b, x.dtype),
                n_halvings=jnp.zeros(b, jnp.int32))
    correct = jnp.argmax(logits, axis=-1) == y
    return jax.random.split(key, targets.shape[0]), targets, init, correct

  @jax.jit
  def merge(c, variables, y, s):
    """The n stacked passes in `s`, kept in pass order as one by one."""
    b = y.shape[0]
    x_out = _select(s['found'], s['x_found'], s['x_best'])
    margin = losses.label_margin(fixed(variables, x_out),
                                 passes.stack(y, x_out.shape[0] // b))
    for p in range(x_out.shape[0] // b):
      new = passes.part(dict(x=x_out, found=s['found'], margin=margin,
                             step_size=s['eta'], n_halvings=s['n_halved']),
                        p, b)
      take = ~c['found'] & (new['found'] | (new['margin'] < c['margin']))
      c = {k_: _select(take, new[k_], c[k_]) for k_ in c}
    return c

  def run(variables, x, y, key, eps_b):
    keys, targets, init, correct = prepare(variables, x, y, key)
    one = lambda c, k, t: merge(c, variables, y, one_pass(
        variables, x, y, t, k, eps_b, c['found'], correct))
    if loops.host_mode(loop, variables, x, key, eps_b):
      c = init
      for lo, hi in passes.groups(targets.shape[0], x.shape[0],
                                  1 if random_apply else None):
        c = one(c, keys[lo:hi], targets[lo:hi])
    else:
      c = loops.scan_or_loop(lambda c, kt: one(c, kt[0][None], kt[1][None]),
                             init, (keys, targets), host=False)
    return c['x'], {'step_size': c['step_size'],
                    'n_halvings': c['n_halvings']}

  return run


def make_apgd(apply_fn: ApplyFn, *, norm: str = 'linf', steps: int = 100,
              loss: str = 'ce', n_target_classes: int = 9, restarts: int = 1,
              rho: float = 0.75, clip: tuple[Any, Any] | None = None,
              eps_scale: Any = None, eot_iter: int = 1,
              random_apply: bool = False, loop: str | int | None = 'auto',
              chunk: int | None = None,
              return_info: bool = False) -> registry.Attack:
  """Builds an Auto-PGD attack (see the module docstring for the algorithm).

  Args:
    apply_fn: `apply_fn(variables, x [B, ...]) -> logits [B, K]`, eval mode;
      with `random_apply`, `apply_fn(variables, x, key)` (see below).
    norm: 'linf' or 'l2'.
    steps: gradient steps per pass (the paper's N_iter; AutoAttack: 100).
    loss: 'ce', 'dlr' (K >= 3), 'dlr-targeted' (K >= 4), or any name in
      `LOSSES` ('mse', 'margin').
    n_target_classes: targets for 'dlr-targeted' (capped at K - 1).
    restarts: random starts per target; per example the first successful.
    rho: condition-1 threshold (fraction of steps that must raise the loss).
    clip: `(lo, hi)` valid range, scalars or arrays broadcastable to one
      example (as in `make_pgd`).
    eps_scale: per-feature eps scale (as in `make_pgd`); the initial step
      `2 eps` and all steps are in the scaled space.
    eot_iter: expectation over transformation (AutoAttack's `version='rand'`
      uses 20): every step's loss and gradient are the mean over `eot_iter`
      forward/backward passes with independent keys (a rolled loop inside
      the step, so each step costs `eot_iter` gradients); 'misclassified'
      is the last draw's, as in the authors' code.
    random_apply: the model is stochastic and takes its randomness as a
      key: `apply_fn(variables, x, key) -> logits` (e.g. test-time dropout,
      `lambda v, x, k: module.apply(v, x, rngs={'dropout': k})`, or a random
      input transformation `lambda v, x, k: f(v, transform(k, x))`); step i
      splits `fold_in(fold_in(pass_key, EOT_SALT), i + 1)` `eot_iter` ways
      (0 for the start). Targets, the choice between passes and the info
      use one fixed draw (key 0). Without it `eot_iter > 1` repeats the same
      gradient (unless `apply_fn` draws randomness on the host).
    loop: how the steps run, as in `make_pgd` ('auto': host-driven chunks
      on CPU, with the passes a Python loop; `lax.fori_loop` and `lax.scan`
      over passes on GPU/TPU or under an outer jit/vmap). Every mode gives
      the same output for the same key.
    chunk: steps per jitted call in 'host' mode (None:
      `loops.DEFAULT_CHUNK`).
    return_info: also return the `make_pgd` info plus 'step_size' (final
      eta, scaled units) and 'n_halvings' of the pass that was kept.

  Returns:
    An `Attack` named 'apgd-ce', 'apgd-dlr', 'apgd-t' ('dlr-targeted') or
    'apgd-<loss>': `attack(variables, x, y, key, eps) -> x_adv`, with `y`
    the true labels (also for the targeted loss), pure, jittable and
    vmappable over eps; eps=0 returns x.
  """
  build.check_apply_fn(apply_fn)
  checks.check_apgd_options(
      loss=loss, losses=APGD_LOSSES, steps=steps, restarts=restarts, rho=rho,
      n_target_classes=n_target_classes, eot_iter=eot_iter,
      random_apply=random_apply, loop=loop, chunk=chunk)
  threat = threat_lib.Threat.build(norm, clip, eps_scale)
  run = _apgd_run(apply_fn, threat, loss=loss, steps=int(steps),
                  rho=float(rho), n_target_classes=int(n_target_classes),
                  restarts=int(restarts), eot_iter=int(eot_iter),
                  random_apply=random_apply, loop=loop, chunk=chunk)
  config = dict(norm=norm, steps=steps, loss=loss, restarts=restarts,
                rho=rho, clip=clip, eps_scale=eps_scale, eot_iter=eot_iter,
                random_apply=random_apply, loop=loop, chunk=chunk)
  if loss == 'dlr-targeted':
    config['n_target_classes'] = n_target_classes
  return build.build_attack(NAMES.get(loss, f'apgd-{loss}'), config,
                            _model(apply_fn, random_apply)[1], run,
                            threat=threat, return_info=return_info,
                            extra_info=True, loop=loop)


def make_apgd_ce(apply_fn: ApplyFn, *, norm: str = 'linf', steps: int = 100,
                 restarts: int = 1, rho: float = 0.75, clip=None,
                 eps_scale=None, eot_iter: int = 1, random_apply: bool = False,
                 loop='auto', chunk=None, return_info: bool = False):
  """APGD with the cross-entropy loss ('apgd-ce'); see `make_apgd`."""
  return make_apgd(apply_fn, norm=norm, steps=steps, loss='ce',
                   restarts=restarts, rho=rho, clip=clip, eps_scale=eps_scale,
                   eot_iter=eot_iter, random_apply=random_apply, loop=loop,
                   chunk=chunk, return_info=return_info)


def make_apgd_dlr(apply_fn: ApplyFn, *, norm: str = 'linf', steps: int = 100,
                  restarts: int = 1, rho: float = 0.75, clip=None,
                  eps_scale=None, eot_iter: int = 1, random_apply=False,
                  loop='auto', chunk=None, return_info: bool = False):
  """APGD with the DLR loss ('apgd-dlr', K >= 3); see `make_apgd`."""
  return make_apgd(apply_fn, norm=norm, steps=steps, loss='dlr',
                   restarts=restarts, rho=rho, clip=clip, eps_scale=eps_scale,
                   eot_iter=eot_iter, random_apply=random_apply, loop=loop,
                   chunk=chunk, return_info=return_info)


def make_apgd_t(apply_fn: ApplyFn, *, norm: str = 'linf', steps: int = 100,
                n_target_classes: int = 9, restarts: int = 1,
                rho: float = 0.75, clip=None, eps_scale=None,
                eot_iter: int = 1, random_apply: bool = False, loop='auto',
                chunk=None, return_info: bool = False):
  """APGD-T: targeted DLR over the top `n_target_classes` ('apgd-t', K >= 4);
  see `make_apgd`."""
  return make_apgd(apply_fn, norm=norm, steps=steps, loss='dlr-targeted',
                   n_target_classes=n_target_classes, restarts=restarts,
                   rho=rho, clip=clip, eps_scale=eps_scale,
                   eot_iter=eot_iter, random_apply=random_apply, loop=loop,
                   chunk=chunk, return_info=return_info)


registry.register_attack('apgd-ce', make_apgd_ce)
registry.register_attack('apgd-dlr', make_apgd_dlr)
registry.register_attack('apgd-t', make_apgd_t)
