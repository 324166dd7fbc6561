"""Table 2, the paired verdicts, figures and report.md of a search study."""

from __future__ import annotations

import csv
import math
import os
from typing import Any, Sequence

import numpy as np

from tinyrobust import config_io
from tinyrobust import fileio
from tinyrobust.studies.search import definitions as ss


def _mean_std(values) -> tuple[float, float]:
  v = np.asarray([x for x in values if x is not None and math.isfinite(x)],
                 np.float64)
  if not v.size:
    return float('nan'), float('nan')
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def table2(rows) -> list[dict[str, Any]]:
  """Mean and standard deviation over seeds per (model, board, arm)."""
  keys = sorted({(r['model'], r['board'], r['arm']) for r in rows},
                key=lambda k: (k[0], k[1], ss.ARMS.index(k[2])))
  out = []
  for m, b, a in keys:
    group = [r for r in rows if (r['model'], r['board'], r['arm']) == (m, b,
                                                                       a)]
    row = {'model': m, 'board': b, 'arm': a, 'seeds': len(group)}
    for k in ss.METRICS:
      row[f'{k}_mean'], row[f'{k}_std'] = _mean_std([g[k] for g in group])
    trials = sum(g['trials'] for g in group)
    secs = sum(g['search_s'] for g in group)
    row['trials_per_hour'] = trials / secs * 3600 if trials and secs else None
    row['adversarial_share_mean'] = _mean_std(
        [g['adversarial_share'] for g in group])[0]
    out.append(row)
  return out


def _write_csv(path: str, rows: Sequence[dict[str, Any]]) -> None:
  if not rows:
    return
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)


def _fmt(v, digits=3) -> str:
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return '-'
  return f'{v:.{digits}g}' if isinstance(v, float) else str(v)


def _markdown(rows) -> str:
  cols = [('model', None), ('board', None), ('arm', None), ('seeds', None),
          ('test_accuracy', 1), ('test_fgsm_consistency', 1),
          ('test_fgsm_robust_accuracy', 1), ('test_pgd_consistency', 1),
          ('test_pgd_robust_accuracy', 1), ('flash_bytes', 0),
          ('sram_bytes', 0), ('flops', 0), ('search_s', 0),
          ('grad_evals', 0)]
  head = [c for c, _ in cols]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    cells = []
    for c, pct in cols:
      if pct is None:
        cells.append(str(r[c]))
      else:
        m, s = r[f'{c}_mean'], r[f'{c}_std']
        scale = 100.0 if pct else 1.0
        cells.append(f'{_fmt(m * scale, 4)} ± {_fmt(s * scale, 2)}')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _figure(rows, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  boards = sorted({r['board'] for r in rows})
  fig, axes = plt.subplots(1, len(boards), figsize=(4.5 * len(boards), 3.6),
                           squeeze=False)
  marks = {'handcrafted': 's', 'noadv': 'o', 'adv': '^', 'advtrain': 'D'}
  for ax, board in zip(axes[0], boards):
    for arm, mk in marks.items():
      pts = [(r['flash_bytes'] / 1024, 100 * r['test_fgsm_consistency'])
             for r in rows if r['board'] == board and r['arm'] == arm]
      if pts:
        ax.scatter(*zip(*pts), marker=mk, label=arm, alpha=0.8)
    ax.set_title(board)
    ax.set_xlabel('flash (KiB)')
    ax.set_ylabel('FGSM consistency (%)')
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write(config, workdir: str, rows) -> dict[str, Any]:
  """All artefacts from the per-run rows; returns the summary."""
  s = config.search_study
  t2 = table2(rows)
  pairs = ss.paired_differences(rows)
  v = ss.verdict(pairs, bootstrap=int(s.get('bootstrap', 1000)),
                 claim=float(s.get('claim_points', ss.CLAIM_POINTS)))
  verdicts = {'adv_vs_noadv': v}
  for name, arm, base, metric in ss.COMPARISONS[1:]:
    p = ss.paired_differences(rows, metric, arm=arm, baseline=base)
    verdicts[name] = ss.compare(p, arm=arm, baseline=base, metric=metric,
                                bootstrap=int(s.get('bootstrap', 1000)))
    pairs = pairs + p
  # One CSV row per pair: which difference, in points.
  flat = [{**{k: x for k, x in p.items() if not k.endswith('_points')},
           'difference': next(k for k in p if k.endswith('_points'))[:-7],
           'points': next(x for k, x in p.items() if k.endswith('_points'))}
          for p in pairs]
  _write_csv(os.path.join(workdir, 'table2.csv'), t2)
  _write_csv(os.path.join(workdir, 'runs.csv'), rows)
  _write_csv(os.path.join(workdir, 'pairs.csv'), flat)
  md = _markdown(t2)
  with open(os.path.join(workdir, 'table2.md'), 'w') as f:
    f.write(md + '\n')
  os.makedirs(os.path.join(workdir, 'figures'), exist_ok=True)
  _figure(rows, os.path.join(workdir, 'figures', 'fronts.png'))
  summary = {'verdict': v, 'verdicts': verdicts, 'table2': t2,
             'costs': costs(t2), 'pairs': pairs, 'runs': len(rows)}
  fileio.write_json(os.path.join(workdir, 'summary.json'), summary)
  with open(os.path.join(workdir, 'report.md'), 'w') as f:
    f.write(_report(config, t2, verdicts))
  for x in verdicts.values():
    print(x['text'])
  return summary


def costs(t2) -> list[dict[str, Any]]:
  """Each arm's total cost (mean per run over seeds): wall time and
  gradient evaluations, and both as multiples of `handcrafted`'s."""
  base = {(r['model'], r['board']): r for r in t2
          if r['arm'] == 'handcrafted'}
  out = []
  for r in t2:
    b = base.get((r['model'], r['board']))
    row = {'model': r['model'], 'board': r['board'], 'arm': r['arm'],
           'wall_s': r['search_s_mean'], 'grad_evals': r['grad_evals_mean']}
    for k, col in (('wall_s', 'search_s_mean'),
                   ('grad_evals', 'grad_evals_mean')):
      ok = b is not None and b[col] and math.isfinite(b[col])
      row[f'{k}_x_handcrafted'] = r[col] / b[col] if ok else float('nan')
    out.append(row)
  return out


def _cost_lines(t2) -> list[str]:
  lines = ['| model | board | arm | wall time (s) | x handcrafted | '
           'gradient evaluations | x handcrafted |', '|---|---|---|---|---|'
           '---|---|']
  for c in costs(t2):
    lines.append(f'| {c["model"]} | {c["board"]} | {c["arm"]} | '
                 f'{_fmt(c["wall_s"], 4)} | {_fmt(c["wall_s_x_handcrafted"])}'
                 f' | {_fmt(c["grad_evals"], 4)} | '
                 f'{_fmt(c["grad_evals_x_handcrafted"])} |')
  return lines


def _report(config, t2, verdicts) -> str:
  s = config.search_study
  share = [(r['model'], r['arm'], r['adversarial_share_mean'],
            r['trials_per_hour']) for r in t2
           if r['arm'] not in ss.TRAINED_ARMS]
  lines = [
      '# Search study: robust MCU-aware search (Table 2)', '',
      '## Verdicts (computed from the paired runs)', '',
      *[f'- {x["text"]}' for x in verdicts.values()], '',
      '## Table 2 (mean ± std over seeds; accuracies in %)', '',
      _markdown(t2), '',
      '## Total cost of each arm (search plus training; mean per run)', '',
      *_cost_lines(t2), '',
      '![fronts](figures/fronts.png)', '',
      '## Cost of the adversarial term', '',
      '| model | arm | adversarial share of a trial | trials per hour |',
      '|---|---|---|---|']
  lines += [f'| {m} | {a} | {_fmt(sh)} | {_fmt(tph)} |'
            for m, a, sh, tph in share]
  lines += [
      '', '## Protocol', '',
      f'- models {list(s.models)}, boards {list(s.boards)}, '
      f'{s.n_seeds} seeds (seed k: data split seed and search seed k), '
      f'arms {list(s.arms)}.',
      '- handcrafted: the zoo model with its training config\'s options, '
      'trained for the same epochs as a search\'s final model and tested '
      'with the same attacks and cost path.',
      '- FGSM consistency: pred(x_adv) == pred(x) on the test split at the '
      'search config\'s eps (the study\'s "adversarial accuracy"); robust '
      'accuracy: pred(x_adv) == label.',
      '- advtrain: the hand-set model trained with `train.adversarial` = '
      f'{config_io.to_dict(s.get("adv_train")) or {"method": "pgd_at"}} '
      '(eps: the search\'s attack eps unless set), same epochs as '
      'handcrafted; its best checkpoint is the epoch with the best PGD '
      'accuracy on a validation batch.',
      '- flash: TFLite flatbuffer bytes; SRAM: the TFLite-Micro arena; '
      'search_s: wall time of the run on this machine (training, search, '
      'test attacks and costs); grad_evals: per-example forward+backward '
      'passes of training (trials and final model) and of the search\'s '
      'validation attacks at full budget (tinyrobust.grad_evals).',
      '- verdicts: adv minus noadv FGSM consistency per (model, board, '
      'seed), mean and 95% bootstrap interval over the pairs; the same for '
      'adv minus advtrain (FGSM consistency and PGD robust accuracy).']
  return '\n'.join(lines) + '\n'
