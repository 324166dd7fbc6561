"""Gradient-evaluation accounting: what producing a model cost, counted.

One gradient evaluation is one forward and backward pass of one example
(a per-example weight or input gradient), the unit in which adversarial
training and attacks are usually compared (Shafahi et al. 2019, "free"
adversarial training). Counted from what a run stores (its `config.json`
and per-epoch `metrics.jsonl`), so a finished or resumed run is counted
the same:

* a training step of batch B costs `B * per_example(settings)`:
  1 (standard), 1 + steps (PGD-AT: the attack's steps plus the weight
  gradient), 2 + steps (TRADES: its loss back-propagates through both the
  clean and the adversarial pass), 2 (FGSM-RS);
* an adversarial run's epoch check adds `min(check_examples, n_val) *
  check_steps` per epoch;
* an attack stage on n examples costs `n * attack_cost(...)` per eps (FGSM 1,
  PGD steps x restarts), counted at its full budget: an upper bound, as the
  evaluation engine stops attacking points already broken.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from tinyrobust import adversarial
from tinyrobust import checkpoints
from tinyrobust import fileio


def per_example(settings: dict[str, Any]) -> int:
  """Gradient evaluations per training example of one optimizer step.

  Args:
    settings: a checked `train.adversarial` section
      (`adversarial.settings`).
  """
  method = settings['method']
  if method == 'none':
    return 1
  if method == 'pgd_at':
    return 1 + int(settings['steps'])
  if method == 'trades':
    return 2 + int(settings['steps'])
  if method == 'fgsm_rs':
    return 2
  raise ValueError(f'No gradient count for train.adversarial.method='
                   f'{method!r}. Valid: {", ".join(adversarial.METHODS)}.')


def training(workdir: str, n_train: int, n_val: int) -> dict[str, int]:
  """The gradient evaluations of the training run in `workdir`.

  Args:
    workdir: a training run's folder (`config.json`, `metrics.jsonl`).
    n_train: examples of its training split (the batch is
      `min(train.batch_size, n_train)`, as the trainer takes it).
    n_val: examples of its validation split (the epoch check's batch).

  Returns:
    {'steps', 'batch_size', 'per_example', 'train', 'check', 'total'}: the
    optimizer steps taken, the batch, evaluations per example, those of the
    steps, those of the epoch checks and their sum.

  Raises:
    ValueError: `workdir` holds no training run.
  """
  cfg_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(cfg_path):
    raise ValueError(f'{workdir!r} holds no training run ({cfg_path} is '
                     'missing).')
  config = ml_collections.ConfigDict(fileio.read_json(cfg_path))
  records = [r for r in fileio.read_jsonl(os.path.join(
      workdir, checkpoints.METRICS)) if 'epoch' in r and not r.get('final')]
  steps = int(records[-1]['step']) if records else 0
  batch = min(int(config.train.batch_size), int(n_train))
  s = adversarial.settings(config)
  k = per_example(s)
  check = 0
  if s['method'] != 'none':
    check = len(records) * min(int(s['check_examples']), int(n_val)) * int(
        s['check_steps'])
  return {'steps': steps, 'batch_size': batch, 'per_example': k,
          'train': steps * batch * k, 'check': check,
          'total': steps * batch * k + check}


def attack_cost(acfg) -> int | None:
  """Gradient evaluations per example and eps of the attacks of an attack
  section (resolved by `attacks.config.attack_config`): FGSM 1, PGD
  steps x restarts; None when an attack has no fixed count."""
  total = 0
  for name in acfg.attacks:
    if name == 'fgsm':
      total += 1
    elif name == 'pgd':
      total += int(acfg.pgd_steps) * int(acfg.get('pgd_restarts', 1))
    else:
      return None
  return total
