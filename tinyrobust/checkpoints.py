"""A training run's workdir: its files, pinned config and checkpoints.

Layout (`train.train_and_evaluate` writes it, `train.load_trained` reads it):
  config.json      the full config (a restart with a different config fails,
                   except in `MUTABLE_FIELDS`)
  metrics.jsonl    one record per epoch, then one `final` record
  latest.ckpt      train state + epoch + best-so-far + the epoch's record
  best.ckpt        eval-mode variables with the best validation accuracy
  final_metrics.json

An epoch commits in one order (`save_checkpoint`): best.ckpt, latest.ckpt,
then the record's line; `restore_checkpoint` reconciles the journal with
the checkpoint, so a run killed anywhere resumes with every finished epoch
recorded once. A journal with finished epochs but no latest.ckpt (deleted)
is an error naming both files (`check_journal_without_checkpoint`), never a
silent restart; `RESTART_FILES` are what starting over moves aside (the
run's files and the attack/profile results computed on it). A best.ckpt of
another architecture than config.json's model is named with both files
(`check_variables_fit`). `state` is a `train.TrainState` (any flax pytree).
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
import flax
import jax

from tinyrobust import config_io
from tinyrobust import fileio

LATEST, BEST, METRICS, FINAL = ('latest.ckpt', 'best.ckpt', 'metrics.jsonl',
                                'final_metrics.json')
# Written on a trained run by --mode=attack (`runs.attack`) and
# --mode=profile (`runs.profile`): they describe the old model.
RESULT_FILES = ('attack_results.json', 'attack_results.csv', 'results.jsonl',
                'profile.json')
# What `train_and_evaluate(restart=True)` moves aside (`workdir.set_aside`):
# the run and every result computed on it, so nothing stale sits beside the
# new run.
RESTART_FILES = (METRICS, LATEST, BEST, FINAL, 'config.json') + RESULT_FILES
# Fields that may change when a run is resumed (they do not change results).
MUTABLE_FIELDS = ('train.progress_bar', 'train.eval_batch_size')


def prepare_workdir(config, workdir: str) -> None:
  """Pins the config in `workdir` (after every check has passed).

  A workdir that holds only a config (no checkpoint yet) takes the new one;
  with a checkpoint, a differing config is refused except in the cosmetic
  fields `MUTABLE_FIELDS`; a run's files without its config.json (deleted)
  are refused before anything is written: the run's settings are unknown.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'--workdir {workdir!r} is a file, not a directory.')
  os.makedirs(workdir, exist_ok=True)
  if not os.access(workdir, os.W_OK):
    raise ValueError(f'--workdir {workdir!r} is not writable.')
  cfg_path = os.path.join(workdir, 'config.json')
  run_files = [n for n in (METRICS, LATEST, BEST, FINAL)
               if os.path.exists(os.path.join(workdir, n))]
  if run_files and not os.path.exists(cfg_path):
    raise ValueError(
        f'{cfg_path} is missing, but {workdir!r} holds {", ".join(run_files)}'
        ' of a run: its settings are unknown, and resuming with this config '
        'could mix two configs in one run. Restore config.json (the one the '
        'run was trained with) to resume, or start over with --restart, '
        f'which moves {", ".join(run_files)} aside.')
  started = os.path.exists(os.path.join(workdir, LATEST))
  config_io.pin_config(config, cfg_path, mutable=MUTABLE_FIELDS,
                       replace_if=not started)


def save_checkpoint(workdir: str, state: Any, epoch: int,
                    best: dict[str, Any], record: dict[str, Any]) -> None:
  """Commits one epoch: best.ckpt, latest.ckpt (with the epoch's record),
  then the record's line in metrics.jsonl.

  A kill between the checkpoint and the line leaves a checkpoint whose record
  is missing from the journal; `restore_checkpoint` appends it.
  """
  if best['epoch'] == epoch:
    fileio.save_pytree(os.path.join(workdir, BEST), best['variables'])
  fileio.save_pytree(os.path.join(workdir, LATEST), {
      'state': jax.device_get(state), 'epoch': epoch, 'best': best,
      'record': json.dumps(record, sort_keys=True)})
  fileio.append_jsonl(os.path.join(workdir, METRICS), record)


def restore_checkpoint(workdir: str, state: Any, best: dict[str, Any]
                       ) -> tuple[Any, dict[str, Any], int]:
  """Resumes from latest.ckpt: `(state, best, start_epoch)`.

  The restored tree must match the model's (names and shapes); the
  metrics journal is reconciled with the checkpoint so every finished epoch
  has exactly one record.
  """
  path = os.path.join(workdir, LATEST)
  if not os.path.exists(path):
    check_journal_without_checkpoint(workdir)
    return state, best, 0
  raw = fileio.load_pytree(path)
  template = {'state': flax.serialization.to_state_dict(state),
              'best': flax.serialization.to_state_dict(best)}
  mismatch = fileio.tree_shape_mismatch(template['state'], raw['state'])
  if mismatch:
    raise ValueError(f'{path} was written by a different model or optimizer '
                     f'(differs at {", ".join(mismatch[:5])}). Delete the '
                     'workdir or use the config it was trained with.')
  state = flax.serialization.from_state_dict(state, raw['state'])
  best = flax.serialization.from_state_dict(best, raw['best'])
  epoch = int(raw['epoch'])
  _reconcile_metrics(os.path.join(workdir, METRICS), epoch,
                     json.loads(raw.get('record') or 'null'))
  logging.info('Resumed %s at epoch %d (step %d).', workdir, epoch + 1,
               int(state.step))
  return state, best, epoch + 1


def check_journal_without_checkpoint(workdir: str) -> None:
  """A run with no latest.ckpt must have no finished epoch in its journal.

  Raises:
    ValueError: metrics.jsonl records finished epochs (or the final record)
      but latest.ckpt is gone: naming both files and the two ways on
      (restore the checkpoint; or start over, moving the old files aside).
  """
  path = os.path.join(workdir, METRICS)
  records = fileio.read_jsonl(path) if os.path.exists(path) else []
  epochs = [r.get('epoch') for r in records if not r.get('final')]
  final = any(r.get('final') for r in records)
  if not epochs and not final:
    return
  ints = [e for e in epochs if isinstance(e, int)]
  what = (f'{len(epochs)} finished epoch(s) (last: epoch '
          f'{max(ints) if ints else "-"})'
          + (' and the final record' if final else ''))
  raise ValueError(
      f'{path} records {what}, but {os.path.join(workdir, LATEST)} is '
      'missing: the run cannot resume where its journal stops, and training '
      'from epoch 1 would append a second history to it. Either restore '
      f'{LATEST} (e.g. from a backup) to resume, or start over: rerun with '
      '--restart (python -m experiments.main; train_and_evaluate(..., '
      'restart=True)), which moves metrics.jsonl, the checkpoints, '
      f'{FINAL}, config.json and the attack/profile results aside into '
      f'{workdir}/replaced_<time>/.')


def _reconcile_metrics(path: str, epoch: int, record) -> None:
  """Keeps epoch records 1..epoch+1 once each; appends the checkpointed one
  when the kill came before its line was written."""
  records = fileio.read_jsonl(path, repair=True)
  keep = [r for r in records
          if not r.get('final') and r.get('epoch', 0) <= epoch + 1]
  seen = {r.get('epoch') for r in keep}
  if record is not None and record['epoch'] not in seen:
    keep.append(record)
  if keep != records:
    fileio.write_jsonl(path, keep)


def is_finished(workdir: str) -> bool:
  """True when the run in `workdir` has written its final record."""
  return os.path.exists(os.path.join(workdir, FINAL))


def _shapes(tree) -> dict[str, tuple]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(str(getattr(k, 'key', k)) for k in path):
          tuple(getattr(leaf, 'shape', ())) for path, leaf in flat}


def check_variables_fit(model, variables, example_shape,
                        workdir: str) -> None:
  """A trained run's `best.ckpt` must fit the model its `config.json` builds.

  Args:
    model: the model built from `<workdir>/config.json`.
    variables: the variables loaded from `<workdir>/best.ckpt`.
    example_shape: the model's input shape (one example, no batch axis).
    workdir: the run's directory (named in the message).

  Raises:
    ValueError: the checkpoint's parameters differ (names or shapes) from
      those the config's model has for that input; naming the checkpoint
      file, the config file, the model and the first differences.
  """
  spec = jax.ShapeDtypeStruct((1,) + tuple(example_shape), 'float32')
  want = jax.eval_shape(lambda x: model.init(jax.random.key(0), x,
                                             train=False), spec)
  cols = set(variables) if isinstance(variables, dict) else set()
  want = {c: want[c] for c in want if c in cols or c == 'params'}
  got, exp = _shapes(variables), _shapes(want)
  diffs = [f'{k}: checkpoint {list(got[k])}, config {list(exp[k])}'
           for k in sorted(set(got) & set(exp)) if got[k] != exp[k]]
  diffs += [f'{k}: only in the checkpoint' for k in sorted(set(got) - set(exp))]
  diffs += [f'{k}: only in the config\'s model' for k in sorted(
      set(exp) - set(got))]
  if not diffs:
    return
  cfg_path = os.path.join(workdir, 'config.json')
  name = getattr(model, 'name', None) or type(model).__name__
  raise ValueError(
      f'The checkpoint {os.path.join(workdir, BEST)} does not fit the model '
      f'{name!r} that {cfg_path} builds (for inputs '
      f'{list(example_shape)}): {len(diffs)} parameter(s) differ, e.g. '
      f'{"; ".join(diffs[:3])}. The checkpoint was made for another '
      'architecture or options: restore the config.json the run wrote, or '
      'retrain with this config in a new --workdir.')
