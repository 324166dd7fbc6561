"""The package's shape, read from its source with `ast` (nothing imported).

* No import cycle among `tinyrobust` modules. The graph has one node per
  module (a package is its `__init__.py`) and an edge for every import of a
  `tinyrobust` module, at module level or inside a function;
  `from tinyrobust.x import y` points at `tinyrobust.x.y` when that is a
  module or package, else at `tinyrobust.x` (a name it defines).
* No module over 450 lines; no function over 80 lines, its docstring aside.
* At most 10 function-local imports of `tinyrobust` modules, each with a
  comment (on its line or the line before; a bare pylint directive is not a
  comment) saying why it is not at the top: only a heavy optional
  dependency (TensorFlow, Ray) justifies one.

    python -m tests.test_architecture   # prints the graph's package edges
"""

from __future__ import annotations

import ast
import collections
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'tinyrobust'
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
MAX_LOCAL_IMPORTS = 10


def _modules() -> dict[str, str]:
  """Module name -> file path of every module of the package."""
  out = {}
  for d, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
    for f in files:
      if not f.endswith('.py'):
        continue
      rel = os.path.relpath(os.path.join(d, f), ROOT)[:-3].split(os.sep)
      if rel[-1] == '__init__':
        rel = rel[:-1]
      out['.'.join(rel)] = os.path.join(d, f)
  return out


MODULES = _modules()
TREES = {m: ast.parse(open(p).read(), p) for m, p in MODULES.items()}


def _is_package(module: str) -> bool:
  return MODULES[module].endswith('__init__.py')


def _resolve(module: str, node: ast.AST) -> list[str]:
  """The package modules an import statement in `module` loads by name."""
  if isinstance(node, ast.Import):
    names = [a.name for a in node.names]
  else:
    base = node.module or ''
    if node.level:
      parts = module.split('.')
      parts = parts if _is_package(module) else parts[:-1]
      parts = parts[:len(parts) - node.level + 1]
      base = '.'.join(parts + ([base] if base else []))
    names = []
    for a in node.names:
      sub = f'{base}.{a.name}'
      names.append(sub if sub in MODULES else base)
  out = []
  for name in names:
    while name and name not in MODULES:  # `import a.b.c` of a name
      name = name.rpartition('.')[0]
    if name and (name == PACKAGE or name.startswith(PACKAGE + '.')):
      out.append(name)
  return out


def _imports(module: str):
  """(statement, in_function, targets) of every import in `module`."""
  found = []

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.Import, ast.ImportFrom)):
        found.append((child, in_function, _resolve(module, child)))
      visit(child, in_function or isinstance(
          child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

  visit(TREES[module], False)
  return found


def import_graph() -> dict[str, set[str]]:
  graph = {m: set() for m in MODULES}
  for m in MODULES:
    for _, _, targets in _imports(m):
      graph[m].update(t for t in targets if t != m)
  return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """One cycle (a closed path of modules) per strongly connected component
  of more than one module (Tarjan's algorithm)."""
  index, low, on_stack, stack, comps = {}, {}, set(), [], []

  def strongconnect(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        strongconnect(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        comps.append(set(comp))

  for v in sorted(graph):
    if v not in index:
      strongconnect(v)
  return [_cycle_in(graph, comp) for comp in comps]


def _cycle_in(graph, comp: set[str]) -> list[str]:
  """A shortest closed path through the component's first module (BFS)."""
  start = min(comp)
  parent, queue = {start: None}, collections.deque([start])
  while queue:
    v = queue.popleft()
    for w in sorted(graph[v] & comp):
      if w == start:
        path = [v]
        while parent[path[-1]] is not None:
          path.append(parent[path[-1]])
        return path[::-1] + [start]
      if w not in parent:
        parent[w] = v
        queue.append(w)
  raise AssertionError(f'no cycle in component {sorted(comp)}')


def package_edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], int]:
  """Import counts between top-level parts (`tinyrobust.nas`, ...)."""
  def part(m):
    return '.'.join(m.split('.')[:2])
  out = collections.Counter()
  for m, targets in graph.items():
    for t in targets:
      if part(m) != part(t):
        out[(part(m), part(t))] += 1
  return dict(out)


def _where(module: str, line: int) -> str:
  return f'{os.path.relpath(MODULES[module], ROOT)}:{line}'


def _has_comment(lines: list[str], lineno: int) -> bool:
  """A comment other than a pylint directive on line `lineno` (1-based) or
  on the line before."""
  def text(line):
    if '#' not in line:
      return ''
    c = line.split('#', 1)[1]
    return re.sub(r'pylint:\s*disable=[\w,-]+', '', c).strip(' #')
  same = text(lines[lineno - 1])
  before = lines[lineno - 2].strip() if lineno > 1 else ''
  return bool(same) or (before.startswith('#') and bool(text(before)))


def local_imports() -> list[tuple[str, bool]]:
  """(`file:line`, has a comment) of each function-local package import."""
  out = []
  for m in sorted(MODULES):
    lines = open(MODULES[m]).read().splitlines()
    for node, in_function, targets in _imports(m):
      if in_function and targets:
        out.append((_where(m, node.lineno), _has_comment(lines, node.lineno)))
  return out


def long_functions() -> list[str]:
  out = []
  for m in sorted(MODULES):
    for node in ast.walk(TREES[m]):
      if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        continue
      n = node.end_lineno - node.lineno + 1
      doc = node.body[0]
      if (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
          and isinstance(doc.value.value, str)):
        n -= doc.end_lineno - doc.lineno + 1
      if n > MAX_FUNCTION_LINES:
        out.append(f'{_where(m, node.lineno)} {node.name}: {n} lines')
  return out


def test_no_import_cycles():
  cycles = find_cycles(import_graph())
  for c in cycles:
    print('import cycle: ' + ' -> '.join(c))
  assert not cycles, '\n'.join(' -> '.join(c) for c in cycles)


def test_modules_at_most_450_lines():
  big = {os.path.relpath(p, ROOT): n for p in MODULES.values()
         if (n := len(open(p).read().splitlines())) > MAX_MODULE_LINES}
  assert not big, f'modules over {MAX_MODULE_LINES} lines: {big}'


def test_functions_at_most_80_lines():
  long = long_functions()
  assert not long, (f'functions over {MAX_FUNCTION_LINES} lines (docstring '
                    'aside):\n' + '\n'.join(long))


def test_few_commented_function_local_imports():
  found = local_imports()
  bare = [w for w, commented in found if not commented]
  assert len(found) <= MAX_LOCAL_IMPORTS and not bare, (
      f'{len(found)} function-local imports of {PACKAGE} modules (at most '
      f'{MAX_LOCAL_IMPORTS}, each with a comment saying which heavy optional '
      f'dependency it avoids); without a comment:\n' + '\n'.join(bare))


# The checker checks itself: closed forms on small graphs and snippets.


def test_find_cycles_on_known_graphs():
  g = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}, 'e': set()}
  assert find_cycles(g) == [['a', 'b', 'c', 'a']]
  assert find_cycles({'a': {'b'}, 'b': set()}) == []
  two = find_cycles({'a': {'b'}, 'b': {'a'}, 'c': {'d'}, 'd': {'c'}})
  assert sorted(map(tuple, two)) == [('a', 'b', 'a'), ('c', 'd', 'c')]


def test_resolve_names_modules_and_packages():
  node = ast.parse('from tinyrobust import fileio, registry').body[0]
  assert _resolve('tinyrobust.train', node) == ['tinyrobust.fileio',
                                                'tinyrobust.registry']
  node = ast.parse('from tinyrobust.models import get_model').body[0]
  assert _resolve('tinyrobust.train', node) == ['tinyrobust.models']
  node = ast.parse('import numpy, tinyrobust.nas.journal').body[0]
  assert _resolve('tinyrobust.train', node) == ['tinyrobust.nas.journal']
  node = ast.parse('from . import journal').body[0]
  assert _resolve('tinyrobust.nas.search', node) == ['tinyrobust.nas.journal']


def test_comment_rule():
  lines = ['  from tinyrobust import x  # pylint: disable=g-import-not-at-top',
           '  # TensorFlow: only when exporting',
           '  from tinyrobust import y  # pylint: disable=g-import-not-at-top',
           '  from tinyrobust import z  # Ray is optional']
  assert [_has_comment(lines, i) for i in (1, 3, 4)] == [False, True, True]


if __name__ == '__main__':
  graph = import_graph()
  for (a, b), n in sorted(package_edges(graph).items()):
    print(f'{a} -> {b} ({n})')
  for c in find_cycles(graph):
    print('cycle: ' + ' -> '.join(c))
