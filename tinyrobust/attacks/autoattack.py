"""The AutoAttack cascade (Croce and Hein, ICML 2020) as one pure kernel.

Standard version: APGD-CE (100 steps), APGD-T (targeted DLR, 9 target
classes, 100 steps each), Square (5000 queries), in that order. FAB-T, the
third attack of the original standard version, is left out (not
implemented here); in the authors' reports it rarely breaks a point the
other three miss, but numbers from this cascade are "AutoAttack without
FAB-T" and should be stated as such.

Each attack runs only on the points still robust: examples misclassified
on the clean input are done before any attack, and per example the output
is the first attack's x_adv that is misclassified. In one batched jitted
call "only on the robust points" is a per-example selection (an attack is
skipped with `lax.cond` once no point is left; under `vmap` over eps every
attack runs and the selection does the rest), so the result per example is
a success whenever any attack succeeds: robust accuracy is the per-example
minimum over the attacks. Robust points come back as x.

`info['broken_by']` (with `return_info=True`) says, per example, which
stage broke it: an index into `attack.config['stages']` (`'clean'` first,
then the attacks), or -1 if it is still robust.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from tinyrobust.attacks import apgd
from tinyrobust.attacks import build
from tinyrobust.attacks import registry
from tinyrobust.attacks import square
from tinyrobust.attacks import threat as threat_lib

ApplyFn = Callable[[Any, jax.Array], jax.Array]
VERSIONS = {'standard': ('apgd-ce', 'apgd-t', 'square')}
STAGES = ('apgd-ce', 'apgd-dlr', 'apgd-t', 'square')
_MIN_CLASSES = {'apgd-dlr': 3, 'apgd-t': 4}


def _stage(name: str, apply_fn: ApplyFn, *, common: dict, steps: int,
           n_target_classes: int, queries: int) -> registry.Attack:
  if name == 'square':
    return square.make_square(apply_fn, queries=queries, **common)
  if name == 'apgd-t':
    return apgd.make_apgd_t(apply_fn, steps=steps,
                            n_target_classes=n_target_classes, **common)
  maker = apgd.make_apgd_ce if name == 'apgd-ce' else apgd.make_apgd_dlr
  return maker(apply_fn, steps=steps, **common)


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


def _cascade(apply_fn: ApplyFn, names: tuple[str, ...],
             subs: tuple[registry.Attack, ...]):
  """`run(variables, x, y, key, eps_b) -> (x_adv, {'broken_by': [B]})`."""

  def run(variables, x, y, key, eps_b):
    eps = eps_b.reshape(-1)
    predict = lambda xs: jnp.argmax(apply_fn(variables, xs), axis=-1)
    logits = apply_fn(variables, x)
    num_classes = logits.shape[-1]
    broken = jnp.argmax(logits, axis=-1) != y
    broken_by = jnp.where(broken, 0, -1)
    x_out = x
    for i, (name, sub, k) in enumerate(
        zip(names, subs, jax.random.split(key, len(subs)))):
      if num_classes < _MIN_CLASSES.get(name, 0):
        warnings.warn(f'AutoAttack: {name} skipped, it needs at least '
                      f'{_MIN_CLASSES[name]} classes (the model has '
                      f'{num_classes}).')
        continue

      def attack(_, sub=sub, k=k):
        x_i = sub(variables, x, y, k, eps)
        return x_i, predict(x_i) != y

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
                    clip: tuple[Any, Any] | None = None,
                    eps_scale: Any = None,
                    return_info: bool = False) -> registry.Attack:
  """Builds the AutoAttack cascade (see the module docstring).

  Args:
    apply_fn: `apply_fn(variables, x) -> logits [B, K]`, eval mode, JAX.
    norm: 'linf' or 'l2'.
    version: 'standard' (APGD-CE, APGD-T, Square; FAB-T left out).
    attacks: instead of the version's list, a custom order from 'apgd-ce',
      'apgd-dlr', 'apgd-t', 'square'. Stages whose loss needs more classes
      than the model has (APGD-DLR: 3, APGD-T: 4) are skipped with a warning.
    steps: APGD steps (100 in the standard version).
    n_target_classes: APGD-T targets (9; capped at K - 1).
    queries: Square's queries (5000).
    clip, eps_scale: the threat model, as in `make_pgd`, for every stage.
    return_info: also return the `make_pgd` info plus 'broken_by'.

  Returns:
    An `Attack` named 'autoattack', pure, jittable and vmappable over eps.
  """
  build.check_apply_fn(apply_fn)
  names = _check_stages(version, attacks)
  threat = threat_lib.Threat.build(norm, clip, eps_scale)
  common = dict(norm=norm, clip=clip, eps_scale=eps_scale)
  subs = tuple(_stage(n, apply_fn, common=common, steps=steps,
                      n_target_classes=n_target_classes, queries=queries)
               for n in names)
  config = dict(norm=norm, version=version, attacks=list(names),
                stages=['clean', *names], steps=steps,
                n_target_classes=n_target_classes, queries=queries,
                clip=clip, eps_scale=eps_scale)
  return build.build_attack('autoattack', config, apply_fn,
                            _cascade(apply_fn, names, subs), threat=threat,
                            return_info=return_info, extra_info=True)


registry.register_attack('autoattack', make_autoattack)
