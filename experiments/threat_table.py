r"""Issue 13 closing table: input vs signal space, float32 vs int8.

For DS-CNN on Speech Commands and ProtoNN, FastGRNN and TCN on AURITUS
(their `:quick` training configs on the shared data), PGD consistency and
robust accuracy at two eps values per space, for

* float32: white-box on the JAX model;
* int8-litert: the int8 TFLite flatbuffer in LiteRT, on the examples
  crafted on float32 (transfer);
* int8-fakequant: white-box on the fake-quantised JAX model
  (`tinyrobust.hardware.fakequant`);
* fakequant->litert: LiteRT on the examples crafted on the fake-quant model.

Eps: input space in each model's own input units (the configs' grids:
MFCC units for DS-CNN, train-std units for AURITUS); signal space in signal
units (waveform full scale: 0.001 = -60 dBFS and 0.01 = -40 dBFS; AURITUS
acc g, gyro eps x gyro_per_g deg/s, see `tinyrobust.data.auritus`). For
raw-window models the table also gives the input-space ball's size on the
acc channels in g (eps x mean acc train std) so the two spaces compare.

Command (trains missing runs first, ~20 min; then ~30-60 min of attacks on
a loaded 2-core CPU; results cached per model and space in --out):

  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.threat_table \
      --runs=/tmp/threat_runs --out=/tmp/threat_runs/table

Every number printed is read from the JSON files this script writes.
"""

from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags

from experiments import trained_runs
from tinyrobust import runs
from tinyrobust.attacks import config as attack_config_lib

_RUNS = flags.DEFINE_string('runs', '/tmp/threat_runs',
                            'Folder of the trained runs (one per model).')
_OUT = flags.DEFINE_string('out', '/tmp/threat_runs/table',
                           'Folder for the cached results and table.md.')
_MAX = flags.DEFINE_integer('max_examples', 200,
                            'Test examples per model (seeded subset).')
_STEPS = flags.DEFINE_integer('pgd_steps', 10, 'PGD steps.')
_ONLY = flags.DEFINE_list('only', [], 'Subset of the models to run.')

MODELS = {  # name -> (training config, signal eps, input eps)
    'dscnn': ('speech_commands_dscnn', (0.001, 0.01), (0.25, 1.0)),
    'protonn': ('auritus_protonn', (0.01, 0.05), (0.05, 0.2)),
    'fastgrnn': ('auritus_fastgrnn', (0.01, 0.05), (0.05, 0.2)),
    'tcn': ('auritus_tcn', (0.01, 0.05), (0.05, 0.2)),
}
PRECISIONS = ('float32', 'int8-litert', 'int8-fakequant')
COLUMNS = (('float32->float32', 'float32'),
           ('float32->int8-litert', 'int8-litert (from f32)'),
           ('int8-fakequant->int8-fakequant', 'int8-fakequant'),
           ('int8-fakequant->int8-litert', 'litert (from fakequant)'))


def _evaluate(model_name: str, space: str) -> dict:
  """One model and space, all precisions (cached in --out)."""
  path = os.path.join(_OUT.value, f'{model_name}_{space}.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  cfg_name, sig_eps, in_eps = MODELS[model_name]
  model, variables, config = runs.trained_run(
      trained_runs.trained(cfg_name, _RUNS.value))
  target = runs.attack_target(
      model, config, threat={'space': space, 'precisions': PRECISIONS})
  acfg = attack_config_lib.attack_config({'attack': {
      'attacks': ['pgd'], 'batch_size': 100, 'max_examples': _MAX.value,
      'pgd_steps': _STEPS.value,
      'eps_grid': [0.0] + list(sig_eps if space == 'signal' else in_eps)}})
  start = time.time()
  res = runs.deployed(model, variables, target, acfg, seed=0)
  prob = target.problem
  res.update(model=model_name, space=space, eps_units=prob.eps_units,
             info=prob.info, seconds=time.time() - start,
             acc_std_g=_acc_std(target.dataset))
  res.pop('rows')
  os.makedirs(_OUT.value, exist_ok=True)
  with open(path, 'w') as f:
    json.dump(res, f, indent=1, default=float)
  return res


def _acc_std(ds) -> float | None:
  """Mean acc train std (g) of standardised AURITUS raw windows."""
  meta = ds.meta or {}
  if meta.get('channels') != 'raw6' or 'train_std' not in meta:
    return None
  return sum(meta['train_std'][:3]) / 3.0


def table(results: list[dict]) -> str:
  """Markdown: one row per model, space and eps; consistency / robust."""
  head = ('| model | space | eps (units) | clean f32 / int8 | ' +
          ' | '.join(c for _, c in COLUMNS) + ' |')
  lines = [head, '|' + '---|' * (4 + len(COLUMNS))]
  for r in results:
    ev = r['evaluations']
    clean = (f'{ev["float32->float32"]["pgd"]["clean_accuracy"]:.3f} / '
             f'{ev["float32->int8-litert"]["pgd"]["clean_accuracy"]:.3f}')
    for i, eps in enumerate(r['eps_grid']):
      if eps == 0.0:
        continue
      unit = r['eps_units']
      if r['space'] == 'input' and r.get('acc_std_g'):
        unit += f' (= {eps * r["acc_std_g"]:.3g} g on acc)'
      cells = []
      for key, _ in COLUMNS:
        p = ev[key]['pgd']['per_eps'][i]
        cells.append(f'{p["consistency"]:.3f} / {p["robust_accuracy"]:.3f}')
      lines.append(f'| {r["model"]} | {r["space"]} | {eps:g} {unit} | '
                   f'{clean} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def footer(results: list[dict]) -> str:
  out = ['', 'Cells: consistency / robust accuracy (PGD, L-inf, '
         f'{_STEPS.value} steps, {results[0]["num_examples"]} seeded test '
         'examples per model; denominators: all of them).', '']
  for r in results:
    fq, tf = r.get('fakequant') or {}, r.get('tflm_check') or {}
    micro = (('TFLM == LiteRT int8 outputs on '
              f'{tf["samples"]} inputs' if tf.get('equal') else
              f'TFLM differs by {tf.get("max_abs_diff_int8_steps")} steps')
             if tf.get('ran') else 'TFLM: ' + tf.get('error', '?')[:90])
    out.append(
        f'- {r["model"]} {r["space"]}: fake-quant vs LiteRT top-1 agreement '
        f'{fq.get("agreement_litert_clean", float("nan")):.3f}, max logit '
        f'diff {fq.get("max_abs_diff_litert_steps", float("nan")):.1f} '
        f'output steps; {micro}; {r["seconds"]:.0f} s'
        + (f'; gyro_per_g {r["info"]["gyro_per_g"]:.3g}'
           if 'gyro_per_g' in r.get('info', {}) else ''))
  return '\n'.join(out)


def main(argv):
  del argv
  results = []
  for model_name in MODELS:
    if _ONLY.value and model_name not in _ONLY.value:
      continue
    for space in ('input', 'signal'):
      results.append(_evaluate(model_name, space))
      print(f'done {model_name} {space} ({results[-1]["seconds"]:.0f} s)',
            flush=True)
  text = table(results) + '\n' + footer(results)
  with open(os.path.join(_OUT.value, 'table.md'), 'w') as f:
    f.write(text + '\n')
  print(text)


if __name__ == '__main__':
  app.run(main)
