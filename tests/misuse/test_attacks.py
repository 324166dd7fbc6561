"""Misuse sweep, attacks: the attacks (`tinyrobust.attacks`): keys, eps,
labels, inputs, options, and bad values under jit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.misuse import sweep

Case, Verdict, pkg = sweep.Case, sweep.Verdict, sweep.pkg


def _attack_call(ctx: sweep.Ctx, *, x=None, y=None, key=None, eps=0.1, **kw):
  xx, yy = ctx.xy()
  atk = ctx.pgd(**kw)
  return atk(ctx.mlp()[1], xx if x is None else x, yy if y is None else y,
             ctx.key() if key is None else key, eps)


def _with_nan_x(ctx):
  x = ctx.xy()[0].copy()
  x[3, 0, 0, 0] = float('nan')
  return _attack_call(ctx, x=x)


def _traced(ctx, *, eps, y=None) -> Verdict:
  """Under jax.jit + vmap a bad eps/label must not be a silent no-op."""
  xx, yy = ctx.xy()
  atk = ctx.pgd()
  eps_sweep = jax.jit(jax.vmap(atk, in_axes=(None, None, None, None, 0)))
  out = eps_sweep(ctx.mlp()[1], xx, yy if y is None else y, ctx.key(),
                  jnp.asarray([eps], jnp.float32))
  if sweep.isnan_all(out[0] if y is None else out[0][y >= 10]):
    return Verdict('clear', 'x_adv is NaN (shows up as non-finite)')
  return Verdict('silent', 'attack ran as a no-op under jit')


def _traced_label(ctx):
  y = ctx.xy()[1].copy()
  y[:5] = 12
  return _traced(ctx, eps=0.1, y=y)


def _vector_apply(ctx):
  attacks = pkg('tinyrobust.attacks')
  apply = ctx.mlp()[2]
  atk = attacks.make_pgd(lambda v, x: apply(v, x)[:, 0], steps=1)
  xx, yy = ctx.xy()
  return atk(ctx.mlp()[1], xx, yy, ctx.key(), 0.1)


def _get_attack(name, **kw):
  def fn(ctx):
    attacks = pkg('tinyrobust.attacks')
    return attacks.get_attack(name, ctx.mlp()[2], **kw)
  return fn


def _attack_cases() -> list[Case]:
  g = 'attacks'
  return [
      Case('key_int', g, lambda c: _attack_call(c, key=0), ('key',)),
      Case('key_uint_vector', g, lambda c: _attack_call(
          c, key=np.array([1, 2, 3], np.uint32)), ('key',)),
      Case('eps_string', g, lambda c: _attack_call(c, eps='0.1'), ("'0.1'",)),
      Case('eps_negative', g, lambda c: _attack_call(c, eps=-0.1), ('-0.1',)),
      Case('eps_nan', g, lambda c: _attack_call(c, eps=float('nan')),
           ('nan',)),
      Case('eps_inf', g, lambda c: _attack_call(c, eps=float('inf')),
           ('inf',)),
      Case('eps_wrong_length', g, lambda c: _attack_call(
          c, eps=np.full(7, 0.1, np.float32)), ('(7,)',)),
      Case('label_out_of_range', g, lambda c: _attack_call(
          c, y=np.full(40, 10, np.int32)), ('10',)),
      Case('label_negative', g, lambda c: _attack_call(
          c, y=np.full(40, -1, np.int32)), ('-1',)),
      Case('label_float', g, lambda c: _attack_call(
          c, y=np.zeros(40, np.float32)), ('float',)),
      Case('x_nan', g, _with_nan_x, ('nan',)),
      Case('x_y_batch_mismatch', g, lambda c: _attack_call(
          c, y=np.zeros(39, np.int32)), ('39',)),
      Case('apply_fn_returns_vector', g, _vector_apply, ('[B, K]',)),
      Case('apply_fn_not_callable', g, lambda c: pkg(
          'tinyrobust.attacks').make_pgd(3), ('apply_fn',)),
      Case('steps_zero', g, lambda c: c.pgd(steps=0), ('steps',)),
      Case('steps_fraction', g, lambda c: c.pgd(steps=2.5), ('2.5',)),
      Case('norm_unknown', g, lambda c: c.pgd(norm='l3'), ("'l3'",)),
      Case('loss_unknown', g, lambda c: c.pgd(loss='hinge'), ("'hinge'",)),
      Case('step_size_negative', g, lambda c: c.pgd(step_size=-1.0),
           ('-1',)),
      Case('restarts_zero', g, lambda c: c.pgd(restarts=0), ('restarts',)),
      Case('clip_reversed', g, lambda c: c.pgd(clip=(1.0, 0.0)), ('clip',)),
      Case('targeted_string', g, lambda c: c.pgd(targeted='yes'),
           ("'yes'",)),
      Case('attack_unknown_name', g, _get_attack('cw'), ("'cw'",)),
      Case('attack_unknown_option', g, _get_attack('pgd', stepz=3),
           ('stepz',)),
      Case('jit_eps_negative', g, lambda c: _traced(c, eps=-0.1)),
      Case('jit_eps_nan', g, lambda c: _traced(c, eps=float('nan'))),
      Case('jit_label_out_of_range', g, _traced_label),
  ]


CASES = _attack_cases()


@pytest.mark.parametrize('case', CASES, ids=sweep.ids(CASES))
def test_attacks_misuse(case, misuse_ctx):
  sweep.check(case, misuse_ctx)
