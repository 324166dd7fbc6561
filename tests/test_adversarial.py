"""Adversarial training (tinyrobust.adversarial): robustness gained, TRADES
with beta=0 is standard training, the collapse detector, exact resume,
projected training kept, bad options refused."""

import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs.train import digits_cnn
from tinyrobust import adversarial
from tinyrobust import collapse
from tinyrobust import data as data_lib
from tinyrobust import grad_evals
from tinyrobust import fileio
from tinyrobust import train
from tinyrobust.attacks import pgd
from tinyrobust.attacks import threat as threat_lib
from tinyrobust.attacks import trades


def _cfg(epochs, method='none', model='mlp', **adv):
  c = digits_cnn.get_config()
  c.train.epochs = epochs
  c.train.progress_bar = False
  if model == 'mlp':
    c.model.name = 'mlp'
    c.model.kwargs = {'hidden': (64,)}
  else:
    c.model.kwargs.features = (8, 16)
  c.train.adversarial.method = method
  if method != 'none':
    c.train.adversarial.eps = 0.1
    c.train.adversarial.steps = 3
    c.train.adversarial.check_steps = 3
    c.train.adversarial.check_examples = 64
  for k, v in adv.items():
    c.train.adversarial[k] = v
  return c


def _pgd_accuracy(model, variables, eps):
  test = data_lib.load('digits', 'test', seed=0)
  apply = lambda v, x: model.apply(v, x, train=False)
  attack = pgd.make_pgd(apply, steps=10, clip=(0.0, 1.0))
  x_adv = attack(variables, test.x, test.y, jax.random.key(0), eps)
  return float(np.mean(np.argmax(apply(variables, x_adv), -1) == test.y))


def test_pgd_at_raises_pgd_accuracy_over_standard_training(tmp_path):
  # Same seed, data order and model; only the objective differs. Measured
  # (seed 0, 5 epochs, eps 0.1 on [0, 1] pixels, PGD-10 on the 359 test
  # digits): standard 0.557, PGD-AT 0.688.
  _, std_vars = train.train_and_evaluate(_cfg(5), str(tmp_path / 'std'))
  _, adv_vars = train.train_and_evaluate(_cfg(5, 'pgd_at'),
                                         str(tmp_path / 'adv'))
  model, _, _ = train.load_trained(str(tmp_path / 'adv'))
  std_rob = _pgd_accuracy(model, std_vars, 0.1)
  adv_rob = _pgd_accuracy(model, adv_vars, 0.1)
  assert adv_rob >= std_rob + 0.08, (std_rob, adv_rob)
  lines = fileio.read_jsonl(str(tmp_path / 'adv' / 'metrics.jsonl'))[:-1]
  assert all(0 <= r['val_pgd_accuracy'] <= 1 and r['collapsed'] is False
             for r in lines)
  # best.ckpt is the epoch with the best check accuracy (ties: clean val).
  best = max(lines, key=lambda r: (r['val_pgd_accuracy'], r['val_accuracy']))
  final = fileio.read_json(str(tmp_path / 'adv' / train.FINAL))
  assert final['best_epoch'] == best['epoch']
  # final_metrics.json: the check's PGD accuracy of the best epoch.
  assert final['val_pgd_accuracy'] == best['val_pgd_accuracy']
  # Gradient evaluations (closed form): 5 epochs of PGD-3 steps (3 + 1
  # per example) and checks of PGD-3 on 64 validation digits.
  batch = _cfg(5).train.batch_size
  adv = grad_evals.training(str(tmp_path / 'adv'), 10**6, 10**6)
  assert adv['total'] == lines[-1]['step'] * batch * 4 + 5 * 64 * 3
  std = grad_evals.training(str(tmp_path / 'std'), 10**6, 10**6)
  assert std['total'] == std['steps'] * batch and std['steps'] == adv['steps']


def _steps(config, n):
  """n jitted train steps on digits; returns (losses, final state)."""
  config = adversarial.canonical_config(config)
  splits = train.load_splits(config)
  config.model.num_classes = 10
  model, k = train.build_model(config)
  tx = train.make_optimizer(config.train, 10)
  state = train.create_train_state(model, tx, splits['train'],
                                   jax.random.key(0))
  defence = adversarial.build(config, model, splits, num_classes=k,
                              steps_per_epoch=10)
  step = jax.jit(train.make_train_step(model, tx, num_classes=k,
                                       total_steps=10, defence=defence))
  losses = []
  for i in range(n):
    sl = slice(32 * i, 32 * (i + 1))
    state, m = step(state, splits['train'].x[sl], splits['train'].y[sl],
                    jax.random.fold_in(jax.random.key(1), i))
    losses.append(float(m['loss']))
  return losses, state


def test_trades_with_beta_zero_is_standard_training():
  # beta = 0 removes the KL term; the adversarial pass still runs (and
  # updates the running batch-norm statistics, as in the reference), so
  # losses and weights match standard training, batch_stats need not.
  std_losses, std = _steps(_cfg(1, model='cnn'), 4)
  tr_losses, tr = _steps(_cfg(1, 'trades', model='cnn', beta=0.0), 4)
  np.testing.assert_allclose(tr_losses, std_losses, rtol=1e-5)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
      std.params, tr.params)
  # With beta > 0 it is not standard training.
  beta_losses, _ = _steps(_cfg(1, 'trades', model='cnn', beta=6.0), 4)
  assert beta_losses[1:] != pytest.approx(std_losses[1:], rel=1e-3)


def test_collapse_detector_fires_on_a_collapse_only():
  drop = 0.2
  healthy = [0.10, 0.25, 0.38, 0.36, 0.41, 0.40]   # noise of a few points
  collapsing = [0.10, 0.25, 0.38, 0.41, 0.03]      # Wong et al.'s pattern
  assert not any(collapse.collapsed(healthy[:i + 1], drop)
                 for i in range(len(healthy)))
  assert collapse.collapsed(collapsing, drop)
  assert not any(collapse.collapsed(collapsing[:i + 1], drop)
                 for i in range(len(collapsing) - 1))
  # A fall of exactly `drop` is tolerated; one just beyond is not.
  assert not collapse.collapsed([0.5, 0.25], 0.25)
  assert collapse.collapsed([0.5, 0.2499], 0.25)
  with pytest.raises(ValueError, match='drop'):
    collapse.collapsed([0.5, 0.1], 0.0)
  with pytest.raises(ValueError, match='accuracies in'):
    collapse.collapsed([50.0, 10.0], 0.2)


def test_collapsed_epoch_never_becomes_best_and_warns():
  best = {'val_accuracy': 0.80, 'val_pgd_accuracy': 0.41}
  # Collapse: clean accuracy up, PGD accuracy down: best stays.
  assert not adversarial.improves(best, 0.95, {'val_pgd_accuracy': 0.03})
  assert adversarial.improves(best, 0.70, {'val_pgd_accuracy': 0.42})
  assert adversarial.improves(best, 0.81, {'val_pgd_accuracy': 0.41})
  assert adversarial.improves({'val_accuracy': 0.8}, 0.81, {})
  with pytest.warns(collapse.CatastrophicOverfittingWarning, match='0.41'):
    collapse.warn(0.03, 0.41, 0.2, 'fgsm_rs')


class _Kill(Exception):
  pass


def test_killed_adversarial_training_resumes_bit_identically(tmp_path):
  # TRADES on a batch-norm CNN with an eps ramp: crafting, two train-mode
  # passes, running statistics and the schedule all resume exactly.
  cfg = lambda: _cfg(3, 'trades', model='cnn', warmup_epochs=1.5)
  full_dir, cut_dir = str(tmp_path / 'full'), str(tmp_path / 'cut')
  _, full_vars = train.train_and_evaluate(cfg(), full_dir)

  def kill(epoch, state):
    del state
    if epoch == 1:
      raise _Kill()

  with pytest.raises(_Kill):
    train.train_and_evaluate(cfg(), cut_dir, callbacks=[kill])
  _, resumed_vars = train.train_and_evaluate(cfg(), cut_dir)
  jax.tree_util.tree_map(np.testing.assert_array_equal, full_vars,
                         resumed_vars)
  full = fileio.load_pytree(os.path.join(full_dir, 'latest.ckpt'))
  cut = fileio.load_pytree(os.path.join(cut_dir, 'latest.ckpt'))
  jax.tree_util.tree_map(np.testing.assert_array_equal, full['state'],
                         cut['state'])
  drop = lambda rs: [{k: v for k, v in r.items()
                      if k not in ('seconds', 'check_seconds')} for r in rs]
  assert drop(fileio.read_jsonl(os.path.join(full_dir, 'metrics.jsonl'))) == \
      drop(fileio.read_jsonl(os.path.join(cut_dir, 'metrics.jsonl')))
  eps = [r['train_eps'] for r in fileio.read_jsonl(
      os.path.join(full_dir, 'metrics.jsonl'))[:-1]]
  # 39 steps per epoch (1,258 / 32), ramp R = round(1.5 * 39) = 58 steps:
  # epoch 1 ends at eps 0.1 * 39 / 58, the ramp is over within epoch 2.
  assert eps[0] == pytest.approx(0.1 * 39 / 58) and eps[1:] == [
      pytest.approx(0.1)] * 2


def test_protonn_projected_training_survives_fgsm_rs(tmp_path):
  # ProtoNN's IHT projection runs after the adversarial update.
  c = _cfg(2, 'fgsm_rs')
  c.model.name = 'protonn'
  c.model.kwargs = {'projection_dim': 5, 'num_prototypes': 20,
                    'density_w': 0.25, 'iht_start': 0.0}
  metrics, variables = train.train_and_evaluate(c, str(tmp_path))
  w = np.asarray(variables['params']['W'])
  assert np.mean(w != 0) <= 0.25 + 1e-9
  assert metrics['test_accuracy'] > 0.3


def test_eps_ramp_closed_form():
  got = [float(adversarial.eps_at(0.3, 4, s)) for s in range(6)]
  np.testing.assert_allclose(got, [0.075, 0.15, 0.225, 0.3, 0.3, 0.3],
                             rtol=1e-6)
  assert float(adversarial.eps_at(0.3, 0, 0)) == pytest.approx(0.3)


def test_trades_kernel_stays_in_ball_and_clip_and_raises_kl():
  w = jax.random.normal(jax.random.key(0), (6, 3))
  apply = lambda v, x: x @ v
  threat = threat_lib.Threat.build('linf', (0.0, 1.0), None)
  attack = jax.jit(trades.make_trades_attack(apply, threat, steps=5,
                                             rel_step_size=0.25))
  x = jax.random.uniform(jax.random.key(1), (16, 6))
  x_adv = attack(w, x, jax.random.key(2), 0.1)
  assert float(jnp.max(jnp.abs(x_adv - x))) <= 0.1 + 1e-6
  assert float(jnp.min(x_adv)) >= 0.0 and float(jnp.max(x_adv)) <= 1.0
  kl = lambda xa: jnp.sum(jax.nn.softmax(x @ w) * (
      jax.nn.log_softmax(x @ w) - jax.nn.log_softmax(xa @ w)))
  start = threat.project(x, x + 0.01 * jax.random.normal(
      jax.random.key(3), x.shape), jnp.full((16, 1), 0.1))
  assert float(kl(x_adv)) > 10 * float(kl(start))
  np.testing.assert_array_equal(attack(w, x, jax.random.key(2), 0.0), x)


@pytest.mark.parametrize('field,value,match', [
    ('method', 'free_at', "method='free_at'"),
    ('eps', None, 'eps must be set'),
    ('eps', -0.1, 'eps must be'),
    ('loop', 'host', "'host' cannot run under jit"),
    ('steps', 0, 'steps must be an int'),
    ('beta', -1.0, 'beta must be'),
])
def test_bad_adversarial_config_fails_before_training(tmp_path, field, value,
                                                      match):
  c = _cfg(1, 'pgd_at')
  c.train.adversarial[field] = value
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(c, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w' / 'config.json')


def test_off_section_is_not_pinned(tmp_path):
  # A run with adversarial training off pins the config it had before the
  # field existed, so older workdirs resume.
  c = _cfg(1)
  train.train_and_evaluate(c, str(tmp_path))
  pinned = fileio.read_json(str(tmp_path / 'config.json'))
  assert 'adversarial' not in pinned['train']
  with warnings.catch_warnings():
    warnings.simplefilter('error', collapse.CatastrophicOverfittingWarning)
    train.train_and_evaluate(c, str(tmp_path))  # resumes (finished) quietly
