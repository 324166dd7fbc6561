r"""Issue 16 closing table: PGD-10 vs the AutoAttack cascade on tiny models.

For ResNet8 (CIFAR-10 subset), DS-CNN (Speech Commands), ProtoNN, Bonsai and
FastGRNN (AURITUS, participants held out), each trained with its `quick`
training config on the shared data: robust accuracy at two eps values in
the model's input space under FGSM, PGD-10 (fixed step, the study's attack)
and AutoAttack (version 'standard': APGD-CE, APGD-T, FAB-T, Square), the
points each cascade stage broke first, the sanity flags that fired, and
AutoAttack's cost as a multiple of PGD-10's (run time, compile apart, and
each stage's run seconds), all through the toolkit's scheduler (eps in
ascending order, each stage only on the points still robust).

Command (trains missing runs first; results cached per model in --out):

  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.autoattack_table \
      --runs=/tmp/threat_runs --out=/tmp/threat_runs/autoattack

The cascade's budget is a flag (`--steps`, `--targets`, `--queries`); the
standard version is 100 / 9 / 5000 (the default); the table states the
budget it ran with. Every number printed is read from the JSON files this
script writes.
"""

from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags

from experiments import trained_runs
from tinyrobust import cpu_devices
from tinyrobust import runs
from tinyrobust.attacks import config as attack_config_lib

_RUNS = flags.DEFINE_string('runs', '/tmp/threat_runs',
                            'Folder of the trained runs (one per model).')
_OUT = flags.DEFINE_string('out', '/tmp/threat_runs/autoattack',
                           'Folder for the cached results and table.md.')
_MAX = flags.DEFINE_integer('max_examples', 200,
                            'Test examples per model (seeded subset).')
_STEPS = flags.DEFINE_integer('steps', 100, 'APGD steps per stage.')
_TARGETS = flags.DEFINE_integer('targets', 9, 'APGD-T target classes.')
_QUERIES = flags.DEFINE_integer('queries', 5000, 'Square queries.')
_ONLY = flags.DEFINE_list('only', [], 'Subset of the models to run.')

MODELS = {  # name -> (training config, two eps in the model's input units)
    'resnet8': ('cifar10_resnet8', (2 / 255, 8 / 255)),
    'dscnn': ('speech_commands_dscnn', (0.25, 1.0)),
    'protonn': ('auritus_protonn', (0.05, 0.2)),
    'bonsai': ('auritus_bonsai', (0.05, 0.2)),
    'fastgrnn': ('auritus_fastgrnn', (0.05, 0.2)),
}
ATTACKS = ('fgsm', 'pgd', 'autoattack')


def _budget() -> dict[str, int]:
  return {'steps': _STEPS.value, 'n_target_classes': _TARGETS.value,
          'queries': _QUERIES.value}


def _evaluate(model_name: str) -> dict:
  """FGSM, PGD-10 and AutoAttack on one model (cached in --out)."""
  path = os.path.join(_OUT.value, f'{model_name}.json')
  if os.path.exists(path):
    with open(path) as f:
      cached = json.load(f)
    if cached.get('budget') == _budget():
      return cached
  cfg_name, eps = MODELS[model_name]
  model, variables, config = runs.trained_run(
      trained_runs.trained(cfg_name, _RUNS.value))
  target = runs.attack_target(model, config, threat={  # images: eps as a
      'space': 'input',                                # share of [0, 1]
      'eps_units': 'pixel' if config.data.name == 'cifar10' else ''})
  acfg = attack_config_lib.attack_config({'attack': {
      'attacks': list(ATTACKS), 'eps_grid': list(eps), 'batch_size': 100,
      'pgd_steps': 10, 'max_examples': _MAX.value,
      'options': {'autoattack': _budget()}}})
  start = time.time()
  prob = target.problem
  run = runs.robustness(prob.apply_fn, variables, (prob.x, prob.y), acfg,
                        seed=0, clip=prob.clip)
  res = run.results
  res.pop('rows')
  meta = target.dataset.meta
  res.update(model=model_name, eps_units=prob.eps_units, budget=_budget(),
             attack_seconds=run.seconds, timing=run.timing,
             seconds=time.time() - start,
             protocol=meta.get('protocol', '') if meta else '')
  os.makedirs(_OUT.value, exist_ok=True)
  with open(path, 'w') as f:
    json.dump(res, f, indent=1, default=float)
  return res


def table(results: list[dict]) -> str:
  """Markdown: one row per model and eps."""
  lines = ['| model | eps (units) | clean | FGSM | PGD-10 | AutoAttack | '
           'AA - PGD (points) | broken first by (APGD-CE / APGD-T / FAB-T / '
           'Square) | flags |', '|' + '---|' * 9]
  for r in results:
    att = r['attacks']
    for i, e in enumerate(r['eps_grid']):
      rob = {a: att[a]['per_eps'][i]['robust_accuracy'] for a in ATTACKS}
      by = att['autoattack']['per_eps'][i].get('broken_by') or {}
      fired = sorted({f['type'] for f in r['flags']
                      if f.get('eps') in (None, e)})
      unit = (f'{e * 255:g}/255 pixel' if r['eps_units'] == 'pixel'
              else f'{e:g} {r["eps_units"]}')
      lines.append(
          f'| {r["model"]} | {unit} | {r["clean_accuracy"]:.3f} | '
          f'{rob["fgsm"]:.3f} | {rob["pgd"]:.3f} | {rob["autoattack"]:.3f} |'
          f' {100 * (rob["autoattack"] - rob["pgd"]):+.1f} | '
          f'{by.get("apgd-ce", 0)} / {by.get("apgd-t", 0)} / '
          f'{by.get("fab-t", 0)} / {by.get("square", 0)} | '
          f'{", ".join(fired) or "none"} |')
  return '\n'.join(lines)


def _cost(r: dict) -> str:
  """AutoAttack's run time as a multiple of PGD-10's, compile apart."""
  t = r.get('timing') or {}
  aa, pgd = t.get('autoattack'), t.get('pgd')
  if not aa or not pgd:
    return 'no timing recorded'
  run = lambda c: sum(c['stage_seconds'].values())
  comp = lambda c: sum(c['compile_seconds'].values())
  stages = ', '.join(f'{k} {v:.1f} s' for k, v in aa['stage_seconds'].items())
  text = (f'AutoAttack run {run(aa):.1f} s = '
          f'{run(aa) / max(run(pgd), 1e-9):.1f}x PGD-10 ({run(pgd):.1f} s); '
          f'compile apart: AutoAttack {comp(aa):.1f} s, PGD-10 '
          f'{comp(pgd):.1f} s; stages: {stages}')
  if 'cpu_seconds' in aa and 'cpu_seconds' in pgd:
    cpu = lambda c: sum(c['cpu_seconds'].values())
    text += (f'; CPU time (compile included, unaffected by other processes):'
             f' AutoAttack {cpu(aa):.1f} s = '
             f'{cpu(aa) / max(cpu(pgd), 1e-9):.1f}x PGD-10 ({cpu(pgd):.1f} s)')
  return text


def footer(results: list[dict]) -> str:
  b = results[0]['budget']
  out = ['', f'Robust accuracy (clean correct and still correct under the '
         f'attack) over {results[0]["num_examples"]} seeded test examples per '
         'model (denominator: all of them); L-inf, input space; PGD-10: '
         'fixed step, 1 restart; AutoAttack version standard: APGD-CE, '
         f'APGD-T and FAB-T ({b["steps"]} steps; {b["n_target_classes"]} '
         f'targets), Square ({b["queries"]} queries). "broken first by": '
         'examples each stage broke that no earlier stage had. Evaluated by '
         'the scheduler: robust accuracy per eps is the per-example worst '
         'case over the eps up to it.', '']
  for r in results:
    out.append(f'- {r["model"]}: {_cost(r)}; {r["protocol"]}')
  return '\n'.join(out)


def main(argv):
  del argv
  cpu_devices.enable()  # one JAX device per core, before any JAX op
  results = []
  for model_name in MODELS:
    if _ONLY.value and model_name not in _ONLY.value:
      continue
    results.append(_evaluate(model_name))
    print(f'done {model_name} ({results[-1]["seconds"]:.0f} s)', flush=True)
  text = table(results) + '\n' + footer(results)
  with open(os.path.join(_OUT.value, 'table.md'), 'w') as f:
    f.write(text + '\n')
  print(text)


if __name__ == '__main__':
  app.run(main)
