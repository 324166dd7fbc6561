"""The misuse sweep's tally: every case classified, counted per category.

    python -m tests.misuse.tally                 # every area
    python -m tests.misuse.tally cli concurrency # some areas

Prints one line per case (`area/name: category (expected) seconds detail`)
and then `clear N / unclear N / silent N / loss N / setup N of M` and the
cases whose category differs from their `Case.expect`. pytest runs the same
cases one by one (`tests/misuse/test_<area>.py`); this is the whole-table
view the issues quote ("before / after" counts).
"""

from __future__ import annotations

import collections
import importlib
import shutil
import sys
import tempfile

from tests.misuse import sweep

AREAS = ('adv_train', 'attacks', 'cli', 'concurrency', 'data', 'evaluation',
         'hardware', 'io', 'journals', 'models', 'search', 'targets',
         'transfer', 'workdirs')


def tally(areas=AREAS) -> collections.Counter:
  """Classifies every case of `areas`; prints the table; returns counts."""
  root = tempfile.mkdtemp(prefix='misuse_tally_')
  ctx = sweep.Ctx(root)
  counts: collections.Counter = collections.Counter()
  off = []
  try:
    for area in areas:
      module = importlib.import_module(f'tests.misuse.test_{area}')
      for case in module.CASES:
        kind, detail, dt = sweep.classify(case, ctx)
        counts[kind] += 1
        if kind != case.expect:
          off.append(f'{area}/{case.name}: {kind} (expected {case.expect})')
        print(f'{area}/{case.name}: {kind} ({case.expect}) {dt:.1f}s '
              f'{detail[:200]}', flush=True)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  total = sum(counts.values())
  print(' / '.join(f'{k} {counts[k]}' for k in sweep.CATEGORIES + ('setup',))
        + f' of {total}')
  for line in off:
    print('OFF', line)
  return counts


if __name__ == '__main__':
  tally(tuple(sys.argv[1:]) or AREAS)
