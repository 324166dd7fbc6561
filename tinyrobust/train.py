"""One straight trainer: `train_and_evaluate(config, workdir)`.

The loop is a pair of jitted pure step functions over a `TrainState` pytree.
Randomness: one root key from `config.seed`, split once into (init, data,
train, eval); the data order of epoch `e` uses `fold_in(data_key, e)` and the
dropout/augmentation key of step `s` uses `fold_in(train_key, s)`, so a run
resumed from its last checkpoint is bit-identical to an uninterrupted one.

Workdir layout:
  config.json      the full config (a restart with a different config fails)
  metrics.jsonl    one record per epoch, then one `final` record
  latest.ckpt      train state + epoch + best-so-far, written every epoch
  best.ckpt        eval-mode variables with the best validation accuracy

Model hooks (optional methods on the Flax module):
  data_init(variables, x_train, key, y_train=None) -> variables  after init
  project_params(params, progress) -> params           after each update
  train_kwargs(progress) -> dict                       extra apply kwargs
with `progress = step / total_steps` in [0, 1].
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Callable, Sequence

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from tinyrobust import data as data_lib
from tinyrobust import io
from tinyrobust import models
from tinyrobust import sharding

_OPTIMIZERS = ('adam', 'adamw', 'sgd')
_SCHEDULES = ('constant', 'cosine')


@flax.struct.dataclass
class TrainState:
  params: Any
  batch_stats: Any
  opt_state: Any
  step: jax.Array


def _get(cfg, name, default):
  return cfg.get(name, default) if cfg is not None else default


def _to_dict(cfg) -> dict[str, Any]:
  if cfg is None:
    return {}
  return cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)


def build_model(config) -> tuple[nn.Module, int]:
  """Builds the configured model; returns (module, num_classes)."""
  num_classes = config.model.get('num_classes', None)
  if num_classes is None:
    raise ValueError('config.model.num_classes is not set; the trainer sets it '
                     'from the dataset before building the model.')
  return models.get_model(config.model.name, int(num_classes),
                          **_to_dict(config.model.get('kwargs'))), num_classes


def make_optimizer(tcfg, steps_per_epoch: int) -> optax.GradientTransformation:
  """optax optimizer + learning-rate schedule from `config.train`."""
  name = _get(tcfg, 'optimizer', 'adam')
  sched = _get(tcfg, 'schedule', 'cosine')
  if name not in _OPTIMIZERS:
    raise ValueError(f'Unknown optimizer {name!r}. Valid: {_OPTIMIZERS}.')
  if sched not in _SCHEDULES:
    raise ValueError(f'Unknown schedule {sched!r}. Valid: {_SCHEDULES}.')
  lr = float(_get(tcfg, 'learning_rate', 1e-3))
  if not lr > 0:
    raise ValueError(f'learning_rate must be > 0, got {lr}.')
  total = max(1, int(tcfg.epochs) * steps_per_epoch)
  warmup = min(int(_get(tcfg, 'warmup_epochs', 0) * steps_per_epoch),
               total - 1)
  if sched == 'constant':
    schedule = optax.constant_schedule(lr)
  else:
    schedule = optax.warmup_cosine_decay_schedule(0.0 if warmup else lr, lr,
                                                  warmup, total)
  wd = float(_get(tcfg, 'weight_decay', 0.0))
  if name == 'adam':
    opt = optax.adam(schedule)
    if wd:
      opt = optax.chain(optax.add_decayed_weights(wd), opt)
  elif name == 'adamw':
    opt = optax.adamw(schedule, weight_decay=wd)
  else:
    opt = optax.chain(optax.add_decayed_weights(wd) if wd else
                      optax.identity(),
                      optax.sgd(schedule, momentum=_get(tcfg, 'momentum', 0.9),
                                nesterov=True))
  clip = _get(tcfg, 'grad_clip_norm', 0.0)
  if clip:
    opt = optax.chain(optax.clip_by_global_norm(clip), opt)
  return opt


def _loss(logits, labels, num_classes, label_smoothing):
  onehot = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    onehot = optax.smooth_labels(onehot, label_smoothing)
  return optax.softmax_cross_entropy(logits, onehot)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, *,
                    num_classes: int, total_steps: int,
                    label_smoothing: float = 0.0,
                    augment: Callable | None = None):
  """Returns `train_step(state, x, y, key) -> (state, metrics)` (pure)."""
  project = getattr(model, 'project_params', None)
  extra_kwargs = getattr(model, 'train_kwargs', None)

  def train_step(state: TrainState, x, y, key):
    progress = state.step.astype(jnp.float32) / total_steps
    aug_key, dropout_key = jax.random.split(key)
    if augment is not None:
      x = augment(aug_key, x)
    kwargs = extra_kwargs(progress) if extra_kwargs else {}

    def loss_fn(params):
      variables = {'params': params}
      mutable = False
      if state.batch_stats is not None:
        variables['batch_stats'] = state.batch_stats
        mutable = ['batch_stats']
      out = model.apply(variables, x, train=True, mutable=mutable,
                        rngs={'dropout': dropout_key}, **kwargs)
      logits, new_vars = out if mutable else (out, {})
      loss = _loss(logits, y, num_classes, label_smoothing).mean()
      return loss, (logits, new_vars.get('batch_stats'))

    (loss, (logits, new_bs)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if project is not None:
      params = project(params, progress)
    acc = jnp.mean(jnp.argmax(logits, -1) == y)
    new_state = state.replace(params=params, batch_stats=new_bs,
                              opt_state=opt_state, step=state.step + 1)
    return new_state, {'loss': loss, 'accuracy': acc}

  return train_step


def make_eval_step(model: nn.Module, num_classes: int):
  """Returns `eval_step(variables, x, y, mask) -> (loss_sum, correct, n)`."""

  def eval_step(variables, x, y, mask):
    logits = model.apply(variables, x, train=False)
    loss = _loss(logits, y, num_classes, 0.0)
    correct = (jnp.argmax(logits, -1) == y) & mask
    return (jnp.sum(jnp.where(mask, loss, 0.0)), jnp.sum(correct),
            jnp.sum(mask))

  return eval_step


def evaluate_dataset(eval_step, variables, ds: data_lib.Dataset,
                     batch_size: int, mesh=None) -> dict[str, float]:
  """Loss and accuracy of `variables` over a whole dataset (eval mode)."""
  mesh = mesh or sharding.batch_mesh()
  n_dev = mesh.devices.size
  batch_size = max(n_dev, batch_size - batch_size % n_dev)
  loss_sum = correct = count = 0.0
  for i in range(0, len(ds), batch_size):
    x, y = ds.x[i:i + batch_size], ds.y[i:i + batch_size]
    n = len(y)
    mask = np.arange(batch_size) < n
    x, _ = sharding.pad_to_multiple(x, batch_size) if n < batch_size else (x, n)
    y, _ = sharding.pad_to_multiple(y, batch_size) if n < batch_size else (y, n)
    out = eval_step(variables, sharding.shard_batch(x, mesh),
                    sharding.shard_batch(y, mesh),
                    sharding.shard_batch(mask, mesh))
    loss_sum += float(out[0])
    correct += float(out[1])
    count += float(out[2])
  return {'loss': loss_sum / max(count, 1), 'accuracy': correct / max(count, 1),
          'count': int(count)}


def _load_splits(config) -> dict[str, data_lib.Dataset]:
  opts = _to_dict(config.data.get('options'))
  return {s: data_lib.load(config.data.name, s, **opts)
          for s in ('train', 'val', 'test')}


def _check_config(config) -> None:
  """Fails fast on bad config values, before any data or compilation."""
  if config.data.name not in data_lib.list_datasets():
    raise ValueError(f'Unknown dataset {config.data.name!r}. Valid: '
                     f'{", ".join(data_lib.list_datasets())}.')
  if config.model.name not in models.list_models():
    raise ValueError(f'Unknown model {config.model.name!r}. Valid: '
                     f'{", ".join(models.list_models())}.')
  t = config.train
  if int(t.epochs) < 1:
    raise ValueError(f'train.epochs must be >= 1, got {t.epochs}.')
  if int(t.batch_size) < 1:
    raise ValueError(f'train.batch_size must be >= 1, got {t.batch_size}.')
  if _get(t, 'optimizer', 'adam') not in _OPTIMIZERS:
    raise ValueError(f'Unknown optimizer {t.optimizer!r}. Valid: '
                     f'{_OPTIMIZERS}.')
  if _get(t, 'schedule', 'cosine') not in _SCHEDULES:
    raise ValueError(f'Unknown schedule {t.schedule!r}. Valid: {_SCHEDULES}.')


def _config_json(config) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def _prepare_workdir(config, workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, 'config.json')
  new = _config_json(config)
  if os.path.exists(path):
    old = io.read_json(path)
    if old != new:
      diff = sorted(_diff_keys(old, new))
      raise ValueError(
          f'Workdir {workdir!r} holds a run with a different config (differs '
          f'at: {", ".join(diff)}). Use a new --workdir, or restore the '
          'original settings to resume.')
  else:
    io.write_json(path, new)


def _diff_keys(a, b, prefix=''):
  if isinstance(a, dict) and isinstance(b, dict):
    for k in set(a) | set(b):
      yield from _diff_keys(a.get(k), b.get(k), f'{prefix}{k}.')
  elif a != b:
    yield prefix.rstrip('.')


def _variables(state: TrainState) -> dict[str, Any]:
  v = {'params': state.params}
  if state.batch_stats is not None:
    v['batch_stats'] = state.batch_stats
  return v


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *,
    callbacks: Sequence[Callable[[int, TrainState], None]] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
  """Trains `config.model` on `config.data`, checkpointing in `workdir`.

  Args:
    config: experiment config (sections seed, data, model, train).
    workdir: output directory; an existing run with the same config resumes
      from its last completed epoch.
    callbacks: functions `cb(epoch, state)` called after each epoch's
      checkpoint (used for logging or to interrupt a run in tests).

  Returns:
    (metrics, variables): final metrics (best validation accuracy, test
    accuracy of the best-on-validation variables, protocol) and those
    eval-mode variables.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  _check_config(config)
  splits = _load_splits(config)
  train_ds, val_ds, test_ds = splits['train'], splits['val'], splits['test']
  if config.model.get('num_classes', None) is None:
    config.model.num_classes = train_ds.num_classes
  _prepare_workdir(config, workdir)
  model, num_classes = build_model(config)
  tcfg = config.train

  mesh = sharding.batch_mesh()
  n_dev = mesh.devices.size
  batch_size = min(int(tcfg.batch_size), len(train_ds))
  batch_size = max(n_dev, batch_size - batch_size % n_dev)
  steps_per_epoch = max(1, len(train_ds) // batch_size)
  total_steps = int(tcfg.epochs) * steps_per_epoch
  tx = make_optimizer(tcfg, steps_per_epoch)

  root = jax.random.key(int(config.seed))
  init_key, data_key, train_key, _ = jax.random.split(root, 4)
  variables = model.init(init_key, jnp.asarray(train_ds.x[:1]), train=False)
  variables = flax.core.unfreeze(variables)
  if hasattr(model, 'data_init'):
    variables = model.data_init(variables, train_ds.x,
                                jax.random.fold_in(init_key, 1),
                                y_train=train_ds.y)
  state = TrainState(params=variables['params'],
                     batch_stats=variables.get('batch_stats'),
                     opt_state=tx.init(variables['params']),
                     step=jnp.zeros((), jnp.int32))
  best = {'val_accuracy': -1.0, 'epoch': -1, 'variables': _variables(state)}
  start_epoch = 0
  latest = os.path.join(workdir, 'latest.ckpt')
  if os.path.exists(latest):
    ckpt = io.load_pytree(latest, {'state': state, 'epoch': 0, 'best': best})
    state, best = ckpt['state'], ckpt['best']
    start_epoch = int(ckpt['epoch']) + 1
    logging.info('Resumed %s at epoch %d (step %d).', workdir, start_epoch,
                 int(state.step))

  augment = None
  aug_name = config.data.get('augment', 'none')
  if aug_name and aug_name != 'none':
    from tinyrobust.data import augment as augment_lib  # pylint: disable=g-import-not-at-top
    augment = augment_lib.get_augment(aug_name)
  train_step = jax.jit(
      make_train_step(model, tx, num_classes=num_classes,
                      total_steps=total_steps,
                      label_smoothing=_get(tcfg, 'label_smoothing', 0.0),
                      augment=augment), donate_argnums=0)
  eval_step = jax.jit(make_eval_step(model, num_classes))
  eval_bs = int(_get(tcfg, 'eval_batch_size', 512))
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  show_bar = _get(tcfg, 'progress_bar', True)

  for epoch in range(start_epoch, int(tcfg.epochs)):
    t0 = time.time()
    perm = np.asarray(jax.random.permutation(
        jax.random.fold_in(data_key, epoch), len(train_ds)))
    sums = {'loss': 0.0, 'accuracy': 0.0}
    bar = tqdm.trange(steps_per_epoch, desc=f'epoch {epoch + 1}/{tcfg.epochs}',
                      disable=not show_bar or None, leave=False)
    for i in bar:
      idx = perm[i * batch_size:(i + 1) * batch_size]
      x = sharding.shard_batch(train_ds.x[idx], mesh)
      y = sharding.shard_batch(train_ds.y[idx], mesh)
      key = jax.random.fold_in(train_key, state.step)
      state, m = train_step(state, x, y, key)
      if i % 10 == 0 or i == steps_per_epoch - 1:
        m = jax.device_get(m)
        bar.set_postfix(loss=f'{m["loss"]:.4f}', acc=f'{m["accuracy"]:.3f}')
      sums = {k: sums[k] + m[k] for k in sums}
    train_m = {k: float(v) / steps_per_epoch for k, v in sums.items()}
    if not np.isfinite(train_m['loss']):
      raise FloatingPointError(f'Training loss is {train_m["loss"]} at epoch '
                               f'{epoch + 1}; lower train.learning_rate.')
    val_m = evaluate_dataset(eval_step, _variables(state), val_ds, eval_bs,
                             mesh)
    if val_m['accuracy'] > best['val_accuracy']:
      best = {'val_accuracy': val_m['accuracy'], 'epoch': epoch,
              'variables': jax.device_get(_variables(state))}
      io.save_pytree(os.path.join(workdir, 'best.ckpt'), best['variables'])
    io.save_pytree(latest, {'state': jax.device_get(state), 'epoch': epoch,
                            'best': best})
    record = {'epoch': epoch + 1, 'step': int(state.step),
              'train_loss': train_m['loss'],
              'train_accuracy': train_m['accuracy'],
              'val_loss': val_m['loss'], 'val_accuracy': val_m['accuracy'],
              'seconds': time.time() - t0}
    io.append_jsonl(metrics_path, record)
    logging.info('epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc '
                 '%.4f', epoch + 1, tcfg.epochs, train_m['loss'],
                 train_m['accuracy'], val_m['loss'], val_m['accuracy'])
    for cb in callbacks:
      cb(epoch, state)

  best_vars = best['variables']
  test_m = evaluate_dataset(eval_step, best_vars, test_ds, eval_bs, mesh)
  final = {
      'final': True,
      'best_epoch': int(best['epoch']) + 1,
      'val_accuracy': float(best['val_accuracy']),
      'test_accuracy': test_m['accuracy'],
      'test_loss': test_m['loss'],
      'test_count': test_m['count'],
      'num_params': int(sum(np.size(p) for p in
                            jax.tree_util.tree_leaves(best_vars['params']))),
      'protocol': test_ds.meta.get('protocol', ''),
      'dataset': config.data.name,
      'model': config.model.name,
  }
  io.append_jsonl(metrics_path, final)
  io.write_json(os.path.join(workdir, 'final_metrics.json'), final)
  logging.info('final: %s', final)
  print(f'[{config.model.name} on {config.data.name}] test accuracy '
        f'{final["test_accuracy"]:.4f} over {final["test_count"]} examples '
        f'(best-on-val epoch {final["best_epoch"]}, val acc '
        f'{final["val_accuracy"]:.4f}); protocol: {final["protocol"]}')
  return final, best_vars


def load_trained(workdir: str):
  """Loads a finished run: returns (model, variables, config).

  Variables are the best-on-validation eval-mode collections (params and,
  when the model has batch norm, batch_stats).
  """
  cfg_path = os.path.join(workdir, 'config.json')
  ckpt_path = os.path.join(workdir, 'best.ckpt')
  for p in (cfg_path, ckpt_path):
    if not os.path.exists(p):
      raise ValueError(f'{workdir!r} is not a trained run: {p} is missing. '
                       'Train first with --mode=train.')
  config = ml_collections.ConfigDict(io.read_json(cfg_path))
  model, _ = build_model(config)
  raw = io.load_pytree(ckpt_path)
  variables = jax.tree_util.tree_map(jnp.asarray, raw)
  return model, variables, config
