"""Launcher: parses absl flags and calls one run mode (`tinyrobust.modes`).

  python -m experiments.main --config=experiments/configs/train/digits_cnn.py \
      --workdir=/tmp/digits_cnn --mode=train
  python -m experiments.main --config=experiments/configs/train/digits_cnn.py:quick \
      --config.train.epochs=3 --workdir=/tmp/x

Modes: train, attack (evaluates a trained workdir over the config's eps grid),
profile (hardware cost of a trained workdir), search (robust MCU-aware NAS);
`tinyrobust.modes.names()` lists them all.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from tinyrobust import compile_cache
from tinyrobust import modes

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (path[:variant]); fields overridable with '
    '--config.<field>=<value>.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for all outputs.')
_MODE = flags.DEFINE_enum('mode', 'train', modes.names(), 'What to run.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  compile_cache.enable()
  modes.run(_MODE.value, _CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
