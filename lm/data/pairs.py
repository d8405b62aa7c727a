"""Aligned text pairs by URI, for contrastive training and evaluation.

`open_pairs(uri)` gives a `PairSource`: `anchors[i]` goes with `positives[i]`
(and, when asked for, a hard negative `negatives[i]`). `open_scored_pairs(uri)`
gives pairs with a gold similarity `scores[i]` each, for Spearman evaluation
(STS). A `PairSource` is also a `DocumentSource` whose document i is the
pair's texts joined by newlines, so a tokenizer can be trained on every text.

Supported URIs:

  pystdlib[:train|:validation]   docstring <-> code pairs from the functions
                                 of the standard-library files of that split
                                 (the 95/5 file split of `pystdlib` documents,
                                 so validation functions come from files that
                                 training never sees).
  jsonl:GLOB[SLICE]              one JSON object per line; the pair is
                                 (obj[fields[0]], obj[fields[1]]). SLICE
                                 (`[a%:b%]`) cuts the list of pairs.
  tfds:NAME[/CONFIG][:SPLIT]     the same fields of each TFDS example, through
                                 `tfds.data_source` (read into memory).

`open_pairs` drops pairs with a whitespace-only anchor or positive and every
pair whose anchor was seen before (the first one stays): two rows with one
anchor would make retrieval ambiguous. Scored pairs are kept as they are.

Example:
  pairs = open_pairs("jsonl:data/qa.jsonl[:90%]",
                     fields=("question", "answer"))
  pairs.anchors[0], pairs.positives[0]   # -> ('Who wrote Hamlet?', 'Shakes...')
  sts = open_scored_pairs("tfds:glue/stsb:validation",
                          fields=("sentence1", "sentence2", "label"))
  sts.scores[0]                          # -> 5.0
"""

from __future__ import annotations

import ast
import functools
import sysconfig
import warnings
from collections.abc import Sequence
from typing import Any

from lm.data import sources, tfds_source
from lm import files
from lm.errors import LmError

# Bump when the docstring/code extraction rules change (it is in fingerprints).
_PYSTDLIB_PAIRS_VERSION = 1
_MIN_DOCSTRING_WORDS = 3

# The settings named in error messages.
_FIELDS_SETTING = "config.contrastive.anchor_field/positive_field"
_NEGATIVE_SETTING = "config.contrastive.negative_field"
_SCORED_FIELDS_SETTING = (
    "config.contrastive.sts_a_field/sts_b_field/sts_score_field")


class PairSource(sources.DocumentSource):
  """Aligned text columns: anchors[i] <-> positives[i], optional negatives[i]
  (a hard negative per row) and scores[i] (a gold similarity per row).

  Example:
    src = PairSource("mem:", ["add two numbers"], ["def add(a, b): ..."])
    len(src)   # -> 1
    src[0]     # -> 'add two numbers\\ndef add(a, b): ...'
  """

  def __init__(self, uri: str, anchors: Sequence[str],
               positives: Sequence[str],
               negatives: Sequence[str] | None = None,
               scores: Sequence[float] | None = None,
               key: Sequence[Any] = ()):
    self.uri = uri
    self.anchors = list(anchors)
    self.positives = list(positives)
    self.negatives = None if negatives is None else list(negatives)
    self.scores = None if scores is None else [float(s) for s in scores]
    self._key = list(key)
    n = len(self.anchors)
    for name, column in (("positives", self.positives),
                         ("negatives", self.negatives),
                         ("scores", self.scores)):
      if column is not None and len(column) != n:
        raise ValueError(f"PairSource {uri!r}: {len(column)} {name} for {n} "
                         "anchors; the columns must be aligned.")

  def __len__(self) -> int:
    return len(self.anchors)

  def _get(self, i: int) -> str:
    parts = [self.anchors[i], self.positives[i]]
    if self.negatives is not None:
      parts.append(self.negatives[i])
    return "\n".join(parts)

  def fingerprint(self) -> str:
    return sources.content_hash([self.uri, self._key, len(self)])

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.uri!r}, {len(self)} pairs)"


# --- docstring <-> code -------------------------------------------------------


def _is_trivial(body: Sequence[ast.stmt]) -> bool:
  """Whether a function body (after its docstring) does nothing real.

  Example: [], [pass], [...], [pass, ...] and [raise NotImplementedError(...)]
  are trivial; [return 1] is not.
  """
  def is_filler(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Pass) or (
        isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
        and stmt.value.value is Ellipsis)

  if all(is_filler(s) for s in body):
    return True
  if len(body) == 1 and isinstance(body[0], ast.Raise):
    exc = body[0].exc
    if isinstance(exc, ast.Call):
      exc = exc.func
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
  return False


def _docstring_lines(node: ast.AST, lines: Sequence[str]) -> range | None:
  """The 1-based line numbers of `node`'s docstring statement, or None when it
  has none or the statement shares a line with other code.

  Example: for "def f():\\n  '''Doc.'''\\n  return 1" -> range(2, 3);
  for "def f(): 'Doc.'" -> None.
  """
  body = getattr(node, "body", None)
  if not body or ast.get_docstring(node, clean=False) is None:
    return None
  doc = body[0]
  # col_offset counts UTF-8 bytes; only whitespace may precede the docstring.
  if lines[doc.lineno - 1].encode()[:doc.col_offset].strip():
    return None
  if len(body) > 1 and body[1].lineno <= doc.end_lineno:
    return None
  return range(doc.lineno, doc.end_lineno + 1)


def _function_pair(node: ast.FunctionDef | ast.AsyncFunctionDef,
                   lines: Sequence[str]) -> tuple[str, str] | None:
  """(docstring, code without docstrings) of one function, or None to skip.

  Docstrings of functions and classes nested in the body are dropped from the
  code too (when they stand on their own lines and their body goes on), so no
  pair's code quotes another pair's anchor.

  Example: "def f(x):\\n  '''Doubles x twice.'''\\n  return 4 * x" ->
  ("Doubles x twice.", "def f(x):\\n  return 4 * x").
  """
  doc = ast.get_docstring(node, clean=True)
  if doc is None:
    return None
  doc = doc.strip()
  if len(doc.split()) < _MIN_DOCSTRING_WORDS:
    return None
  own = _docstring_lines(node, lines)
  if own is None or own.start == node.lineno or _is_trivial(node.body[1:]):
    return None
  drop = set(own)
  for inner in ast.walk(node):
    if inner is not node and isinstance(
        inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      span = _docstring_lines(inner, lines)
      if span is not None and span.start != inner.lineno and len(
          inner.body) > 1:
        drop.update(span)
  # Dedent by the `def` line's indentation; lines indented less (the inside
  # of a multi-line string) stay as they are.
  first = lines[node.lineno - 1]
  indent = first[:len(first) - len(first.lstrip())]
  kept = []
  for i in range(node.lineno, node.end_lineno + 1):
    if i not in drop:
      line = lines[i - 1].rstrip()
      kept.append(line[len(indent):] if line.startswith(indent) else line)
  return doc, "\n".join(kept).rstrip()


def _file_pairs(path: str) -> list[tuple[str, str]]:
  """The (docstring, code) pairs of every documented function in one file, in
  source order; [] when the file does not parse (e.g. a template).

  Example: a file with "class A:\\n  def m(self):\\n    '''Returns one
  always.'''\\n    return 1" -> [("Returns one always.", "def m(self):\\n
  return 1")].
  """
  text = sources.read_text(path)  # universal newlines, as ast counts lines
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # e.g. SyntaxWarning: invalid escape
      tree = ast.parse(text, filename=path)
  except (SyntaxError, ValueError):
    return []
  lines = text.split("\n")
  functions = sorted(
      (n for n in ast.walk(tree)
       if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))),
      key=lambda n: (n.lineno, n.col_offset))
  pairs = []
  for node in functions:
    pair = _function_pair(node, lines)
    if pair is not None:
      pairs.append(pair)
  return pairs


@functools.lru_cache(maxsize=8)
def _cached_pairs(paths: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
  """`_file_pairs` of sorted `paths`, deduplicated by docstring (first wins)."""
  seen = set()
  pairs = []
  for path in paths:
    for doc, code in _file_pairs(path):
      if doc not in seen:
        seen.add(doc)
        pairs.append((doc, code))
  return tuple(pairs)


def docstring_code_pairs(paths: Sequence[str], uri: str) -> PairSource:
  """Docstring <-> code pairs from every documented function in `paths`.

  For each `def` (module level, methods, nested; sync or async) with a
  docstring of at least 3 words: anchor = the cleaned docstring; positive =
  the function's source from its `def` line (decorators left out) with the
  docstring statement removed, dedented by the `def` line's indentation.
  Skipped: functions whose docstring shares the `def` line, bodies that are
  only `pass`, `...` or one `raise NotImplementedError`, files that do not
  parse, and docstrings seen before (in sorted path order, then source
  order). Cached per path list.

  Example:
    src = docstring_code_pairs(["m.py"], "file:m.py")
    # m.py: "def twice(x):\\n  '''Return x times two.'''\\n  return 2 * x"
    src.anchors    # -> ['Return x times two.']
    src.positives  # -> ['def twice(x):\\n  return 2 * x']
  """
  ordered = tuple(sorted(paths))
  pairs = _cached_pairs(ordered)
  stats = []
  for p in ordered:
    stats.append(files.identity(p))
  return PairSource(uri, [a for a, _ in pairs], [c for _, c in pairs],
                    key=[_PYSTDLIB_PAIRS_VERSION, stats])


def _unseen_in(src: PairSource, train: PairSource) -> PairSource:
  """The pairs of `src` whose docstring and code both never occur in
  `train`: the stdlib repeats a few functions across files, and a held-out
  pair must not be one the model trained on."""
  seen = set(train.anchors) | set(train.positives)
  keep = [i for i in range(len(src))
          if src.anchors[i] not in seen and src.positives[i] not in seen]
  return PairSource(src.uri, [src.anchors[i] for i in keep],
                    [src.positives[i] for i in keep],
                    key=[src._key, "unseen-in-train", train.fingerprint()])


# --- reading fields from records ----------------------------------------------


def as_text(value: Any) -> str | None:
  """`value` as a str (bytes decoded, numpy scalars unwrapped), or None.

  Example: b"caf\\xc3\\xa9" -> "café"; np.array(b"hi") -> "hi"; 3 -> None.
  """
  if not isinstance(value, (str, bytes)) and hasattr(value, "item"):
    try:
      value = value.item()
    except (ValueError, TypeError):  # an array of more than one element
      return None
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  return str(value) if isinstance(value, str) else None


def _as_score(value: Any) -> float | None:
  """`value` as a float when it is a (numpy) int or float, else None.

  Example: 4 -> 4.0; np.float32(0.5) -> 0.5; "0.5" -> None; True -> None.
  """
  if hasattr(value, "item") and not isinstance(value, (int, float)):
    try:
      value = value.item()
    except (ValueError, TypeError):
      return None
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  return float(value)


def type_name(value: Any) -> str:
  """A readable type for error messages (numpy dtypes included)."""
  dtype = getattr(value, "dtype", None)
  return f"{type(value).__name__} of {dtype}" if dtype is not None else (
      type(value).__name__)


class _Field:
  """One column to read: record key, kind ('text' or 'score'), fix hint."""

  def __init__(self, name: str, kind: str, fix: str):
    self.name = name
    self.kind = kind
    self.fix = fix

  def convert(self, value: Any) -> str | float | None:
    return as_text(value) if self.kind == "text" else _as_score(value)


def _read_jsonl_rows(path: str, columns: Sequence[_Field]) -> list[tuple]:
  """One tuple of converted `columns` per object of the JSON-lines `path`.

  Example: line '{"q": "a", "d": "b"}' with text columns q, d -> [("a", "b")].
  """
  rows = []
  for lineno, obj in sources.read_jsonl_records(path, fix="fix the file"):
    row = []
    for col in columns:
      if col.name not in obj:
        raise LmError(f"{path} line {lineno} has no field {col.name!r} (it "
                      f"has {sorted(obj)}); {col.fix}.")
      value = col.convert(obj[col.name])
      if value is None:
        want = "a string" if col.kind == "text" else "a number"
        raise LmError(f"{path} line {lineno}: field {col.name!r} is a "
                      f"{type(obj[col.name]).__name__}, not {want}; "
                      f"{col.fix}.")
      row.append(value)
    rows.append(tuple(row))
  return rows


def _open_jsonl_rows(uri: str, rest: str, columns: Sequence[_Field]
                     ) -> tuple[list[tuple], tuple[float, float], list]:
  """All rows of `jsonl:GLOB[SLICE]`, the slice bounds and the file stats."""
  pattern, bounds = sources.split_slice(uri, rest)
  paths = sources.glob_files(uri, pattern)
  rows = [row for p in paths for row in _read_jsonl_rows(p, columns)]
  stats = [files.identity(p) for p in paths]
  return rows, bounds, stats


def _open_tfds_rows(uri: str, rest: str, columns: Sequence[_Field],
                    data_dir: str | None) -> tuple[list[tuple], str, list]:
  """All rows of `tfds:NAME[/CONFIG][:SPLIT]`, the canonical URI and a key."""
  ds, name, split = tfds_source.open_split(uri, rest, data_dir, example="snli")
  label = tfds_source.dataset_label(uri)
  n = len(ds)
  features = sorted(ds[0].keys())
  for col in columns:
    if col.name not in features:
      raise LmError(f"{label} dataset {name!r} has no feature {col.name!r}; "
                    f"available features are {features}; {col.fix}.")
  rows = []
  for i in range(n):
    example = ds[i]
    row = []
    for col in columns:
      value = col.convert(example[col.name])
      if value is None:
        want = "text" if col.kind == "text" else "a number"
        raise LmError(f"{label} dataset {name!r} feature {col.name!r} is a "
                      f"{type_name(example[col.name])}, not {want} "
                      f"(example {i}); {col.fix}.")
      row.append(value)
    rows.append(tuple(row))
  version = getattr(getattr(ds, "dataset_info", None), "version", None)
  return rows, f"{uri.partition(':')[0]}:{name}:{split}", [name, split,
                                                          str(version)]


def _scheme(uri: str) -> tuple[str, str | None]:
  """(scheme, rest) of a pair URI; LmError for plain text or unknown schemes.

  Example: "jsonl:a.jsonl" -> ("jsonl", "a.jsonl"); "pystdlib" ->
  ("pystdlib", None).
  """
  scheme, sep, rest = uri.partition(":")
  if scheme == "pystdlib":
    return scheme, rest if sep else None
  if sep and scheme in ("jsonl", "tfds", "hf"):
    return scheme, rest
  raise LmError(f"Data URI {uri!r} has no text pairs (plain text and unknown "
                "schemes have none); use a 'jsonl:', 'tfds:', 'hf:' or 'pystdlib:' "
                "source.")


def check_pair_uri(uri: str) -> None:
  """LmError unless `uri` names text pairs (`jsonl:`, `tfds:`, `hf:`,
  `pystdlib:`)."""
  _scheme(uri)


def _check_fields(fields: Sequence[str], names: Sequence[str],
                  setting: str) -> None:
  """LmError unless `fields` holds one non-empty name per entry of `names`."""
  if (isinstance(fields, str) or len(fields) != len(names)
      or not all(isinstance(f, str) and f for f in fields)):
    raise LmError(f"{setting} must name {len(names)} fields "
                  f"({', '.join(names)}), got {fields!r}; set it to e.g. "
                  f"{tuple(names)!r}.")


# --- entry points -------------------------------------------------------------


def open_pairs(uri: str, *, fields: Sequence[str] = ("anchor", "positive"),
               negative_field: str = "",
               data_dir: str | None = None) -> PairSource:
  """Opens the aligned text pairs named by `uri` (see the module docstring).

  Args:
    uri: e.g. "pystdlib:train", "jsonl:data/pairs*.jsonl[:90%]",
      "tfds:snli:train".
    fields: the record fields of the anchor and the positive (jsonl:, tfds:).
    negative_field: the record field of a hard negative, or "" for none
      (jsonl:, tfds:).
    data_dir: the TFDS data directory (tfds: only).

  Returns:
    A `PairSource` without scores, deduplicated by anchor, with no empty
    anchor or positive. Example: open_pairs("pystdlib:validation").anchors[0]
    is the docstring of one stdlib function.
  """
  scheme, rest = _scheme(uri)
  if scheme == "pystdlib":
    split = rest or "train"
    if split not in ("train", "validation"):
      raise LmError(f"Unknown split {split!r} in data URI {uri!r}; "
                    "use 'pystdlib:train' or 'pystdlib:validation'.")
    if negative_field:
      raise LmError(f"pystdlib pairs have no hard-negative column, but "
                    f"negative_field is {negative_field!r}; leave "
                    f"{_NEGATIVE_SETTING} empty or use a jsonl: or tfds: "
                    "source.")
    paths = sources._stdlib_files(split)
    src = docstring_code_pairs(paths, f"pystdlib:{split}")
    if split == "validation":
      src = _unseen_in(src, docstring_code_pairs(
          sources._stdlib_files("train"), "pystdlib:train"))
    if not len(src):
      raise LmError(f"Found no documented functions for {uri!r} under "
                    f"{sysconfig.get_paths()['stdlib']}; use "
                    "another data URI.")
    return src

  _check_fields(fields, ("anchor", "positive"), _FIELDS_SETTING)
  fix = f"set {_FIELDS_SETTING} to the anchor and positive text fields"
  columns = [_Field(fields[0], "text", fix), _Field(fields[1], "text", fix)]
  if negative_field:
    columns.append(_Field(negative_field, "text",
                          f"set {_NEGATIVE_SETTING} to a text field or to ''"))
  bounds = (0.0, 100.0)
  if scheme == "jsonl":
    rows, bounds, key = _open_jsonl_rows(uri, rest, columns)
    name = uri
  else:
    rows, name, key = _open_tfds_rows(uri, rest, columns, data_dir)

  seen = set()
  kept = []
  for row in rows:
    anchor, positive = row[0], row[1]
    if anchor.strip() and positive.strip() and anchor not in seen:
      seen.add(anchor)
      kept.append(row)
  n = len(kept)
  kept = kept[int(n * bounds[0] / 100):int(n * bounds[1] / 100)]
  if not kept:
    raise LmError(f"Data URI {uri!r} gives no pairs ({len(rows)} records, "
                  f"{n} with a new, non-empty anchor and positive); check the "
                  "data, the fields and the slice.")
  return PairSource(
      name, [r[0] for r in kept], [r[1] for r in kept],
      negatives=[r[2] for r in kept] if negative_field else None,
      key=[list(fields), negative_field, key])


def open_scored_pairs(uri: str, *,
                      fields: Sequence[str] = ("text_a", "text_b", "score"),
                      data_dir: str | None = None) -> PairSource:
  """Opens text pairs with a gold similarity each (STS), for Spearman eval.

  Args:
    uri: a "jsonl:GLOB[SLICE]" or "tfds:NAME[/CONFIG][:SPLIT]" URI.
    fields: the record fields of the first text, the second text and the
      numeric score; e.g. ("sentence1", "sentence2", "label") for TFDS
      "glue/stsb".
    data_dir: the TFDS data directory (tfds: only).

  Returns:
    A `PairSource` with anchors = first texts, positives = second texts and
    float `scores`, every record kept in order (no deduplication). Example:
    open_scored_pairs("jsonl:sts.jsonl").scores -> [4.2, 0.5, ...].
  """
  scheme, rest = _scheme(uri)
  if scheme == "pystdlib":
    raise LmError(f"Data URI {uri!r} has no similarity scores; use a jsonl: "
                  "or tfds: source of scored pairs (e.g. "
                  "'tfds:glue/stsb:validation').")
  _check_fields(fields, ("text_a", "text_b", "score"), _SCORED_FIELDS_SETTING)
  fix = (f"set {_SCORED_FIELDS_SETTING} to the two text fields and the "
         "numeric score field")
  columns = [_Field(fields[0], "text", fix), _Field(fields[1], "text", fix),
             _Field(fields[2], "score", fix)]
  bounds = (0.0, 100.0)
  if scheme == "jsonl":
    rows, bounds, key = _open_jsonl_rows(uri, rest, columns)
    name = uri
  else:
    rows, name, key = _open_tfds_rows(uri, rest, columns, data_dir)
  n = len(rows)
  rows = rows[int(n * bounds[0] / 100):int(n * bounds[1] / 100)]
  if not rows:
    raise LmError(f"Data URI {uri!r} gives no scored pairs ({n} records "
                  "before the slice); check the data and the slice.")
  return PairSource(name, [r[0] for r in rows], [r[1] for r in rows],
                    scores=[r[2] for r in rows], key=[list(fields), key])
