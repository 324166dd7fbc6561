"""One workdir, one writer, one mode: the workdir lock and the mode stamp.

`hold(workdir, mode)` (what `modes.run` wraps every run mode in):

* checks the path (`check_path`: not empty, not a file, not a dangling
  symlink);
* takes an exclusive OS lock (`fcntl.flock`) on `<workdir>/.lock` before
  anything else is written, and writes the holder (PID, host, start time,
  mode, command line) into it. A second process fails at once with
  `WorkdirBusyError` naming the holder. The kernel releases the lock when
  its process dies (even by kill -9), so a killed run's lock is taken over
  by the next run, which says so and resumes. The lock is re-entrant within
  a process (a study holding its workdir may run modes below it) and works
  on local file systems (on NFS flock may be per host only);
* reads the workdir's mode stamp `<workdir>/run_mode.json` (`{"mode",
  "kind", "created"}`), or infers it from the files of a workdir made
  before stamps existed (`infer_mode`), and refuses a workdir of another
  kind with a ValueError naming both (`READS`: `attack` and `profile` run
  on a training run's workdir). An empty workdir is stamped with the mode.

A run that fails before writing anything leaves the workdir as it found it
(the stamp and lock file removed again, a folder it created deleted), so a
bad command never claims a workdir. `lock_dir(path)` is the bare lock (no
stamp) a study's worker jobs hold on their model directories, so parallel
jobs never share one. `set_aside(workdir, names)` moves files into
`<workdir>/replaced_<UTC time>/` (a training run started over).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import threading
from typing import Iterator

from absl import logging

LOCK_NAME = '.lock'
STAMP_NAME = 'run_mode.json'
# What each mode's workdir holds (the stamp's `kind`).
KINDS = {'train': 'training run', 'search': 'architecture search',
         'study': 'robustness study', 'search_study': 'search study'}
# Modes that run on another mode's workdir (and never stamp an empty one).
READS = {'attack': 'train', 'profile': 'train'}

_HELD: dict[str, list] = {}  # realpath -> [fd, count]
_GUARD = threading.Lock()


class WorkdirBusyError(RuntimeError):
  """Another live process holds the workdir's lock."""


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec='seconds')


def check_path(workdir) -> str:
  """`workdir` as a usable directory path (it may not exist yet).

  Raises:
    ValueError: empty or not a string, an existing file, or a symlink whose
      target does not exist.
  """
  if not isinstance(workdir, (str, os.PathLike)) or not str(workdir).strip():
    raise ValueError(f'--workdir must be a directory path, got {workdir!r} '
                     '(empty). Give a folder, e.g. --workdir=/tmp/run1.')
  workdir = os.fspath(workdir)
  if os.path.islink(workdir) and not os.path.exists(workdir):
    raise ValueError(f'--workdir {workdir!r} is a symlink to '
                     f'{os.readlink(workdir)!r}, which does not exist. Create '
                     'the target folder or remove the link.')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'--workdir {workdir!r} is a file, not a directory.')
  return workdir


def _holder(fd: int) -> str:
  os.lseek(fd, 0, os.SEEK_SET)
  raw = os.read(fd, 65536).decode('utf-8', 'replace').strip()
  try:
    h = json.loads(raw)
    return (f'PID {h.get("pid")} on host {h.get("host")!r}, mode '
            f'{h.get("mode")!r}, since {h.get("started")}')
  except ValueError:
    return 'a process that has not written its name yet'


def _open_locked(path: str, workdir: str) -> tuple[int, str]:
  """Opens and flocks `path`; `(fd, previous holder text or '')`."""
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
      holder = _holder(fd)
      os.close(fd)
      if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise
      raise WorkdirBusyError(
          f'Workdir {workdir!r} is in use by another run ({holder}; lock '
          f'file {path}). Two runs in one workdir would train and journal '
          'everything twice: wait for it to finish, stop it, or use another '
          '--workdir.') from None
    try:
      same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
      same = False
    if same:  # not unlinked by a releasing holder in between
      os.lseek(fd, 0, os.SEEK_SET)
      previous = os.read(fd, 65536).decode('utf-8', 'replace').strip()
      return fd, previous
    os.close(fd)


def _acquire(workdir: str, mode: str | None) -> tuple[str, bool]:
  """Locks `workdir` for this process; `(key, newly_taken)`."""
  key = os.path.realpath(workdir)
  with _GUARD:
    if key in _HELD:
      _HELD[key][1] += 1
      return key, False
    path = os.path.join(workdir, LOCK_NAME)
    try:
      fd, previous = _open_locked(path, workdir)
    except PermissionError as err:
      raise ValueError(f'--workdir {workdir!r} is not writable ({err}).'
                       ) from None
    if previous:
      logging.warning('Workdir %s: took over the lock of a run that ended '
                      'without releasing it (%s).', workdir, previous)
      print(f'[workdir] {workdir}: taking over the lock left by a run that '
            f'no longer runs ({previous}); resuming.', file=sys.stderr)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps({
        'pid': os.getpid(), 'host': socket.gethostname(), 'started': _now(),
        'mode': mode, 'argv': sys.argv}).encode())
    os.fsync(fd)
    _HELD[key] = [fd, 1]
    return key, True


def _release(key: str, path: str, restore: bool) -> None:
  with _GUARD:
    held = _HELD[key]
    held[1] -= 1
    if held[1]:
      return
    del _HELD[key]
    fd = held[0]
    if restore:
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    else:
      os.ftruncate(fd, 0)  # released cleanly: no holder to take over from
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _read_config(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def infer_mode(workdir: str) -> str | None:
  """The mode whose files a workdir without a stamp holds (None: unknown
  or empty)."""
  try:
    files = set(os.listdir(workdir))
  except FileNotFoundError:
    return None
  if files & {'trials.jsonl', 'search_config.json'}:
    return 'search'
  if 'study_config.json' in files:
    cfg = _read_config(os.path.join(workdir, 'study_config.json'))
    return 'search_study' if 'search_study' in cfg else 'study'
  if files & {'report.md', 'table1.csv', 'models'}:
    return 'study'
  if 'config.json' in files or files & {'latest.ckpt', 'best.ckpt',
                                         'metrics.jsonl'}:
    return 'train'
  return None


def stamp(workdir: str) -> dict | None:
  """The workdir's mode stamp (read, or inferred with `inferred=True`)."""
  path = os.path.join(workdir, STAMP_NAME)
  if os.path.exists(path):
    s = _read_config(path)
    if not isinstance(s.get('mode'), str):
      raise ValueError(f'{path} is damaged (no "mode"): delete it to let the '
                       'next run infer the mode from the workdir\'s files.')
    return s
  mode = infer_mode(workdir)
  return None if mode is None else {'mode': mode, 'kind': kind(mode),
                                    'inferred': True}


def kind(mode: str) -> str:
  return KINDS.get(mode, f'{mode} run')


def _a(mode: str) -> str:
  k = kind(mode)
  return ('an ' if k[0] in 'aeiou' else 'a ') + k


def check_mode(workdir: str, mode: str) -> dict | None:
  """Refuses a workdir stamped (or inferred) as another mode's.

  Returns:
    The workdir's stamp, or None for an empty/unknown workdir.

  Raises:
    ValueError: naming both modes and kinds.
  """
  s = stamp(workdir)
  if s is None:
    return None
  needs = READS.get(mode, mode)
  if s['mode'] == needs:
    return s
  how = ('inferred from its files' if s.get('inferred') else
         f'{STAMP_NAME}: mode={s["mode"]!r}')
  if mode in READS:
    hint = (f' --mode={mode} reads {_a(needs)}: give the workdir of one '
            '(--mode=train).')
    if s['mode'] == 'search':
      hint += (f' A search\'s trained models are in {workdir}/trials/'
               f'trial_<id> and {workdir}/final.')
  else:
    hint = (f' {_a(mode).capitalize()} would write its files among the '
            f'{kind(s["mode"])}\'s: use another --workdir for --mode={mode}.')
  raise ValueError(f'--mode={mode} refuses workdir {workdir!r}: it holds '
                   f'{_a(s["mode"])} ({how}), made by --mode={s["mode"]}.'
                   + hint)


def _write_stamp(workdir: str, mode: str) -> None:
  path = os.path.join(workdir, STAMP_NAME)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump({'mode': mode, 'kind': kind(mode), 'created': _now()}, f)
  os.replace(tmp, path)


def _ours_only(workdir: str) -> bool:
  try:
    return set(os.listdir(workdir)) <= {LOCK_NAME, STAMP_NAME}
  except FileNotFoundError:
    return True


@contextlib.contextmanager
def hold(workdir: str, mode: str | None = None) -> Iterator[str]:
  """Holds `workdir`'s lock (and checks/writes its mode stamp) for a run.

  Args:
    workdir: the run's directory (created when missing, except for the
      reading modes `READS`, whose own check then names the missing run).
    mode: the run mode; None locks only (no stamp).

  Yields:
    `workdir`.

  Raises:
    ValueError: a bad path (`check_path`) or another mode's workdir
      (`check_mode`).
    WorkdirBusyError: another live process holds the lock.
  """
  workdir = check_path(workdir)
  if mode in READS and not os.path.isdir(workdir):
    yield workdir  # nothing to lock: the mode reports the missing run
    return
  created = not os.path.exists(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as err:
    raise ValueError(f'--workdir {workdir!r} cannot be created: {err}.'
                     ) from None
  was_empty = created or _ours_only(workdir)
  key, taken = _acquire(workdir, mode)
  lock_path = os.path.join(workdir, LOCK_NAME)
  try:
    if mode is not None:
      s = check_mode(workdir, mode)
      if s is None and mode not in READS:
        _write_stamp(workdir, mode)
      elif s is not None and s.get('inferred'):
        _write_stamp(workdir, s['mode'])
    yield workdir
  finally:
    restore = taken and was_empty and _ours_only(workdir)
    if restore:
      with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(workdir, STAMP_NAME))
    _release(key, lock_path, restore)
    if restore and created:
      with contextlib.suppress(OSError):
        os.rmdir(workdir)


def lock_dir(path: str) -> contextlib.AbstractContextManager:
  """The bare lock of one directory (no stamp): a study's model job."""
  return hold(path, None)


def set_aside(workdir: str, names) -> str | None:
  """Moves the existing `names` of `workdir` into `replaced_<UTC time>/`.

  Returns:
    The folder they went to, or None when none existed.
  """
  present = [n for n in names if os.path.exists(os.path.join(workdir, n))]
  if not present:
    return None
  stamp_ = datetime.datetime.now(datetime.timezone.utc).strftime(
      '%Y%m%dT%H%M%S')
  dest = os.path.join(workdir, f'replaced_{stamp_}')
  n = 1
  while os.path.exists(dest):
    n += 1
    dest = os.path.join(workdir, f'replaced_{stamp_}_{n}')
  os.makedirs(dest)
  for name in present:
    shutil.move(os.path.join(workdir, name), os.path.join(dest, name))
  print(f'[workdir] started over: moved {", ".join(present)} to {dest}',
        file=sys.stderr)
  return dest
