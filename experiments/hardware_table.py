r"""Hardware table of the model zoo: analytic vs measured MCU cost.

  python -m experiments.hardware_table --output=/tmp/tinyrobust/hardware.md
  python -m experiments.hardware_table --models=resnet8,dscnn,tcn

For every registered model (aliases skipped) at its default size and
`example_input_shape()`, with randomly initialised weights (memory and size do
not depend on training; int8 is calibrated on synthetic inputs), prints a
markdown table: params, MACs, flatbuffer size (flash) float32/int8,
`sram_study`, `sram_liveness` (TFLM planner replayed on the exported graph +
persistent estimate), the measured TFLite-Micro arena, the relative error of
each estimate against it (also of `sram_liveness_jaxpr`, the same prediction
from the jaxpr alone) and which boards the int8 model fits.
Runtime: ~1-2 min per model on a 2-core CPU (mcunet variants: several).
A JSON dump of all profiles goes next to the markdown output.
"""

from __future__ import annotations

import os
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust import hardware
from tinyrobust import fileio
from tinyrobust import models

_MODELS = flags.DEFINE_list('models', None, 'Model names (default: all).')
_OUTPUT = flags.DEFINE_string('output', None, 'Write the markdown table here.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 10, 'Classifier outputs.')
_FALLBACK_SHAPES = {'cnn': (32, 32, 3), 'mlp': (100, 6)}


def _input_shape(name, model):
  if hasattr(model, 'example_input_shape'):
    return tuple(model.example_input_shape())
  return _FALLBACK_SHAPES.get(name, (32, 32, 3))


def _kb(n):
  return f'{n / 1024:.1f}'


def _pct(e):
  return 'n/a' if e is None else f'{100 * e:+.0f}%'


def _arena(sec):
  return _kb(sec['tflm_arena']) if 'tflm_arena' in sec else 'n/a'


def profile_model(name: str, num_classes: int) -> dict:
  model = models.get_model(name, num_classes)
  shape = _input_shape(name, model)
  v = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1,) + shape))
  rng = np.random.default_rng(0)
  if getattr(model, 'input_kind', '') == 'image' or name == 'cnn':
    rep = rng.uniform(0, 1, (64,) + shape)
  else:
    rep = rng.standard_normal((64,) + shape)
  p = hardware.profile(model, v, shape, representative_data=rep)
  p['model'] = name
  return p


def markdown(profiles) -> str:
  head = ('| model | input | params | MACs | flash f32 / int8 (kB) | '
          'sram_study f32 / int8 (kB) | sram_liveness f32 / int8 (kB) | '
          'TFLM arena f32 / int8 (kB) | study err f32 / int8 | '
          'liveness err f32 / int8 | jaxpr-only liveness err f32 / int8 | '
          'fits (int8) |')
  lines = [head, '|' + '---|' * 12]
  for p in profiles:
    f, i = p['float32'], p['int8']
    fits = [b for b, r in p['boards'].items() if r['int8']['fits']]
    lines.append(
        f"| {p['model']} | {'x'.join(map(str, p['input_shape']))} | "
        f"{p['params']:,} | {p['macs']:,} | "
        f"{_kb(f['flash'])} / {_kb(i['flash'])} | "
        f"{_kb(f['sram_study'])} / {_kb(i['sram_study'])} | "
        f"{_kb(f['sram_liveness'])} / {_kb(i['sram_liveness'])} | "
        f"{_arena(f)} / {_arena(i)} | "
        f"{_pct(f.get('sram_study_error'))} / "
        f"{_pct(i.get('sram_study_error'))} | "
        f"{_pct(f.get('sram_liveness_error'))} / "
        f"{_pct(i.get('sram_liveness_error'))} | "
        f"{_pct(f.get('sram_liveness_jaxpr_error'))} / "
        f"{_pct(i.get('sram_liveness_jaxpr_error'))} | "
        f"{', '.join(fits) or 'none'} |")
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  names = _MODELS.value or models.list_models()
  seen, profiles = set(), []
  for name in names:
    key = repr(models.get_model(name, _NUM_CLASSES.value))
    if key in seen:
      continue  # an alias of a model already profiled
    seen.add(key)
    t = time.time()
    profiles.append(profile_model(name, _NUM_CLASSES.value))
    print(f'{name}: {time.time() - t:.0f}s', flush=True)
  table = markdown(profiles)
  notes = [f"- {p['model']}: {n}" for p in profiles for n in p['notes']]
  if notes:
    table += '\nNotes:\n' + '\n'.join(notes) + '\n'
  print(table)
  if _OUTPUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
    with open(_OUTPUT.value, 'w') as f:
      f.write(table)
    fileio.write_json(os.path.splitext(_OUTPUT.value)[0] + '.json', profiles)


if __name__ == '__main__':
  app.run(main)
