"""The package's structure: no cycle among `lm`'s modules, `lm` modules
import `lm` at module level only, the engine (`lm.training`) never imports
an objective or a task, and the one module that names objectives (compares
with their names) is `lm.experiments`, whose registry is consistent."""

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


def _function_local_lm_imports(path: str) -> list[int]:
  """Lines of `from lm... import` / `import lm...` inside a function."""
  lines = []
  for fn in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
      for node in ast.walk(fn):
        if (isinstance(node, ast.ImportFrom) and node.level == 0
            and (node.module or "").split(".")[0] == "lm"):
          lines.append(node.lineno)
        elif isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == "lm" for a in node.names):
          lines.append(node.lineno)
  return lines


def test_lm_modules_import_lm_at_module_level_only():
  bad = {m: lines for m, p in _modules().items()
         if (lines := _function_local_lm_imports(p))}
  assert bad == {}


def _objective_name_comparisons(path: str, names) -> list[int]:
  """Lines comparing something called `objective` (a name, an attribute or
  a `.name`) with an objective's name, or testing membership in a tuple of
  them."""
  lines = []
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if not isinstance(node, ast.Compare):
      continue
    sides = [node.left, *node.comparators]
    constants = set()
    for side in sides:
      if isinstance(side, ast.Constant):
        constants.add(side.value)
      elif isinstance(side, (ast.Tuple, ast.List, ast.Set)):
        constants.update(e.value for e in side.elts
                         if isinstance(e, ast.Constant))
    if constants & set(names):
      text = ast.unparse(node)
      if "objective" in text or ".name" in text:
        lines.append(node.lineno)
  return lines


def test_only_the_registry_compares_objective_names(tmp_path):
  from lm import experiments  # the registry's names, read at test time
  launch = os.path.join(os.path.dirname(ROOT), "launch")
  files = dict(_modules())
  files.update({f"launch.{n[:-3]}": os.path.join(launch, n)
                for n in os.listdir(launch) if n.endswith(".py")})
  bad = {m: lines for m, p in files.items() if m != "lm.experiments"
         if (lines := _objective_name_comparisons(p, experiments.OBJECTIVES))}
  assert bad == {}
  # the check does see such a branch
  planted = tmp_path / "planted.py"
  planted.write_text("def f(c):\n  return c.objective == 'mlm'\n")
  assert _objective_name_comparisons(str(planted), experiments.OBJECTIVES) == [2]


def test_the_registry_is_consistent():
  from lm import experiments
  from lm.models.task_model import HEADS
  heads = set()
  for name, (cls, _) in experiments.REGISTRY.items():
    assert cls.name == name
    if name == "distill":     # a student: the head is its teacher objective's
      assert not cls.head
      continue
    assert cls.head and cls.head not in heads, name    # one objective per head
    heads.add(cls.head)
    assert experiments.objective_for_head(cls.head) == name
  assert set(HEADS) <= heads
  assert experiments.names_where("generates_text") == ["causal"]
  assert experiments.names_where("embeds") == ["contrastive"]
  assert experiments.names_where("predicts") == ["seq2seq", "classification",
                                                 "tagging", "qa"]
