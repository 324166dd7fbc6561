"""A published robustness result: one JSON record per model, attack and eps.

RobustBench's model-info fields plus the MCU columns it lacks, so results
from different models, studies and machines compare directly. Schema
`tinyrobust.result/1` (every key present; unknown values are null):

    schema            "tinyrobust.result/1"
    model             {name, kwargs, params}
    dataset           {name, split, num_examples, protocol}
    threat_model      {norm: "linf"|"l2", eps: float >= 0, eps_units: str,
                       space: "input"|"signal", precision: "float32"|...}
    attack            {name, config, broken_by}: the attack, every
                      setting and, for a cascade (autoattack), the examples
                      each stage broke first ({'clean': ..., 'apgd-ce': ...});
                      broken_by is null for single attacks
    clean_accuracy    float in [0, 1]: pred(x) == y over num_examples
    robust_accuracy   float in [0, 1]: clean correct and pred(x_adv) == y
    consistency       float in [0, 1]: pred(x_adv) == pred(x) (the study's
                      "adversarial accuracy")
    flags             [str]: sanity flags of this attack and eps plus the
                      model-level ones (tinyrobust.sanity)
    mcu               {flash_int8_bytes, sram_tflm_int8_bytes, macs} from
                      the hardware profile, or null when none was run
    software          {tinyrobust, jax}: versions

`records(...)` builds them from `evaluate.evaluate_robustness` results;
`validate(record)` raises a ValueError naming the first bad field.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
from typing import Any, Mapping, Sequence

SCHEMA = 'tinyrobust.result/1'
KEYS = ('schema', 'model', 'dataset', 'threat_model', 'attack',
        'clean_accuracy', 'robust_accuracy', 'consistency', 'flags', 'mcu',
        'software')
SPACES = ('input', 'signal')
PRECISIONS = ('float32', 'int8-litert', 'int8-fakequant')

# Packages whose versions stamp every record, trial and report.
VERSIONED = ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'scikit-optimize',
             'scikit-learn', 'tensorflow-cpu', 'tensorflow', 'tflite-micro',
             'ray', 'tinyrobust')


def mcu_fields(profile: Mapping[str, Any] | None) -> dict[str, Any] | None:
  """Flash (int8 flatbuffer), SRAM (measured TFLM arena) and MACs."""
  if not profile:
    return None
  int8 = profile.get('int8') or {}
  return {'flash_int8_bytes': int8.get('flash'),
          'sram_tflm_int8_bytes': int8.get('tflm_arena'),
          'macs': profile.get('macs')}


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
  """Installed versions of the packages the numbers depend on (the one
  version stamp of records, search trials and study reports); packages
  that are not installed are left out."""
  out = {}
  for name in VERSIONED:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      continue
  return out


def _software() -> dict[str, str | None]:
  """A record's `software` field: {tinyrobust, jax} versions (None when
  not installed)."""
  versions = package_versions()
  return {name: versions.get(name) for name in ('tinyrobust', 'jax')}


def records(results: Mapping[str, Any], *, model: Mapping[str, Any],
            dataset: Mapping[str, Any], threat: Mapping[str, Any],
            profile: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
  """One record per (attack, eps) of an `evaluate_robustness` result.

  Args:
    results: the evaluator's dict.
    model: `{name, kwargs, params}`.
    dataset: `{name, split, protocol}` (num_examples is taken from results).
    threat: `{space, eps_units, precision}` (norm comes from each attack).
    profile: the hardware profile (`--mode=profile`), if any.
  """
  model_flags = [f['type'] for f in results.get('flags', ())
                 if 'attack' not in f]
  out = []
  for name, res in results['attacks'].items():
    cfg = dict(res.get('config') or {})
    for p in res['per_eps']:
      flags = [f['type'] for f in results.get('flags', ())
               if f.get('attack') == name and f.get('eps') in (None, p['eps'])]
      out.append({
          'schema': SCHEMA,
          'model': {k: model.get(k) for k in ('name', 'kwargs', 'params')},
          'dataset': {'name': dataset.get('name'),
                      'split': dataset.get('split'),
                      'num_examples': int(results['denominator']),
                      'protocol': dataset.get('protocol')},
          'threat_model': {'norm': cfg.get('norm', 'linf'),
                           'eps': float(p['eps']),
                           'eps_units': threat.get('eps_units'),
                           'space': threat.get('space', 'input'),
                           'precision': threat.get('precision', 'float32')},
          'attack': {'name': name, 'config': cfg,
                     'broken_by': p.get('broken_by')},
          'clean_accuracy': float(results['clean_accuracy']),
          'robust_accuracy': float(p['robust_accuracy']),
          'consistency': float(p['consistency']),
          'flags': sorted(set(flags + model_flags)),
          'mcu': mcu_fields(profile), 'software': _software(),
      })
  for r in out:
    validate(r)
  return out


def _rate(r, key):
  v = r[key]
  if not isinstance(v, float) or not 0.0 <= v <= 1.0 or math.isnan(v):
    raise ValueError(f'{key} must be a float in [0, 1], got {v!r}.')


def validate(record: Mapping[str, Any]) -> None:
  """Checks one record against the schema (module doc)."""
  missing = [k for k in KEYS if k not in record]
  if missing:
    raise ValueError(f'result record lacks {missing}.')
  if record['schema'] != SCHEMA:
    raise ValueError(f'schema must be {SCHEMA!r}, got {record["schema"]!r}.')
  for key in ('clean_accuracy', 'robust_accuracy', 'consistency'):
    _rate(record, key)
  if record['robust_accuracy'] > record['clean_accuracy'] + 1e-12:
    raise ValueError('robust_accuracy exceeds clean_accuracy: '
                     f'{record["robust_accuracy"]} > '
                     f'{record["clean_accuracy"]}.')
  t = record['threat_model']
  if t.get('norm') not in ('linf', 'l2'):
    raise ValueError(f"threat_model.norm must be 'linf' or 'l2', got "
                     f"{t.get('norm')!r}.")
  eps = t.get('eps')
  if not isinstance(eps, float) or not eps >= 0 or math.isinf(eps):
    raise ValueError(f'threat_model.eps must be a finite float >= 0, got '
                     f'{eps!r}.')
  if t.get('space') not in SPACES:
    raise ValueError(f'threat_model.space must be one of {SPACES}, got '
                     f'{t.get("space")!r}.')
  if t.get('precision') not in PRECISIONS:
    raise ValueError(f'threat_model.precision must be one of {PRECISIONS}, '
                     f'got {t.get("precision")!r}.')
  if not isinstance(record['flags'], Sequence) or isinstance(
      record['flags'], str):
    raise ValueError(f'flags must be a list, got {record["flags"]!r}.')
