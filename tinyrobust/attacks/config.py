"""The one reader of a config's `attack` section.

    acfg = attack_config(config)             # defaults merged, validated
    kwargs = evaluator_settings(acfg)        # for evaluate_robustness(...)
    kernels = build_attacks(apply_fn, acfg.attacks, clip=clip, ...)

`default_attack_config()` documents the fields (the base config embeds it);
`attack_options` turns a section into each attack factory's keyword
arguments, checked against the factory; `with_eps_scale` adds a threat
model's per-channel eps scale to every attack that takes one.

Two optional subsections take the attacker of the study's threat model
(no access to the target): `transfer` (examples crafted on source models)
and `universal` (one perturbation per source and eps); absent, nothing
changes (`transfer_config` / `universal_config` read them, defaults in
`default_transfer_config` / `default_universal_config`).

Like the rest of `tinyrobust.attacks`, this module imports no models or data.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import ml_collections

from tinyrobust import config_io
from tinyrobust.attacks import registry

# Config options every attack factory may take (passed when it accepts them).
COMMON_OPTIONS = ('norm', 'loss', 'clip')
# Optional subsections of `attack` (absent unless a config sets them).
SUBSECTIONS = ('transfer', 'universal')


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
    unknown = sorted(set(section) - set(merged) - set(SUBSECTIONS))
    if unknown:
      raise ValueError(f'Unknown attack config field(s) {unknown}. Valid: '
                       f'{", ".join(sorted(set(merged) | set(SUBSECTIONS)))}.')
    with merged.ignore_type():
      for k, v in section.items():
        if k in SUBSECTIONS:
          if v is not None:
            merged[k] = ml_collections.ConfigDict(v)
        else:
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


def default_transfer_config() -> dict[str, Any]:
  """Defaults of `attack.transfer` (examples crafted on source models).

  Fields:
    sources: `--mode=attack`: trained run workdirs (the attacked run is the
      target); the study: model labels of the task ('()' = every model of
      the task with the same input data).
    attacks: registered, untargeted attack names crafted on each source
      (e.g. 'pgd', 'mi-fgsm'); an attack also in `attack.attacks` takes its
      options and key, so the white-box diagonal equals the evaluator's.
    ensemble: also craft on an ensemble (mean of logits): in `--mode=attack`
      of all sources; in the study one of the large and one of the tiny
      models of the task.
    options: per-attack options for attacks not in `attack.attacks`
      (`options['mi-fgsm'] = {'steps': 10, 'decay': 1.0}`).
    int8: study only: also judge every model's int8 LiteRT export
      (target `<label>@int8`) on the examples crafted on the float models
      (`--mode=attack` has `threat.precisions` for that).
  """
  return {'sources': (), 'attacks': ('pgd',), 'ensemble': True,
          'options': {}, 'int8': False}


def default_universal_config() -> dict[str, Any]:
  """Defaults of `attack.universal` (SGD-UAP, `attacks.universal`).

  Fields:
    eps: radii in the eps units of the task / threat; `()` = every
      non-zero eps of the grid.
    epochs: passes over the training split; batch_size: its minibatch.
    rel_step_size: step as a multiple of eps.
    loss_clamp: Shafahi et al.'s clamp of the loss, or None.
  """
  return {'eps': (), 'epochs': 5, 'batch_size': 128, 'rel_step_size': 0.1,
          'loss_clamp': None}


def _section(acfg, name: str, defaults: dict[str, Any]) -> dict[str, Any]:
  section = config_io.to_dict(acfg.get(name)) if acfg is not None else {}
  unknown = sorted(set(section) - set(defaults))
  if unknown:
    raise ValueError(f'Unknown attack.{name} field(s) {unknown}. Valid: '
                     f'{", ".join(sorted(defaults))}.')
  out = dict(defaults)
  out.update({k: tuple(v) if isinstance(v, list) else v
              for k, v in section.items()})
  return out


def _is_int(v, lo: int) -> bool:
  return not isinstance(v, bool) and isinstance(v, int) and v >= lo


def transfer_config(acfg) -> dict[str, Any] | None:
  """`attack.transfer` merged over its defaults and checked; None when the
  section is absent. Raises ValueError naming the bad field and value."""
  if acfg is None or acfg.get('transfer') is None:
    return None
  t = _section(acfg, 'transfer', default_transfer_config())
  srcs = t['sources']
  if isinstance(srcs, str) or not all(isinstance(s, str) and s
                                      for s in srcs):
    raise ValueError(f'attack.transfer.sources must be a list of run '
                     f'workdirs (--mode=attack) or model labels (study), '
                     f'got {srcs!r}.')
  names = t['attacks']
  if isinstance(names, str) or not names:
    raise ValueError(f'attack.transfer.attacks must be a non-empty list of '
                     f'names, got {names!r}. Valid: '
                     f'{", ".join(registry.list_attacks())}.')
  bad = [n for n in names if n not in registry.list_attacks()]
  if bad or len(set(names)) != len(names):
    raise ValueError(f'attack.transfer.attacks={list(names)}: unknown or '
                     f'repeated {bad or "name"}. Valid: '
                     f'{", ".join(registry.list_attacks())}.')
  if 'autoattack' in names:
    raise ValueError("attack.transfer.attacks: 'autoattack' is a cascade, "
                     'not one crafting attack; use pgd, mi-fgsm, fgsm, ...')
  for name in ('ensemble', 'int8'):
    if not isinstance(t[name], bool):
      raise ValueError(f'attack.transfer.{name} must be a bool, got '
                       f'{t[name]!r}.')
  extra = sorted(set(t['options']) - set(names))
  if extra:
    raise ValueError(f'attack.transfer.options names {extra}, not in '
                     f'attack.transfer.attacks={list(names)}.')
  return t


def universal_config(acfg) -> dict[str, Any] | None:
  """`attack.universal` merged over its defaults and checked; None when
  the section is absent. Raises ValueError naming the bad field and value."""
  if acfg is None or acfg.get('universal') is None:
    return None
  u = _section(acfg, 'universal', default_universal_config())
  eps = u['eps']
  if isinstance(eps, (int, float)) and not isinstance(eps, bool):
    eps = u['eps'] = (eps,)
  if isinstance(eps, str) or not all(
      isinstance(e, (int, float)) and not isinstance(e, bool) and
      math.isfinite(e) and e > 0 for e in eps):
    raise ValueError(f'attack.universal.eps must be a list of finite radii '
                     f'> 0 in the eps units of the grid (or () for every '
                     f'non-zero eps of the grid), got {eps!r}.')
  for name in ('epochs', 'batch_size'):
    if not _is_int(u[name], 1):
      raise ValueError(f'attack.universal.{name} must be an int >= 1, got '
                       f'{u[name]!r}.')
  for name in ('rel_step_size', 'loss_clamp'):
    v = u[name]
    if v is None and name == 'loss_clamp':
      continue
    if isinstance(v, bool) or not isinstance(v, (int, float)) or \
        not math.isfinite(v) or v <= 0:
      raise ValueError(f'attack.universal.{name} must be a finite number > 0'
                       f'{" or None" if name == "loss_clamp" else ""}, got '
                       f'{v!r}.')
  return u


def transfer_attack_options(acfg, tcfg, *, clip=None
                            ) -> dict[str, dict[str, Any]]:
  """Each transfer attack's factory options: those of `attack.attacks`
  for an attack listed there (the white-box evaluator's), else the common
  options with `attack.transfer.options.<name>`."""
  opts = {}
  white = attack_options(acfg, clip=clip)
  for name in tcfg['attacks']:
    if name in white:
      opts[name] = dict(white[name])
      continue
    accepted = registry.attack_options(name)
    common = {'norm': acfg.get('norm', 'linf'), 'loss': acfg.get('loss', 'ce'),
              'clip': clip}
    o = {k: v for k, v in common.items() if accepted is None or k in accepted}
    o.update(config_io.to_dict(tcfg['options'].get(name)))
    opts[name] = o
  return opts


def attack_index(acfg, name: str) -> int:
  """A transfer attack's key index: its position in `attack.attacks`
  (the white-box evaluator's key rule), else 0."""
  names = list(acfg.attacks)
  return names.index(name) if name in names else 0
