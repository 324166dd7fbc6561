"""Clean and adversarial evaluation of a model over a dataset and an eps grid.

One evaluator serves every caller (the `attack` run mode, the studies and the
search's adversarial term). It has three parts:

1. validation (`check_eval_inputs`): options, shapes, labels against both the
   dataset's and the model's class count, all before any compilation;
2. `RobustnessEvaluator`: built once per (apply_fn, attacks, eps grid), it
   caches one jitted sweep per attack (`vmap` over eps) and its `run`
   iterates `sharding.padded_batches` (sharded over all devices) and returns
   integer counts;
3. `summarize`: a pure function from counts to rates, flags and table rows.

Metrics per attack and eps:

* `clean_accuracy`: prediction on x equals the label.
* `robust_accuracy`: prediction on x AND on x_adv equal the label, over all
  examples (clean errors count as non-robust, as in AutoAttack), so it never
  exceeds clean accuracy and equals it at eps=0.
* `consistency`: the study's "adversarial accuracy", prediction on x_adv
  equals the prediction on x (not the label).

Counts and the denominator are stated next to each rate. A non-finite logit
or adversarial input never counts as a prediction (argmax of NaN is 0): it
counts as wrong and raises the `nonfinite_*` flags. Sanity flags also mark
robust accuracy that rises with eps or a PGD weaker than FGSM at the same eps
and norm (signs of gradient masking or a broken attack), as AutoAttack does.

Attacks are plug-ins: any name in `tinyrobust.attacks.list_attacks()` can be
listed in a config's `attack.attacks`; its metric keys are built from the
name (`<name>_consistency`, `<name>_robust_accuracy`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tinyrobust import attacks as attacks_lib
from tinyrobust import config_io
from tinyrobust import io
from tinyrobust import sanity
from tinyrobust import sharding

RESULTS_NAME = 'attack_results'
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
                     f'{names!r}. Valid: {", ".join(attacks_lib.list_attacks())}.')
  return merged


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
    accepted = attacks_lib.attack_options(name)
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
                  ) -> dict[str, attacks_lib.Attack]:
  """Attack records for registered names, keyed by name, options checked."""
  if isinstance(names, str) or not names:
    raise ValueError(f'attacks must be a non-empty list of names from '
                     f'{attacks_lib.list_attacks()} or a dict of kernels, got '
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
  return {n: attacks_lib.get_attack(n, apply_fn, **opts[n]) for n in names}


def subset_indices(n: int, max_examples: int | None,
                   seed: int) -> np.ndarray | None:
  """Sorted indices of a seeded random subset of size `max_examples`.

  None when the whole split is used. A random (not leading) subset, because
  splits are ordered by recording and the first N windows would cover a few
  participants only. The evaluator and the search use this one function.
  """
  if max_examples is None or max_examples >= n:
    return None
  return np.sort(np.random.default_rng(seed).permutation(n)[:max_examples])


def _check_eps_grid(eps_grid) -> np.ndarray:
  try:
    grid = np.asarray(eps_grid, np.float64) if eps_grid is not None else None
  except (TypeError, ValueError):
    grid = None
  if grid is None or grid.ndim != 1 or grid.size == 0 or not np.all(
      np.isfinite(grid)) or np.any(grid < 0):
    raise ValueError(f'eps_grid must be a non-empty 1-D list of finite '
                     f'numbers >= 0 (input units), got {eps_grid!r}.')
  return grid


def _check_int(name: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
      or value < minimum:
    raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}.')
  return int(value)


def _unpack_dataset(dataset):
  """(x, y, num_classes or None, input_range or None) from a Dataset/pair."""
  if hasattr(dataset, 'x') and hasattr(dataset, 'y'):
    return (np.asarray(dataset.x), np.asarray(dataset.y),
            getattr(dataset, 'num_classes', None),
            getattr(dataset, 'input_range', None))
  if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
    return np.asarray(dataset[0]), np.asarray(dataset[1]), None, None
  raise ValueError('dataset must be a tinyrobust.data.Dataset or an (x, y) '
                   f'pair, got {type(dataset).__name__}.')


def model_num_classes(apply_fn: Callable, variables: Any,
                      example_shape: Sequence[int], dtype=np.float32) -> int:
  """Classes the model outputs, from an abstract call; checks `[B, K]`."""
  out = jax.eval_shape(apply_fn, variables,
                       jax.ShapeDtypeStruct((2,) + tuple(example_shape),
                                            dtype))
  shape = getattr(out, 'shape', None)
  if shape is None or len(shape) != 2 or shape[0] != 2:
    raise ValueError(f'apply_fn must return logits of shape [B, K]; for a '
                     f'batch of 2 it returned {shape}.')
  return int(shape[1])


def check_eval_inputs(apply_fn, variables, dataset, *, eps_grid, batch_size,
                      seed, max_examples=None, clip='dataset'):
  """Validates an evaluation before any compilation; returns its pieces.

  Returns:
    `(x, y, num_classes, grid, clip)` with `x` float32 (float64 is cast),
    the subset already taken.

  Raises:
    ValueError: naming the bad value (eps grid, ints, empty or non-finite
      data, labels out of range, model/dataset class counts that disagree).
  """
  x, y, ds_classes, input_range = _unpack_dataset(dataset)
  grid = _check_eps_grid(eps_grid)
  _check_int('batch_size', batch_size, 1)
  _check_int('seed', seed, 0)
  if max_examples is not None:
    _check_int('max_examples', max_examples, 1)
  if isinstance(clip, str) and clip == 'dataset':
    clip = tuple(input_range) if input_range is not None else None
  if len(x) == 0:
    raise ValueError('dataset is empty.')
  attacks_lib.check_shapes(x, y, 0.0)
  x = x.astype(np.float32) if x.dtype == np.float64 else x
  num_classes = model_num_classes(apply_fn, variables, x.shape[1:], x.dtype)
  if ds_classes is not None and int(ds_classes) != num_classes:
    raise ValueError(f'The model outputs {num_classes} classes but the '
                     f'dataset has {ds_classes}.')
  attacks_lib.check_inputs(x, y, 0.0, num_classes=num_classes)
  keep = subset_indices(len(x), max_examples, int(seed))
  if keep is not None:
    x, y = x[keep], y[keep]
  return x, y, num_classes, grid, clip


def _finite_rows(a: jax.Array, batch_axes: int) -> jax.Array:
  """True where every value of an example (trailing axes) is finite."""
  return jnp.all(jnp.isfinite(a), axis=tuple(range(batch_axes, a.ndim)))


class RobustnessEvaluator:
  """Counts clean/robust/consistent predictions per attack and eps.

  Built once (big_vision style): one cached jitted sweep per attack; `run`
  may be called for many variables of the same model and returns counts.

  Attributes:
    attacks: name -> `tinyrobust.attacks.Attack` (or a plain kernel).
    eps_grid: the radii, float array.
    batch_size: requested examples per step (capped at the data size).
    mesh: the 1-D device mesh the batch axis is sharded over.
  """

  def __init__(self, apply_fn: Callable, attacks: Mapping[str, Callable],
               eps_grid: Sequence[float], *, batch_size: int,
               devices: Sequence[jax.Device] | None = None):
    self.apply_fn = apply_fn
    self.attacks = {n: attacks_lib.as_attack(n, a) for n, a in
                    attacks.items()}
    self.eps_grid = np.asarray(eps_grid, np.float64)
    self.batch_size = int(batch_size)
    self.mesh = sharding.batch_mesh(devices)
    self._fns = {n: self._sweep_fn(a) for n, a in self.attacks.items()}

  def _sweep_fn(self, attack):
    """jit(variables, x, y, key, grid) -> (clean_pred, clean_finite,
    adv_pred [E, B], adv_finite [E, B])."""
    apply_fn = self.apply_fn
    sweep = jax.vmap(attack, in_axes=(None, None, None, None, 0))

    def fn(variables, x, y, key, grid):
      logits = apply_fn(variables, x)
      x_adv = sweep(variables, x, y, key, grid)
      stage = jnp.full((len(self.eps_grid), x.shape[0]), -1, jnp.int32)
      if isinstance(x_adv, tuple):  # kernels built with return_info=True
        x_adv, info = x_adv
        stage = info.get('broken_by', stage)  # a cascade's breaking stage
      adv_logits = jax.vmap(apply_fn, in_axes=(None, 0))(variables, x_adv)
      adv_finite = _finite_rows(adv_logits, 2) & _finite_rows(x_adv, 2)
      return (jnp.argmax(logits, -1), _finite_rows(logits, 1),
              jnp.argmax(adv_logits, -1), adv_finite, stage)

    rep = sharding.replicated(self.mesh)
    batch = sharding.batch_sharding(self.mesh)
    grid_batch = jax.sharding.NamedSharding(
        self.mesh, jax.sharding.PartitionSpec(None, sharding.BATCH_AXIS))
    return jax.jit(fn, in_shardings=(rep, batch, batch, rep, rep),
                   out_shardings=(batch, batch, grid_batch, grid_batch,
                                  grid_batch))

  def precompile(self, variables, x: np.ndarray, *,
                 order: Sequence[str] = (),
                 on_done: Callable[[str], None] | None = None) -> float:
    """Compiles every attack's sweep for the batches `run(variables, x,
    y, ...)` will use, and returns the seconds it took. The attacks named
    in `order` come first; `on_done(name)` is called after each.

    `variables` may be abstract (`jax.eval_shape` of the model's init), so a
    search compiles a candidate's attacks in a thread while it trains; `run`
    then finds them in JAX's compilation cache.
    """
    start = time.perf_counter()
    rep = sharding.replicated(self.mesh)
    batch = sharding.batch_sharding(self.mesh)
    step = sharding.step_batch_size(self.batch_size, len(x), self.mesh)
    args = (jax.tree.map(lambda a: jax.ShapeDtypeStruct(
                a.shape, a.dtype, sharding=rep), variables),
            jax.ShapeDtypeStruct((step,) + tuple(x.shape[1:]), x.dtype,
                                 sharding=batch),
            jax.ShapeDtypeStruct((step,), np.int32, sharding=batch),
            jax.random.key(0),
            jax.ShapeDtypeStruct(self.eps_grid.shape, x.dtype, sharding=rep))
    names = [n for n in order if n in self._fns] + [
        n for n in self._fns if n not in order]
    for name in names:
      self._fns[name].lower(*args).compile()
      if on_done is not None:
        on_done(name)
    return time.perf_counter() - start

  def run(self, variables, x: np.ndarray, y: np.ndarray, *,
          seed: int) -> dict[str, dict[str, Any]]:
    """Counts per attack over all of `(x, y)`.

    Random starts use `fold_in(fold_in(key(seed), attack_index),
    batch_index)`, so results are deterministic for a seed and batch size,
    whatever the device count.

    Returns:
      name -> {'clean_correct', 'clean_nonfinite', 'robust' [E],
      'consistent' [E], 'adv_nonfinite' [E], 'broken_by' (per eps, stage
      index -> examples it broke first; cascades only), 'seconds'} and
      'examples': per-example booleans {'clean' [N], 'robust' [E, N],
      'consistent' [E, N]} (for paired bootstrap intervals).
    """
    rep = sharding.replicated(self.mesh)
    variables = jax.device_put(variables, rep)
    grid = jax.device_put(jnp.asarray(self.eps_grid, x.dtype), rep)
    root = jax.random.key(int(seed))
    out = {}
    for a_idx, (name, fn) in enumerate(self._fns.items()):
      c = _zero_counts(len(self.eps_grid))
      start = time.perf_counter()
      for b_idx, (xb, yb), n_valid in sharding.padded_batches(
          (x, y.astype(np.int32)), self.batch_size, self.mesh):
        key = jax.random.fold_in(jax.random.fold_in(root, a_idx), b_idx)
        _add_counts(c, fn(variables, xb, yb, key, grid), yb, n_valid)
      c['seconds'] = time.perf_counter() - start
      ex = c['examples']
      c['examples'] = {'clean': np.concatenate(ex['clean']),
                       'robust': np.concatenate(ex['robust'], axis=1),
                       'consistent': np.concatenate(ex['consistent'], axis=1)}
      logging.info('Attack %s: %d examples x %d eps in %.1f s.', name,
                   len(x), len(self.eps_grid), c['seconds'])
      out[name] = {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                   for k, v in c.items()}
      out[name]['examples'] = c['examples']
    return out


def _zero_counts(n_eps: int) -> dict[str, Any]:
  z = lambda: np.zeros(n_eps, np.int64)
  return {'clean_correct': 0, 'clean_nonfinite': 0, 'robust': z(),
          'consistent': z(), 'adv_nonfinite': z(),
          'broken_by': [{} for _ in range(n_eps)],
          'examples': {'clean': [], 'robust': [], 'consistent': []}}


def _add_counts(c, outputs, yb, n_valid: int) -> None:
  """Adds one batch's outcomes to the counts and per-example records."""
  clean_pred, clean_fin, adv_pred, adv_fin, stage = (np.asarray(o)
                                                     for o in outputs)
  yv = np.asarray(yb)[:n_valid]
  for per_eps, st in zip(c['broken_by'], stage[:, :n_valid]):
    for k, count in zip(*np.unique(st[st >= 0], return_counts=True)):
      per_eps[int(k)] = per_eps.get(int(k), 0) + int(count)
  clean_fin, clean_pred = clean_fin[:n_valid], clean_pred[:n_valid]
  adv_fin, adv_pred = adv_fin[:, :n_valid], adv_pred[:, :n_valid]
  ok = (clean_pred == yv) & clean_fin
  valid_adv = adv_fin & clean_fin
  c['clean_correct'] += int(ok.sum())
  c['clean_nonfinite'] += int((~clean_fin).sum())
  c['robust'] += ((adv_pred == yv) & ok & adv_fin).sum(axis=1)
  c['consistent'] += ((adv_pred == clean_pred) & valid_adv).sum(axis=1)
  c['adv_nonfinite'] += (~adv_fin).sum(axis=1)
  ex = c['examples']
  ex['clean'].append(ok)
  ex['robust'].append((adv_pred == yv) & ok & adv_fin)
  ex['consistent'].append((adv_pred == clean_pred) & valid_adv)


def _noise_baseline(noise_counts, eps_grid, n: int) -> dict[str, Any]:
  return {'per_eps': [
      {'eps': float(e), 'robust_correct': int(r),
       'robust_accuracy': float(r) / n}
      for e, r in zip(eps_grid, noise_counts['robust'])]}


def summarize(counts: Mapping[str, Mapping[str, Any]],
              attacks: Mapping[str, Any], eps_grid: Sequence[float],
              n: int, *, noise_counts: Mapping[str, Any] | None = None,
              model_flags: Sequence[Mapping[str, Any]] = (),
              range_width: float | None = None) -> dict[str, Any]:
  """Rates, sanity flags and CSV rows from `RobustnessEvaluator.run` counts.

  Pure (no JAX): `attacks` maps each name to its record (for `name` as the
  kind, and `config`). `noise_counts` (random noise of the same norm and
  eps, `sanity.make_noise`) adds the noise baseline and its flags;
  `model_flags` come from `sanity.model_checks`. At eps >= `range_width`
  (the narrowest clip range) a gradient attack must leave ~no example
  robust (`robust_at_large_eps`).
  """
  per_attack = {}
  for name, c in counts.items():
    rec = attacks_lib.as_attack(name, attacks[name])
    per_attack[name] = {
        'kind': rec.name, 'config': io.to_jsonable(dict(rec.config)),
        'clean_correct': int(c['clean_correct']),
        'clean_nonfinite': int(c['clean_nonfinite']),
        'per_eps': [{
            'eps': float(e), 'robust_correct': int(r),
            'robust_accuracy': float(r) / n, 'consistent': int(k),
            'consistency': float(k) / n, 'adv_nonfinite': int(bad),
        } for e, r, k, bad in zip(eps_grid, c['robust'], c['consistent'],
                                  c['adv_nonfinite'])],
    }
    stages = rec.config.get('stages')
    for p, by in zip(per_attack[name]['per_eps'],
                     c.get('broken_by') or ()):
      if stages and by:  # each stage's own contribution (first to break)
        p['broken_by'] = {s: int(by.get(i, 0)) for i, s in enumerate(stages)}
  first = next(iter(per_attack.values()))
  clean_correct = first['clean_correct']
  flags = sanity_flags(per_attack) + [dict(f) for f in model_flags]
  noise = None
  if noise_counts is not None:
    noise = _noise_baseline(noise_counts, eps_grid, n)
    flags += sanity.compare_flags(per_attack, noise)
  for name, res in per_attack.items():
    for p in res['per_eps']:
      if range_width is not None and p['eps'] >= range_width and \
          res['kind'] not in sanity.BLACKBOX:
        flags += sanity.large_eps_flags(name, p['robust_accuracy'], p['eps'])
  rows = _rows(per_attack, flags, clean_correct, n)
  for f in flags:
    logging.warning('Sanity flag: %s', f)
  return {
      'num_examples': n, 'denominator': n, 'clean_correct': clean_correct,
      'clean_accuracy': clean_correct / n,
      'eps_grid': [float(e) for e in eps_grid], 'attacks': per_attack,
      'flags': flags, 'sanity_ok': not flags, 'rows': rows,
      'noise_baseline': noise,
  }


def _rows(per_attack, flags, clean_correct: int, n: int) -> list[dict]:
  rows = []
  for name, res in per_attack.items():
    for p in res['per_eps']:
      p['flags'] = [f['type'] for f in flags if f.get('attack') == name
                    and f.get('eps') in (None, p['eps'])]
      rows.append({'attack': name, 'kind': res['kind'], 'eps': p['eps'],
                   'clean_accuracy': clean_correct / n,
                   'robust_accuracy': p['robust_accuracy'],
                   'consistency': p['consistency'],
                   'clean_correct': clean_correct,
                   'robust_correct': p['robust_correct'],
                   'consistent': p['consistent'], 'denominator': n,
                   'flags': ';'.join(p['flags'])})
  return rows


def sanity_flags(per_attack) -> list[dict]:
  """Non-finite outputs; robust accuracy rising with eps; PGD weaker than
  FGSM at the same norm and eps; clean counts that differ between attacks."""
  flags = []
  for name, res in per_attack.items():
    if res['clean_nonfinite']:
      flags.append({'type': 'nonfinite_logits', 'attack': name,
                    'count': res['clean_nonfinite']})
    for p in res['per_eps']:
      if p['adv_nonfinite']:
        flags.append({'type': 'nonfinite_adversarial', 'attack': name,
                      'eps': p['eps'], 'count': p['adv_nonfinite']})
    pts = sorted(res['per_eps'], key=lambda p: p['eps'])
    for lo, hi in zip(pts, pts[1:]):
      if hi['eps'] > lo['eps'] and hi['robust_correct'] > lo['robust_correct']:
        flags.append({
            'type': 'robust_accuracy_increases_with_eps', 'attack': name,
            'eps': hi['eps'], 'eps_lower': lo['eps'],
            'robust_accuracy': hi['robust_accuracy'],
            'robust_accuracy_at_eps_lower': lo['robust_accuracy']})
  flags += _weaker_than_fgsm(per_attack)
  clean_counts = sorted({v['clean_correct'] for v in per_attack.values()})
  if len(clean_counts) > 1:
    flags.append({'type': 'clean_accuracy_differs_between_attacks',
                  'counts': clean_counts})
  return flags


def _weaker_than_fgsm(per_attack) -> list[dict]:
  """An iterative attack weaker than the one-step FGSM (same norm, eps)."""
  flags = []
  fgsm = [n for n, r in per_attack.items() if r['kind'] == 'fgsm']
  for name, res in per_attack.items():
    if res['kind'] == 'fgsm':
      continue
    for ref in fgsm:
      if per_attack[ref]['config'].get('norm') != res['config'].get('norm'):
        continue
      by_eps = {p['eps']: p for p in per_attack[ref]['per_eps']}
      for p in res['per_eps']:
        f = by_eps.get(p['eps'])
        if f is not None and p['robust_correct'] > f['robust_correct']:
          flags.append({
              'type': f'{res["kind"]}_weaker_than_fgsm', 'attack': name,
              'reference': ref, 'eps': p['eps'],
              'robust_accuracy': p['robust_accuracy'],
              'reference_robust_accuracy': f['robust_accuracy']})
  return flags


def evaluate_robustness(apply_fn: Callable, variables: Any, dataset, *,
                        attacks: Mapping[str, Callable] | Sequence[str],
                        eps_grid: Sequence[float], batch_size: int, seed: int,
                        norm: str = 'linf', loss: str = 'ce',
                        pgd_steps: int = 10, pgd_restarts: int = 1,
                        options: Mapping[str, Mapping[str, Any]] | None = None,
                        clip: Any = 'dataset',
                        max_examples: int | None = None,
                        devices: Sequence[jax.Device] | None = None
                        ) -> dict[str, Any]:
  """Clean accuracy, robust accuracy and consistency per attack and eps.

  Args:
    apply_fn: `apply_fn(variables, x [B, ...]) -> logits [B, K]` in eval mode.
    variables: the model variables (replicated over devices).
    dataset: a `tinyrobust.data.Dataset` or an `(x [N, ...], y [N])` pair.
    attacks: dict name -> attack (a `tinyrobust.attacks.Attack` or a kernel
      `attack(variables, x, y, key, eps)`), or registered names built with
      `norm`, `loss`, `pgd_steps`, `pgd_restarts`, `options` and `clip`.
    eps_grid: radii in input units, each >= 0; one compiled call per batch.
    batch_size: examples per step, capped at the data size and rounded up to
      a multiple of the device count. One step attacks `len(eps_grid) *
      batch_size` inputs at once (vmap), so lower it when memory is short.
    seed: random starts and the `max_examples` subset; deterministic for a
      seed and batch size, independent of the device count.
    norm, loss, pgd_steps, pgd_restarts, options: settings for attacks
      given by name (see `default_attack_config`).
    clip: `(lo, hi)`, None, or 'dataset' for `dataset.input_range`.
    max_examples: evaluate a seeded random subset of this size (None = all).
    devices: devices to shard the batch over (default: all visible).

  Returns:
    A dict with `num_examples`, `denominator`, `num_classes`,
    `clean_correct`, `clean_accuracy`, `eps_grid`, `clip`, `seed`,
    `batch_size`, `num_devices`, `attacks` (name -> kind, config and
    `per_eps` list of {eps, robust_accuracy, robust_correct, consistency,
    consistent, adv_nonfinite, flags}), `flags`, `sanity_ok` and `rows`.

  Raises:
    ValueError: bad options or inputs (checked before any compilation).
  """
  return evaluate_robustness_timed(
      apply_fn, variables, dataset, attacks=attacks, eps_grid=eps_grid,
      batch_size=batch_size, seed=seed, norm=norm, loss=loss,
      pgd_steps=pgd_steps, pgd_restarts=pgd_restarts, options=options,
      clip=clip, max_examples=max_examples, devices=devices)[0]


@dataclasses.dataclass
class RobustnessRun:
  """Everything one evaluation measured.

  Attributes:
    results: the `evaluate_robustness` dict (deterministic for a seed).
    seconds: attack name -> wall time incl. compilation.
    examples: attack name -> per-example booleans {'clean' [N], 'robust'
      [E, N], 'consistent' [E, N]} over the evaluated (sub)set.
    indices: the evaluated subset's indices into the dataset (None = all).
  """
  results: dict[str, Any]
  seconds: dict[str, float]
  examples: dict[str, dict[str, np.ndarray]]
  indices: np.ndarray | None


def evaluate_robustness_timed(apply_fn: Callable, variables: Any, dataset, *,
                              attacks, eps_grid, batch_size: int, seed: int,
                              devices=None, **attack_settings
                              ) -> tuple[dict[str, Any], dict[str, float]]:
  """`evaluate_robustness` plus each attack's wall time in seconds
  (including its compilation). Same arguments."""
  run = robustness_run(apply_fn, variables, dataset, attacks=attacks,
                       eps_grid=eps_grid, batch_size=batch_size, seed=seed,
                       devices=devices, **attack_settings)
  return run.results, run.seconds


def prepare_run(apply_fn: Callable, variables: Any, dataset, *, attacks,
                eps_grid, batch_size: int, seed: int, devices=None,
                **attack_settings) -> tuple[RobustnessEvaluator, np.ndarray,
                                            np.ndarray, Any]:
  """Checks an evaluation and builds its evaluator, compiling nothing.

  `variables` may be abstract (`jax.eval_shape` of the init). Returns
  `(evaluator, x, y, clip)`: the attacked subset and the clip range, for
  `evaluator.precompile(variables, x)` and `robustness_run(...,
  evaluator=evaluator)`.
  """
  clip = attack_settings.pop('clip', 'dataset')
  max_examples = attack_settings.pop('max_examples', None)
  x, y, _, grid, clip = check_eval_inputs(
      apply_fn, variables, dataset, eps_grid=eps_grid, batch_size=batch_size,
      seed=seed, max_examples=max_examples, clip=clip)
  if isinstance(attacks, Mapping):
    if not attacks or not all(callable(a) for a in attacks.values()):
      raise ValueError(f'attacks must map names to attack kernels, got '
                       f'{attacks!r}.')
    kernels = dict(attacks)
  else:
    kernels = build_attacks(apply_fn, attacks, clip=clip,
                            **attack_settings)
  return (RobustnessEvaluator(apply_fn, kernels, grid, batch_size=batch_size,
                              devices=devices), x, y, clip)


def robustness_run(apply_fn: Callable, variables: Any, dataset, *, attacks,
                   eps_grid, batch_size: int, seed: int, devices=None,
                   evaluator: RobustnessEvaluator | None = None,
                   sanity_checks: bool = True,
                   **attack_settings) -> RobustnessRun:
  """`evaluate_robustness` with timings and per-example outcomes (kept out
  of the results so that they stay deterministic and small).

  `evaluator`: the one `prepare_run` built for the same arguments (e.g.
  precompiled while the model trained). `sanity_checks=False` skips the
  model checks and the noise baseline (a search's per-trial objective; the
  non-finite and monotonicity flags stay).
  """
  max_examples = attack_settings.get('max_examples')
  built, x, y, clip = prepare_run(
      apply_fn, variables, dataset, attacks=attacks, eps_grid=eps_grid,
      batch_size=batch_size, seed=seed, devices=devices, **attack_settings)
  if evaluator is None:
    evaluator = built
  elif list(evaluator.attacks) != list(built.attacks) or not np.array_equal(
      evaluator.eps_grid, built.eps_grid):
    raise ValueError(f'evaluator runs {list(evaluator.attacks)} at eps '
                     f'{evaluator.eps_grid.tolist()}, but this evaluation asks'
                     f' for {list(built.attacks)} at '
                     f'{built.eps_grid.tolist()}.')
  grid, kernels = evaluator.eps_grid, evaluator.attacks
  num_classes = model_num_classes(apply_fn, variables, x.shape[1:], x.dtype)
  counts = evaluator.run(variables, x, y, seed=seed)
  noise_counts, model_flags = None, ()
  if sanity_checks:
    noise_counts, model_flags = _sanity_runs(
        apply_fn, variables, x, y, grid, kernels, clip=clip,
        batch_size=batch_size, devices=devices, seed=seed)
  out = summarize(counts, evaluator.attacks, grid, len(x),
                  noise_counts=noise_counts, model_flags=model_flags,
                  range_width=None if clip is None else float(
                      np.min(np.asarray(clip[1]) - np.asarray(clip[0]))))
  out.update({
      'num_classes': num_classes,
      'clip': None if clip is None else io.to_jsonable(list(clip)),
      'seed': int(seed), 'num_devices': evaluator.mesh.size,
      'batch_size': sharding.step_batch_size(batch_size, len(x),
                                             evaluator.mesh),
  })
  return RobustnessRun(
      results=out, seconds={n: float(c['seconds']) for n, c in counts.items()},
      examples={n: c['examples'] for n, c in counts.items()},
      indices=subset_indices(len(_unpack_dataset(dataset)[1]), max_examples,
                             int(seed)))


def _sanity_runs(apply_fn, variables, x, y, grid, kernels, *, clip,
                 batch_size, devices, seed):
  """The model checks and the random-noise baseline (`tinyrobust.sanity`):
  same examples, eps grid, norm (the first attack's) and clip range."""
  first = attacks_lib.as_attack(*next(iter(kernels.items())))
  norm = dict(first.config).get('norm', 'linf')
  model_flags = sanity.model_checks(apply_fn, variables, x, y)
  noise = RobustnessEvaluator(
      apply_fn, {'noise': sanity.make_noise(apply_fn, norm=norm, clip=clip)},
      grid, batch_size=batch_size, devices=devices)
  return noise.run(variables, x, y, seed=seed)['noise'], model_flags


def evaluate_deployed(*args, **kwargs) -> dict[str, Any]:
  """float32 vs int8 (LiteRT) robustness: `tinyrobust.deployed`."""
  from tinyrobust import deployed  # pylint: disable=g-import-not-at-top
  return deployed.evaluate_deployed(*args, **kwargs)


def metrics_at(results: Mapping[str, Any], eps_index: int = 0, *,
               prefix: str = '') -> dict[str, float]:
  """Flat metrics at one eps: `clean_accuracy`, `<name>_consistency`,
  `<name>_robust_accuracy` (and `<name>_s` seconds) for every attack."""
  out = {f'{prefix}clean_accuracy': float(results['clean_accuracy'])}
  for name, res in results['attacks'].items():
    p = res['per_eps'][eps_index]
    out[f'{prefix}{name}_consistency'] = float(p['consistency'])
    out[f'{prefix}{name}_robust_accuracy'] = float(p['robust_accuracy'])
  return out


def write_results(results: Mapping[str, Any], workdir: str,
                  name: str = RESULTS_NAME) -> tuple[str, str]:
  """Writes `<name>.json` (everything) and `<name>.csv` (the rows)."""
  json_path = os.path.join(workdir, name + '.json')
  csv_path = os.path.join(workdir, name + '.csv')
  io.write_json(json_path, results)
  io.write_csv(csv_path, results['rows'])
  return json_path, csv_path


def print_results(results: Mapping[str, Any], header: str) -> None:
  """The printed table of an evaluation (one line per attack and eps)."""
  print(header)
  for r in results['rows']:
    print(f'{r["attack"]:>5} eps={r["eps"]:.4f} clean={r["clean_accuracy"]:.4f}'
          f' robust={r["robust_accuracy"]:.4f} consistency='
          f'{r["consistency"]:.4f} {r["flags"] or ""}')
  for name, res in results['attacks'].items():
    for p in res['per_eps']:
      if p.get('broken_by'):
        print(f'{name} eps={p["eps"]:.4f} broken first by: ' + ', '.join(
            f'{s} {k}' for s, k in p['broken_by'].items()))
  print('sanity flags: ' + ('none' if results['sanity_ok'] else
                            str(results['flags'])))
