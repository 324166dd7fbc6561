"""`tinyrobust.cpu_devices`: splitting the CPU into JAX devices.

The device count is fixed when JAX starts, so each case that sets it runs
in a fresh interpreter; the test processes themselves keep one device
(`tests/conftest.py` sets TINYROBUST_CPU_DEVICES=1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from tinyrobust import cpu_devices


def _run(script: str, **env_updates) -> dict:
  env = {k: v for k, v in os.environ.items()
         if k not in ('XLA_FLAGS', cpu_devices.ENV)}
  env.update(env_updates)
  env['JAX_PLATFORMS'] = 'cpu'
  out = subprocess.run([sys.executable, '-c', textwrap.dedent(script)],
                       env=env, capture_output=True, text=True, timeout=600,
                       check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


_COUNT = """
    import json, jax
    from tinyrobust import cpu_devices
    got = cpu_devices.enable({arg})
    print(json.dumps({{'returned': got, 'devices': len(jax.devices())}}))
"""


@pytest.mark.parametrize('arg,env,returned,devices', [
    ('3', {}, 3, 3),                                   # explicit n
    ('None', {cpu_devices.ENV: '3'}, 3, 3),            # the variable
    ('None', {'XLA_FLAGS':                             # user's own choice
              '--xla_force_host_platform_device_count=4'}, None, 4),
    ('None', {}, min(cpu_devices.usable_cores(), cpu_devices.MAX_DEVICES),
     min(cpu_devices.usable_cores(), cpu_devices.MAX_DEVICES)),  # default
])
def test_enable_sets_the_cpu_device_count(arg, env, returned, devices):
  got = _run(_COUNT.format(arg=arg), **env)
  assert got == {'returned': returned, 'devices': devices}


def test_enable_after_jax_started_keeps_running_or_names_the_problem(
    monkeypatch):
  jax.devices()  # backends up, as in any process that already ran JAX
  before = len(jax.devices())
  monkeypatch.delenv(cpu_devices.ENV, raising=False)
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  if not cpu_devices.configured():
    assert cpu_devices.enable() is None  # default: an info line, no error
  with pytest.raises(RuntimeError, match='before the first JAX operation'):
    cpu_devices.enable(before + 1)
  assert len(jax.devices()) == before


@pytest.mark.parametrize('value', ['0', '-2', 'two', '1.5', ''])
def test_bad_count_names_the_value(monkeypatch, value):
  monkeypatch.setenv(cpu_devices.ENV, value)
  with pytest.raises(ValueError, match=f'{cpu_devices.ENV}={value!r}.*>= 1'):
    cpu_devices.enable()
  for bad in (0, True, 2.5):
    with pytest.raises(ValueError, match=f'n={bad!r}'):
      cpu_devices.enable(bad)


# Both scripts: two CPU devices, the digits, and a spy counting the splits.
_PRELUDE = """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from sklearn.datasets import load_digits
    from tinyrobust import cpu_devices
    cpu_devices.enable(2)
    from tinyrobust import attacks
    from tinyrobust.evaluation import crafting
    from tinyrobust.evaluation import scheduler
    from tinyrobust.evaluation import workers
    from tinyrobust.evaluation.robustness import robustness_run
    splits, real_map = [], workers.Workers.map
    workers.Workers.map = lambda self, fn: (splits.append(self.size),
                                            real_map(self, fn))[1]
    d = load_digits()
"""


_CASCADE = _PRELUDE + """
    # One bucket of 128 per stage: few programs to compile per device.
    x = (d.data[:128] / 16).astype(np.float32)
    y = d.target[:128].astype(np.int32)
    w = np.linalg.lstsq(np.c_[x, np.ones(len(x))], np.eye(10)[y],
                        rcond=None)[0].astype(np.float32) * 5
    v = {'w': jnp.asarray(w[:-1]), 'b': jnp.asarray(w[-1])}
    f = lambda v, x: jnp.tanh(x @ v['w'] + v['b']) * 4
    get = lambda name, **kw: attacks.get_attack(name, f, clip=(0.0, 1.0), **kw)
    kernels = {'fgsm': get('fgsm'),
               'pgd': get('pgd', steps=50, random_start=False),  # split
               'autoattack': get('autoattack', steps=12, n_target_classes=3,
                                 queries=60)}
    out = {}
    for run, n in (('one', 1), ('two', 2), ('two_again', 2)):
      s = scheduler.Scheduler(f, kernels, (0.0, 0.03, 0.08), batch_size=128,
                              devices=jax.devices()[:n], step_loop='host')
      res = s.run(v, x, y, seed=3)
      out[run] = {a: {'robust': np.asarray(r['robust']).tolist(),
                      'examples': np.asarray(r['examples']['robust']).tolist()}
                  for a, r in res.items()}
      out[run]['workers'] = s.workers.size
    print(json.dumps({'devices': len(jax.devices()), 'out': out,
                      'splits': splits}))
"""


def test_scheduler_on_two_cpu_devices_runs_per_device_programs():
  # On a CPU split into two devices the scheduler runs each half of a
  # long stage's bucket as its own program (no collectives): FGSM (short,
  # one device) and PGD-50 without random start (long, split) give exactly
  # the one-device counts; AutoAttack's random starts and squares draw from
  # `fold_in(bucket key, device)`, so it repeats exactly for the same device
  # count and stays within 3 of 128 points of the one-device run.
  got = _run(_CASCADE)
  assert got['devices'] == 2 and set(got['splits']) == {2}
  one, two, again = (got['out'][k] for k in ('one', 'two', 'two_again'))
  assert (one['workers'], two['workers']) == (1, 2)
  assert two == again
  for name in ('fgsm', 'pgd'):
    assert one[name] == two[name], name
  for run in (one, two):
    robust = run['autoattack']['robust']
    assert robust[0] > robust[1] > robust[2] > 0, robust
  assert all(abs(a - b) <= 3 for a, b in zip(one['autoattack']['robust'],
                                             two['autoattack']['robust']))
  assert one['pgd']['robust'][1] >= one['autoattack']['robust'][1]


_CRAFT = _PRELUDE + """
    x = (d.data[:200] / 16).astype(np.float32)
    y = d.target[:200].astype(np.int32)
    # Wide enough (> loops.ROLL_BELOW_FLOPS per step) not to run rolled.
    w1 = np.random.default_rng(0).normal(size=(64, 2048)).astype(np.float32)
    h = np.tanh(0.3 * x @ w1)
    w2 = np.linalg.lstsq(h, np.eye(10)[y], rcond=None)[0].astype(np.float32)
    v = {'w1': jnp.asarray(w1), 'w2': jnp.asarray(w2 * 5)}
    f = lambda v, x: jnp.tanh(0.3 * x @ v['w1']) @ v['w2']
    grid = (0.0, 0.1, 0.3)
    attack = attacks.get_attack('apgd-ce', f, clip=(0.0, 1.0), steps=60)
    x_adv = crafting.craft(f, v, attack, x, y, eps_grid=grid, seed=5,
                           batch_size=128)
    white = robustness_run(f, v, (x, y), attacks={'apgd-ce': attack},
                           eps_grid=grid, batch_size=128, seed=5,
                           sanity_checks=False).results
    ok = np.asarray(jnp.argmax(f(v, x), -1)) == y
    kept = [int((ok & (np.asarray(jnp.argmax(f(v, a), -1)) == y)).sum())
            for a in x_adv]
    dev = [float(np.abs(a - x).max()) for a in x_adv]
    acc = [r['robust_accuracy'] for r in
           white['attacks']['apgd-ce']['per_eps']]
    print(json.dumps({'kept': kept, 'white': [round(a * len(x)) for a in acc],
                      'devices': white['num_devices'], 'dev': dev,
                      'splits': splits}))
"""


def test_crafted_examples_on_two_devices_match_the_white_box_counts():
  # Transfer crafting records every device's share of a split stage and
  # puts it back in row order: the crafted set reproduces the white-box
  # scheduler's robust counts exactly, inside each eps ball.
  got = _run(_CRAFT)
  assert got['devices'] == 2 and got['splits'] and set(got['splits']) == {2}
  assert got['kept'] == got['white'], got
  assert got['white'][0] > got['white'][1] > got['white'][2], got
  assert all(d <= e + 1e-6 for d, e in zip(got['dev'], (0.0, 0.1, 0.3)))
