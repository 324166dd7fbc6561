"""The one version stamp (`results.package_versions`): records, search
trials and study reports all read it."""

import importlib.metadata

from tinyrobust import results
from tinyrobust.nas import journal


def _one_record():
  res = {'attacks': {'fgsm': {'config': {'norm': 'linf'}, 'per_eps': [
      {'eps': 0.1, 'robust_accuracy': 0.5, 'consistency': 0.75}]}},
         'denominator': 4, 'clean_accuracy': 0.75, 'flags': []}
  return results.records(res, model={'name': 'mlp'},
                         dataset={'name': 'digits', 'split': 'test'},
                         threat={'eps_units': 'pixel'})


def test_package_versions_match_installed_metadata():
  v = results.package_versions()
  assert v['jax'] == importlib.metadata.version('jax')
  assert v['numpy'] == importlib.metadata.version('numpy')
  assert set(v) <= set(results.VERSIONED)
  for name in set(results.VERSIONED) - set(v):  # left out: not installed
    try:
      importlib.metadata.version(name)
      raise AssertionError(f'{name} is installed but not stamped')
    except importlib.metadata.PackageNotFoundError:
      pass


def test_every_stamp_reads_the_one_stamper():
  assert journal.package_versions is results.package_versions
  rec, = _one_record()
  v = results.package_versions()
  assert rec['software'] == {'tinyrobust': v.get('tinyrobust'),
                             'jax': importlib.metadata.version('jax')}
