"""The one reader of a config's `attack` section.

    acfg = attack_config(config)             # defaults merged, validated
    kwargs = evaluator_settings(acfg)        # for evaluate_robustness(...)
    kernels = build_attacks(apply_fn, acfg.attacks, clip=clip, ...)

`default_attack_config()` documents the fields (the base config embeds it);
`attack_options` turns a section into each attack factory's keyword
arguments, checked against the factory; `with_eps_scale` adds a threat
model's per-channel eps scale to every attack that takes one.

Like the rest of `tinyrobust.attacks`, this module imports no models or data.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import ml_collections

from tinyrobust import config_io
from tinyrobust.attacks import registry

# Config options every attack factory may take (passed when it accepts them).
COMMON_OPTIONS = ('norm', 'loss', 'clip')


def default_attack_config() -> ml_collections.ConfigDict:
  """Defaults of a config's `attack` section (the base config holds it).

  Fields:
    attacks: registered attack names (`tinyrobust.attacks.list_attacks()`).
    eps_grid: radii in input units; the default suits images in [0, 1]
      (0 .. 32/255). The search uses a one-value grid.
    norm: 'linf' or 'l2'; loss: 'ce', 'mse' or 'margin' (passed to every
      attack that takes them).
    pgd_steps, pgd_restarts: shorthand for `options.pgd.steps/restarts`.
    options: per-attack options, `options.<name>.<option>` (e.g.
      `options.pgd.loop = 'fori'`), checked against the attack's factory.
    batch_size: examples per step (capped at the data size).
    max_examples: None = whole split, else a seeded random subset
      (`subset_indices`, the same subset for the evaluator and the search).
  """
  c = ml_collections.ConfigDict()
  c.attacks = ('fgsm', 'pgd')
  c.eps_grid = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255)
  c.norm = 'linf'
  c.loss = 'ce'
  c.pgd_steps = 10
  c.pgd_restarts = 1
  c.options = ml_collections.ConfigDict()
  c.batch_size = 256
  c.max_examples = ml_collections.config_dict.placeholder(int)
  return c


def attack_config(config) -> ml_collections.ConfigDict:
  """`config.attack` merged over `default_attack_config()`; validated."""
  merged = default_attack_config()
  section = config.get('attack') if config is not None else None
  if section is not None:
    section = section.to_dict() if hasattr(section, 'to_dict') else dict(
        section)
    unknown = sorted(set(section) - set(merged))
    if unknown:
      raise ValueError(f'Unknown attack config field(s) {unknown}. Valid: '
                       f'{", ".join(sorted(merged))}.')
    with merged.ignore_type():
      for k, v in section.items():
        merged[k] = tuple(v) if isinstance(v, list) else v
  names = merged.attacks
  if isinstance(names, str) or not names:
    raise ValueError(f'attack.attacks must be a non-empty list of names, got '
                     f'{names!r}. Valid: {", ".join(registry.list_attacks())}.')
  return merged


def evaluator_settings(acfg) -> dict[str, Any]:
  """The evaluator's keyword arguments (`evaluate_robustness(...,
  **settings)`) from an `attack` section: attacks, eps_grid, batch_size,
  norm, loss, pgd_steps, pgd_restarts, options and max_examples."""
  return dict(attacks=list(acfg.attacks), eps_grid=list(acfg.eps_grid),
              batch_size=int(acfg.batch_size), norm=acfg.norm, loss=acfg.loss,
              pgd_steps=int(acfg.pgd_steps),
              pgd_restarts=int(acfg.pgd_restarts),
              options=config_io.to_dict(acfg.get('options')),
              max_examples=acfg.get('max_examples'))


def attack_options(acfg, *, clip=None) -> dict[str, dict[str, Any]]:
  """Per-attack factory options from an `attack` config section."""
  per_attack = config_io.to_dict(acfg.get('options'))
  shorthand = {'pgd': {'steps': acfg.get('pgd_steps', 10),
                       'restarts': acfg.get('pgd_restarts', 1)},
               # per-example breaking stage -> each attack's contribution
               'autoattack': {'return_info': True}}
  common = {'norm': acfg.get('norm', 'linf'), 'loss': acfg.get('loss', 'ce'),
            'clip': clip}
  out = {}
  for name in acfg.attacks:
    accepted = registry.attack_options(name)
    opts = {k: v for k, v in common.items()
            if accepted is None or k in accepted}
    opts.update(shorthand.get(name, {}))
    opts.update(config_io.to_dict(per_attack.get(name)))
    out[name] = opts
  unused = sorted(set(per_attack) - set(acfg.attacks))
  if unused:
    raise ValueError(f'attack.options names attack(s) {unused} that are not '
                     f'in attack.attacks={list(acfg.attacks)}.')
  return out


def build_attacks(apply_fn: Callable, names: Sequence[str], *,
                  norm: str = 'linf', loss: str = 'ce', pgd_steps: int = 10,
                  pgd_restarts: int = 1, clip=None,
                  options: Mapping[str, Mapping[str, Any]] | None = None
                  ) -> dict[str, registry.Attack]:
  """Attack records for registered names, keyed by name, options checked."""
  if isinstance(names, str) or not names:
    raise ValueError(f'attacks must be a non-empty list of names from '
                     f'{registry.list_attacks()} or a dict of kernels, got '
                     f'{names!r}.')
  names = list(names)
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise ValueError(f'Attack(s) {dupes} listed twice in {list(names)}.')
  acfg = ml_collections.ConfigDict({
      'attacks': tuple(names), 'norm': norm, 'loss': loss,
      'pgd_steps': pgd_steps, 'pgd_restarts': pgd_restarts,
      'options': dict(options or {})})
  opts = attack_options(acfg, clip=clip)
  return {n: registry.get_attack(n, apply_fn, **opts[n]) for n in names}


def with_eps_scale(options, attacks: Sequence[str], eps_scale
                   ) -> dict[str, dict[str, Any]]:
  """Per-attack options with `eps_scale` set for every attack that takes it.

  Raises:
    ValueError: an attack listed that cannot scale eps per channel while
      `eps_scale` is given.
  """
  out = {k: dict(v) for k, v in (config_io.to_dict(options) or {}).items()}
  if eps_scale is None:
    return out
  for name in attacks:
    accepted = registry.attack_options(name)
    if accepted is not None and 'eps_scale' not in accepted:
      raise ValueError(f'Attack {name!r} does not take a per-channel '
                       f'eps_scale, which this threat model needs; use one '
                       'of the attacks that do (fgsm, pgd, apgd, ...).')
    out.setdefault(name, {})['eps_scale'] = eps_scale
  return out
