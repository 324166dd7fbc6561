"""Prints per-split sizes, shapes and class balance of the real datasets.

    TINYROBUST_DATA_DIR=/path/to/shared/data python -m tinyrobust.data.report

Each dataset is loaded with its default options (plus any listed in
`DEFAULTS`); membership (speakers / participants) is summarised as counts.
"""

from __future__ import annotations

import sys

from tinyrobust import data

DEFAULTS = (
    ('cifar10', {}),
    ('speech_commands', {}),
    ('auritus', {}),
    ('auritus', dict(rate_hz=None, split_by='window', val_fraction=0.1,
                     test_fraction=0.1)),
)


def split_summary(name: str, split: str, **options) -> str:
  """One line: size, shape, input range, members and per-class counts."""
  ds = data.load(name, split, **options)
  members = ''
  for key in ('speakers', 'participants'):
    if ds.meta.get(key) is not None:
      members = f' {key}={len(ds.meta[key])}'
  counts = ' '.join(f'{k}:{v}' for k, v in ds.class_counts().items())
  return (f'{name}/{split}: n={len(ds)} shape={ds.input_shape} '
          f'input_range={ds.input_range}{members} | {counts}')


def main(argv=None) -> int:
  del argv
  for name, options in DEFAULTS:
    print(f'== {name} {options or "(defaults)"}')
    for split in ('train', 'val', 'test'):
      print(split_summary(name, split, **options))
    sys.stdout.flush()
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
