"""The AutoAttack cascade (Croce and Hein, ICML 2020) as one pure kernel, and
its stages for a host-side scheduler.

Versions (`version=`), with the paper's / authors' budgets as defaults:

* 'standard': APGD-CE (100 steps), APGD-T (targeted DLR, 9 target classes,
  100 steps each), FAB-T (9 target classes, 100 steps each), Square (5000
  queries), in that order, one restart each: the version RobustBench
  reports, so its numbers are comparable with theirs.
* 'rand', for models flagged non-deterministic: APGD-CE and APGD-DLR with
  expectation over transformation, every step's gradient the mean over
  `eot_iter = 20` draws of the model's randomness (pass `random_apply=True`
  and `apply_fn(variables, x, key)`; everything outside the EOT gradient
  sees the fixed draw `key(0)`).

`attacks=` replaces the version's list by a custom order from `STAGES`.
The budget (version, steps, n_target_classes, queries, restarts, eot_iter)
is in `attack.config`, with `config['stages']` the stage names
(`'clean'` first).

Each attack runs only on the points still robust: examples misclassified
on the clean input are done before any attack, and per example the output
is the first attack's x_adv that is misclassified. FAB-T returns a point
only when the adversarial example it found lies within eps (as in
AutoAttack), so "misclassified" means "broken within eps" for every stage.
In one batched call "only on the robust points" is a per-example selection
(a stage is skipped once no point is left: a Python `if` when the steps are
host-driven, `lax.cond` under a trace; under `vmap` over eps every stage
runs and the selection does the rest), so robust accuracy is the
per-example minimum over the attacks. Robust points come back as x.

Host-side scheduling. `attack.stages` holds the ordered stage `Attack`
records (the same kernels the cascade calls; `autoattack_stages` builds
them alone). A scheduler runs stage i only on the points still robust after
stages 0..i-1 (compacted into a few padded bucket sizes) and stops at the
first success per point, which gives the same robust accuracy as this
kernel without spending a stage's budget on points already broken (see
`tinyrobust.evaluation.scheduler`). A stage whose loss needs more classes
than the model has (APGD-DLR: 3, APGD-T: 4) is skipped with a warning (its
stage record returns x).

`info['broken_by']` (with `return_info=True`) says, per example, which
stage broke it: an index into `attack.config['stages']` (`'clean'` first,
then the attacks), or -1 if it is still robust.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from tinyrobust.attacks import apgd  # noqa: F401  (registers 'apgd-*')
from tinyrobust.attacks import build
from tinyrobust.attacks import fab  # noqa: F401  (registers 'fab', 'fab-t')
from tinyrobust.attacks import loops
from tinyrobust.attacks import registry
from tinyrobust.attacks import square  # noqa: F401  (registers 'square')
from tinyrobust.attacks import threat as threat_lib

ApplyFn = Callable[..., jax.Array]
VERSIONS = {'standard': ('apgd-ce', 'apgd-t', 'fab-t', 'square'),
            'rand': ('apgd-ce', 'apgd-dlr')}
VERSION_EOT_ITER = {'standard': 1, 'rand': 20}
STAGES = ('apgd-ce', 'apgd-dlr', 'apgd-t', 'fab', 'fab-t', 'square')
_MIN_CLASSES = {'apgd-dlr': 3, 'apgd-t': 4}
# Per stage, the cascade's budget options it takes (when its factory does).
_BUDGET = {'apgd-ce': ('steps', 'restarts', 'eot_iter'),
           'apgd-dlr': ('steps', 'restarts', 'eot_iter'),
           'apgd-t': ('steps', 'n_target_classes', 'eot_iter'),
           'fab': ('steps', 'restarts'),
           'fab-t': ('steps', 'n_target_classes', 'restarts'),
           'square': ('queries',)}
# Options that change what a stage computes: an error if its factory does
# not take them (the others only change how it runs and are dropped; a
# stage without `random_apply` attacks the fixed draw of the model).
_SEMANTIC = {'eot_iter': 1}


def _num_classes(apply_fn: ApplyFn, variables, x) -> int:
  spec = lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))
  return jax.eval_shape(apply_fn, jax.tree.map(spec, variables),
                        spec(x)).shape[-1]


def _too_few_classes(name: str, apply_fn: ApplyFn, variables, x) -> bool:
  k = _num_classes(apply_fn, variables, x)
  if k >= _MIN_CLASSES.get(name, 0):
    return False
  warnings.warn(f'AutoAttack: {name} skipped, it needs at least '
                f'{_MIN_CLASSES[name]} classes (the model has {k}).')
  return True


def _guarded(stage: registry.Attack, fixed: ApplyFn) -> registry.Attack:
  """The stage record, returning x (with a warning) when the model has too
  few classes for its loss; same name and config."""
  if stage.name not in _MIN_CLASSES:
    return stage

  def kernel(variables, x, y, key, eps):
    if _too_few_classes(stage.name, fixed, variables, x):
      return x
    return stage(variables, x, y, key, eps)

  return registry.Attack(name=stage.name, config=stage.config, kernel=kernel)


def _stage(name: str, apply_fn: ApplyFn, fixed: ApplyFn,
           options: dict) -> registry.Attack:
  """Builds stage `name` from the registry with the options it takes."""
  accepted = registry.attack_options(name)
  shared = ('norm', 'clip', 'eps_scale', 'loop', 'chunk', 'random_apply')
  opts = {}
  for k in _BUDGET[name] + shared:
    if k not in options:
      continue
    if accepted is None or k in accepted:
      opts[k] = options[k]
    elif k in _SEMANTIC and options[k] != _SEMANTIC[k]:
      raise ValueError(f'AutoAttack stage {name!r} does not take {k}='
                       f'{options[k]!r} (its factory accepts: '
                       f'{", ".join(accepted)}).')
  stage_apply = apply_fn if opts.get('random_apply') else fixed
  return registry.get_attack(name, stage_apply, **opts)


def _check_stages(version: str, attacks: Sequence[str] | None
                  ) -> tuple[str, ...]:
  if version not in VERSIONS:
    raise ValueError(f'Unknown AutoAttack version {version!r}. Valid: '
                     f'{", ".join(VERSIONS)}.')
  if attacks is None:
    return VERSIONS[version]
  if isinstance(attacks, str) or not attacks or any(
      a not in STAGES for a in attacks) or len(set(attacks)) < len(attacks):
    raise ValueError(f'attacks must be a non-empty list of distinct names '
                     f'from {", ".join(STAGES)}, got {attacks!r}.')
  return tuple(attacks)


def _fixed_model(apply_fn: ApplyFn, random_apply: bool) -> ApplyFn:
  if not isinstance(random_apply, bool):
    raise ValueError(f'random_apply must be a bool, got {random_apply!r}.')
  if not random_apply:
    return apply_fn
  return lambda variables, x: apply_fn(variables, x, jax.random.key(0))


def autoattack_stages(apply_fn: ApplyFn, *, norm: str = 'linf',
                      version: str = 'standard',
                      attacks: Sequence[str] | None = None, steps: int = 100,
                      n_target_classes: int = 9, queries: int = 5000,
                      restarts: int = 1, eot_iter: int | None = None,
                      random_apply: bool = False,
                      loop: str | int | None = 'auto',
                      chunk: int | None = None,
                      clip: tuple[Any, Any] | None = None,
                      eps_scale: Any = None) -> tuple[registry.Attack, ...]:
  """The cascade's ordered stage `Attack` records (options as in
  `make_autoattack`), for a scheduler that runs each stage only on the
  points still robust. Each is `attack(variables, x, y, key, eps) -> x_adv`
  with `y` the true labels (also for APGD-T and FAB-T)."""
  return _build_stages(
      apply_fn, norm=norm, version=version, attacks=attacks, steps=steps,
      n_target_classes=n_target_classes, queries=queries, restarts=restarts,
      eot_iter=eot_iter, random_apply=random_apply, loop=loop, chunk=chunk,
      clip=clip, eps_scale=eps_scale)[1]


def _build_stages(apply_fn: ApplyFn, *, version, attacks, random_apply,
                  eot_iter, **options):
  """`(names, stages, eot_iter)` with the version's defaults filled in."""
  build.check_apply_fn(apply_fn)
  names = _check_stages(version, attacks)
  fixed = _fixed_model(apply_fn, random_apply)
  if eot_iter is None:
    eot_iter = VERSION_EOT_ITER[version]
  options = dict(options, eot_iter=eot_iter, random_apply=random_apply)
  if not random_apply:
    del options['random_apply']  # every factory's default
  stages = tuple(_guarded(_stage(n, apply_fn, fixed, options), fixed)
                 for n in names)
  return names, stages, eot_iter


def _cascade(fixed: ApplyFn, stages: tuple[registry.Attack, ...], loop):
  """`run(variables, x, y, key, eps_b) -> (x_adv, {'broken_by': [B]})`."""
  predict = jax.jit(lambda variables, x: jnp.argmax(fixed(variables, x), -1))

  def run(variables, x, y, key, eps_b):
    eps = eps_b.reshape(-1)
    host = loops.host_mode(loop, variables, x, key, eps_b)
    broken = predict(variables, x) != y
    broken_by = jnp.where(broken, 0, -1)
    x_out = x
    for i, (stage, k) in enumerate(
        zip(stages, jax.random.split(key, len(stages)))):

      def attack(_, stage=stage, k=k):
        x_i = stage(variables, x, y, k, eps)
        return x_i, predict(variables, x_i) != y

      if host:
        if bool(jnp.all(broken)):
          break
        x_i, ok = attack(None)
      else:
        x_i, ok = jax.lax.cond(jnp.all(broken),
                               lambda _: (x, jnp.zeros_like(broken)), attack,
                               None)
      new = ok & ~broken
      x_out = jnp.where(new.reshape((-1,) + (1,) * (x.ndim - 1)), x_i, x_out)
      broken_by = jnp.where(new, i + 1, broken_by)
      broken = broken | new
    return x_out, {'broken_by': broken_by.astype(jnp.int32)}

  return run


def make_autoattack(apply_fn: ApplyFn, *, norm: str = 'linf',
                    version: str = 'standard',
                    attacks: Sequence[str] | None = None, steps: int = 100,
                    n_target_classes: int = 9, queries: int = 5000,
                    restarts: int = 1, eot_iter: int | None = None,
                    random_apply: bool = False,
                    loop: str | int | None = 'auto', chunk: int | None = None,
                    clip: tuple[Any, Any] | None = None,
                    eps_scale: Any = None,
                    return_info: bool = False) -> registry.Attack:
  """Builds the AutoAttack cascade (see the module docstring).

  Args:
    apply_fn: `apply_fn(variables, x) -> logits [B, K]`, eval mode, JAX
      (with `random_apply`, `apply_fn(variables, x, key)`).
    norm: 'linf' or 'l2'.
    version: 'standard' (APGD-CE, APGD-T, FAB-T, Square) or 'rand'
      (APGD-CE, APGD-DLR with EOT).
    attacks: instead of the version's list, a custom order from `STAGES`
      ('apgd-ce', 'apgd-dlr', 'apgd-t', 'fab', 'fab-t', 'square').
    steps: APGD and FAB steps (100).
    n_target_classes: APGD-T's and FAB-T's targets (9; capped at K - 1).
    queries: Square's queries (5000).
    restarts: APGD-CE/-DLR and FAB restarts (1 in both versions).
    eot_iter: EOT draws per APGD gradient (None: 1 for 'standard', 20 for
      'rand'); FAB and Square take none.
    random_apply: the model takes a key (see the module docstring); the
      APGD stages average their gradients over its draws, the others
      (FAB, Square) attack the fixed draw `key(0)`.
    loop, chunk: how every stage's steps run (`loops.run_loop`), for the
      stages whose factory takes them; 'auto' drives the steps from the
      host on CPU (the cascade then skips a stage with a Python `if`).
    clip, eps_scale: the threat model, as in `make_pgd`, for every stage.
    return_info: also return the `make_pgd` info plus 'broken_by'.

  Returns:
    An `Attack` named 'autoattack', pure, jittable and vmappable over eps,
    whose `stages` are the ordered stage records (see the module
    docstring).
  """
  threat = threat_lib.Threat.build(norm, clip, eps_scale)
  loops.check_loop(loop)
  loops.check_chunk(chunk)
  names, stages, eot_iter = _build_stages(
      apply_fn, norm=norm, version=version, attacks=attacks, steps=steps,
      n_target_classes=n_target_classes, queries=queries, restarts=restarts,
      eot_iter=eot_iter, random_apply=random_apply, loop=loop, chunk=chunk,
      clip=clip, eps_scale=eps_scale)
  fixed = _fixed_model(apply_fn, random_apply)
  config = dict(norm=norm, version=version, attacks=list(names),
                stages=['clean', *names], steps=steps,
                n_target_classes=n_target_classes, queries=queries,
                restarts=restarts, eot_iter=eot_iter,
                random_apply=random_apply, clip=clip, eps_scale=eps_scale,
                loop=loop, chunk=chunk)
  record = build.build_attack(
      'autoattack', config, fixed, _cascade(fixed, stages, loop),
      threat=threat, return_info=return_info, extra_info=True, loop=loop)
  return dataclasses.replace(record, stages=stages)


registry.register_attack('autoattack', make_autoattack)
