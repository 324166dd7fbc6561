"""The attack registry and the typed `Attack` record."""

import ast
import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import attacks

KEY = jax.random.key(0)


def linear_apply(v, x):
  return x @ v


def _setup():
  rng = np.random.default_rng(0)
  v = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  x = jnp.asarray(rng.uniform(size=(4, 5)), jnp.float32)
  y = jnp.asarray([0, 1, 2, 0], jnp.int32)
  return v, x, y


def test_get_attack_builds_records_equal_to_factories():
  v, x, y = _setup()
  rec = attacks.get_attack('pgd', linear_apply, steps=3, clip=(0.0, 1.0))
  assert isinstance(rec, attacks.Attack)
  assert rec.name == rec.kind == 'pgd'
  assert rec.config['steps'] == 3 and rec.config['clip'] == [0.0, 1.0]
  json.dumps(dict(rec.config))  # JSON-able as built
  direct = attacks.make_pgd(linear_apply, steps=3, clip=(0.0, 1.0))
  np.testing.assert_array_equal(rec(v, x, y, KEY, 0.1),
                                direct(v, x, y, KEY, 0.1))
  assert attacks.get_attack('fgsm', linear_apply).name == 'fgsm'


def test_record_is_frozen_and_config_read_only():
  rec = attacks.make_fgsm(linear_apply)
  with pytest.raises(dataclasses.FrozenInstanceError):
    rec.name = 'other'
  with pytest.raises(TypeError):
    rec.config['norm'] = 'l2'
  with pytest.raises(AttributeError):
    rec.kind = 'x'
  assert hash(rec) == hash(rec)


def test_unknown_name_and_option_errors():
  with pytest.raises(ValueError, match=r"Unknown attack 'nope'. Valid: .*pgd"):
    attacks.get_attack('nope', linear_apply)
  with pytest.raises(ValueError, match=r"Unknown option\(s\) \['stepz'\] for "
                     r"attack 'pgd'. Valid options: norm, steps"):
    attacks.get_attack('pgd', linear_apply, stepz=3)
  with pytest.raises(ValueError, match='steps must be an int'):
    attacks.get_attack('pgd', linear_apply, steps=0)


def test_list_and_options():
  names = attacks.list_attacks()
  assert {'fgsm', 'pgd'} <= set(names) and names == sorted(names)
  opts = attacks.attack_options('fgsm')
  assert 'apply_fn' not in opts
  assert {'norm', 'loss', 'clip'} <= set(opts) and 'steps' not in opts


def test_register_a_new_attack_once():
  """A trivial attack (uniform noise in the L-inf ball) plugs in by name."""

  def make_noise(apply_fn, *, seed_offset=0):
    del apply_fn

    def kernel(variables, x, y, key, eps):
      del variables, y
      key = jax.random.fold_in(key, seed_offset)
      return x + eps * jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)

    return attacks.Attack('noise', {'seed_offset': seed_offset}, kernel)

  attacks.register_attack('noise', make_noise)
  try:
    assert 'noise' in attacks.list_attacks()
    assert attacks.attack_options('noise') == ('seed_offset',)
    v, x, y = _setup()
    rec = attacks.get_attack('noise', linear_apply)
    x_adv = rec(v, x, y, KEY, 0.2)
    assert 0 < float(jnp.abs(x_adv - x).max()) <= 0.2
    sweep = jax.jit(jax.vmap(rec, in_axes=(None, None, None, None, 0)))
    assert sweep(v, x, y, KEY, jnp.asarray([0.0, 0.1])).shape == (2, 4, 5)
    with pytest.raises(ValueError, match='registered twice'):
      attacks.register_attack('noise', make_noise)
  finally:
    attacks.unregister_attack('noise')
  assert 'noise' not in attacks.list_attacks()


def test_as_attack_wraps_plain_kernels():
  v, x, y = _setup()
  fn = lambda variables, x, y, key, eps: x
  rec = attacks.as_attack('mine', fn)
  assert rec.name == 'mine' and dict(rec.config) == {}
  np.testing.assert_array_equal(rec(v, x, y, KEY, 0.1), x)
  pgd = attacks.make_pgd(linear_apply)
  assert attacks.as_attack('other', pgd) is pgd
  with pytest.raises(ValueError, match='callable'):
    attacks.as_attack('bad', 3)


def _long_functions(root, limit=80):
  """(file, function, lines) for functions longer than `limit` lines,
  docstrings excluded."""
  out = []
  for path in sorted(pathlib.Path(root).glob('*.py')):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        n = node.end_lineno - node.lineno + 1
        doc = node.body[0]
        if (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
            and isinstance(doc.value.value, str)):
          n -= doc.end_lineno - doc.lineno + 1
        if n > limit:
          out.append((path.name, node.name, n))
  return out


def test_no_attack_function_longer_than_80_lines():
  root = pathlib.Path(attacks.__file__).parent
  assert _long_functions(root) == []
