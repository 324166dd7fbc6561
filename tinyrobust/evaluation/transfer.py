"""Transfer attacks: craft on source models, evaluate on target models.

The attacker of the threat model the study describes cannot query or read
the deployed (target) model; it crafts adversarial examples white-box on
models it owns (sources, possibly an ensemble) and hopes they transfer.
`transfer_matrix` runs one registered attack on every source and evaluates
the result on every target; `universal_transfer` evaluates one universal
perturbation (`tinyrobust.attacks.universal`) on every target.

Metrics per (crafted_on, target, eps), over the same N examples:

* `clean_accuracy`: the target predicts the label on x.
* `robust_accuracy`: the target predicts the label on x AND on x_adv (the
  evaluator's `summary.outcomes`; a non-finite logit or x_adv counts as wrong), so on
  the diagonal (target = source) it is the white-box robust accuracy.
* `consistency`: the target's prediction on x_adv equals its prediction
  on x (the study's "adversarial accuracy").
* `transfer_success_rate`: among the examples the target classifies
  correctly, the fraction it misclassifies on x_adv (denominator
  `clean_correct`); `1 - robust_accuracy / clean_accuracy`.

Crafting (`tinyrobust.evaluation.crafting`): each source is attacked as the
white-box evaluator attacks it, with the same engine ('scheduler', the
evaluator's default: eps ascending, open points only, its key rule, and at
each eps the witness found at the smallest eps; or 'sweep': batch `b` of
`sharding.step_batch_size(batch_size, N)` examples with key
`fold_in(fold_in(key(seed), attack_index), b)`, every eps at once), the
same seed, batch size and `attack_index` (the attack's position in the
evaluator's list) on every source. So the diagonal equals the white-box
evaluation of the same attack, seed, examples, batch size and engine.

Per-example booleans are kept (`TransferResult.examples`) for bootstrap
confidence intervals; `rate_ci` and `transfer_finding` compute a rate with
its 95% interval ("examples crafted on the large models transfer to the
TinyML models at rate r").
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust import attacks as attacks_lib
from tinyrobust import sharding
from tinyrobust.attacks import build
from tinyrobust.attacks import threat as threat_lib
from tinyrobust.attacks import universal as universal_lib
from tinyrobust.evaluation import crafting
from tinyrobust.evaluation import routes as routes_lib
from tinyrobust.evaluation import summary
# The rates and findings with their intervals (re-exported).
from tinyrobust.evaluation.transfer_stats import rate_ci  # pylint: disable=unused-import
from tinyrobust.evaluation.transfer_stats import transfer_finding  # pylint: disable=unused-import

ApplyFn = Callable[[Any, jax.Array], jax.Array]
COMBINE = ('logits', 'log_probs')


def ensemble(members: Sequence[tuple[ApplyFn, Any]],
             combine: str = 'logits') -> tuple[ApplyFn, tuple]:
  """One model from several: `(apply_fn, variables)` of the ensemble.

  Args:
    members: `(apply_fn, variables)` pairs of models with the same classes.
    combine: 'logits' (mean of logits, Liu et al. 2017 / Dong et al. 2018's
      ensemble in logits) or 'log_probs' (mean of log-softmax).

  Returns:
    `(apply_fn, variables)` with `variables` the tuple of the members'
    variables (an argument, never closed over).
  """
  if combine not in COMBINE:
    raise ValueError(f'Unknown combine {combine!r}. Valid: '
                     f'{", ".join(COMBINE)}.')
  members = list(members)
  if not members or not all(isinstance(m, (tuple, list)) and len(m) == 2
                            and callable(m[0]) for m in members):
    raise ValueError('members must be a non-empty list of (apply_fn, '
                     'variables) pairs.')
  fns = tuple(m[0] for m in members)
  post = (lambda z: z) if combine == 'logits' else jax.nn.log_softmax

  def apply_fn(variables, x):
    return sum(post(f(v, x)) for f, v in zip(fns, variables)) / len(fns)

  return apply_fn, tuple(m[1] for m in members)


def _model(name: str, spec: Any) -> tuple[ApplyFn, Any, list[str]]:
  """`(apply_fn, variables, member names)` from a pair or an ensemble spec."""
  if isinstance(spec, (tuple, list)) and len(spec) == 2 and callable(spec[0]):
    return spec[0], spec[1], [name]
  if isinstance(spec, Mapping) and spec:
    apply_fn, variables = ensemble(list(spec.values()))
    return apply_fn, variables, [str(k) for k in spec]
  if isinstance(spec, (tuple, list)) and spec:
    apply_fn, variables = ensemble(spec)
    return apply_fn, variables, [f'{name}[{i}]' for i in range(len(spec))]
  raise ValueError(f'Model {name!r} must be an (apply_fn, variables) pair, '
                   f'or a list/dict of pairs (an ensemble), got '
                   f'{type(spec).__name__}.')


def _models(kind: str, specs: Mapping[str, Any]):
  if not isinstance(specs, Mapping) or not specs:
    raise ValueError(f'{kind} must be a non-empty dict name -> (apply_fn, '
                     f'variables), got {type(specs).__name__}.')
  return {str(n): _model(str(n), s) for n, s in specs.items()}


@dataclasses.dataclass
class TransferResult:
  """Everything a transfer evaluation measured.

  Attributes:
    records: one JSON-able dict per (crafted_on, target, eps): the metrics of
      the module docstring with their counts, plus attack, attack_config,
      eps, eps_units, seed, attack_index, batch_size, num_examples,
      source_members and white_box (crafted_on == target).
    examples: `(crafted_on, target)` -> {'clean' [N], 'robust' [E, N],
      'consistent' [E, N], 'transferred' [E, N], 'nonfinite' [E, N]}
      booleans (transferred: clean-correct on the target and wrong on
      x_adv; nonfinite: the target's logits or x_adv not finite).
    eps_grid: the radii, `[E]`.
    protocol: the settings shared by all records.
  """
  records: list[dict[str, Any]]
  examples: dict[tuple[str, str], dict[str, np.ndarray]]
  eps_grid: np.ndarray
  protocol: dict[str, Any]


@functools.partial(jax.jit, static_argnums=0)
def _predict(apply_fn: ApplyFn, variables, x, x_adv):
  """`(clean_pred [B], clean_finite [B], adv_pred [E, B], adv_finite [E,
  B])` for `x [B, ...]` and `x_adv [B, E, ...]`, as the evaluator computes
  them; compiled once per apply_fn and shape."""
  x_adv = jnp.moveaxis(x_adv, 1, 0)
  logits = apply_fn(variables, x)
  adv = jax.vmap(apply_fn, in_axes=(None, 0))(variables, x_adv)
  return (jnp.argmax(logits, -1), summary.finite_rows(logits, 1),
          jnp.argmax(adv, -1),
          summary.finite_rows(adv, 2) & summary.finite_rows(x_adv, 2))


def _check_data(x, y, eps_grid, batch_size, seed, models):
  x, y = np.asarray(x), np.asarray(y)
  if len(x) == 0:
    raise ValueError('x is empty.')
  grid = np.asarray(eps_grid, np.float64) if eps_grid is not None else None
  if grid is None or grid.ndim != 1 or not grid.size or not np.all(
      np.isfinite(grid)) or np.any(grid < 0):
    raise ValueError(f'eps_grid must be a non-empty 1-D list of finite '
                     f'numbers >= 0, got {eps_grid!r}.')
  for name, v, lo in (('batch_size', batch_size, 1), ('seed', seed, 0)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
      raise ValueError(f'{name} must be an int >= {lo}, got {v!r}.')
  x = x.astype(np.float32) if x.dtype == np.float64 else x
  attacks_lib.check_shapes(x, y, 0.0)
  for name, (apply_fn, variables, _) in models.items():
    k = build.class_counter(apply_fn)(variables, x[:1])
    try:
      attacks_lib.check_inputs(x, y, 0.0, num_classes=k)
    except ValueError as e:
      raise ValueError(f'Model {name!r}: {e}') from e
  return x, y.astype(np.int32), grid


def _build_attack(apply_fn, attack, options, attack_factory):
  if attack_factory is not None:
    rec = attacks_lib.as_attack('attack', attack_factory(apply_fn))
  else:
    rec = attacks_lib.get_attack(attack, apply_fn, **dict(options or {}))
  if rec.config.get('targeted'):
    raise ValueError(f'Attack {rec.name!r} is targeted; transfer_matrix '
                     'measures untargeted transfer (labels, not targets).')
  return rec


def _record(examples, base, e_idx, eps):
  clean, robust, moved = (examples['clean'], examples['robust'][e_idx],
                          examples['transferred'][e_idx])
  n, cc = len(clean), int(clean.sum())
  rc, tc = int(robust.sum()), int(moved.sum())
  kc = int(examples['consistent'][e_idx].sum())
  return dict(base, eps=float(eps), num_examples=n, clean_correct=cc,
              clean_accuracy=cc / n, robust_correct=rc,
              robust_accuracy=rc / n, consistent=kc, consistency=kc / n,
              transferred=tc, transfer_success_rate=(tc / cc) if cc else None,
              adv_nonfinite=int(examples['nonfinite'][e_idx].sum()))


def _score(targets, x, y, x_adv, batch_size, mesh):
  """Per target, per-example outcomes (`summary.outcomes`, the evaluator's
  one metric definition) of `x_adv [E, N, ...]`."""
  keys = ('clean', 'robust', 'consistent', 'transferred', 'nonfinite')
  out = {t: {k: [] for k in keys} for t in targets}
  rep = sharding.replicated(mesh)
  tvars = {t: jax.device_put(v, rep) for t, (_, v, _) in targets.items()}
  for _, (xb, yb, xa), n in sharding.padded_batches(
      (x, y, np.moveaxis(x_adv, 0, 1)), batch_size, mesh):
    yv = np.asarray(yb)[:n]
    for t, (apply_fn, _, _) in targets.items():
      cp, cf, ap, af = (np.asarray(o)[..., :n] for o in _predict(
          apply_fn, tvars[t], xb, xa))
      o = summary.outcomes(yv, cp, cf, ap, af)
      o['transferred'] = o['clean'] & ~o['robust']
      o['nonfinite'] = ~af
      for k in keys:
        out[t][k].append(o[k])
  return {t: {k: np.concatenate(v, axis=-1) for k, v in o.items()}
          for t, o in out.items()}


def transfer_matrix(sources: Mapping[str, Any], targets: Mapping[str, Any],
                    x: Any, y: Any, *, eps_grid: Sequence[float],
                    seed: int, batch_size: int, attack: str = 'pgd',
                    options: Mapping[str, Any] | None = None,
                    attack_factory: Callable | None = None,
                    attack_index: int = 0, engine: str = 'scheduler',
                    eps_units: str = 'input',
                    devices: Sequence[jax.Device] | None = None,
                    host_targets: Mapping[str, Callable] | None = None
                    ) -> TransferResult:
  """Crafts on every source, evaluates on every target (module docstring).

  Args:
    sources: name -> `(apply_fn, variables)`, or an ensemble: a list of
      pairs or a dict member name -> pair (mean of logits, `ensemble`).
    targets: name -> `(apply_fn, variables)` (or an ensemble, likewise).
    x: `[N, ...]` float inputs (the evaluated examples, subset already taken).
    y: `[N]` int labels.
    eps_grid: radii in input units (`[E]`, each >= 0).
    seed: the root of the key rule in the module docstring.
    batch_size: as the evaluator's (sets the batches and hence the keys).
    attack: a registered attack name (`tinyrobust.attacks.list_attacks()`),
      built on each source with `options` (e.g. norm, steps, clip).
    options: the attack factory's keyword options.
    attack_factory: instead of `attack`/`options`, a callable `apply_fn ->
      Attack` (e.g. `lambda f: db_attack(make_pgd(f, ...))`).
    attack_index: the attack's position in the white-box evaluator's list
      (for the key rule); 0 for a one-attack evaluation.
    engine: how the source is attacked, as the white-box evaluator's engine
      ('scheduler', its default, or 'sweep'; `tinyrobust.evaluation.
      crafting`), so the diagonal equals the evaluation with that engine.
    eps_units: label for the records ('input', 'g', 'dB', ...).
    devices: devices to shard the batch over (default:
      `sharding.default_devices()`).
    host_targets: more targets that are not JAX functions: name ->
      `logits(x [M, ...]) -> [M, K]` NumPy (e.g. an int8 flatbuffer in
      LiteRT, `evaluation.deployed.litert_logits`), judged on the same
      x_adv with the same outcome definition (`routes.outcomes`).

  Returns:
    A `TransferResult`; records ordered by source, target, eps.

  Raises:
    ValueError: bad models, data, grid or attack options, before compiling.
  """
  srcs, tgts = _models('sources', sources), _models('targets', targets)
  host = dict(host_targets or {})
  bad = [n for n, f in host.items() if not callable(f) or n in tgts]
  if bad:
    raise ValueError(f'host_targets {bad}: each must be a callable x -> '
                     'logits, named unlike the JAX targets.')
  x, y, grid = _check_data(x, y, eps_grid, batch_size, seed,
                           {**srcs, **tgts})
  if engine not in crafting.ENGINES:
    raise ValueError(f'Unknown engine {engine!r}. Valid: '
                     f'{", ".join(crafting.ENGINES)}.')
  mesh = sharding.batch_mesh(devices)
  built = {s: _build_attack(a, attack, options, attack_factory)
           for s, (a, _, _) in srcs.items()}
  records, examples = [], {}
  for s, (apply_fn, v, members) in srcs.items():
    x_adv = crafting.craft(apply_fn, v, built[s], x, y, eps_grid=grid,
                           seed=seed, batch_size=batch_size,
                           attack_index=attack_index, engine=engine,
                           devices=devices)
    base = {'crafted_on': s, 'source_members': members,
            'attack': built[s].name,
            'attack_config': build.jsonable(dict(built[s].config)),
            'eps_units': eps_units, 'seed': int(seed), 'engine': engine,
            'attack_index': int(attack_index), 'batch_size': int(
                sharding.step_batch_size(batch_size, len(x), mesh))}
    scored = _score(tgts, x, y, x_adv, batch_size, mesh)
    scored.update({t: routes_lib.predictor_outcomes(f, y, x, x_adv)
                   for t, f in host.items()})
    for t, ex in scored.items():
      examples[(s, t)] = ex
      for e_idx, e in enumerate(grid):
        records.append(_record(ex, dict(base, target=t, white_box=s == t),
                               e_idx, e))
  protocol = {'attack': attack if attack_factory is None else None,
              'options': build.jsonable(dict(options or {})),
              'eps_grid': grid.tolist(), 'eps_units': eps_units,
              'seed': int(seed), 'attack_index': int(attack_index),
              'engine': engine, 'num_examples': int(len(x)),
              'sources': {s: m for s, (_, _, m) in srcs.items()},
              'targets': list(tgts) + list(host)}
  return TransferResult(records, examples, grid, protocol)


def universal_transfer(uap: Any, targets: Mapping[str, Any], x: Any, y: Any,
                       *, batch_size: int = 256, clip: Any = 'protocol',
                       devices: Sequence[jax.Device] | None = None
                       ) -> TransferResult:
  """Evaluates one universal perturbation on every target.

  Args:
    uap: a `UniversalPerturbation` (`delta, protocol`) or a bare `delta`
      array `[*S]` (then `clip` must be given, or None).
    targets: name -> `(apply_fn, variables)` (or an ensemble).
    x: `[N, *S]` test inputs; y: `[N]` labels.
    batch_size: examples per step.
    clip: 'protocol' (the perturbation's own clip), `(lo, hi)` or None.
    devices: devices to shard the batch over.

  Returns:
    A `TransferResult` with one eps (the protocol's, else the delta's own
    norm) and `crafted_on` = '+'.join(protocol sources), attack 'universal'.
  """
  if isinstance(uap, tuple) and len(uap) == 2 and isinstance(uap[1], Mapping):
    delta, protocol = np.asarray(uap[0]), dict(uap[1])
  else:
    delta, protocol = np.asarray(uap), {}
  if isinstance(clip, str) and clip == 'protocol':
    if 'clip' not in protocol:
      raise ValueError("clip='protocol' needs a UniversalPerturbation; pass "
                       'clip=(lo, hi) or None with a bare delta.')
    clip = protocol['clip']
  threat_lib.check_clip(clip)
  tgts = _models('targets', targets)
  eps = protocol.get('eps', float(np.max(np.abs(delta), initial=0.0)))
  x, y, grid = _check_data(x, y, [eps], batch_size, 0, tgts)
  x_adv = universal_lib.apply_universal(delta, x, clip)[None]
  mesh = sharding.batch_mesh(devices)
  source = '+'.join(protocol.get('sources', ['unknown']))
  base = {'crafted_on': source, 'source_members': protocol.get('sources', []),
          'attack': 'universal', 'attack_config': build.jsonable(protocol),
          'eps_units': protocol.get('eps_units', 'input'),
          'seed': protocol.get('seed'), 'engine': None, 'attack_index': None,
          'batch_size': int(sharding.step_batch_size(batch_size, len(x),
                                                     mesh))}
  records, examples = [], {}
  for t, ex in _score(tgts, x, y, x_adv, batch_size, mesh).items():
    examples[(source, t)] = ex
    records.append(_record(ex, dict(base, target=t, white_box=False), 0,
                           grid[0]))
  return TransferResult(records, examples, grid,
                        {'attack': 'universal', 'universal': protocol,
                         'num_examples': int(len(x)), 'targets': list(tgts)})

