"""Clean and adversarial evaluation of a model over a dataset and an eps grid.

`evaluate_robustness` runs each attack over the whole eps grid in one
compiled call per batch (`vmap` over eps), with batches sharded over all
visible devices, and reports per attack and eps:

* `clean_accuracy`: prediction on x equals the label.
* `robust_accuracy`: prediction on x AND on x_adv equal the label, over all
  examples (clean errors count as non-robust, as in AutoAttack), so it never
  exceeds clean accuracy and equals it at eps=0.
* `consistency`: the study's "adversarial accuracy", prediction on x_adv
  equals the prediction on x (not the label).

Counts and the denominator are stated next to each rate. Sanity flags mark
robust accuracy that rises with eps or a PGD weaker than FGSM at the same eps
and norm (signs of gradient masking or a broken attack), as AutoAttack does.
`evaluate_workdir` applies this to a trained run and writes
`attack_results.json` and `attack_results.csv` into its workdir.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tinyrobust import attacks as attacks_lib
from tinyrobust import io
from tinyrobust import sharding

ATTACK_NAMES = ('fgsm', 'pgd')
RESULTS_NAME = 'attack_results'


def default_attack_config() -> ml_collections.ConfigDict:
  """Defaults of a config's `attack` section (reuse in experiment configs).

  Fields: `attacks` (names from `ATTACK_NAMES`), `eps_grid` (input units; the
  default suits images in [0, 1]: 0 .. 32/255), `pgd_steps`, `pgd_restarts`,
  `norm` ('linf' or 'l2'), `loss` ('ce', 'mse' or 'margin'), `batch_size`,
  `max_examples` (None = whole test split, else a seeded random subset).
  """
  c = ml_collections.ConfigDict()
  c.attacks = ('fgsm', 'pgd')
  c.eps_grid = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255)
  c.pgd_steps = 10
  c.pgd_restarts = 1
  c.norm = 'linf'
  c.loss = 'ce'
  c.batch_size = 256
  c.max_examples = ml_collections.config_dict.placeholder(int)
  return c


def build_attacks(apply_fn: Callable, names: Sequence[str], *,
                  norm: str = 'linf', loss: str = 'ce', pgd_steps: int = 10,
                  pgd_restarts: int = 1,
                  clip: tuple[float, float] | None = None
                  ) -> dict[str, Callable]:
  """Attack kernels for spec names ('fgsm', 'pgd'), keyed by name."""
  if isinstance(names, str) or not names:
    raise ValueError(f'attacks must be a non-empty list of names from '
                     f'{ATTACK_NAMES} or a dict of kernels, got {names!r}.')
  out = {}
  for name in names:
    if name not in ATTACK_NAMES:
      raise ValueError(f'Unknown attack {name!r}. Valid: '
                       f'{", ".join(ATTACK_NAMES)}.')
    if name in out:
      raise ValueError(f'Attack {name!r} listed twice in {list(names)}.')
    if name == 'fgsm':
      out[name] = attacks_lib.make_fgsm(apply_fn, norm=norm, loss=loss,
                                        clip=clip)
    else:
      out[name] = attacks_lib.make_pgd(apply_fn, norm=norm, loss=loss,
                                       steps=pgd_steps, restarts=pgd_restarts,
                                       clip=clip)
  return out


def _check_eps_grid(eps_grid) -> np.ndarray:
  grid = np.asarray(eps_grid, np.float64) if eps_grid is not None else None
  if grid is None or grid.ndim != 1 or grid.size == 0 or not np.all(
      np.isfinite(grid)) or np.any(grid < 0):
    raise ValueError(f'eps_grid must be a non-empty 1-D list of finite values '
                     f'>= 0 (input units), got {eps_grid!r}.')
  return grid


def _check_int(name: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
      or value < minimum:
    raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}.')
  return int(value)


def _unpack_dataset(dataset):
  """(x, y, num_classes or None, input_range or None) from a Dataset/pair."""
  if hasattr(dataset, 'x') and hasattr(dataset, 'y'):
    return (np.asarray(dataset.x, np.float32), np.asarray(dataset.y),
            getattr(dataset, 'num_classes', None),
            getattr(dataset, 'input_range', None))
  if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
    return np.asarray(dataset[0]), np.asarray(dataset[1]), None, None
  raise ValueError('dataset must be a tinyrobust.data.Dataset or an (x, y) '
                   f'pair, got {type(dataset).__name__}.')


def _make_eval_fn(apply_fn, attack, mesh):
  """jit(variables, x, y, key, eps_grid) -> (clean_pred [B], adv_pred [E, B])."""
  sweep = jax.vmap(attack, in_axes=(None, None, None, None, 0))

  def fn(variables, x, y, key, eps_grid):
    clean_pred = jnp.argmax(apply_fn(variables, x), axis=-1)
    x_adv = sweep(variables, x, y, key, eps_grid)
    if isinstance(x_adv, tuple):  # kernels built with return_info=True
      x_adv = x_adv[0]
    adv_logits = jax.vmap(apply_fn, in_axes=(None, 0))(variables, x_adv)
    return clean_pred, jnp.argmax(adv_logits, axis=-1)

  rep = sharding.replicated(mesh)
  batch = sharding.batch_sharding(mesh)
  grid_batch = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(None, sharding.BATCH_AXIS))
  return jax.jit(fn, in_shardings=(rep, batch, batch, rep, rep),
                 out_shardings=(batch, grid_batch))


def evaluate_robustness(apply_fn: Callable, variables: Any, dataset, *,
                        attacks: Mapping[str, Callable] | Sequence[str],
                        eps_grid: Sequence[float], batch_size: int, seed: int,
                        norm: str = 'linf', loss: str = 'ce',
                        pgd_steps: int = 10, pgd_restarts: int = 1,
                        clip: Any = 'dataset',
                        max_examples: int | None = None,
                        devices: Sequence[jax.Device] | None = None
                        ) -> dict[str, Any]:
  """Clean accuracy, robust accuracy and consistency per attack and eps.

  Args:
    apply_fn: `apply_fn(variables, x [B, ...]) -> logits [B, K]` in eval mode.
    variables: the model variables (replicated over devices).
    dataset: a `tinyrobust.data.Dataset` or an `(x [N, ...], y [N])` pair.
    attacks: dict name -> kernel `attack(variables, x, y, key, eps)` (e.g.
      from `tinyrobust.attacks.make_pgd`), or names from `ATTACK_NAMES`
      built with `norm`, `loss`, `pgd_steps`, `pgd_restarts` and `clip`.
    eps_grid: radii in input units, each >= 0; evaluated in one compiled
      call per batch.
    batch_size: examples per step, rounded up to a multiple of the number of
      devices (the result depends on it only through the random starts). One
      step attacks `len(eps_grid) * batch_size` inputs at once (vmap), so
      lower it when memory is short.
    seed: random starts use `fold_in(fold_in(key(seed), attack_index),
      batch_index)`; the result is deterministic for a seed, batch size and
      device count-independent.
    norm, loss, pgd_steps, pgd_restarts: settings for attacks given by name.
    clip: `(lo, hi)`, None, or 'dataset' for `dataset.input_range`.
    max_examples: evaluate a seeded random subset of this size (None = all).
    devices: devices to shard the batch over (default: all visible).

  Returns:
    A dict with `num_examples`, `denominator`, `clean_correct`,
    `clean_accuracy`, `eps_grid`, `attacks` (name -> kind, config and
    `per_eps` list of {eps, robust_accuracy, robust_correct, consistency,
    consistent, ...}), `flags` (list of sanity violations), `sanity_ok` and
    `rows` (the flat table written to CSV).

  Raises:
    ValueError: bad options or inputs (checked before any compilation).
  """
  x, y, num_classes, input_range = _unpack_dataset(dataset)
  grid = _check_eps_grid(eps_grid)
  batch_size = _check_int('batch_size', batch_size, 1)
  seed = _check_int('seed', seed, 0)
  if max_examples is not None:
    max_examples = _check_int('max_examples', max_examples, 1)
  if clip == 'dataset':
    clip = tuple(input_range) if input_range is not None else None
  if len(x) == 0:
    raise ValueError('dataset is empty.')
  attacks_lib.check_shapes(x, y, 0.0)
  if num_classes is None:
    out = jax.eval_shape(apply_fn, variables,
                         jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype))
    num_classes = int(out.shape[-1])
  attacks_lib.check_inputs(x, y, 0.0, num_classes=num_classes)
  x = x.astype(np.float32) if x.dtype == np.float64 else x
  if isinstance(attacks, Mapping):
    if not attacks or not all(callable(a) for a in attacks.values()):
      raise ValueError(f'attacks must map names to attack kernels, got '
                       f'{attacks!r}.')
    kernels = dict(attacks)
  else:
    kernels = build_attacks(apply_fn, list(attacks), norm=norm, loss=loss,
                            pgd_steps=pgd_steps, pgd_restarts=pgd_restarts,
                            clip=clip)
  if max_examples is not None and max_examples < len(x):
    keep = np.sort(np.random.default_rng(seed).permutation(len(x))
                   [:max_examples])
    x, y = x[keep], y[keep]

  mesh = sharding.batch_mesh(devices)
  n_dev = mesh.size
  step_batch = int(math.ceil(batch_size / n_dev) * n_dev)
  variables = jax.device_put(variables, sharding.replicated(mesh))
  grid_dev = jax.device_put(jnp.asarray(grid, x.dtype),
                            sharding.replicated(mesh))
  root = jax.random.key(seed)
  n = len(x)

  per_attack = {}
  for a_idx, (name, attack) in enumerate(kernels.items()):
    eval_fn = _make_eval_fn(apply_fn, attack, mesh)
    clean_correct = 0
    robust = np.zeros(len(grid), np.int64)
    consistent = np.zeros(len(grid), np.int64)
    start = time.time()
    for b_idx, lo in enumerate(range(0, n, step_batch)):
      xb, n_valid = sharding.pad_to_multiple(x[lo:lo + step_batch], step_batch)
      yb, _ = sharding.pad_to_multiple(y[lo:lo + step_batch], step_batch)
      key = jax.random.fold_in(jax.random.fold_in(root, a_idx), b_idx)
      clean_pred, adv_pred = eval_fn(
          variables, sharding.shard_batch(xb, mesh),
          sharding.shard_batch(yb.astype(np.int32), mesh), key, grid_dev)
      clean_pred = np.asarray(clean_pred)[:n_valid]
      adv_pred = np.asarray(adv_pred)[:, :n_valid]
      yv = yb[:n_valid]
      ok = clean_pred == yv
      clean_correct += int(ok.sum())
      robust += ((adv_pred == yv) & ok).sum(axis=1)
      consistent += (adv_pred == clean_pred).sum(axis=1)
    logging.info('Attack %s: %d examples x %d eps in %.1f s.', name, n,
                 len(grid), time.time() - start)
    per_attack[name] = {
        'kind': getattr(attack, 'kind', name),
        'config': _jsonable_config(getattr(attack, 'config', {})),
        'clean_correct': clean_correct,
        'per_eps': [{
            'eps': float(e),
            'robust_correct': int(r),
            'robust_accuracy': float(r) / n,
            'consistent': int(c),
            'consistency': float(c) / n,
        } for e, r, c in zip(grid, robust, consistent)],
    }

  clean_counts = {v['clean_correct'] for v in per_attack.values()}
  clean_correct = per_attack[next(iter(per_attack))]['clean_correct']
  flags = _sanity_flags(per_attack)
  if len(clean_counts) > 1:
    flags.append({'type': 'clean_accuracy_differs_between_attacks',
                  'counts': sorted(clean_counts)})
  rows = []
  for name, res in per_attack.items():
    for p in res['per_eps']:
      p['flags'] = [f['type'] for f in flags if f.get('attack') == name
                    and f.get('eps') == p['eps']]
      rows.append({'attack': name, 'kind': res['kind'], 'eps': p['eps'],
                   'clean_accuracy': clean_correct / n,
                   'robust_accuracy': p['robust_accuracy'],
                   'consistency': p['consistency'],
                   'clean_correct': clean_correct,
                   'robust_correct': p['robust_correct'],
                   'consistent': p['consistent'], 'denominator': n,
                   'flags': ';'.join(p['flags'])})
  for f in flags:
    logging.warning('Sanity flag: %s', f)
  return {
      'num_examples': n,
      'denominator': n,
      'num_classes': num_classes,
      'clean_correct': clean_correct,
      'clean_accuracy': clean_correct / n,
      'eps_grid': [float(e) for e in grid],
      'clip': list(clip) if clip is not None else None,
      'seed': seed,
      'batch_size': step_batch,
      'num_devices': n_dev,
      'attacks': per_attack,
      'flags': flags,
      'sanity_ok': not flags,
      'rows': rows,
  }


def _jsonable_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
  return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


def _sanity_flags(per_attack) -> list[dict]:
  """Robust accuracy rising with eps; PGD weaker than FGSM (same norm, eps)."""
  flags = []
  for name, res in per_attack.items():
    pts = sorted(res['per_eps'], key=lambda p: p['eps'])
    for lo, hi in zip(pts, pts[1:]):
      if hi['eps'] > lo['eps'] and hi['robust_correct'] > lo['robust_correct']:
        flags.append({
            'type': 'robust_accuracy_increases_with_eps', 'attack': name,
            'eps': hi['eps'], 'eps_lower': lo['eps'],
            'robust_accuracy': hi['robust_accuracy'],
            'robust_accuracy_at_eps_lower': lo['robust_accuracy']})
  by_kind = {}
  for name, res in per_attack.items():
    by_kind.setdefault((res['kind'], res['config'].get('norm')), []).append(
        name)
  for (kind, norm), pgd_names in by_kind.items():
    if kind != 'pgd':
      continue
    for fgsm_name in by_kind.get(('fgsm', norm), []):
      fgsm = {p['eps']: p for p in per_attack[fgsm_name]['per_eps']}
      for pgd_name in pgd_names:
        for p in per_attack[pgd_name]['per_eps']:
          f = fgsm.get(p['eps'])
          if f is not None and p['robust_correct'] > f['robust_correct']:
            flags.append({
                'type': 'pgd_weaker_than_fgsm', 'attack': pgd_name,
                'reference': fgsm_name, 'eps': p['eps'],
                'robust_accuracy': p['robust_accuracy'],
                'reference_robust_accuracy': f['robust_accuracy']})
  return flags


def write_results(results: Mapping[str, Any], workdir: str,
                  name: str = RESULTS_NAME) -> tuple[str, str]:
  """Writes `<name>.json` (everything) and `<name>.csv` (the rows)."""
  json_path = os.path.join(workdir, name + '.json')
  csv_path = os.path.join(workdir, name + '.csv')
  io.write_json(json_path, results)
  io.write_csv(csv_path, results['rows'])
  return json_path, csv_path


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
  return merged


def evaluate_workdir(workdir: str, config=None) -> dict[str, Any]:
  """Attacks a trained run over its config's eps grid; writes the results.

  Loads `(model, variables, run_config)` with `tinyrobust.train.load_trained`,
  evaluates the config's test split with `evaluate_robustness` under
  `attack_config(config)` and writes `attack_results.json` / `.csv` into
  `workdir`. `config` (e.g. from the launcher) overrides the run's own.
  """
  # Imported here: training and data pull in TF/TFDS, which the attack path
  # itself never needs.
  from tinyrobust import data as data_lib  # pylint: disable=g-import-not-at-top
  from tinyrobust import train  # pylint: disable=g-import-not-at-top
  model, variables, run_config = train.load_trained(workdir)
  config = run_config if config is None else config
  acfg = attack_config(config)
  options = config.data.get('options')
  options = options.to_dict() if hasattr(options, 'to_dict') else dict(
      options or {})
  ds = data_lib.load(config.data.name, 'test', **options)
  apply_fn = functools.partial(model.apply, train=False)
  results = evaluate_robustness(
      apply_fn, variables, ds, attacks=list(acfg.attacks),
      eps_grid=list(acfg.eps_grid), batch_size=acfg.batch_size,
      seed=int(config.get('seed', 0)), norm=acfg.norm, loss=acfg.loss,
      pgd_steps=acfg.pgd_steps, pgd_restarts=acfg.pgd_restarts,
      max_examples=acfg.max_examples)
  results['run'] = {'workdir': workdir, 'dataset': config.data.name,
                    'split': 'test', 'model': config.model.name,
                    'attack_config': acfg.to_dict()}
  paths = write_results(results, workdir)
  print(f'[{config.model.name} on {config.data.name}, test split, '
        f'{results["denominator"]} examples; eps in input units '
        f'({acfg.norm}); robust = pred(x_adv) == label and clean correct; '
        'consistency = pred(x_adv) == pred(x)]')
  for r in results['rows']:
    print(f'{r["attack"]:>5} eps={r["eps"]:.4f} clean={r["clean_accuracy"]:.4f}'
          f' robust={r["robust_accuracy"]:.4f} consistency='
          f'{r["consistency"]:.4f} {r["flags"] or ""}')
  print('sanity flags: ' + ('none' if results['sanity_ok'] else
                            str(results['flags'])))
  logging.info('Wrote %s and %s', *paths)
  return results
