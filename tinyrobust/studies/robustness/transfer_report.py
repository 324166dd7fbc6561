"""The transfer and universal part of the study's report.

From what `transfer_stage` stored (never typed by hand):

* `transfer.csv` / `universal.csv`: every record (crafted_on, target, eps,
  robust accuracy, transfer success rate, ...).
* `figures/<task>_transfer_<attack>.png`: heatmaps of the target's robust
  accuracy per source (rows) and target (columns), one panel per eps > 0.
* findings with 95% intervals (`evaluation.transfer.transfer_finding`,
  a paired bootstrap over the test examples): large -> tiny, tiny -> large,
  the large ensemble -> tiny models, the tiny ensemble -> large models and,
  with `attack.transfer.int8`, float -> int8 LiteRT (large -> tiny int8,
  tiny -> large int8, each model's own float -> its int8 export), per
  attack and reported eps.
* `attacker_table.csv`: per model and reported eps, white-box vs transfer
  (best single source, ensemble of the other kind) vs universal (its own,
  and the best transferred one) robust accuracy; with int8 targets, the
  int8 export's clean accuracy and its robust accuracy on examples crafted
  on its own float model and on the best other float model.
* `eps_db.csv` (tasks with eps in dB): every budget both ways, dB and the
  radius in waveform units (`signal_space.eps_both_ways`).
* the diagonal check: on every model, the transfer stage's white-box cell
  (crafted on and judged by the model) per example equals the white-box
  stage's robust and consistent outcomes for the same attack.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np

from tinyrobust import fileio
from tinyrobust.attacks import config as attack_config_lib
from tinyrobust.evaluation import transfer as transfer_lib
from tinyrobust.studies.robustness import config as study_config
from tinyrobust.studies.robustness import signal_space
from tinyrobust.studies.robustness import transfer_stage as stage


def collect(workdir: str, kind: str) -> dict[str, Any]:
  """All stored units of `kind` ('transfer' or 'universal'): records (with
  eps in the task's units added) and examples keyed `(crafted_on, target)`
  per task."""
  sub, pattern = ((stage.TRANSFER_DIR, '*.json') if kind == 'transfer'
                  else (stage.UNIVERSAL_DIR, '*_eval.json'))
  records, examples = [], {}
  for path in sorted(glob.glob(os.path.join(workdir, sub, pattern))):
    if path.endswith(stage.INT8_ERRORS):
      continue
    task = os.path.basename(path).split('__')[0]
    recs, ex = stage.load_unit(path)
    for r in recs:
      r['task'] = task
      records.append(r)
    for key, v in ex.items():
      examples[(task, recs[0]['attack']) + key] = v
  return {'records': records, 'examples': examples}


def _unit(config, task: str) -> study_config.Unit:
  return study_config.unit(task, config.tasks[task].eps_units)


def _units(config, task: str, eps_input: float) -> float:
  return _unit(config, task).from_input(eps_input)


def _in_units(config, r) -> float:
  """A record's eps in the task's units (a universal record states its
  own: its radius is one for every clip, not the per-clip dB radius)."""
  if r.get('eps_in_units') is not None:
    return float(r['eps_in_units'])
  return _units(config, r['task'], r['eps'])


def _at(config, r, eps_u: float) -> bool:
  return bool(np.isclose(_in_units(config, r), eps_u))


def _targets(config, task: str, records) -> list[str]:
  """The task's models, then their int8 exports found in `records`."""
  models = list(config.tasks[task].models)
  found = {r['target'] for r in records if r['task'] == task}
  return models + [f'{l}{stage.INT8}' for l in models
                   if f'{l}{stage.INT8}' in found]


def report_eps(config, task: str) -> list[float]:
  """The two (or fewer) eps of the comparison and findings, task units:
  the universal eps found in the grid, else the two largest non-zero."""
  u = _unit(config, task)  # dB: any budget; the grid goes weak -> strong
  grid = [float(e) for e in config.tasks[task].eps_grid
          if u.relative or e > 0]
  ucfg = attack_config_lib.universal_config(
      attack_config_lib.attack_config(config))
  picked = [e for e in (ucfg['eps'] if ucfg else ()) if e in grid]
  return sorted(picked or grid[-2:], key=u.to_input)


def diagonal_check(config, workdir: str, tr) -> list[dict[str, Any]]:
  """Per task, attack of the white-box stage and model: whether the
  transfer stage's diagonal cell equals the white-box outcomes."""
  rows = []
  for (task, attack, src, tgt), ex in sorted(tr['examples'].items()):
    if src != tgt:
      continue
    path = os.path.join(study_config.model_dir(workdir, task, src),
                        'attack_examples.npz')
    with np.load(path) as z:
      key = f'{attack}__robust'
      if key not in z.files:
        continue
      robust = np.asarray(z[key], bool)
      consistent = np.asarray(z[f'{attack}__consistent'], bool)
    rows.append({'task': task, 'attack': attack, 'model': src,
                 'robust_equal': bool(np.array_equal(robust, ex['robust'])),
                 'consistent_equal': bool(np.array_equal(
                     consistent, ex['consistent'])),
                 'examples': int(robust.shape[-1])})
  return rows


def _result(tr, task: str, attack: str) -> transfer_lib.TransferResult:
  ex = {(s, t): v for (tk, a, s, t), v in tr['examples'].items()
        if tk == task and a == attack}
  grid = sorted({r['eps'] for r in tr['records']
                 if r['task'] == task and r['attack'] == attack})
  return transfer_lib.TransferResult([], ex, np.asarray(grid), {})


def findings(config, tr) -> list[dict[str, Any]]:
  """Pooled transfer rates with 95% bootstrap intervals (module doc)."""
  out = []
  for task in config.tasks:
    kinds = {l: e.kind for l, e in config.tasks[task].models.items()}
    for attack in sorted({r['attack'] for r in tr['records']
                          if r['task'] == task}):
      res = _result(tr, task, attack)
      for group in stage.input_groups(config, task):
        by = {k: [l for l in group if kinds[l] == k]
              for k in study_config.KINDS}
        q = lambda ls: [f'{l}{stage.INT8}' for l in ls]  # pylint: disable=cell-var-from-loop
        cases = [('large', by['large'], by['tiny']),
                 ('tiny', by['tiny'], by['large']),
                 ('ensemble', ['ensemble[large]'], by['tiny']),
                 ('tiny ensemble', ['ensemble[tiny]'], by['large']),
                 ('large -> tiny int8', by['large'], q(by['tiny'])),
                 ('tiny -> large int8', by['tiny'], q(by['large']))]
        cases += [(f'own float -> int8 ({l})', [l], q([l])) for l in group]
        for eps_u in report_eps(config, task):
          eps = _unit(config, task).to_input(eps_u)
          for name, srcs, tgts in cases:
            srcs = [s for s in srcs if tgts and all(
                (s, t) in res.examples for t in tgts if t != s)]
            if not srcs or not tgts:
              continue
            f = transfer_lib.transfer_finding(
                res, sources=srcs, targets=tgts, eps=eps,
                seed=int(config.seed))
            f.update(task=task, attack=attack, case=name, eps_in_units=eps_u,
                     eps_units=config.tasks[task].eps_units)
            if _unit(config, task).relative:  # the attacks' eps is r
              f['statement'] = f['statement'].replace(', eps=', ', r=')
            f['text'] = (f'{task}, {attack.upper()}, eps={eps_u:g} '
                         f'{f["eps_units"]}: {f["statement"]}.')
            out.append(f)
  return out


def _best(config, records, *, task, target, eps_u, exclude
          ) -> dict[str, Any] | None:
  cands = [r for r in records if r['task'] == task and r['target'] == target
           and _at(config, r, eps_u) and r['crafted_on'] not in exclude
           and not r['crafted_on'].startswith('ensemble[')]
  return min(cands, key=lambda r: r['robust_accuracy'], default=None)


def _int8_columns(config, tr, task, label, eps_u) -> dict[str, Any]:
  """The model's int8 LiteRT export as a target: clean accuracy, robust
  accuracy on examples crafted on its own float model (PGD, else the
  strongest attack) and on the best other float model; {} without it."""
  t = f'{label}{stage.INT8}'
  recs = [r for r in tr['records'] if r['task'] == task and r['target'] == t
          and _at(config, r, eps_u)]
  if not recs:  # the columns stay when another model of the task has them
    return dict.fromkeys(('int8_clean', 'int8_from_own_float',
                          'int8_transfer_best')) if any(
                              r['task'] == task and r['target'].endswith(
                                  stage.INT8) for r in tr['records']) else {}
  own = [r['robust_accuracy'] for r in recs if r['crafted_on'] == label]
  best = _best(config, tr['records'], task=task, target=t, eps_u=eps_u,
               exclude=(label,))
  return {'int8_clean': recs[0]['clean_accuracy'],
          'int8_from_own_float': min(own) if own else None,
          'int8_transfer_best': best and best['robust_accuracy']}


def attacker_table(config, workdir: str, tr, un) -> list[dict[str, Any]]:
  """White-box vs transfer vs universal robust accuracy (module doc)."""
  rows = []
  acfg = attack_config_lib.attack_config(config)
  white_attack = 'pgd' if 'pgd' in acfg.attacks else acfg.attacks[0]
  for task in config.tasks:
    u = _unit(config, task)
    for label, entry in config.tasks[task].models.items():
      white = fileio.read_json(os.path.join(
          study_config.model_dir(workdir, task, label),
          'attack_results.json'))
      other = 'large' if entry.kind == 'tiny' else 'tiny'
      for eps_u in report_eps(config, task):
        eps = u.to_input(eps_u)
        per_eps = white['attacks'][white_attack]['per_eps']
        wb = [p['robust_accuracy'] for p in per_eps
              if np.isclose(p['eps'], eps)]
        best = _best(config, tr['records'], task=task, target=label,
                     eps_u=eps_u, exclude=(label,))
        ens = [r['robust_accuracy'] for r in tr['records']
               if r['task'] == task and r['target'] == label and
               r['crafted_on'] == f'ensemble[{other}]' and
               _at(config, r, eps_u)]
        own = [r['robust_accuracy'] for r in un['records']
               if r['task'] == task and r['target'] == label and
               r['crafted_on'] == label and _at(config, r, eps_u)]
        ubest = _best(config, un['records'], task=task, target=label,
                      eps_u=eps_u, exclude=(label,))
        rows.append({
            'task': task, 'model': label, 'kind': entry.kind, 'eps': eps_u,
            'eps_units': u.name, 'clean': white['clean_accuracy'],
            f'white_box_{white_attack}': wb[0] if wb else None,
            'transfer_best': best and best['robust_accuracy'],
            'transfer_best_source': best and
            f'{best["crafted_on"]} ({best["attack"]})',
            # both columns in every row (a table takes the first row's
            # keys); an ensemble holding the target itself is not transfer
            **{f'transfer_ensemble_{k}': (min(ens) if ens else None)
               if k == other else None for k in ('large', 'tiny')},
            'universal_own': own[0] if own else None,
            'universal_best_transfer': ubest and ubest['robust_accuracy'],
            'universal_best_source': ubest and ubest['crafted_on'],
            **_int8_columns(config, tr, task, label, eps_u)})
  return rows


def plot_heatmaps(config, tr, workdir: str) -> list[str]:
  """One figure per task and transfer attack: robust accuracy of each
  target (columns) on examples crafted on each source (rows), a panel per
  eps > 0; pairs across input groups are blank."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  paths = []
  fig_dir = os.path.join(workdir, 'figures')
  os.makedirs(fig_dir, exist_ok=True)
  for task in config.tasks:
    recs = [r for r in tr['records'] if r['task'] == task and r['eps'] > 0]
    for attack in sorted({r['attack'] for r in recs}):
      rs = [r for r in recs if r['attack'] == attack]
      srcs = list(dict.fromkeys(r['crafted_on'] for r in rs))
      tgts = _targets(config, task, rs)
      grid = sorted({r['eps'] for r in rs})
      fig, axes = plt.subplots(1, len(grid), squeeze=False, figsize=(
          1.2 + 0.75 * len(tgts) * len(grid), 1.0 + 0.45 * len(srcs)))
      for j, eps in enumerate(grid):
        m = np.full((len(srcs), len(tgts)), np.nan)
        for r in rs:
          if r['eps'] == eps:
            m[srcs.index(r['crafted_on']), tgts.index(r['target'])] = \
                r['robust_accuracy']
        ax = axes[0][j]
        ax.imshow(m, vmin=0, vmax=1, cmap='viridis')
        for (a, b), v in np.ndenumerate(m):
          if np.isfinite(v):
            ax.text(b, a, f'{v:.2f}', ha='center', va='center', fontsize=6,
                    color='w' if v < 0.5 else 'k')
        ax.set_xticks(range(len(tgts)), tgts, rotation=60, fontsize=6)
        ax.set_yticks(range(len(srcs)), srcs if j == 0 else [''] * len(srcs),
                      fontsize=6)
        ax.set_title(f'eps={_units(config, task, eps):g} '
                     f'{config.tasks[task].eps_units}', fontsize=7)
      fig.suptitle(f'{task}: {attack.upper()} robust accuracy of the target '
                   '(columns) on examples crafted on the source (rows)',
                   fontsize=8)
      fig.tight_layout()
      path = os.path.join(fig_dir, f'{task}_transfer_{attack}.png')
      fig.savefig(path, dpi=110)
      plt.close(fig)
      paths.append(path)
  return paths


def eps_table(config, workdir: str, un) -> list[dict[str, Any]]:
  """Per dB task and budget, eps both ways: r, the per-clip radius of the
  white-box and transfer attacks in waveform units (mean, min, max over the
  evaluated clips) and the universal perturbations' one radius."""
  acfg = attack_config_lib.attack_config(config)
  rows = []
  for task, tcfg in config.tasks.items():
    if not _unit(config, task).relative:
      continue
    first = next(iter(tcfg.models))
    white = fileio.read_json(os.path.join(
        study_config.model_dir(workdir, task, first), 'attack_results.json'))
    uni = {}
    for r in un['records']:
      if r['task'] == task:
        uni.setdefault(float(r['eps_in_units']), float(r['eps']))
    for row in signal_space.eps_both_ways(white, acfg.norm):
      rows.append({'task': task, 'eps_db': row['eps_db'], 'r': row['r'],
                   'norm': acfg.norm, 'radius_mean': row['mean'],
                   'radius_min': row['min'], 'radius_max': row['max'],
                   'universal_radius': uni.get(float(row['eps_db'])),
                   'units': 'waveform (full scale 1)'})
  return rows


def _csv_rows(config, records) -> list[dict[str, Any]]:
  keep = ('task', 'attack', 'crafted_on', 'target', 'white_box', 'eps',
          'clean_accuracy', 'robust_accuracy', 'consistency',
          'transfer_success_rate', 'num_examples', 'adv_nonfinite', 'seed')
  return [{**{k: r.get(k) for k in keep}, 'eps_in_units': _in_units(
      config, r), 'eps_units': config.tasks[r['task']].eps_units}
          for r in records]


def write(config, workdir: str, markdown_table) -> dict[str, Any] | None:
  """Writes the CSVs and figures; returns the report's transfer section
  (`markdown` lines, `figures`, `findings`, `diagonal`, `attacker_table`),
  or None when the config has no transfer/universal subsection.
  `markdown_table(rows)` renders a table (the report's)."""
  acfg = attack_config_lib.attack_config(config)
  if attack_config_lib.transfer_config(acfg) is None and \
      attack_config_lib.universal_config(acfg) is None:
    return None
  tr, un = collect(workdir, 'transfer'), collect(workdir, 'universal')
  fileio.write_csv(os.path.join(workdir, 'transfer.csv'),
               _csv_rows(config, tr['records']))
  fileio.write_csv(os.path.join(workdir, 'universal.csv'),
               _csv_rows(config, un['records']))
  table = attacker_table(config, workdir, tr, un)
  fileio.write_csv(os.path.join(workdir, 'attacker_table.csv'), table)
  found = findings(config, tr)
  diag = diagonal_check(config, workdir, tr)
  figs = plot_heatmaps(config, tr, workdir)
  ok = all(d['robust_equal'] and d['consistent_equal'] for d in diag)
  md = ['## The attacker without access: transfer and universal', '',
        'Findings (pooled over the (source, target) pairs of each input '
        'group; 95% paired bootstrap over test examples):', '']
  md += [f'- {f["text"]}' for f in found] or ['- (no pairs)']
  md += ['', f'Diagonal check: the white-box cells of the transfer matrix '
         f'equal the white-box stage per example on {len(diag)} '
         f'(model, attack) pairs: {"yes" if ok else "NO"}.', '',
         'White-box vs transfer vs universal robust accuracy '
         '(`attacker_table.csv`):', '', markdown_table(table)]
  for path in sorted(glob.glob(os.path.join(
      workdir, stage.TRANSFER_DIR, '*' + stage.INT8_ERRORS))):
    for label, err in sorted(fileio.read_json(path).items()):
      md += [f'- No int8 target for {os.path.basename(path).split("__")[0]}'
             f'/{label}: its int8 export failed ({err}).']
  both = eps_table(config, workdir, un)
  if both:
    fileio.write_csv(os.path.join(workdir, 'eps_db.csv'), both)
    md += ['', 'Eps both ways (`eps_db.csv`): each SNR budget in dB, the '
           'relative amplitude r = 10^(-dB/20) and the radius in waveform '
           'units it gives (per clip: rms(x) * r for L-inf, ||x||_2 * r '
           'for L2; mean, min and max over the evaluated clips; a universal '
           'perturbation has one radius, against the training clips\' mean '
           'energy):', '', markdown_table(both)]
  md += [f'![{os.path.basename(p)}](figures/{os.path.basename(p)})'
         for p in figs]
  md += ['', 'Universal perturbations (SGD-UAP, Shafahi et al. 2020; fitted '
         'on the training split, evaluated on the white-box test examples) '
         f'are in `{stage.UNIVERSAL_DIR}/*.npz` with their protocol.', '']
  return {'markdown': md, 'figures': figs, 'findings': found,
          'diagonal': diag, 'diagonal_equal': ok, 'attacker_table': table,
          'eps_db': both}
