"""Writing and printing an evaluation's results.

`write_results` stores `<name>.json` (everything) and `<name>.csv` (the
rows) in a run folder; `print_results` prints the table. The published
per-record schema is `tinyrobust.results`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from tinyrobust import fileio

RESULTS_NAME = 'attack_results'


def write_results(results: Mapping[str, Any], workdir: str,
                  name: str = RESULTS_NAME) -> tuple[str, str]:
  """Writes `<name>.json` (everything) and `<name>.csv` (the rows)."""
  json_path = os.path.join(workdir, name + '.json')
  csv_path = os.path.join(workdir, name + '.csv')
  fileio.write_json(json_path, results)
  fileio.write_csv(csv_path, results['rows'])
  return json_path, csv_path


def print_results(results: Mapping[str, Any], header: str) -> None:
  """The printed table of an evaluation (one line per attack and eps)."""
  print(header)
  for r in results['rows']:
    print(f'{r["attack"]:>5} eps={r["eps"]:.4f} clean={r["clean_accuracy"]:.4f}'
          f' robust={r["robust_accuracy"]:.4f} consistency='
          f'{r["consistency"]:.4f} {r["flags"] or ""}')
  for name, res in results['attacks'].items():
    for p in res['per_eps']:
      if p.get('broken_by'):
        print(f'{name} eps={p["eps"]:.4f} broken first by: ' + ', '.join(
            f'{s} {k}' for s, k in p['broken_by'].items()))
  print('sanity flags: ' + ('none' if results['sanity_ok'] else
                            str(results['flags'])))
