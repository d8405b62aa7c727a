"""The package's import structure: no cycle among `lm`'s modules, and the
engine (`lm.training`) never imports an objective or a task; the one
module that names them is `lm.experiments`."""

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lm")
OBJECTIVE_PACKAGES = ("lm.objectives", "lm.tasks", "lm.experiments")


def _modules() -> dict[str, str]:
  """Module name -> file, for every module under lm/."""
  out = {}
  for folder, _, files in os.walk(ROOT):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].split(os.sep)
        if rel[-1] == "__init__":
          rel = rel[:-1]
        out[".".join(rel)] = path
  return out


def _imports(path: str, modules) -> set[str]:
  """The `lm` modules the file imports (module level and inside functions;
  `from lm.x import y` counts `lm.x.y` when that is a module, else `lm.x`)."""
  found = set()
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
               else node.module for a in node.names]
    else:
      continue
    found.update(n for n in names if n in modules)
  return found


def _graph():
  modules = _modules()
  return {m: _imports(p, modules) - {m} for m, p in modules.items()}


def _cycle(graph) -> list[str] | None:
  """One import cycle as a list of modules, or None."""
  state, stack = {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for n in sorted(graph[m]):
      if state.get(n) == "open":
        return stack[stack.index(n):] + [n]
      if n not in state:
        found = visit(n)
        if found:
          return found
    stack.pop()
    state[m] = "done"
    return None

  for m in sorted(graph):
    if m not in state:
      found = visit(m)
      if found:
        return found
  return None


def test_no_import_cycle_in_lm():
  assert _cycle(_graph()) is None


def test_the_engine_imports_no_objective_or_task():
  graph = _graph()
  bad = sorted((m, n) for m, deps in graph.items()
               if m == "lm.training" or m.startswith("lm.training.")
               for n in deps
               if any(n == p or n.startswith(p + ".") for p in OBJECTIVE_PACKAGES))
  assert bad == []


def test_the_checker_sees_a_cycle_and_an_engine_import():
  graph = {"lm.a": {"lm.b"}, "lm.b": {"lm.c"}, "lm.c": {"lm.a"}}
  assert _cycle(graph) == ["lm.a", "lm.b", "lm.c", "lm.a"]
  real = _graph()
  assert "lm.objectives.causal" in real["lm.experiments"]
  assert "lm.training.loop" in real["lm.experiments"]
