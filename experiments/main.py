"""Launcher: parses absl flags and calls one library entry point.

  python -m experiments.main --config=experiments/configs/digits_cnn.py \
      --workdir=/tmp/digits_cnn --mode=train
  python -m experiments.main --config=experiments/configs/digits_cnn.py:quick \
      --config.train.epochs=3 --workdir=/tmp/x

Modes: train, attack (evaluates a trained workdir over the config's eps grid),
profile (hardware cost of a trained workdir), search (robust MCU-aware NAS).
"""

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (path[:variant]); fields overridable with '
    '--config.<field>=<value>.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for all outputs.')
_MODE = flags.DEFINE_enum('mode', 'train',
                          ['train', 'attack', 'profile', 'search'],
                          'What to run.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  mode, workdir, config = _MODE.value, _WORKDIR.value, _CONFIG.value
  if mode == 'train':
    from tinyrobust import train  # pylint: disable=g-import-not-at-top
    if config is None:
      raise app.UsageError('--config is required for --mode=train.')
    train.train_and_evaluate(config, workdir)
  elif mode == 'attack':
    from tinyrobust import evaluate  # pylint: disable=g-import-not-at-top
    evaluate.evaluate_workdir(workdir, config)
  elif mode == 'profile':
    from tinyrobust import hardware  # pylint: disable=g-import-not-at-top
    hardware.profile_workdir(workdir, config)
  elif mode == 'search':
    from tinyrobust import nas  # pylint: disable=g-import-not-at-top
    if config is None:
      raise app.UsageError('--config is required for --mode=search.')
    nas.run_search(config, workdir)


if __name__ == '__main__':
  app.run(main)
