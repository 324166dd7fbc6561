"""`--mode=attack`'s attacker without access to the target (issue 25).

With `attack.transfer` in the config, examples are crafted on the source
runs (`attack.transfer.sources`: trained run workdirs of the same dataset,
split and classes; plus their ensemble, mean of logits) and judged by the
attacked run (the target), on the same test examples, eps grid, threat
space, clip, seed and batch size as its white-box evaluation
(`evaluation.transfer_matrix`; an attack also in `attack.attacks` takes its
options and key index). With `attack.universal`, one SGD-UAP perturbation
per eps is fitted on the training split of the target itself (white-box
universal) and of each source (transferred universal), saved with its
protocol as `universal_<crafted_on>_eps<eps>.npz` in the target's workdir
and evaluated on the target's test examples.

    plan = prepare(config, acfg, workdir, target, load)  # checks, no compute
    out = run(plan, ...)            # {'rows': [...], 'records': [...]}

`prepare` checks every source before any attack runs: the workdir exists
and holds a trained run, on the same dataset and options; a bad one is
named with what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import numpy as np

from tinyrobust import config_io
from tinyrobust import results as results_lib
from tinyrobust.attacks import config as attack_config_lib
from tinyrobust.attacks import registry
from tinyrobust.attacks import snr
from tinyrobust.attacks import universal as universal_lib
from tinyrobust.evaluation import db_budget
from tinyrobust.evaluation import inputs
from tinyrobust.evaluation import transfer as transfer_lib


@dataclasses.dataclass
class Plan:
  """What `prepare` checked: sections and the source runs' attack problems
  (`(apply_fn, variables)` in the target's threat space)."""
  transfer: dict[str, Any] | None
  universal: dict[str, Any] | None
  sources: dict[str, tuple[Callable, Any]]


def _data_key(config) -> tuple[str, dict[str, Any]]:
  return config.data.name, config_io.to_dict(config.data.get('options'))


def prepare(config, acfg, workdir: str, load: Callable,
            problem: Callable) -> Plan | None:
  """Checks the sections and loads the sources; None without sections.

  Args:
    config: the target run's (merged) config.
    acfg: its `attack` section (`attacks.config.attack_config`).
    workdir: the target run's workdir (may not be its own source).
    load: `load(workdir) -> (model, variables, config)` of a trained run.
    problem: `problem(model, config)` -> that run's attack problem in the
      target's threat space.

  Raises:
    ValueError: a source that is not a trained run of the same data, or the
      target itself; bad section fields (`attacks.config`).
  """
  tcfg = attack_config_lib.transfer_config(acfg)
  ucfg = attack_config_lib.universal_config(acfg)
  if tcfg is None and ucfg is None:
    return None
  if (tcfg or {}).get('int8'):
    raise ValueError("attack.transfer.int8 is a study option (each model's "
                     "int8 export as a target); in --mode=attack add "
                     "'int8-litert' to threat.precisions instead.")
  sources = {}
  for src in (tcfg or {}).get('sources', ()):
    if os.path.abspath(src) == os.path.abspath(workdir):
      raise ValueError(f'attack.transfer.sources lists the attacked run '
                       f'{src!r} itself; the sources are other trained runs '
                       '(its white-box numbers are the evaluation itself).')
    if not os.path.isdir(src) or not os.path.exists(
        os.path.join(src, 'config.json')):
      raise ValueError(f'attack.transfer.sources: {src!r} is not a trained '
                       'run workdir (a directory with config.json and '
                       'checkpoints from --mode=train).')
    model, variables, scfg = load(src)
    if _data_key(scfg) != _data_key(config):
      raise ValueError(
          f'attack.transfer.sources: {src!r} was trained on '
          f'{_data_key(scfg)}, the attacked run on {_data_key(config)}; a '
          'source must see the same dataset and options.')
    prob = problem(model, scfg)
    sources[src] = (prob.apply_fn, variables)
  if tcfg is not None and not sources:
    raise ValueError('attack.transfer.sources is empty; --mode=attack needs '
                     'at least one trained run workdir to craft on.')
  return Plan(tcfg, ucfg, sources)


def _rows(result, to_units, workdir):
  rows = []
  for r in result.records:
    rows.append({**{k: r[k] for k in (
        'attack', 'eps', 'clean_accuracy', 'robust_accuracy', 'consistency',
        'transfer_success_rate', 'num_examples', 'source_members')},
        'eps_in_units': to_units(r['eps']), 'crafted_on': r['crafted_on'],
        'target': workdir, 'white_box': r['crafted_on'] == workdir})
  return rows


def _relative(name: str, options, norm: str) -> Callable:
  """`apply_fn -> Attack` reading eps as the ratio r (dB threats)."""
  return lambda f: snr.relative_attack(
      registry.get_attack(name, f, **options), norm=norm)


def run(plan: Plan, acfg, target, variables, *, workdir: str, seed: int,
        train_problem: Callable) -> dict[str, Any]:
  """Transfer and universal evaluations of the target (module docstring).

  Returns:
    `{'rows': [...], 'universal': [paths], 'protocol': {...}}`; each row has
    attack, eps (input units) and eps_in_units, crafted_on (a source
    workdir, 'ensemble' or the target for its own universal perturbation),
    source_members, target (the workdir) and the metrics.
  """
  prob = target.problem
  idx = inputs.subset_indices(len(prob.y), acfg.get('max_examples'), seed)
  x, y = (prob.x, prob.y) if idx is None else (prob.x[idx], prob.y[idx])
  db = db_budget.is_db(target.threat['eps_units'])
  grid, to_units = np.asarray(acfg.eps_grid, np.float64), float
  if db:  # the r grid; rows report eps_in_units in dB
    grid, dbs = db_budget.ratio_grid(acfg.eps_grid)
    to_units = dict(zip(grid.tolist(), dbs.tolist())).get
  tgt = {workdir: (prob.apply_fn, variables)}
  rows, paths = [], []
  clip = prob.clip
  if plan.transfer is not None:
    opts = attack_config_lib.transfer_attack_options(acfg, plan.transfer,
                                                     clip=clip)
    opts = attack_config_lib.with_eps_scale(opts, list(opts), prob.eps_scale)
    srcs = dict(plan.sources)
    if plan.transfer['ensemble'] and len(srcs) > 1:
      srcs['ensemble'] = dict(plan.sources)
    for name in plan.transfer['attacks']:
      for s, spec in srcs.items():
        res = transfer_lib.transfer_matrix(
            {s: spec}, tgt, x, y, eps_grid=grid, seed=seed,
            batch_size=int(acfg.batch_size), attack=name, options=opts[name],
            attack_factory=_relative(name, opts[name], acfg.norm) if db
            else None,
            attack_index=attack_config_lib.attack_index(acfg, name),
            eps_units=prob.eps_units)
        rows += _rows(res, to_units, workdir)
  if plan.universal is not None:
    xt, yt = train_problem()
    fits = {workdir: (prob.apply_fn, variables), **plan.sources}
    for eps_u in plan.universal['eps'] or [e for e in acfg.eps_grid if e > 0]:
      eps = db_budget.universal_eps(xt, eps_u, acfg.norm) if db else float(
          eps_u)
      for s, (fn, v) in fits.items():
        uap = universal_lib.fit_universal(
            fn, v, xt, yt, eps=eps, norm=acfg.norm, clip=clip,
            eps_scale=prob.eps_scale, eps_units=prob.eps_units,
            epochs=plan.universal['epochs'],
            batch_size=plan.universal['batch_size'],
            step_size=plan.universal['rel_step_size'] * eps or None,
            loss=acfg.loss, loss_clamp=plan.universal['loss_clamp'],
            seed=seed, source_names=[s])
        tag = 'self' if s == workdir else os.path.basename(
            os.path.normpath(s))
        path = os.path.join(workdir, f'universal_{tag}_eps{eps_u:g}.npz')
        paths.append(universal_lib.save_universal(path, uap))
        uap.protocol['eps_in_units'] = float(eps_u)
        res = transfer_lib.universal_transfer(
            uap, tgt, x, y, batch_size=int(acfg.batch_size))
        rows += _rows(res, lambda e, u=float(eps_u): u, workdir)
  return {'rows': rows, 'universal': paths,
          'sources': list(plan.sources), 'target': workdir}


def records(out, *, model, dataset, threat, norm: str) -> list[dict]:
  """`tinyrobust.results` records of the transfer/universal rows, with
  `attack.crafted_on` (source workdirs) and `attack.target`."""
  recs = []
  for r in out['rows']:
    members = r['source_members']
    rec = results_lib.records(
        {'attacks': {r['attack']: {'config': {'norm': norm}, 'per_eps': [{
            'eps': r['eps'], 'robust_accuracy': r['robust_accuracy'],
            'consistency': r['consistency']}]}},
         'denominator': r['num_examples'],
         'clean_accuracy': r['clean_accuracy']},
        model=model, dataset=dataset, threat=threat)[0]
    rec['attack'].update(crafted_on=members, target=r['target'],
                         transfer=not r['white_box'])
    recs.append(rec)
  return recs
