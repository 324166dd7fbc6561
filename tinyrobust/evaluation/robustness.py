"""The robustness evaluator: clean and adversarial counts over an eps grid.

One evaluator serves every caller (the `attack` run mode, the studies, the
search's adversarial term and the int8 evaluation's crafting):

1. `prepare_run` validates (`inputs.check_eval_inputs`: options, shapes,
   labels against the dataset's and the model's class count, all before any
   compilation) and builds the attacks (`tinyrobust.attacks.config`);
2. `RobustnessEvaluator`, built once per (apply_fn, attacks, eps grid);
   its `run` returns integer counts through one of two engines:
   'scheduler' (the default, `tinyrobust.evaluation.scheduler`: eps in
   ascending order, each stage only on the points still robust, compacted
   into padded buckets, host-driven steps on CPU, per-example worst case
   over eps, resumable with `state_path`) or 'sweep' (one jitted call per
   batch, `vmap` over eps, every attack on every point: the per-eps raw
   outcome, and what `precompile` compiles ahead); `craft` returns the
   sweep's adversarial inputs of `run`'s batches and random keys;
3. `summary.summarize` turns counts into rates, flags and table rows (the
   metric definitions are in `tinyrobust.evaluation.summary`).

Entry points: `robustness_run` (results, timings and per-example outcomes)
and its two views `evaluate_robustness` (results) and
`evaluate_robustness_timed` (results, seconds). Every evaluation also runs
the model checks and the random-noise baseline of
`tinyrobust.evaluation.sanity` unless `sanity_checks=False`.

An evaluator turns on JAX's persistent compilation cache
(`tinyrobust.compile_cache.enable`), so re-runs load their programs.

Attacks are plug-ins: any name in `tinyrobust.attacks.list_attacks()` can be
listed in a config's `attack.attacks`; its metric keys are built from the
name (`<name>_consistency`, `<name>_robust_accuracy`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust import attacks as attacks_lib
from tinyrobust import compile_cache
from tinyrobust import fileio
from tinyrobust import sharding
from tinyrobust.attacks import config as attack_config_lib
from tinyrobust.evaluation import inputs
from tinyrobust.evaluation import sanity
from tinyrobust.evaluation import scheduler
from tinyrobust.evaluation import summary

ENGINES = ('scheduler', 'sweep')


class RobustnessEvaluator:
  """Counts clean/robust/consistent predictions per attack and eps.

  Built once (big_vision style): one cached jitted sweep per attack; `run`
  may be called for many variables of the same model and returns counts.

  Attributes:
    attacks: name -> `tinyrobust.attacks.Attack` (or a plain kernel).
    eps_grid: the radii, float array.
    batch_size: requested examples per step (capped at the data size).
    mesh: the 1-D device mesh the batch axis is sharded over.
    engine: 'scheduler' (default) or 'sweep' (see the module docstring).
    consistency: 'scheduler' engine only: False attacks only the
      clean-correct points with one-stage attacks (robust accuracy only;
      `consistent` then counts misclassified points as consistent, see
      `scheduler`).
    growth: 'scheduler' engine only: the bucket policy
      (`scheduler.Scheduler`; 'auto' pads long stages to a multiple of 8).
    step_loop: 'scheduler' engine only: what the kernels' loop='auto' means
      ('auto': rolled for a dispatch-bound model on CPU, `loops.auto_for`).
    retire: 'scheduler' engine only: kernels stop stepping broken points
      (`scheduler.Scheduler`).
  """

  def __init__(self, apply_fn: Callable, attacks: Mapping[str, Callable],
               eps_grid: Sequence[float], *, batch_size: int,
               devices: Sequence[jax.Device] | None = None,
               engine: str = 'scheduler', consistency: bool = True,
               growth: float | str = 'auto', step_loop: str = 'auto',
               retire: bool = True):
    if engine not in ENGINES:
      raise ValueError(f'Unknown evaluation engine {engine!r}. Valid: '
                       f'{", ".join(ENGINES)}.')
    self.engine = engine
    compile_cache.enable()
    self.apply_fn = apply_fn
    self.attacks = {n: attacks_lib.as_attack(n, a) for n, a in
                    attacks.items()}
    self.eps_grid = inputs.check_eps_grid(eps_grid)
    self.batch_size = inputs.check_int('batch_size', batch_size, 1)
    self.mesh = sharding.batch_mesh(devices)
    self._fns = {n: self._sweep_fn(a) for n, a in self.attacks.items()}
    self._craft_fns = {}
    self._scheduler = scheduler.Scheduler(
        apply_fn, self.attacks, self.eps_grid, batch_size=self.batch_size,
        devices=devices, consistency=consistency, growth=growth,
        step_loop=step_loop, retire=retire)

  def layout(self, batch_size: int, n: int) -> dict[str, int]:
    """`num_devices` and the step `batch_size` a run over `n` points
    uses."""
    if self.engine == 'scheduler':
      return {'num_devices': self._scheduler.num_devices,
              'batch_size': self._scheduler.step_size(n)}
    return {'num_devices': self.mesh.size, 'batch_size':
            sharding.step_batch_size(batch_size, n, self.mesh)}

  def _shardings(self):
    """in_shardings of `(variables, x, y, key, grid)`, and the `[E, B]`
    output sharding."""
    rep = sharding.replicated(self.mesh)
    batch = sharding.batch_sharding(self.mesh)
    grid_batch = jax.sharding.NamedSharding(
        self.mesh, jax.sharding.PartitionSpec(None, sharding.BATCH_AXIS))
    return (rep, batch, batch, rep, rep), grid_batch

  def _sweep_fn(self, attack):
    """jit(variables, x, y, key, grid) -> (clean_pred, clean_finite,
    adv_pred [E, B], adv_finite [E, B], breaking stage [E, B])."""
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
      adv_finite = (summary.finite_rows(adv_logits, 2)
                    & summary.finite_rows(x_adv, 2))
      return (jnp.argmax(logits, -1), summary.finite_rows(logits, 1),
              jnp.argmax(adv_logits, -1), adv_finite, stage)

    ins, grid_batch = self._shardings()
    return jax.jit(fn, in_shardings=ins,
                   out_shardings=(ins[1], ins[1], grid_batch, grid_batch,
                                  grid_batch))

  def _craft_fn(self, name: str):
    """jit(variables, x, y, key, grid) -> x_adv [E, B, ...] (cached)."""
    if name not in self._craft_fns:
      sweep = jax.vmap(self.attacks[name], in_axes=(None, None, None, None, 0))

      def fn(variables, x, y, key, grid):
        x_adv = sweep(variables, x, y, key, grid)
        return x_adv[0] if isinstance(x_adv, tuple) else x_adv

      ins, grid_batch = self._shardings()
      self._craft_fns[name] = jax.jit(fn, in_shardings=ins,
                                      out_shardings=grid_batch)
    return self._craft_fns[name]

  def _batches(self, x: np.ndarray, y: np.ndarray, attack_index: int,
               seed: int) -> Iterator[tuple[Any, Any, Any, int]]:
    """`(key, xb, yb, n_valid)` per batch: `padded_batches` over the mesh,
    key `fold_in(fold_in(key(seed), attack_index), batch_index)`."""
    root = jax.random.key(int(seed))
    for b_idx, (xb, yb), n_valid in sharding.padded_batches(
        (x, y.astype(np.int32)), self.batch_size, self.mesh):
      key = jax.random.fold_in(jax.random.fold_in(root, attack_index), b_idx)
      yield key, xb, yb, n_valid

  def _placed(self, variables, x: np.ndarray):
    rep = sharding.replicated(self.mesh)
    return (jax.device_put(variables, rep),
            jax.device_put(jnp.asarray(self.eps_grid, x.dtype), rep))

  def precompile(self, variables, x: np.ndarray, *,
                 order: Sequence[str] = (),
                 on_done: Callable[[str], None] | None = None) -> float:
    """Compiles every attack's sweep for the batches `run(variables, x,
    y, ...)` will use, and returns the seconds it took. The attacks named
    in `order` come first; `on_done(name)` is called after each.

    `variables` may be abstract (`jax.eval_shape` of the model's init), so a
    search compiles a candidate's attacks in a thread while it trains; `run`
    then finds them in JAX's compilation cache. The 'scheduler' engine
    runs each stage once on zeros for every bucket size the run can use
    (`scheduler.Scheduler.warm_sizes`), which compiles host-driven chunks
    too; `order` and `on_done` then apply to the whole warm-up.
    """
    if self.engine == 'scheduler':
      seconds = self._scheduler.precompile(variables, x)
      for name in self.attacks:
        if on_done is not None:
          on_done(name)
      return seconds
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
          seed: int, state_path: str | None = None
          ) -> dict[str, dict[str, Any]]:
    """Counts per attack over all of `(x, y)`.

    'scheduler' engine: `scheduler.Scheduler.run` (keys, per-example worst
    case over eps, the raw per-eps audit, resumable from `state_path`).
    'sweep' engine: random starts use `fold_in(fold_in(key(seed),
    attack_index), batch_index)`, so results are deterministic for a seed
    and batch size, whatever the device count; `state_path` is refused.

    Returns:
      name -> {'clean_correct', 'clean_nonfinite', 'robust' [E],
      'consistent' [E], 'adv_nonfinite' [E], 'broken_by' (per eps, stage
      index -> examples it broke first; cascades only), 'seconds'} and
      'examples': per-example booleans {'clean' [N], 'robust' [E, N],
      'consistent' [E, N]} (for paired bootstrap intervals).
    """
    if self.engine == 'scheduler':
      return self._scheduler.run(variables, x, y, seed=seed,
                                 state_path=state_path)
    if state_path is not None:
      raise ValueError("state_path needs engine='scheduler' (the sweep "
                       'engine is not resumable).')
    variables, grid = self._placed(variables, x)
    out = {}
    for a_idx, (name, fn) in enumerate(self._fns.items()):
      c = summary.zero_counts(len(self.eps_grid))
      start = time.perf_counter()
      for key, xb, yb, n_valid in self._batches(x, y, a_idx, seed):
        summary.add_counts(c, fn(variables, xb, yb, key, grid), yb, n_valid)
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

  def craft(self, variables, x: np.ndarray, y: np.ndarray, *,
            seed: int) -> dict[str, np.ndarray]:
    """Adversarial inputs `[E, N, ...]` per attack, from the batches and
    random keys `run` uses (so for the same seed they are `run`'s own)."""
    variables, grid = self._placed(variables, x)
    out = {}
    for a_idx, name in enumerate(self.attacks):
      fn = self._craft_fn(name)
      out[name] = np.concatenate(
          [np.asarray(fn(variables, xb, yb, key, grid))[:, :n_valid]
           for key, xb, yb, n_valid in self._batches(x, y, a_idx, seed)],
          axis=1)
    return out


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
  timing: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


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
      seed and batch size (and, on a CPU split into devices, their number:
      `workers`).
    norm, loss, pgd_steps, pgd_restarts, options: settings for attacks
      given by name (see `tinyrobust.attacks.config.default_attack_config`).
    clip: `(lo, hi)`, None, or 'dataset' for `dataset.input_range`.
    max_examples: evaluate a seeded random subset of this size (None = all).
    devices: devices to shard the batch over (default:
      `sharding.default_devices()`; the scheduler engine runs one program
      per CPU device instead, `workers`).

  Returns:
    A dict with `num_examples`, `denominator`, `num_classes`,
    `clean_correct`, `clean_accuracy`, `eps_grid`, `clip`, `seed`,
    `batch_size`, `num_devices`, `attacks` (name -> kind, config and
    `per_eps` list of {eps, robust_accuracy, robust_correct, consistency,
    consistent, adv_nonfinite, flags}), `flags`, `sanity_ok` and `rows`.

  Raises:
    ValueError: bad options or inputs (checked before any compilation).
  """
  return robustness_run(
      apply_fn, variables, dataset, attacks=attacks, eps_grid=eps_grid,
      batch_size=batch_size, seed=seed, norm=norm, loss=loss,
      pgd_steps=pgd_steps, pgd_restarts=pgd_restarts, options=options,
      clip=clip, max_examples=max_examples, devices=devices).results


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
                clip: Any = 'dataset', max_examples: int | None = None,
                engine: str = 'scheduler',
                **attack_settings) -> tuple[RobustnessEvaluator, np.ndarray,
                                            np.ndarray, Any]:
  """Checks an evaluation and builds its evaluator, compiling nothing.

  `variables` may be abstract (`jax.eval_shape` of the init). Returns
  `(evaluator, x, y, clip)`: the attacked subset and the clip range, for
  `evaluator.precompile(variables, x)` and `robustness_run(...,
  evaluator=evaluator)`.
  """
  x, y, _, grid, clip = inputs.check_eval_inputs(
      apply_fn, variables, dataset, eps_grid=eps_grid, batch_size=batch_size,
      seed=seed, max_examples=max_examples, clip=clip)
  if isinstance(attacks, Mapping):
    if not attacks or not all(callable(a) for a in attacks.values()):
      raise ValueError(f'attacks must map names to attack kernels, got '
                       f'{attacks!r}.')
    kernels = dict(attacks)
  else:
    kernels = attack_config_lib.build_attacks(apply_fn, attacks, clip=clip,
                                              **attack_settings)
  return (RobustnessEvaluator(apply_fn, kernels, grid, batch_size=batch_size,
                              devices=devices, engine=engine), x, y, clip)


def robustness_run(apply_fn: Callable, variables: Any, dataset, *, attacks,
                   eps_grid, batch_size: int, seed: int, devices=None,
                   evaluator: RobustnessEvaluator | None = None,
                   sanity_checks: bool = True, state_path: str | None = None,
                   **attack_settings) -> RobustnessRun:
  """`evaluate_robustness` with timings and per-example outcomes (kept out
  of the results so that they stay deterministic and small).

  `evaluator`: the one `prepare_run` built for the same arguments (e.g.
  precompiled while the model trained). `sanity_checks=False` skips the
  model checks and the noise baseline (a search's per-trial objective; the
  non-finite and monotonicity flags stay). `state_path`: resume from and
  save to this file (scheduler engine; see `scheduler`).
  """
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
  counts = evaluator.run(variables, x, y, seed=seed, state_path=state_path)
  noise_counts, model_flags = None, ()
  if sanity_checks:
    noise_counts, model_flags = _sanity_runs(
        apply_fn, variables, x, y, evaluator, clip=clip,
        batch_size=batch_size, devices=devices, seed=seed)
  out = summary.summarize(
      counts, evaluator.attacks, evaluator.eps_grid, len(x),
      noise_counts=noise_counts, model_flags=model_flags,
      range_width=None if clip is None else float(
          np.min(np.asarray(clip[1]) - np.asarray(clip[0]))))
  out.update({
      'num_classes': inputs.model_num_classes(apply_fn, variables,
                                              x.shape[1:], x.dtype),
      'clip': None if clip is None else fileio.to_jsonable(list(clip)),
      'seed': int(seed), **evaluator.layout(batch_size, len(x)),
  })
  return RobustnessRun(
      results=out, seconds={n: float(c['seconds']) for n, c in counts.items()},
      examples={n: c['examples'] for n, c in counts.items()},
      timing={n: {k: c[k] for k in ('seconds', 'stage_seconds',
                                    'compile_seconds', 'cpu_seconds')
                  if k in c}
              for n, c in counts.items()},
      indices=inputs.subset_indices(
          len(inputs.unpack_dataset(dataset)[1]),
          attack_settings.get('max_examples'), int(seed)))


def _sanity_runs(apply_fn, variables, x, y, evaluator, *, clip, batch_size,
                 devices, seed):
  """The model checks and the random-noise baseline (`sanity`): same
  examples, eps grid, batch size, norm (the first attack's) and clip."""
  first = next(iter(evaluator.attacks.values()))
  norm = dict(first.config).get('norm', 'linf')
  model_flags = sanity.model_checks(apply_fn, variables, x, y)
  noise = RobustnessEvaluator(
      apply_fn, {'noise': sanity.make_noise(apply_fn, norm=norm, clip=clip)},
      evaluator.eps_grid, batch_size=batch_size, devices=devices)
  return noise.run(variables, x, y, seed=seed)['noise'], model_flags
