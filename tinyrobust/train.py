"""One straight trainer: `train_and_evaluate(config, workdir)`.

A row of small named steps (after the Flax ImageNet example): `check_config`,
`load_splits`, `build_model`, `make_optimizer`, `create_train_state`,
`restore_checkpoint`, `train_epoch`, `save_checkpoint`, `evaluate_dataset`,
`final_report`. The loop is a pair of jitted pure step functions over a
`TrainState` pytree. Randomness: one root key from `config.seed`, split once
into (init, data, train, eval); the data order of epoch `e` uses
`fold_in(data_key, e)` and the dropout/augmentation key of step `s` uses
`fold_in(train_key, s)`, so a run resumed from its last checkpoint is
bit-identical to an uninterrupted one.

The workdir's layout, pinned config and checkpoints are
`tinyrobust.checkpoints` (its names are re-exported here).

The optional model hooks the trainer calls (`data_init`, `project_params`,
`train_kwargs`) are declared in `tinyrobust.models.conventions.TrainHooks`.
"""

from __future__ import annotations

import functools
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

from tinyrobust import adversarial
from tinyrobust import config_io
from tinyrobust import data as data_lib
from tinyrobust import fileio
from tinyrobust import models
from tinyrobust import qat
from tinyrobust import registry
from tinyrobust import sharding
from tinyrobust import workdir as workdir_lib
# The workdir names, re-exported (`train.FINAL`, `train.is_finished`, ...).
from tinyrobust.checkpoints import BEST
from tinyrobust.checkpoints import FINAL
from tinyrobust.checkpoints import is_finished
from tinyrobust.checkpoints import LATEST
from tinyrobust.checkpoints import METRICS
from tinyrobust.checkpoints import MUTABLE_FIELDS
from tinyrobust.checkpoints import prepare_workdir
from tinyrobust.checkpoints import RESTART_FILES
from tinyrobust.checkpoints import restore_checkpoint
from tinyrobust.checkpoints import save_checkpoint
from tinyrobust.data import augment as augment_lib
from tinyrobust.models import conventions

OPTIMIZERS = registry.Registry('optimizer')
SCHEDULES = registry.Registry('schedule')


@flax.struct.dataclass
class TrainState:
  params: Any
  batch_stats: Any
  opt_state: Any
  step: jax.Array


def _get(cfg, name, default):
  return cfg.get(name, default) if cfg is not None else default


def build_model(config) -> tuple[nn.Module, int]:
  """Builds the configured model; returns (module, num_classes)."""
  num_classes = config.model.get('num_classes', None)
  if num_classes is None:
    raise ValueError('config.model.num_classes is not set; the trainer sets it '
                     'from the dataset before building the model.')
  return models.get_model(config.model.name, int(num_classes),
                          **config_io.to_dict(config.model.get('kwargs'))), \
      int(num_classes)


@SCHEDULES.register('constant')
def _constant(lr: float, warmup: int, total: int) -> optax.Schedule:
  del warmup, total
  return optax.constant_schedule(lr)


@SCHEDULES.register('cosine')
def _cosine(lr: float, warmup: int, total: int) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(0.0 if warmup else lr, lr, warmup,
                                            total)


@OPTIMIZERS.register('adam')
def _adam(schedule, tcfg) -> optax.GradientTransformation:
  wd = float(_get(tcfg, 'weight_decay', 0.0))
  opt = optax.adam(schedule)
  return optax.chain(optax.add_decayed_weights(wd), opt) if wd else opt


@OPTIMIZERS.register('adamw')
def _adamw(schedule, tcfg) -> optax.GradientTransformation:
  return optax.adamw(schedule, weight_decay=float(_get(tcfg, 'weight_decay',
                                                       0.0)))


@OPTIMIZERS.register('sgd')
def _sgd(schedule, tcfg) -> optax.GradientTransformation:
  wd = float(_get(tcfg, 'weight_decay', 0.0))
  return optax.chain(optax.add_decayed_weights(wd) if wd else
                     optax.identity(),
                     optax.sgd(schedule, momentum=_get(tcfg, 'momentum', 0.9),
                               nesterov=True))


def make_optimizer(tcfg, steps_per_epoch: int) -> optax.GradientTransformation:
  """optax optimizer + learning-rate schedule from `config.train`."""
  make_opt = OPTIMIZERS.lookup(_get(tcfg, 'optimizer', 'adam'))
  make_schedule = SCHEDULES.lookup(_get(tcfg, 'schedule', 'cosine'))
  lr = float(_get(tcfg, 'learning_rate', 1e-3))
  if not lr > 0:
    raise ValueError(f'learning_rate must be > 0, got {lr}.')
  total = max(1, int(tcfg.epochs) * steps_per_epoch)
  warmup = min(int(_get(tcfg, 'warmup_epochs', 0) * steps_per_epoch),
               total - 1)
  opt = make_opt(make_schedule(lr, warmup, total), tcfg)
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
                    augment: Callable | None = None,
                    defence: adversarial.Defence | None = None):
  """Returns `train_step(state, x, y, key) -> (state, metrics)` (pure)."""
  project = conventions.hook(model, 'project_params')
  extra_kwargs = conventions.hook(model, 'train_kwargs')

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

    if defence is not None:
      loss_fn = defence.objective(state, x, y, key, dropout_key, kwargs)
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
  loss_sum = correct = count = 0.0
  for _, (x, y), n_valid in sharding.padded_batches((ds.x, ds.y), batch_size,
                                                    mesh):
    mask = sharding.shard_batch(np.arange(x.shape[0]) < n_valid, mesh)
    out = eval_step(variables, x, y, mask)
    loss_sum, correct, count = (loss_sum + float(out[0]),
                                correct + float(out[1]), count + float(out[2]))
  return {'loss': loss_sum / max(count, 1), 'accuracy': correct / max(count, 1),
          'count': int(count)}


def load_splits(config) -> dict[str, data_lib.Dataset]:
  """The train/val/test splits of `config.data`."""
  opts = config_io.to_dict(config.data.get('options'))
  return {s: data_lib.load(config.data.name, s, **opts)
          for s in ('train', 'val', 'test')}


def check_config(config) -> None:
  """Fails fast on bad names and values, before any data is loaded."""
  data_lib.check_dataset(config.data.name)
  models.check_model(config.model.name,
                     config_io.to_dict(config.model.get('kwargs')))
  t = config.train
  for name in ('epochs', 'batch_size'):
    v = t.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f'train.{name} must be >= 1 (an int), got {v!r}.')
  OPTIMIZERS.lookup(_get(t, 'optimizer', 'adam'))
  SCHEDULES.lookup(_get(t, 'schedule', 'cosine'))
  lr = _get(t, 'learning_rate', 1e-3)
  if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
    raise ValueError(f'train.learning_rate must be a number > 0, got {lr!r}.')
  aug = config.data.get('augment', 'none')
  if aug and aug != 'none':
    augment_lib.check_augment(aug)
  adversarial.check_config(config)
  qat.check_config(config)


def check_model_builds(model: nn.Module, example_shape) -> None:
  """Builds the model abstractly (no compilation) to validate its options
  against the data's input shape."""
  x = jax.ShapeDtypeStruct((1,) + tuple(example_shape), jnp.float32)
  jax.eval_shape(functools.partial(model.init, train=False),
                 jax.random.key(0), x)


def _variables(state: TrainState) -> dict[str, Any]:
  bs = {} if state.batch_stats is None else {'batch_stats': state.batch_stats}
  return {'params': state.params, **bs}


def create_train_state(model: nn.Module, tx: optax.GradientTransformation,
                       train_ds: data_lib.Dataset, key: jax.Array
                       ) -> TrainState:
  """Initialises the model (then its `data_init` hook) and the optimizer."""
  variables = model.init(key, jnp.asarray(train_ds.x[:1]), train=False)
  variables = flax.core.unfreeze(variables)
  data_init = conventions.hook(model, 'data_init')
  if data_init is not None:
    variables = data_init(variables, train_ds.x,
                                jax.random.fold_in(key, 1),
                                y_train=train_ds.y)
  return TrainState(params=variables['params'],
                    batch_stats=variables.get('batch_stats'),
                    opt_state=tx.init(variables['params']),
                    step=jnp.zeros((), jnp.int32))


def train_epoch(train_step, state: TrainState, train_ds, *, epoch: int,
                batch_size: int, steps_per_epoch: int, data_key, train_key,
                mesh, show_bar: bool) -> tuple[TrainState, dict[str, float]]:
  """One pass over a permutation of the training split."""
  perm = np.asarray(jax.random.permutation(
      jax.random.fold_in(data_key, epoch), len(train_ds)))
  sums = {'loss': 0.0, 'accuracy': 0.0}
  bar = tqdm.trange(steps_per_epoch, desc=f'epoch {epoch + 1}',
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
  return state, train_m


def final_report(config, workdir: str, best: dict[str, Any],
                 test_m: dict[str, Any], test_ds) -> dict[str, Any]:
  """The `final` record: appended once, also written to final_metrics.json."""
  best_vars = best['variables']
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
      'model': config.model.name, **adversarial.best_fields(best),
  }
  metrics_path = os.path.join(workdir, METRICS)
  if not any(r.get('final') for r in fileio.read_jsonl(metrics_path)):
    fileio.append_jsonl(metrics_path, final)
  fileio.write_json(os.path.join(workdir, FINAL), final)
  logging.info('final: %s', final)
  print(f'[{config.model.name} on {config.data.name}] test accuracy '
        f'{final["test_accuracy"]:.4f} over {final["test_count"]} examples '
        f'(best-on-val epoch {final["best_epoch"]}, val acc '
        f'{final["val_accuracy"]:.4f}); protocol: {final["protocol"]}')
  return final


def _setup(config, workdir: str, restart: bool = False):
  """Checks, data, model, optimizer and pinned workdir of a run."""
  config = adversarial.canonical_config(
      ml_collections.ConfigDict(config_io.config_json(config)))
  check_config(config)
  splits = load_splits(config)
  if config.model.get('num_classes', None) is None:
    config.model.num_classes = splits['train'].num_classes
  model, num_classes = build_model(config)
  check_model_builds(model, splits['train'].x.shape[1:])
  if restart:
    workdir_lib.set_aside(workdir, RESTART_FILES)
  prepare_workdir(config, workdir)
  return config, splits, model, num_classes


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *,
    callbacks: Sequence[Callable[[int, TrainState], None]] = (),
    restart: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
  """Trains `config.model` on `config.data`, checkpointing in `workdir`.

  Args:
    config: experiment config (sections seed, data, model, train).
    workdir: output directory; an existing run with the same config resumes
      from its last completed epoch.
    callbacks: functions `cb(epoch, state)` called after each epoch's
      checkpoint (used for logging or to interrupt a run in tests).
    restart: start over: the workdir's journal, checkpoints, final metrics
      and config move aside to `<workdir>/replaced_<time>/` (after the
      config's checks) instead of resuming.

  Returns:
    (metrics, variables): final metrics (best validation accuracy, test
    accuracy of the best-on-validation variables, protocol) and those
    eval-mode variables.
  """
  config, splits, model, num_classes = _setup(config, workdir, restart)
  train_ds, val_ds, test_ds = splits['train'], splits['val'], splits['test']
  tcfg = config.train
  mesh = sharding.batch_mesh()
  batch_size = min(int(tcfg.batch_size), len(train_ds))
  batch_size = max(mesh.size, batch_size - batch_size % mesh.size)
  steps_per_epoch = max(1, len(train_ds) // batch_size)
  tx = make_optimizer(tcfg, steps_per_epoch)
  init_key, data_key, train_key, _ = jax.random.split(
      jax.random.key(int(config.seed)), 4)
  state = create_train_state(model, tx, train_ds, init_key)
  defence = adversarial.build(config, model, splits, num_classes=num_classes,
                              steps_per_epoch=steps_per_epoch)
  best = {'val_accuracy': -1.0, 'epoch': -1, 'variables': _variables(state),
          **(defence.best_template if defence else {})}
  state, best, start_epoch = restore_checkpoint(workdir, state, best)
  aug = config.data.get('augment', 'none')
  augment = None if aug in ('none', '', None) else augment_lib.get_augment(aug)
  make_step = lambda m, d: jax.jit(make_train_step(
      m, tx, num_classes=num_classes, augment=augment, defence=d,
      total_steps=int(tcfg.epochs) * steps_per_epoch,
      label_smoothing=_get(tcfg, 'label_smoothing', 0.0)), donate_argnums=0)
  train_step = make_step(model, defence)
  eval_step = jax.jit(make_eval_step(model, num_classes))
  eval_bs = int(_get(tcfg, 'eval_batch_size', 512))
  for epoch in range(start_epoch, int(tcfg.epochs)):
    t0 = time.time()
    if epoch >= qat.first_epoch(config):  # int8-aware: calibrated per epoch
      train_step, defence, best = qat.epoch_setup(
          config, model, splits, state, best, epoch, make_step, steps_per_epoch)
    state, train_m = train_epoch(
        train_step, state, defence.train_data(train_ds) if defence else
        train_ds, epoch=epoch, batch_size=batch_size, mesh=mesh,
        steps_per_epoch=steps_per_epoch, data_key=data_key,
        train_key=train_key, show_bar=_get(tcfg, 'progress_bar', True))
    val_m = evaluate_dataset(eval_step, _variables(state), val_ds, eval_bs,
                             mesh)
    check = defence.epoch_check(state, best) if defence else {}
    if adversarial.improves(best, val_m['accuracy'], check):
      best = {'val_accuracy': val_m['accuracy'], 'epoch': epoch,
              'variables': jax.device_get(_variables(state)),
              **adversarial.best_fields(check)}
    record = {'epoch': epoch + 1, 'step': int(state.step),
              'train_loss': train_m['loss'],
              'train_accuracy': train_m['accuracy'],
              'val_loss': val_m['loss'], 'val_accuracy': val_m['accuracy'],
              'seconds': time.time() - t0, **check}
    save_checkpoint(workdir, state, epoch, best, record)
    logging.info('epoch %d/%d: %s', epoch + 1, tcfg.epochs, record)
    for cb in callbacks:
      cb(epoch, state)
  test_m = evaluate_dataset(eval_step, best['variables'], test_ds, eval_bs,
                            mesh)
  return final_report(config, workdir, best, test_m, test_ds), \
      best['variables']


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
  raw_cfg = fileio.read_json(cfg_path)
  missing = [k for k in ('data', 'model', 'train') if not isinstance(
      raw_cfg, dict) or not isinstance(raw_cfg.get(k), dict)]
  if missing or 'name' not in raw_cfg['model']:
    raise ValueError(f'{cfg_path} is not a training config: it lacks '
                     f'{", ".join(missing) or "model.name"} (has '
                     f'{sorted(raw_cfg) if isinstance(raw_cfg, dict) else raw_cfg!r}'
                     '). Restore the file the run wrote, or retrain.')
  config = ml_collections.ConfigDict(raw_cfg)
  model, _ = build_model(config)
  raw = fileio.load_pytree(ckpt_path)
  variables = jax.tree_util.tree_map(jnp.asarray, raw)
  return model, variables, config
