"""The study's artefacts: CSV/markdown tables, figures and `report.md`.

Everything here is generated from the stored numbers (`tables.py`); no
figure or finding is typed by hand.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np

from tinyrobust import config_io
from tinyrobust import fileio
from tinyrobust import results as results_lib
from tinyrobust.attacks import config as attack_config_lib
from tinyrobust.studies.robustness import config as study_config
from tinyrobust.studies.robustness import defended
from tinyrobust.studies.robustness import tables
from tinyrobust.studies.robustness import transfer_report

METRIC_LABELS = {'consistency': 'consistency (study: adversarial accuracy)',
                 'robust_accuracy': 'robust accuracy'}


def markdown_table(rows: list[dict[str, Any]], fields=None) -> str:
  """A GitHub markdown table of `rows` (floats to 4 significant digits)."""
  if not rows:
    return '(no rows)\n'
  fields = fields or list(rows[0])

  def fmt(v):
    if isinstance(v, float):
      return f'{v:.4g}'
    return '' if v is None else str(v)

  lines = ['| ' + ' | '.join(fields) + ' |',
           '|' + '---|' * len(fields)]
  lines += ['| ' + ' | '.join(fmt(r.get(f)) for f in fields) + ' |'
            for r in rows]
  return '\n'.join(lines) + '\n'


def _plt():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_curves(curve_rows, task: str, units: str, path: str) -> None:
  """Per-model curves (Figure 1 a-f): attacks x metrics panels."""
  plt = _plt()
  rows = [r for r in curve_rows if r['task'] == task]
  attacks = sorted({r['attack'] for r in rows})
  fig, axes = plt.subplots(len(tables.METRICS), len(attacks),
                           figsize=(5 * len(attacks), 7), squeeze=False)
  for j, attack in enumerate(attacks):
    for i, metric in enumerate(tables.METRICS):
      ax = axes[i][j]
      for model in sorted({r['model'] for r in rows}):
        pts = [r for r in rows if r['model'] == model and r['attack'] == attack]
        kind = pts[0]['kind']
        ax.plot([p['eps'] for p in pts], [p[metric] for p in pts],
                marker='o', ls='-' if kind == 'large' else '--',
                label=f'{model} ({kind})')
      ax.set_title(f'{task}: {attack.upper()}')
      ax.set_xlabel(f'eps ({units})')
      ax.set_ylabel(METRIC_LABELS[metric])
      ax.set_ylim(-0.02, 1.02)
      ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_tiny_vs_large(curve_rows, task: str, units: str, path: str) -> None:
  """Mean consistency of tiny vs large models with a min-max band (g, h)."""
  plt = _plt()
  rows = [r for r in curve_rows if r['task'] == task]
  attacks = sorted({r['attack'] for r in rows})
  fig, axes = plt.subplots(1, len(attacks), figsize=(5 * len(attacks), 3.6),
                           squeeze=False)
  for j, attack in enumerate(attacks):
    ax = axes[0][j]
    for kind, color in (('tiny', 'tab:red'), ('large', 'tab:blue')):
      pts = [r for r in rows if r['kind'] == kind and r['attack'] == attack]
      eps = sorted({p['eps'] for p in pts})
      vals = np.array([[p['consistency'] for p in pts if p['eps'] == e]
                       for e in eps])
      ax.plot(eps, vals.mean(1), color=color, marker='o', label=kind)
      ax.fill_between(eps, vals.min(1), vals.max(1), color=color, alpha=0.2)
    ax.set_title(f'{task}: {attack.upper()}, mean and range over models')
    ax.set_xlabel(f'eps ({units})')
    ax.set_ylabel(METRIC_LABELS['consistency'])
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_params(t1_rows, curve_rows, path: str) -> None:
  """Parameters vs mean adversarial accuracy over eps > 0 (i)."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for r in t1_rows:
    pts = [c['consistency'] for c in curve_rows if c['model'] == r['model']
           and c['task'] == r['task'] and c['eps'] > 0]
    if r['params'] and pts:
      ax.scatter(r['params'], np.mean(pts), marker='o' if r['kind'] == 'tiny'
                 else 's', c='tab:red' if r['kind'] == 'tiny' else 'tab:blue')
      ax.annotate(f'{r["task"]}/{r["model"]}', (r['params'], np.mean(pts)),
                  fontsize=6, xytext=(3, 3), textcoords='offset points')
  ax.set_xscale('log')
  ax.set_xlabel('parameters (incl. batch-norm statistics)')
  ax.set_ylabel('mean consistency over eps > 0, all attacks')
  ax.set_title('red: TinyML, blue: large')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _figures(config, workdir, t1, curve_rows) -> list[str]:
  fig_dir = os.path.join(workdir, 'figures')
  os.makedirs(fig_dir, exist_ok=True)
  paths = []
  for task, tcfg in config.tasks.items():
    for name, fn in (('curves', plot_curves), ('tiny_vs_large',
                                               plot_tiny_vs_large)):
      p = os.path.join(fig_dir, f'{task}_{name}.png')
      fn(curve_rows, task, tcfg.eps_units, p)
      paths.append(p)
  p = os.path.join(fig_dir, 'params_vs_consistency.png')
  plot_params(t1, curve_rows, p)
  return paths + [p]


def _source(src) -> str:
  """A trained-elsewhere model's protocol note ('' for one trained here)."""
  if not src:
    return ''
  return (f'; trained elsewhere, not by this study: {src["kind"]} '
          f'{src["path"]} (sha256 {src["sha256"]}), evaluated and profiled '
          'as given')


def _protocol(config, results, outcomes) -> str:
  lines = []
  acfg = attack_config_lib.attack_config(config)
  for task, tcfg in config.tasks.items():
    u = study_config.unit(task, tcfg.eps_units)
    lines.append(f'- **{task}**: eps grid {list(tcfg.eps_grid)} in '
                 f'`{u.name}` ({u.meaning}; ' + (
                     'the attacks read r = 10^(-dB/20)' if u.relative else
                     f'x{u.scale:g} to input units') + (
                         '; perturbation on the sensor signal in front of '
                         'each model\'s front-end' if study_config.space(
                             tcfg) == 'signal' else '') + ').')
    for label in tcfg.models:
      r = results[(task, label)]
      lines.append(
          f'  - {label}: {r["final"]["dataset"]}, '
          f'{r["attack"]["denominator"]} test examples; split: '
          f'{r["attack"].get("protocol") or r["final"].get("protocol")}'
          + _source(r['final'].get('source')))
  lines.append(
      f'- Attacks: {list(acfg.attacks)}, norm {acfg.norm}, loss {acfg.loss}, '
      f'PGD {acfg.pgd_steps} steps x {acfg.pgd_restarts} restart(s) with '
      'random start and step 2.5*eps/steps; inputs clipped to the data '
      'range where it has one; models in eval mode.')
  for name, opts in sorted(config_io.to_dict(acfg.get('options')).items()):
    if opts:  # e.g. the AutoAttack budget (version, steps, targets, queries)
      lines.append(f'  - {name}: ' + ', '.join(
          f'{k} {v}' for k, v in sorted(opts.items())) + '.')
  lines.append(
      '- Evaluation engine: per attack, eps in ascending order, each stage '
      'only on the points still robust; an adversarial example found at a '
      'smaller eps counts at every larger eps, so each number is the '
      'per-example worst case over the attack at all eps up to that one '
      '(AutoAttack: clean errors are done before any stage).')
  lines.append(
      '- Metrics: clean accuracy = pred(x) == y; robust accuracy = pred(x) '
      '== y and pred(x_adv) == y (clean errors count as non-robust); '
      'consistency (the study\'s "adversarial accuracy") = pred(x_adv) == '
      'pred(x). Denominator: all test examples of the model\'s split.')
  lines.append(f'- Seed {config.seed}; gap intervals: percentile bootstrap '
               f'over test examples, {config.study.bootstrap} resamples.')
  versions = sorted(results_lib.package_versions().items())
  lines.append(f'- Versions: python {platform.python_version()}, ' + ', '.join(
      f'{k} {v}' for k, v in versions) + '.')
  lines.append('- Wall time per stage this run (s; cached stages are ~0): ' +
               '; '.join(f'{t}/{l}: ' + ', '.join(
                   f'{k[:-2]} {v:.1f}' for k, v in o['timings'].items())
                         for (t, l), o in outcomes.items()) + '.')
  return '\n'.join(lines)


def write_report(config, workdir: str, outcomes) -> dict[str, Any]:
  """Writes table1/gap/curves CSV, figures/ and report.md; returns summary."""
  results = {(t, l): tables.load_model_results(workdir, t, l)
             for t, l, _ in study_config.entries(config)}
  t1 = defended.annotate_table1(config, workdir,
                                tables.table1(config, results))
  curve_rows = defended.mark_curves(config, tables.curves(config, results))
  gap_rows = tables.gap(defended.standard(config), results,
                        n_boot=int(config.study.bootstrap),
                        seed=int(config.seed))
  found = tables.findings(gap_rows)
  notes = tables.caveats(defended.standard_rows(t1), found)
  for name, rows in (('table1', t1), ('gap', gap_rows),
                     ('curves', curve_rows)):
    fileio.write_csv(os.path.join(workdir, f'{name}.csv'), rows)
  figs = _figures(config, workdir, t1, curve_rows)
  md = ['# Robustness study: TinyML vs large models', '',
        '## Findings (computed from the tables below)', '']
  md += [f'- {f["text"]}' for f in found]
  md += [f'- Caveat: {n}' for n in notes]
  md += ['', '## Table 1', '', markdown_table(t1), '## Robustness gap '
         '(large - tiny, mean over eps > 0, percentage points)', '',
         markdown_table(gap_rows), '## Figures', '']
  md += [f'![{os.path.basename(p)}](figures/{os.path.basename(p)})'
         for p in figs]
  adv_md, adv = defended.section(config, workdir, results, markdown_table)
  md += [''] + adv_md if adv_md else []  # issue 26: adversarial training
  extra = transfer_report.write(config, workdir, markdown_table)
  if extra:  # issue 25: the attacker without access to the target
    md += [''] + extra['markdown']
    figs = figs + extra['figures']
  md += ['', '## Protocol', '', _protocol(config, results, outcomes), '']
  path = os.path.join(workdir, 'report.md')
  with open(path, 'w') as f:
    f.write('\n'.join(md))
  summary = {'table1': t1, 'gap': gap_rows, 'findings': found,
             'caveats': notes, 'transfer': extra, 'adv_train': adv,
             'figures': figs, 'report': path,
             'timings': {f'{t}/{l}': o['timings']
                         for (t, l), o in outcomes.items()}}
  fileio.write_json(os.path.join(workdir, 'summary.json'), summary)
  print(f'[study] report: {path}', flush=True)
  for f in found + ((extra or {}).get('findings') or []) + (
      adv.get('findings') or []):
    print(f'[study] {f["text"]}', flush=True)
  return summary
