"""Launcher: parses absl flags and calls one run mode (`tinyrobust.modes`).

  python -m experiments.main --config=experiments/configs/train/digits_cnn.py \
      --workdir=/tmp/digits_cnn --mode=train
  python -m experiments.main --config=experiments/configs/train/digits_cnn.py:quick \
      --config.train.epochs=3 --workdir=/tmp/x

Modes: train, attack (evaluates a trained workdir over the config's eps grid),
profile (hardware cost of a trained workdir), search (robust MCU-aware NAS);
`tinyrobust.modes.names()` lists them all.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from tinyrobust import compile_cache
from tinyrobust import cpu_devices
from tinyrobust import modes

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (path[:variant]); fields overridable with '
    '--config.<field>=<value>, each field at most once (a repeated '
    '--config.<field> is an error, never a concatenation of the values).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for all outputs; one run at a time (a '
    'second run on it fails naming the holder) and one mode (a workdir '
    'made by another --mode is refused; attack and profile read a '
    'training run).')
_MODE = flags.DEFINE_enum('mode', 'train', modes.names(), 'What to run.')
_RESTART = flags.DEFINE_bool(
    'restart', False, '--mode=train only: start the run over, moving its '
    'metrics.jsonl, checkpoints, final_metrics.json, config.json and the '
    'attack/profile results (attack_results.json/.csv, results.jsonl, '
    'profile.json) aside into <workdir>/replaced_<time>/ (e.g. when '
    'latest.ckpt was deleted).')
flags.mark_flags_as_required(['workdir'])


def repeated_overrides(args) -> list[str]:
  """The `--config.<field>` names given more than once in `args`."""
  seen, repeated = set(), []
  for a in args:
    if a == '--':
      break
    if a.startswith('-') and a.lstrip('-').startswith('config.'):
      name = a.lstrip('-').split('=', 1)[0]
      if name in seen and name not in repeated:
        repeated.append(name)
      seen.add(name)
  return repeated


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  repeated = repeated_overrides(sys.argv[1:])
  if repeated:
    raise app.UsageError(
        'Each --config.<field> may be given once; repeated: ' + ', '.join(
            f'--{n}' for n in repeated) + ' (ml_collections would '
        'concatenate tuple values). Keep the one value you mean.')
  cpu_devices.enable()  # before the first JAX operation
  compile_cache.enable()
  modes.run(_MODE.value, _CONFIG.value, _WORKDIR.value,
            restart=_RESTART.value)


if __name__ == '__main__':
  app.run(main)
