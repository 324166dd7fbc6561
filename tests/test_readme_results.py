"""The README's generated results block: one subsection per study workdir."""

import json
import os

from experiments import readme_results

README = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'README.md')


def _block(text):
  return text.split(readme_results.BEGIN, 1)[1].split(readme_results.END)[0]


def _study(root, name, accuracy):
  wd = os.path.join(root, name)
  run = os.path.join(wd, 'models', 'image__resnet8')
  os.makedirs(run)
  cfg = {'seed': 0, 'attack': {'attacks': ['fgsm'], 'norm': 'linf',
                               'pgd_steps': 10, 'pgd_restarts': 1},
         'tasks': {'image': {'models': {'resnet8': {}}, 'eps_units':
                             'pixel/255', 'eps_grid': [0.0, 2.0]}}}
  summary = {'findings': [{'text': f'image: finding {accuracy}'}],
             'gap': [], 'figures': [],
             'table1': [{'task': 'image', 'model': 'resnet8',
                         'test_accuracy': accuracy}]}
  for path, obj in (('study_config.json', cfg), ('summary.json', summary),
                    ('models/image__resnet8/attack_results.json',
                     {'protocol': 'test split', 'num_examples': 7})):
    with open(os.path.join(wd, path), 'w') as f:
      json.dump(obj, f)
  return wd


def test_the_readme_block_parses_into_its_studies_and_round_trips():
  old = _block(open(README).read())
  parts = readme_results.subsections(old)
  assert parts and all(p.startswith(f'**{n}** (tasks: ')
                       for n, p in parts.items())
  rebuilt = readme_results.section([], '/nonexistent', old)
  assert rebuilt == readme_results.BEGIN + old + readme_results.END


def test_a_given_study_replaces_its_namesake_and_keeps_the_others(tmp_path):
  old = _block(open(README).read())
  # (the README's own study_image, if any, is the namesake replaced)
  kept = [n for n in readme_results.subsections(old) if n != 'study_image']
  fig = str(tmp_path / 'fig')
  first = readme_results.section(
      [_study(tmp_path / 'a', 'study_image', 0.25)], fig, old)
  parts = readme_results.subsections(_block(first + '\n'))
  assert list(parts) == kept + ['study_image']
  assert 'finding 0.25' in parts['study_image']
  assert '7 seeded test examples' in parts['study_image']
  again = readme_results.section(
      [_study(tmp_path / 'b', 'study_image', 0.5)], fig, _block(first))
  parts = readme_results.subsections(_block(again))
  assert list(parts) == kept + ['study_image']  # replaced in place
  assert 'finding 0.5' in parts['study_image']
  assert 'finding 0.25' not in again
  for name in kept:  # untouched, byte for byte
    assert parts[name] == readme_results.subsections(old)[name]
  only = readme_results.section(
      [_study(tmp_path / 'c', 'study_image', 0.5)], fig, '')
  assert list(readme_results.subsections(_block(only))) == ['study_image']
