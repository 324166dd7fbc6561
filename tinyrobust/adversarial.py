"""Adversarial training objectives: PGD-AT, TRADES and FGSM with random start.

`config.train.adversarial` (fields: `default_config`) turns a training run
into an adversarial one; `method='none'` (the default) leaves the trainer
exactly as it was. The trainer calls `build(...)` once and then:

* in every jitted train step, `Defence.objective(...)` replaces the clean
  loss by the method's loss on examples crafted against the current weights;
* after every epoch, `Defence.epoch_check(...)` attacks a fixed validation
  batch with PGD (the catastrophic-overfitting check, `tinyrobust.collapse`).

Methods (eps in the threat's eps units, the same as the evaluator's):

* 'pgd_at' (Madry et al. 2018): minimise CE(f(x_adv)), x_adv from
  `steps` L-inf (or L2) PGD steps of `rel_step_size * eps` (default
  `2.5 / steps`: 10 steps of eps/4, Madry's CIFAR setting was 7 of 2/255 at
  8/255) from a uniform random start, maximising CE.
* 'trades' (Zhang et al. 2019): minimise CE(f(x)) + beta * KL(p(x) ||
  p(x_adv)), x_adv from `steps` PGD steps maximising that KL from
  `x + N(0, (0.032 eps)^2)` (the reference's 0.001 at eps 0.031); the KL is
  the batch mean, its gradient flows through both p(x) and p(x_adv) as in
  the reference. Both forward passes run in train mode, each updating batch
  norm statistics (the reference's order: x, then x_adv).
* 'fgsm_rs' (Wong et al. 2020): uniform start in the eps-ball, one signed
  gradient step of `fgsm_step * eps` (1.25 eps), projection onto the ball
  and the clip range; minimise CE(f(x_adv)).

Threat model: `config.threat` as for evaluation (`evaluation.threat_space`):
in the input space the clip is the dataset's (or `threat.clip`); in the
signal space the trainer feeds raw signals, the attacks perturb them with
the space's per-channel eps scale and sensor clip, and the model sees
`frontend(signal)`. The attacks are the toolkit's (`attacks.make_pgd`, and
`attacks.trades` for TRADES' KL).

Choices: crafting runs the model in EVAL mode (running batch-norm
statistics, no dropout, no `train_kwargs` such as Bonsai's annealed
sigma_I: the model as deployed and evaluated), for determinism; the loss
then runs in train mode. eps schedule: eps_t = eps * min(1, (t + 1) / R),
R = `warmup_epochs` x steps per epoch (R = 0: eps from the first step).
Step loop inside the jitted step ('host' cannot run under jit):
`loop='auto'` is 'fori' (experiments/bench_adv_train.py, CPU: 'unroll'
wins on the digits CNN, 'fori' on the AURITUS TCN and compiles faster). The attack key of step t is `fold_in(fold_in(train_key, t), 1)`,
so a resumed run is bit-identical.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tinyrobust import collapse
from tinyrobust import config_io
from tinyrobust.attacks import pgd as pgd_lib
from tinyrobust.attacks import threat as threat_lib
from tinyrobust.attacks import trades as trades_lib
from tinyrobust.evaluation import threat_space

METHODS = ('none', 'pgd_at', 'trades', 'fgsm_rs')
TRAIN_LOOPS = ('auto', 'fori', 'unroll', 'scan')
# Attack key of a step: fold_in(step key, ATTACK_STREAM).
ATTACK_STREAM = 1


def default_config() -> ml_collections.ConfigDict:
  """`config.train.adversarial` with its defaults (off).

  Fields:
    method: 'none' | 'pgd_at' | 'trades' | 'fgsm_rs'.
    eps: radius in the threat's eps units (required unless 'none').
    warmup_epochs: epochs of the linear eps ramp from 0 (0 = none).
    norm: 'linf' | 'l2'.
    steps: PGD steps of 'pgd_at' and 'trades'.
    rel_step_size: their step as a multiple of eps (None: 2.5 / steps).
    fgsm_step: 'fgsm_rs' step as a multiple of eps (Wong et al.: 1.25).
    beta: TRADES' weight of the KL term.
    loop: step loop inside the jitted step: 'auto', 'fori', 'unroll',
      'scan' or an int unroll factor.
    check_examples: size of the fixed validation batch (its first examples)
      attacked after every epoch.
    check_steps: PGD steps of that check (step 2.5 eps / steps, random
      start, one fixed key).
    collapse_drop: the check flags catastrophic overfitting when its PGD
      accuracy falls more than this (a fraction: 0.2 = 20 points) below
      its best so far.
  """
  c = ml_collections.ConfigDict()
  c.method = 'none'
  c.eps = ml_collections.config_dict.placeholder(float)
  c.warmup_epochs = 0.0
  c.norm = 'linf'
  c.steps = 10
  c.rel_step_size = ml_collections.config_dict.placeholder(float)
  c.fgsm_step = 1.25
  c.beta = 6.0
  c.loop = 'auto'
  c.check_examples = 256
  c.check_steps = 10
  c.collapse_drop = 0.2
  return c


def _number(name, v, *, lo=0.0, strict=True, integer=False):
  kinds = (int, np.integer) + (() if integer else (float, np.floating))
  ok = not isinstance(v, bool) and isinstance(v, kinds) and math.isfinite(
      float(v)) and (v > lo if strict else v >= lo)
  if not ok:
    what = 'an int' if integer else 'a finite number'
    raise ValueError(f'train.adversarial.{name} must be {what} '
                     f'{">" if strict else ">="} {lo}, got {v!r}.')


def settings(config) -> dict[str, Any]:
  """`config.train.adversarial` merged over `default_config()`, checked.

  Raises:
    ValueError: an unknown field, method, norm or loop; eps missing or not
      positive; a bad number; or signal-space training with data
      augmentation (augmentations act on model inputs, not raw signals).
  """
  merged = default_config().to_dict()
  section = config_io.to_dict(config.train.get('adversarial'))
  unknown = sorted(set(section) - set(merged))
  if unknown:
    raise ValueError(f'Unknown train.adversarial field(s) {unknown}. Valid: '
                     f'{", ".join(sorted(merged))}.')
  merged.update(section)
  s = merged
  if s['method'] not in METHODS:
    raise ValueError(f'train.adversarial.method={s["method"]!r}. Valid: '
                     f'{", ".join(METHODS)}.')
  if s['method'] == 'none':
    return s
  if s['eps'] is None:
    raise ValueError(f'train.adversarial.eps must be set for method='
                     f'{s["method"]!r} (in the threat\'s eps units, e.g. '
                     '8/255 for pixels).')
  _number('eps', s['eps'])
  _number('warmup_epochs', s['warmup_epochs'], strict=False)
  for name in ('steps', 'check_examples', 'check_steps'):
    _number(name, s[name], lo=1, strict=False, integer=True)
  if s['rel_step_size'] is not None:
    _number('rel_step_size', s['rel_step_size'])
  _number('fgsm_step', s['fgsm_step'])
  _number('beta', s['beta'], strict=False)
  _number('collapse_drop', s['collapse_drop'])
  if s['norm'] not in ('linf', 'l2'):
    raise ValueError(f'train.adversarial.norm={s["norm"]!r}. Valid: linf, '
                     'l2.')
  loop = s['loop']
  if loop not in TRAIN_LOOPS and not (
      isinstance(loop, (int, np.integer)) and not isinstance(loop, bool)
      and loop >= 1):
    raise ValueError(f'train.adversarial.loop={loop!r}. Valid inside a '
                     f'jitted train step: {", ".join(TRAIN_LOOPS)} or an int '
                     "unroll factor >= 1 ('host' cannot run under jit).")
  space = (config_io.to_dict(config.get('threat')) or {}).get('space')
  if space == 'signal' and config.data.get('augment', 'none') not in (
      'none', '', None):
    raise ValueError(f'train.adversarial with threat.space=\'signal\' trains '
                     f'on raw signals; data.augment={config.data.augment!r} '
                     'acts on model inputs. Use augment=\'none\'.')
  return s


def check_config(config) -> None:
  """Validates `config.train.adversarial` and, when on, `config.threat`,
  before any data is loaded (ValueError naming the bad field)."""
  if settings(config)['method'] == 'none':
    return
  threat_space.check_threat(config_io.to_dict(config.get('threat')),
                            config.data.name,
                            config_io.to_dict(config.data.get('options')))


def canonical_config(config: ml_collections.ConfigDict
                     ) -> ml_collections.ConfigDict:
  """`config` without an 'off' `train.adversarial` section, so a run pinned
  before the field existed resumes, and 'off' is one pinned form."""
  section = config.train.get('adversarial')
  if section is not None and config_io.to_dict(section).get(
      'method', 'none') == 'none':
    del config.train['adversarial']
  return config


def train_loop(loop) -> str | int:
  """The concrete step loop under jit: 'auto' -> 'fori'. Measured on CPU
  (experiments/bench_adv_train.py, PGD-AT-10 train step): 'unroll' is 2-5x
  faster on the digits CNN (ms-sized steps, where a rolled loop's per-step
  cost dominates) but 1.3-1.8x slower on the AURITUS TCN (0.6 s steps) and
  compiles slower; 'fori' loses least in absolute time (GPU/TPU: one
  launch per step loop)."""
  return 'fori' if loop == 'auto' else loop


def eps_at(eps: float, ramp_steps: int, step) -> jax.Array:
  """The scheduled eps of (0-based) optimizer step `step`: a linear ramp
  `eps * min(1, (step + 1) / ramp_steps)` (eps when `ramp_steps` is 0)."""
  if ramp_steps <= 0:
    return jnp.asarray(eps, jnp.float32)
  t = (jnp.asarray(step, jnp.float32) + 1.0) / float(ramp_steps)
  return jnp.float32(eps) * jnp.minimum(1.0, t)


def _ce(logits, labels, num_classes, label_smoothing):
  """The trainer's loss (`train._loss`): softmax CE on (smoothed) one-hot."""
  onehot = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    onehot = optax.smooth_labels(onehot, label_smoothing)
  return optax.softmax_cross_entropy(logits, onehot)


def _eval_variables(state) -> dict[str, Any]:
  v = {'params': state.params}
  if state.batch_stats is not None:
    v['batch_stats'] = state.batch_stats
  return v


@dataclasses.dataclass(frozen=True, eq=False)
class Defence:
  """A configured adversarial-training method (built by `build`).

  Attributes:
    settings: the checked `train.adversarial` section.
    model: the Flax module.
    num_classes, label_smoothing: the trainer's loss settings.
    ramp_steps: steps of the eps ramp (0 = none).
    frontend: `frontend(signal) -> model input` in the signal space, or None.
    craft: `craft(variables, x, y, key, eps) -> x_adv` (PGD-AT, FGSM-RS), or
      `craft(variables, x, key, eps)` (TRADES); eval mode, pure.
    check_attack: the epoch check's PGD `Attack` (concrete calls).
    check_x, check_y: the fixed validation batch, in the threat's space.
    check_key: the check's fixed PRNG key.
    train_x: the training split in the threat's space when it is not the
      model input (signal space), else None.
  """
  settings: dict[str, Any]
  model: Any
  num_classes: int
  label_smoothing: float
  ramp_steps: int
  frontend: Callable | None
  craft: Callable
  check_attack: Callable
  check_x: np.ndarray
  check_y: np.ndarray
  check_key: jax.Array
  train_x: np.ndarray | None = None

  @property
  def best_template(self) -> dict[str, float]:
    """Extra fields of the trainer's `best` record (before any epoch)."""
    return {'val_pgd_accuracy': -1.0}

  def train_data(self, train_ds):
    """The split the train step sees: raw signals in the signal space."""
    if self.train_x is None:
      return train_ds
    return dataclasses.replace(train_ds, x=self.train_x)

  def _train_apply(self, params, batch_stats, x, dropout_key, kwargs):
    variables, mutable = {'params': params}, False
    if batch_stats is not None:
      variables['batch_stats'], mutable = batch_stats, ['batch_stats']
    x = x if self.frontend is None else self.frontend(x)
    out = self.model.apply(variables, x, train=True, mutable=mutable,
                           rngs={'dropout': dropout_key}, **kwargs)
    logits, new_vars = out if mutable else (out, {})
    return logits, new_vars.get('batch_stats')

  def objective(self, state, x, y, key, dropout_key, kwargs):
    """`loss_fn(params) -> (loss, (logits, batch_stats))` of one train step.

    Args:
      state: the trainer's `TrainState` before the step (its weights craft
        the examples, in eval mode).
      x: `[B, ...]` inputs in the threat's space; y: `[B]` labels.
      key: the step's key (`fold_in(train_key, step)`); the attack uses
        `fold_in(key, ATTACK_STREAM)`.
      dropout_key: the train-mode forward pass's dropout key.
      kwargs: the model's `train_kwargs` for the train-mode passes.

    Returns:
      The loss function the trainer differentiates; its logits are those of
      the adversarial batch (PGD-AT, FGSM-RS) or the clean batch (TRADES).
    """
    s = self.settings
    eps = eps_at(s['eps'], self.ramp_steps, state.step)
    variables = _eval_variables(state)
    akey = jax.random.fold_in(key, ATTACK_STREAM)
    trades = s['method'] == 'trades'
    x_adv = jax.lax.stop_gradient(
        self.craft(variables, x, akey, eps) if trades
        else self.craft(variables, x, y, akey, eps))
    ce = lambda z: _ce(z, y, self.num_classes, self.label_smoothing).mean()

    def loss_fn(params):
      if not trades:
        logits, bs = self._train_apply(params, state.batch_stats, x_adv,
                                       dropout_key, kwargs)
        return ce(logits), (logits, bs)
      logits, bs = self._train_apply(params, state.batch_stats, x,
                                     dropout_key, kwargs)
      adv_logits, bs = self._train_apply(
          params, bs, x_adv, jax.random.fold_in(dropout_key, 1), kwargs)
      kl = jnp.sum(jax.nn.softmax(logits) * (
          jax.nn.log_softmax(logits) - jax.nn.log_softmax(adv_logits)), -1)
      return ce(logits) + s['beta'] * jnp.mean(kl), (logits, bs)

    return loss_fn

  def _eval_logits(self, variables, x):
    x = x if self.frontend is None else self.frontend(x)
    return self.model.apply(variables, x, train=False)

  def epoch_check(self, state, best: dict[str, Any]) -> dict[str, Any]:
    """PGD accuracy of `state` (the trainer's `TrainState` after an
    epoch, in eval mode) on the fixed validation batch at the full eps, and
    the catastrophic-overfitting flag (`collapse.collapsed` against the
    best so far in `best`); warns (`collapse.CatastrophicOverfittingWarning`)
    when it fires.

    Returns:
      Fields for the epoch's metrics record: 'val_pgd_accuracy',
      'val_pgd_best' (best so far, this epoch included), 'collapsed',
      'train_eps' (the eps of the epoch's last step), 'check_seconds'.
    """
    t0, s, step = time.time(), self.settings, int(state.step)
    variables = _eval_variables(state)
    x_adv = self.check_attack(variables, self.check_x, self.check_y,
                              self.check_key, s['eps'])
    logits = jax.jit(self._eval_logits)(variables, x_adv)
    acc = float(np.mean(np.argmax(np.asarray(logits), -1) == self.check_y))
    prev = float(best.get('val_pgd_accuracy', -1.0))
    flag = prev >= 0 and collapse.collapsed([prev, acc], s['collapse_drop'])
    if flag:
      collapse.warn(acc, prev, s['collapse_drop'], s['method'])
    return {'val_pgd_accuracy': acc, 'val_pgd_best': max(prev, acc),
            'collapsed': bool(flag),
            'train_eps': float(eps_at(s['eps'], self.ramp_steps,
                                      max(step - 1, 0))),
            'check_seconds': time.time() - t0}


def improves(best: dict[str, Any], val_accuracy: float,
             check: dict[str, Any]) -> bool:
  """Whether this epoch becomes `best.ckpt`: plain runs by clean validation
  accuracy; adversarial runs by the check's PGD accuracy, ties broken by
  clean validation accuracy (robust early stopping, Rice et al. 2020), so a
  collapsed epoch never replaces the best robust one."""
  if 'val_pgd_accuracy' not in check:
    return val_accuracy > best['val_accuracy']
  return (check['val_pgd_accuracy'], val_accuracy) > (
      best['val_pgd_accuracy'], best['val_accuracy'])


def best_fields(check: dict[str, Any]) -> dict[str, float]:
  """The check's fields kept in the trainer's `best` record."""
  if 'val_pgd_accuracy' not in check:
    return {}
  return {'val_pgd_accuracy': check['val_pgd_accuracy']}


def build(config, model, splits, *, num_classes: int,
          steps_per_epoch: int) -> Defence | None:
  """The run's `Defence`, or None when `train.adversarial` is off.

  Args:
    config: the run's config (checked by `check_config`).
    model: the Flax module.
    splits: the loaded 'train' and 'val' `Dataset`s (model inputs).
    num_classes: classes of the loss.
    steps_per_epoch: optimizer steps per epoch (for the eps ramp).
  """
  s = settings(config)
  if s['method'] == 'none':
    return None
  name = config.data.name
  options = config_io.to_dict(config.data.get('options'))
  threat = threat_space.check_threat(config_io.to_dict(config.get('threat')),
                                     name, options)
  apply_input = lambda v, x: model.apply(v, x, train=False)
  probs = {split: threat_space.attack_problem(
      threat, splits[split], apply_input, name=name, split=split,
      options=options) for split in ('train', 'val')}
  prob = probs['train']
  apply_fn = prob.apply_fn
  geometry = dict(norm=s['norm'], clip=prob.clip, eps_scale=prob.eps_scale)
  loop = train_loop(s['loop'])
  rel = s['rel_step_size'] or 2.5 / s['steps']
  if s['method'] == 'trades':
    craft = trades_lib.make_trades_attack(
        apply_fn, threat_lib.Threat.build(**geometry), steps=int(s['steps']),
        rel_step_size=float(rel), loop=loop)
  elif s['method'] == 'pgd_at':
    craft = pgd_lib.make_pgd(apply_fn, steps=int(s['steps']),
                             rel_step_size=float(rel), random_start=True,
                             loop=loop, **geometry)
  else:
    craft = pgd_lib.make_pgd(apply_fn, steps=1,
                             rel_step_size=float(s['fgsm_step']),
                             random_start=True, loop=loop, **geometry)
  n = min(int(s['check_examples']), len(probs['val'].y))
  return Defence(
      settings=s, model=model, num_classes=int(num_classes),
      label_smoothing=float(config.train.get('label_smoothing', 0.0)),
      ramp_steps=int(round(float(s['warmup_epochs']) * steps_per_epoch)),
      frontend=prob.frontend, craft=craft,
      check_attack=pgd_lib.make_pgd(apply_fn, steps=int(s['check_steps']),
                                    random_start=True, **geometry),
      check_x=np.asarray(probs['val'].x[:n]),
      check_y=np.asarray(probs['val'].y[:n]),
      check_key=jax.random.split(jax.random.key(int(config.seed)), 4)[3],
      train_x=None if prob.frontend is None else np.asarray(prob.x))
