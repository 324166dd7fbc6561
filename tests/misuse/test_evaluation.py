"""Misuse sweep, evaluation: the evaluator (`evaluate_robustness`): attacks,
eps grids, batch sizes, datasets, and results that must carry a sanity flag.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.misuse import sweep

Case, pkg = sweep.Case, sweep.pkg


def _nan_logits(ctx):
  apply = ctx.mlp()[2]
  res = ctx.evaluate(lambda v, x: apply(v, x) * jnp.nan)
  return sweep.flagged(res, 'NaN logits')


def _three_outputs(ctx):
  models = pkg('tinyrobust.models')
  m = models.get_model('mlp', 3, hidden=(8,))
  v = m.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  ds = ctx.digits()
  sub = dataclasses.replace(ds, x=ds.x[:40], y=ds.y[:40]) if \
      dataclasses.is_dataclass(ds) else ds
  res = ctx.evaluate(functools.partial(m.apply, train=False), sub,
                     variables=v)
  return sweep.flagged(res, '3-output model on 10 classes')


def _labels_beyond_dataset(ctx):
  x, y = ctx.xy()
  return ctx.evaluate(dataset=(x, np.full_like(y, 12)))


def _nan_input(ctx):
  x, y = ctx.xy()
  x = x.copy()
  x[0, 0, 0, 0] = float('inf')
  return ctx.evaluate(dataset=(x, y))


def _evaluation_cases() -> list[Case]:
  g = 'evaluation'
  x40 = lambda c: c.xy()[0]
  return [
      Case('attacks_string', g, lambda c: c.evaluate(attacks='fgsm'),
           ("'fgsm'",)),
      Case('attacks_unknown', g, lambda c: c.evaluate(attacks=['cw']),
           ("'cw'",)),
      Case('attacks_dict_not_callable', g, lambda c: c.evaluate(
          attacks={'mine': 3}), ('mine',)),
      Case('eps_grid_strings', g, lambda c: c.evaluate(eps_grid=['0', 'a']),
           ("'a'",)),
      Case('eps_grid_empty', g, lambda c: c.evaluate(eps_grid=[]),
           ('eps_grid',)),
      Case('eps_grid_negative', g, lambda c: c.evaluate(eps_grid=[0.0, -0.1]),
           ('-0.1',)),
      Case('eps_grid_nan', g, lambda c: c.evaluate(eps_grid=[float('nan')]),
           ('nan',)),
      Case('batch_size_zero', g, lambda c: c.evaluate(batch_size=0),
           ('batch_size',)),
      Case('batch_size_fraction', g, lambda c: c.evaluate(batch_size=2.5),
           ('2.5',)),
      Case('seed_string', g, lambda c: c.evaluate(seed='x'), ("'x'",)),
      Case('max_examples_negative', g, lambda c: c.evaluate(max_examples=-5),
           ('-5',)),
      Case('labels_beyond_classes', g, _labels_beyond_dataset, ('12',)),
      Case('x_y_length_mismatch', g, lambda c: c.evaluate(
          dataset=(x40(c), c.xy()[1][:30])), ('30',)),
      Case('input_inf', g, _nan_input, ('inf',)),
      Case('empty_dataset', g, lambda c: c.evaluate(
          dataset=(x40(c)[:0], c.xy()[1][:0])), ('empty',)),
      Case('clip_string', g, lambda c: c.evaluate(clip='bad'), ("'bad'",)),
      Case('norm_unknown', g, lambda c: c.evaluate(norm='l1'), ("'l1'",)),
      Case('apply_fn_vector', g, lambda c: c.evaluate(
          lambda v, x: c.mlp()[2](v, x)[:, 0]), ('[B, K]',)),
      Case('dataset_not_pair', g, lambda c: c.evaluate(
          dataset=np.zeros((4, 8, 8, 1))), ('dataset',)),
      Case('nan_logits', g, _nan_logits),
      Case('three_output_model_10_class_data', g, _three_outputs, ('3',)),
      Case('bucket_growth_below_one', g, lambda c: _evaluator(growth=0.5),
           ('0.5', "'auto'")),
      Case('bucket_growth_string', g, lambda c: _evaluator(growth='fine'),
           ("'fine'", "'auto'")),
      Case('step_loop_unknown', g, lambda c: _evaluator(step_loop='rolled'),
           ("'rolled'", "'auto'", "'fori'")),
      Case('auto_loop_unknown', g, _auto_as_unroll, ("'unroll'", "'fori'")),
      Case('retire_not_bool', g, lambda c: _evaluator(retire='yes'),
           ("'yes'", 'bool')),
      Case('retire_size_zero', g, _retire_zero, ('0', 'int >= 1')),
  ]


def _retire_zero(ctx):
  with pkg('tinyrobust.attacks.loops').retire_as(0):
    pass


def _auto_as_unroll(ctx):
  with pkg('tinyrobust.attacks.loops').auto_as('unroll'):
    pass


def _evaluator(**kwargs):
  apply_fn = lambda v, x: x.reshape(len(x), -1)[:, :10]
  fgsm = pkg('tinyrobust.attacks').get_attack('fgsm', apply_fn)
  return pkg('tinyrobust.evaluation').RobustnessEvaluator(
      apply_fn, {'fgsm': fgsm}, [0.1], batch_size=8, **kwargs)


CASES = _evaluation_cases()


@pytest.mark.parametrize('case', CASES, ids=sweep.ids(CASES))
def test_evaluation_misuse(case, misuse_ctx):
  sweep.check(case, misuse_ctx)
