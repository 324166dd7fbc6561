"""The robustness study's `adv_train` variant: adversarially trained copies.

    config.study.adv_train           'none' (default) | 'pgd_at' | 'trades'
                                     | 'fgsm_rs' (`tinyrobust.adversarial`)
    config.study.adv_train_kinds     kinds that get a copy (default
                                     ('tiny', 'large'))
    config.study.adv_train_options   other `train.adversarial` fields
                                     (steps, warmup_epochs, beta, ...)
    config.study.adv_train_qat_epochs  the copies' `train.qat_epochs`
                                     (default 0; k > 0: the last k epochs
                                     int8-aware, so the deployed int8
                                     model is the defended one,
                                     `tinyrobust.qat`)
    config.tasks.<task>.adv_train_eps  training radius in the task's eps
                                     units (default: the lower median of the
                                     grid's non-zero values)

`expand` (called by `runner.resolve_config`, before any check or training)
adds, for every model of those kinds, an entry `<label>_<method>`: the same
model and training config with `train.adversarial` set, marked
`adv_train=<method>` and `defends=<label>`. The standard tables are
computed on the undefended models only (`standard`); `section` adds:

* the gap with defended copies: large - tiny with the tiny models
  adversarially trained (large standard), and with both defended;
* the cost of each defended copy: its clean-accuracy loss and its
  training time as a multiple of the undefended model's (both runs on this
  machine, from their `metrics.jsonl`), and its mean robust accuracy.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any

import ml_collections
import numpy as np

from tinyrobust import adversarial
from tinyrobust import checkpoints
from tinyrobust import fileio
from tinyrobust import qat
from tinyrobust.studies.robustness import config as study_config
from tinyrobust.studies.robustness import tables

FIELDS = ('adv_train', 'adv_train_kinds', 'adv_train_options',
          'adv_train_qat_epochs')
VERDICT_TEXT = {'closes': 'adversarial training closes the gap',
                'reverses': 'adversarial training reverses the gap',
                'remains': 'the gap remains',
                'no gap': 'there is no gap to close'}


def _method(study: dict[str, Any]) -> str:
  m = study.get('adv_train', 'none')
  valid = adversarial.METHODS
  if not isinstance(m, str) or m not in valid:
    raise ValueError(f'study.adv_train={m!r}. Valid: {", ".join(valid)} '
                     "('none': no adversarially trained copies).")
  return m


def _kinds(study: dict[str, Any]) -> tuple[str, ...]:
  kinds = study.get('adv_train_kinds', study_config.KINDS)
  if isinstance(kinds, str) or not kinds or any(
      k not in study_config.KINDS for k in kinds):
    raise ValueError(f'study.adv_train_kinds={kinds!r}: a non-empty list of '
                     f'{study_config.KINDS}.')
  return tuple(kinds)


def task_eps(task: str, tcfg: dict[str, Any]) -> float:
  """The task's training radius in its eps units (`adv_train_eps`, or the
  lower median of the grid's non-zero values)."""
  eps = tcfg.get('adv_train_eps')
  if eps is None:
    grid = sorted(float(e) for e in tcfg.get('eps_grid') or () if e > 0)
    if not grid:
      raise ValueError(f'tasks.{task}.eps_grid has no eps > 0 to train '
                       'with; set tasks.{task}.adv_train_eps.')
    return grid[(len(grid) - 1) // 2]
  ok = not isinstance(eps, bool) and isinstance(eps, (int, float)) and \
      math.isfinite(eps) and eps > 0
  u = study_config.unit(task, tcfg.get('eps_units'))
  if not ok or (u.max_input is not None and eps * u.scale > u.max_input):
    raise ValueError(f'tasks.{task}.adv_train_eps={eps!r}: a radius > 0 in '
                     f'{u.name}' + (f' up to {u.max_input / u.scale:g}'
                                    if u.max_input is not None else '') + '.')
  return float(eps)


def _section(method, eps_input, options) -> dict[str, Any]:
  bad = sorted(set(options) & {'method', 'eps'})
  if bad:
    raise ValueError(f'study.adv_train_options sets {bad}: use '
                     'study.adv_train and tasks.<task>.adv_train_eps.')
  return {'method': method, 'eps': eps_input, **options}


def _check_section(section, cfg, where) -> None:
  probe = ml_collections.ConfigDict(cfg)
  probe.train.adversarial = section
  try:
    adversarial.settings(probe)
  except ValueError as err:
    raise ValueError(f'study.adv_train_options ({where}): {err}') from None


def expand(d: dict[str, Any]) -> dict[str, Any]:
  """A resolved study config dict with the defended copies added (see
  module doc); 'none' drops the `adv_train*` fields (one pinned form).

  Raises:
    ValueError: a bad method, kinds, options or eps, or a label taken.
  """
  d = copy.deepcopy(d)
  study = d.get('study') or {}
  method = _method(study)
  if method == 'none':
    for f in FIELDS:
      study.pop(f, None)
    return d
  kinds = _kinds(study)
  options = study.get('adv_train_options') or {}
  if not isinstance(options, dict):
    raise ValueError(f'study.adv_train_options must be a dict of '
                     f'train.adversarial fields, got {options!r}.')
  study['adv_train_kinds'] = list(kinds)
  qat_k = study.get('adv_train_qat_epochs', 0)
  for task, tcfg in (d.get('tasks') or {}).items():
    u = study_config.unit(task, tcfg.get('eps_units'))
    eps = task_eps(task, tcfg)
    tcfg['adv_train_eps'] = eps
    models = tcfg.get('models') or {}
    for label, e in list(models.items()):
      if e.get('adv_train') or e.get('kind') not in kinds:
        continue
      new = f'{label}_{method}'
      if new in models:
        raise ValueError(f'tasks.{task}.models has {new!r} already: the '
                         f'adversarially trained copy of {label!r} needs '
                         'that label.')
      cfg = copy.deepcopy(e.get('config') or {})
      section = _section(method, eps * u.scale, options)
      _check_section(section, cfg, f'tasks.{task}.models.{new}')
      cfg.setdefault('train', {})['adversarial'] = section
      if qat_k:
        cfg['train']['qat_epochs'] = _qat_epochs(qat_k, cfg, task, new)
      models[new] = {**copy.deepcopy(e), 'config': cfg,
                     'adv_train': method, 'defends': label}
  return d


def _qat_epochs(k, cfg, task: str, label: str) -> int:
  """The checked `study.adv_train_qat_epochs` for one copy's training."""
  probe = ml_collections.ConfigDict(
      {**cfg, 'train': {**cfg.get('train', {}), 'qat_epochs': k}})
  try:
    return qat.qat_epochs(probe)
  except ValueError as err:
    raise ValueError(f'study.adv_train_qat_epochs (tasks.{task}.models.'
                     f'{label}): {err}') from None


def is_defended(entry) -> bool:
  return bool(entry.get('adv_train'))


def standard(config) -> ml_collections.ConfigDict:
  """`config` with the undefended models only (the study's own tables)."""
  c = ml_collections.ConfigDict(config.to_dict())
  for tcfg in c.tasks.values():
    for label in [l for l, e in tcfg.models.items() if is_defended(e)]:
      del tcfg.models[label]
  return c


def _picked(config, tiny_defended: bool, large_defended: bool):
  """`config` whose tiny (large) models are the defended copies or the
  undefended ones; None when a task lacks such copies."""
  c = ml_collections.ConfigDict(config.to_dict())
  want = {'tiny': tiny_defended, 'large': large_defended}
  for tcfg in c.tasks.values():
    for label in [l for l, e in tcfg.models.items()
                  if is_defended(e) != want[e.kind]]:
      del tcfg.models[label]
    if {e.kind for e in tcfg.models.values()} != set(study_config.KINDS):
      return None
  return c


def train_seconds(workdir: str, task: str, label: str) -> float:
  """Wall time of a model's training epochs (its `metrics.jsonl`)."""
  path = os.path.join(study_config.model_dir(workdir, task, label),
                      checkpoints.METRICS)
  return float(sum(r.get('seconds', 0.0) for r in fileio.read_jsonl(path)
                   if 'epoch' in r and not r.get('final')))


def _mean_robust(result, attack: str) -> float:
  att = result['attack']
  per = att['attacks'].get(attack, {}).get('per_eps') or []
  vals = [p['robust_accuracy'] for p, e in zip(per, att['eps_grid'])
          if e > 0]
  return float(np.mean(vals)) if vals else float('nan')


def costs(config, workdir: str, results) -> list[dict[str, Any]]:
  """One row per defended copy: clean accuracy and its loss (points),
  training time and its multiple of the undefended model's, and the mean
  robust accuracy over eps > 0 of both, per attack."""
  out = []
  for task, label, e in study_config.entries(config):
    if not is_defended(e):
      continue
    base = e.defends
    acc = {k: results[(task, k)]['final']['test_accuracy']
           for k in (base, label)}
    secs = {k: train_seconds(workdir, task, k) for k in (base, label)}
    row = {'task': task, 'model': label, 'defends': base, 'kind': e.kind,
           'method': e.adv_train,
           'eps': config.tasks[task].adv_train_eps,
           'eps_units': config.tasks[task].eps_units,
           'clean_accuracy_standard': acc[base],
           'clean_accuracy_defended': acc[label],
           'clean_cost_points': 100 * (acc[base] - acc[label]),
           'train_s_standard': secs[base], 'train_s_defended': secs[label],
           'train_time_x': secs[label] / secs[base] if secs[base] else
                           float('nan')}
    for attack in results[(task, label)]['attack']['attacks']:
      for k in (base, label):
        which = 'standard' if k == base else 'defended'
        row[f'{attack}_robust_{which}'] = _mean_robust(results[(task, k)],
                                                       attack)
    out.append(row)
  return out


def annotate_table1(config, workdir: str, rows) -> list[dict[str, Any]]:
  """Table 1 with the adversarial-training columns (unchanged when the
  study has no defended copies): method, clean-accuracy cost (points below
  the undefended model) and training time (s, and x the undefended)."""
  entries = {(t, l): e for t, l, e in study_config.entries(config)}
  if not any(is_defended(e) for e in entries.values()):
    return rows
  acc = {(r['task'], r['model']): r['test_accuracy'] for r in rows}
  out = []
  for r in rows:
    e = entries[(r['task'], r['model'])]
    secs = train_seconds(workdir, r['task'], r['model'])
    base = e.get('defends')
    base_s = train_seconds(workdir, r['task'], base) if base else secs
    out.append({**r, 'adv_train': e.get('adv_train') or 'none',
                'clean_cost_points': 100 * (acc[(r['task'], base)] -
                                            r['test_accuracy'])
                if base else 0.0,
                'train_s': secs,
                'train_time_x': secs / base_s if base_s else float('nan')})
  return out


def standard_rows(t1_rows) -> list[dict[str, Any]]:
  """Table 1 rows of the undefended models."""
  return [r for r in t1_rows if r.get('adv_train', 'none') == 'none']


def gaps(config, results, *, n_boot: int, seed: int
         ) -> list[dict[str, Any]]:
  """The gap table with defended copies: per task, attack and metric,
  large - tiny with standard models, tiny defended, and both defended
  (when the large models have copies), each with its bootstrap interval."""
  out = []
  for tiny_d, large_d in ((False, False), (True, False), (True, True)):
    c = _picked(config, tiny_d, large_d)
    if c is None:
      continue
    for r in tables.gap(c, results, n_boot=n_boot, seed=seed):
      out.append({'tiny': 'adv_train' if tiny_d else 'standard',
                  'large': 'adv_train' if large_d else 'standard', **r})
  return out


def findings(gap_rows) -> list[dict[str, Any]]:
  """Per task, attack and metric: the gap without and with adversarially
  trained tiny models, and whether adversarial training closes it
  ('closes': the standard gap's interval is above 0 and the defended one's
  is not; 'reverses': the defended interval is below 0; 'remains': both
  above 0; 'no gap': the standard interval is not above 0)."""
  key = lambda r: (r['task'], r['attack'], r['metric'])
  std = {key(r): r for r in gap_rows if r['tiny'] == 'standard'}
  out = []
  for r in gap_rows:
    s = std.get(key(r))
    if r['tiny'] == 'standard' or s is None:
      continue
    if r['ci95_high_points'] < 0:
      v = 'reverses'
    elif s['ci95_low_points'] <= 0:
      v = 'no gap'
    else:
      v = 'remains' if r['ci95_low_points'] > 0 else 'closes'
    who = 'tiny and large' if r['large'] == 'adv_train' else 'tiny'
    text = (f'{r["task"]}, {r["attack"].upper()}, '
            f'{r["metric"].replace("_", " ")}: large - tiny = '
            f'{s["gap_points"]:+.1f} points [{s["ci95_low_points"]:+.1f}, '
            f'{s["ci95_high_points"]:+.1f}] with standard training, '
            f'{r["gap_points"]:+.1f} [{r["ci95_low_points"]:+.1f}, '
            f'{r["ci95_high_points"]:+.1f}] with {who} models adversarially '
            f'trained: {VERDICT_TEXT[v]}.')
    out.append({'task': r['task'], 'attack': r['attack'],
                'metric': r['metric'], 'defended': who, 'verdict': v,
                'gap_standard_points': s['gap_points'],
                'gap_defended_points': r['gap_points'],
                'ci95_defended': [r['ci95_low_points'],
                                  r['ci95_high_points']], 'text': text})
  return out


def section(config, workdir: str, results, markdown_table
            ) -> tuple[list[str], dict[str, Any]]:
  """The report's adversarial-training section (markdown lines) and its
  summary; ([], {}) without defended copies. `markdown_table(rows)`
  formats a table (the report's)."""
  if not any(is_defended(e) for _, _, e in study_config.entries(config)):
    return [], {}
  s = config.study
  rows = gaps(config, results, n_boot=int(s.bootstrap), seed=int(config.seed))
  found = findings(rows)
  cost = costs(config, workdir, results)
  for name, data in (('gap_adv_train', rows), ('adv_train_costs', cost)):
    fileio.write_csv(os.path.join(workdir, f'{name}.csv'), data)
  eps = ', '.join(f'{t} {c.adv_train_eps:g} {c.eps_units}'
                  for t, c in config.tasks.items())
  md = ['## Adversarial training (study.adv_train)', '',
        f'Method {s.adv_train} ({dict(s.get("adv_train_options") or {})}), '
        f'eps {eps}, copies of the {" and ".join(s.adv_train_kinds)} '
        'models with their own training schedules (best checkpoint: best '
        'PGD accuracy on a validation batch).', '']
  md += [f'- {f["text"]}' for f in found]
  md += ['', '### Gap with and without adversarial training (large - tiny,'
         ' points)', '', markdown_table(rows),
         '### Cost of adversarial training', '', markdown_table(cost)]
  return md, {'gap': rows, 'findings': found, 'costs': cost}


def mark_curves(config, rows) -> list[dict[str, Any]]:
  """Curve rows with a defended copy's kind as '<kind>+<method>', so the
  tiny-vs-large figure averages the undefended models only."""
  entries = {(t, l): e for t, l, e in study_config.entries(config)}
  return [{**r, 'kind': f'{r["kind"]}+{entries[(r["task"], r["model"])].adv_train}'}
          if is_defended(entries[(r['task'], r['model'])]) else r
          for r in rows]
