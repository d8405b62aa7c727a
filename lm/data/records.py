"""Labeled examples by URI, for fine-tuning (classification, NER, QA).

`open_records(uri, fields)` reads every example named by `uri` into memory as
`Records`: `columns[role]` holds one value per example for each ROLE that
`fields` maps to a `(field_name, kind)` of the data (kind in `KINDS`).

Supported URIs (SLICE is `[a%:b%]`, either end optional; it keeps that part of
the list of examples, in order):

  jsonl:GLOB[SLICE]           JSON lines, one example object per line, e.g.
                              'jsonl:data/sst2/train*.jsonl[:90%]'.
  csv:GLOB[SLICE]             comma-separated values under a header row naming
                              the fields, e.g. 'csv:data/reviews.csv'; or,
                              when every field is a 0-based column index, a
                              file without a header (AG News: label_field
                              "0", text_field "1+2"). A text field may join
                              columns with "+" ("title+description").
  tsv:GLOB[SLICE]             tab-separated, header row (or indices, as for
                              csv:), quotes kept as text, e.g.
                              'tsv:glue_data/SST-2/train.tsv[90%:]'.
  squad:GLOB[SLICE]           the official SQuAD v1.1 / v2.0 JSON files, each
                              question one example with the fields id, title,
                              question, context and answers (v2.0's
                              unanswerable questions are refused with one
                              sentence), e.g. 'squad:train-v1.1.json'.
  conll:GLOB[SLICE]           CoNLL-2003 text: one token per line, the first
                              column the token, the last its tag; blank lines
                              end a sentence; `-DOCSTART-` lines are skipped.
                              Always gives the roles "tokens" and "tags" (the
                              field names are ignored), e.g. 'conll:eng.train'.
  hf:REPO[/CONFIG][:SPLIT], hf:DIR[:SPLIT]
                              a Hugging Face dataset (Hub, or a save_to_disk
                              or Parquet directory; `lm.data.hf_datasets`),
                              read like tfds: (ClassLabel names included).
  tfds:NAME[/CONFIG][:SPLIT]  a TFDS dataset via `tfds.data_source` (SPLIT
                              defaults to `train`), e.g. 'tfds:glue/sst2:train',
                              'tfds:conll2003:train', 'tfds:squad:validation'.

Values by kind: "text" -> str; "label" -> str (an int becomes its decimal
string, or its class name for a TFDS ClassLabel); "tokens" -> list[str] (a
CSV/TSV cell is split on whitespace); "tags" -> list[str] like "label", one per
token; "answers" -> list of (text, char_start) from a SQuAD-style {"text": [..],
"answer_start": [..]} object or a list of {"text", "answer_start"} objects (a
JSON string in a CSV/TSV cell). The role "id" is read like a label.

Files are read by `lm.data.sources.read_text` (`.gz` and `.zst` files are
decompressed first; any path may be a gs:// URI): a binary file (a NUL byte in
its first 8 KiB) is refused with one sentence naming it; bytes that are not
UTF-8 become U+FFFD with one warning per file on stderr (a CSV/TSV file's
leading byte-order mark is dropped).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterator
from typing import Any

from lm.data import sources, tfds_source
from lm import files
from lm.errors import LmError

KINDS = ("text", "label", "tokens", "tags", "answers")
SCHEMES = ("jsonl", "csv", "tsv", "conll", "squad", "tfds", "hf")

# Kinds of the text-like roles when `Records.kinds` does not say.
_TEXT_ROLES = {"text": "text", "text_b": "text", "question": "text",
               "context": "text", "tokens": "tokens"}


@dataclasses.dataclass
class Records:
  """Labeled examples held in memory, one list per role (`kinds`: role ->
  kind, used by `__iter__`).

  Example: open_records("jsonl:sst.jsonl", {"text": ("sentence", "text"),
  "label": ("label", "label")}) -> len 2, columns["label"] ['1', '0'],
  list(recs) ['a great film', 'dull'].
  """

  uri: str
  columns: dict[str, list]
  label_names: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  key: list = dataclasses.field(default_factory=list)
  kinds: dict[str, str] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return len(next(iter(self.columns.values()), []))

  def fingerprint(self) -> str:
    """A short stable hash that changes whenever the examples may change."""
    return sources.content_hash([self.uri, self.key, len(self)])

  def __iter__(self) -> Iterator[str]:
    """Every string of every text-like column, example by example ("text"
    columns as they are, "tokens" joined by spaces), for tokenizer training.

    Example: columns {"tokens": [["EU", "rejects"]], "tags": [["B-ORG", "O"]]}
    -> "EU rejects".
    """
    roles = [(r, self.kinds.get(r) or _TEXT_ROLES.get(r)) for r in self.columns]
    roles = [(r, k) for r, k in roles if k in ("text", "tokens")]
    for i in range(len(self)):
      for role, kind in roles:
        value = self.columns[role][i]
        yield " ".join(value) if kind == "tokens" else value


# --- value conversion ---------------------------------------------------------


class _Bad(Exception):
  """A value of the wrong shape; the message completes "field 'x' ..."."""


def _type_name(value: Any) -> str:
  """A readable type for error messages, e.g. "ndarray of int64"."""
  dtype = getattr(value, "dtype", None)
  return type(value).__name__ + (f" of {dtype}" if dtype is not None else "")


def _scalar(value: Any) -> Any:
  """`value` with numpy scalars unwrapped and bytes decoded, e.g.
  np.int64(3) -> 3; np.array(b"hi") -> "hi"; [1] -> [1]."""
  if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
    value = value.item()
  if isinstance(value, bytes):
    value = value.decode("utf-8", errors="replace")
  return value


def _as_list(value: Any) -> list | None:
  """A list, tuple or 1-d array as a list, else None."""
  if hasattr(value, "tolist") and getattr(value, "ndim", 0) == 1:
    return value.tolist()
  return list(value) if isinstance(value, (list, tuple)) else None


def _text(value: Any) -> str:
  """A str (bytes decoded), e.g. b"hi" -> "hi"; raises _Bad otherwise."""
  value = _scalar(value)
  if not isinstance(value, str):
    raise _Bad(f"is a {_type_name(value)}, not a string")
  return value


def _label(value: Any, names: list[str] | None = None) -> str:
  """A label as a str, e.g. "pos" -> "pos"; 1 -> "1"; 1 with `names`
  ["neg", "pos"] -> "pos"."""
  value = _scalar(value)
  if isinstance(value, str):
    return value
  if isinstance(value, bool) or not isinstance(value, int):
    raise _Bad(f"is a {_type_name(value)}, not a string or integer label")
  if names is None:
    return str(value)
  if not 0 <= value < len(names):
    raise _Bad(f"is {value}, outside the {len(names)} class names {names}")
  return names[value]


def _answers(value: Any) -> list[tuple[str, int]]:
  """(text, char_start) pairs, e.g. {"text": ["Paris"], "answer_start": [7]}
  or [{"text": "Paris", "answer_start": 7}] -> [("Paris", 7)]."""
  if isinstance(value, str):  # a CSV/TSV cell
    try:
      value = json.loads(value)
    except json.JSONDecodeError:
      raise _Bad("is not JSON answers") from None
  if isinstance(value, dict):
    if not {"text", "answer_start"} <= set(value):
      raise _Bad(f"has keys {sorted(value)}, not 'text' and 'answer_start'")
    texts, starts = ([v] if _as_list(v) is None else _as_list(v)
                     for v in (value["text"], value["answer_start"]))
    if len(texts) != len(starts):
      raise _Bad(f"has {len(texts)} answer texts but {len(starts)} "
                 "answer_start values")
    pairs = list(zip(texts, starts))
  elif _as_list(value) is not None:
    items = _as_list(value)
    if not all(isinstance(a, dict) and {"text", "answer_start"} <= set(a)
               for a in items):
      raise _Bad("holds an answer that is not an object with 'text' and "
                 "'answer_start'")
    pairs = [(a["text"], a["answer_start"]) for a in items]
  else:
    raise _Bad(f"is a {_type_name(value)}, not answers")
  out = []
  for text, start in pairs:
    text, start = _scalar(text), _scalar(start)
    if (not isinstance(text, str) or isinstance(start, bool)
        or not isinstance(start, int)):
      raise _Bad(f"holds the answer ({text!r}, {start!r}), not a text string "
                 "and an integer answer_start")
    out.append((text, start))
  return out


def _convert(value: Any, kind: str, role: str, split: bool = False,
             names: list[str] | None = None) -> Any:
  """`value` normalised for `kind` (see the module docstring); raises _Bad."""
  if kind == "text" and role != "id":
    return _text(value)
  if kind in ("label", "text"):
    return _label(value, names)
  if kind == "answers":
    return _answers(value)
  items = value.split() if split and isinstance(value, str) else (
      _as_list(value))
  if items is None:
    raise _Bad(f"is a {_type_name(value)}, not a list of {kind}")
  try:
    return [_text(t) if kind == "tokens" else _label(t, names) for t in items]
  except _Bad as e:
    raise _Bad(f"holds an item that {e}") from None


def _field_value(value: Any, kind: str, role: str, name: str, where: str,
                 **kw) -> Any:
  """`_convert`, with a _Bad turned into an LmError naming `where`."""
  try:
    return _convert(value, kind, role, **kw)
  except _Bad as e:
    raise LmError(f"{where}: field {name!r} (role {role!r}, kind {kind!r}) "
                  f"{e}; fix the data or map {role!r} to another field."
                  ) from None


def _check_row(row: dict[str, Any], kinds: dict[str, str], where: str) -> None:
  """LmError unless tags align with tokens and answers lie in the context."""
  tokens = next((r for r, k in kinds.items() if k == "tokens"), None)
  for role, kind in kinds.items():
    if kind == "tags" and tokens and len(row[role]) != len(row[tokens]):
      raise LmError(f"{where}: {tokens!r} has {len(row[tokens])} tokens but "
                    f"{role!r} has {len(row[role])} tags; give every token "
                    "exactly one tag.")
    if kind == "answers" and isinstance(row.get("context"), str):
      for text, start in row[role]:
        found = row["context"][start:start + len(text)] if start >= 0 else ""
        if found != text:
          raise LmError(f"{where}: answer {text!r} does not match the context "
                        f"at answer_start {start} (it reads {found!r}); fix "
                        "the answer's text or character offset.")


# --- files --------------------------------------------------------------------


def _read_jsonl(path: str, wanted: dict[str, tuple[str, str]]) -> list:
  """(row, where) per object; e.g. '{"s": "ok", "y": 1}' with text=s,
  label=y -> [({"text": "ok", "label": "1"}, "PATH line 1")]."""
  return [(_object_row(obj, wanted, f"{path} line {lineno}"),
           f"{path} line {lineno}")
          for lineno, obj in sources.read_jsonl_records(path,
                                                        fix="fix the file")]


def _object_row(obj: dict, wanted: dict[str, tuple[str, str]],
                where: str) -> dict:
  """The roles `wanted` takes from the JSON object `obj`."""
  row = {}
  for role, (name, kind) in wanted.items():
    if name not in obj:
      raise LmError(f"{where} has no field {name!r} for role {role!r} (it "
                    f"has {sorted(obj)}); map {role!r} to one of those "
                    "fields or fix the data.")
    row[role] = _field_value(obj[name], kind, role, name, where)
  return row


def _read_squad(path: str, wanted: dict[str, tuple[str, str]]) -> list:
  """(row, where) per question of an official SQuAD v1.1/v2.0 JSON file
  (`{"data": [{"title", "paragraphs": [{"context", "qas": [{"id",
  "question", "answers": [{"text", "answer_start"}]}]}]}]}`), each question
  flattened to the fields id, title, question, context and answers.

  SQuAD v2.0's unanswerable questions (`is_impossible`) are refused with
  one sentence: the QA head predicts a span of the context for every
  question, so they have no target.
  """
  try:
    doc = json.loads(sources.read_text(path))
    articles = doc["data"]
    if not isinstance(articles, list):
      raise TypeError
  except ValueError as e:
    raise LmError(f"{path} is not valid JSON ({e}); a squad: file is the "
                  "official SQuAD JSON (one object with a \"data\" list).") from None
  except (KeyError, TypeError):
    raise LmError(f"{path} is not a SQuAD file (no \"data\" list of "
                  "articles at the top); use jsonl: for one question per "
                  "line.") from None
  rows, impossible = [], []
  try:
    for a, article in enumerate(articles):
      for p, paragraph in enumerate(article["paragraphs"]):
        for q, qa in enumerate(paragraph["qas"]):
          where = (f"{path} article {a} paragraph {p} question {q} "
                   f"(id {qa.get('id')!r})")
          if qa.get("is_impossible") or not qa.get("answers"):
            impossible.append(qa.get("id"))
            continue
          obj = {"id": qa.get("id", ""), "title": article.get("title", ""),
                 "question": qa["question"], "context": paragraph["context"],
                 "answers": qa["answers"]}
          rows.append((_object_row(obj, wanted, where), where))
  except (KeyError, TypeError, AttributeError) as e:
    raise LmError(f"{path} article {a} does not follow the SQuAD layout "
                  f"(missing or odd {e}); each article needs \"paragraphs\", "
                  "each paragraph \"context\" and \"qas\".") from None
  if impossible:
    raise LmError(f"{path} holds {len(impossible)} unanswerable question(s) "
                  f"(SQuAD v2.0 is_impossible, e.g. id {impossible[0]!r}); "
                  "lm's QA head predicts an answer span for every question, "
                  "so remove those questions (keep is_impossible false) or "
                  "use SQuAD v1.1.")
  return rows


def _columns(name: str) -> list[str]:
  """The columns a field names: "title+description" -> ["title",
  "description"]; "1+2" -> ["1", "2"]; "label" -> ["label"]."""
  return [part.strip() for part in name.split("+")]


def _indexed(wanted: dict[str, tuple[str, str]], path: str) -> bool:
  """Whether the fields name columns by 0-based index (a headerless file),
  e.g. label_field "0", text_field "1+2" (AG News); LmError for a mix."""
  kinds = {all(c.isdigit() for c in _columns(name))
           for name, _ in wanted.values()}
  if len(kinds) > 1:
    raise LmError(f"the fields for {path} mix column indices and column names "
                  f"({ {r: n for r, (n, _) in wanted.items()} }); name every "
                  "column by its 0-based index (a file without a header) or "
                  "every one by its header name.")
  return kinds == {True}


def _read_csv(path: str, wanted: dict[str, tuple[str, str]],
              scheme: str) -> list:
  """(row, where) per data line of a CSV/TSV file; e.g. with a header
  "sentence\tlabel" / "it 's \"fine\"\t1" -> [({"text": 'it \'s "fine"',
  "label": "1"}, "PATH line 2")].

  Fields name header columns, or, when every field is a 0-based column
  index, the file has no header (AG News's `class,title,description` rows
  with label_field "0"). A text field may join several columns with "+"
  ("title+description", "1+2"), separated by a space in the text.
  """
  options = ({"delimiter": "\t", "quoting": csv.QUOTE_NONE}
             if scheme == "tsv" else {})
  rows = []
  text = sources.read_text(path, newline="").removeprefix("\ufeff")
  indexed = _indexed(wanted, path)
  with io.StringIO(text, newline="") as f:
    reader = csv.reader(f, **options)
    try:
      if indexed:
        header = None
        columns = {role: [int(c) for c in _columns(name)]
                   for role, (name, _) in wanted.items()}
      else:
        header = next(reader, None)
        if not header:
          raise LmError(f"{path} is empty; a {scheme} file needs a header "
                        "row naming its columns (or name the columns by "
                        "0-based index for a file without one).")
        columns = {}
        for role, (name, _) in wanted.items():
          names = [name] if name in header else _columns(name)
          for n in names:
            if n not in header:
              raise LmError(f"{path} has no column {n!r} for role {role!r} "
                            f"(its header is {header}); map {role!r} to one "
                            "of those columns, add the column, or, for a "
                            "file without a header, name columns by 0-based "
                            "index.")
          columns[role] = [header.index(n) for n in names]
      for role, (name, kind) in wanted.items():
        if len(columns[role]) > 1 and kind != "text":
          raise LmError(f"{path}: only text fields may join columns with '+', "
                        f"but role {role!r} ({kind}) is {name!r}; name one "
                        "column.")
      for cells in reader:
        if not cells:
          continue
        where = f"{path} line {reader.line_num}"
        row = {}
        for role, (name, kind) in wanted.items():
          need = max(columns[role]) + 1
          if len(cells) < need and header:
            raise LmError(f"{where} has fewer cells than the {len(header)} "
                          "columns of its header; fix the row.")
          if len(cells) < need:
            raise LmError(f"{where} has {len(cells)} cells, but role {role!r} "
                          f"reads column {need - 1} ({name!r}); fix the row "
                          "or the column index.")
          value = " ".join(cells[i] for i in columns[role])
          row[role] = _field_value(value, kind, role, name, where, split=True)
        rows.append((row, where))
    except csv.Error as e:
      raise LmError(f"{path} line {reader.line_num} is not valid {scheme} "
                    f"({e}); fix the file.") from None
  return rows


def _read_conll(path: str) -> list:
  """(row, where) per sentence; e.g. "-DOCSTART- O", "", "EU NNP B-ORG",
  "rejects VBZ O", "" -> [({"tokens": ["EU", "rejects"],
  "tags": ["B-ORG", "O"]}, "PATH line 3")]."""
  rows, tokens, tags, first = [], [], [], 0
  with io.StringIO(sources.read_text(path)) as f:
    for lineno, line in enumerate(f, start=1):
      parts = line.split()
      if not parts or parts[0].startswith("-DOCSTART-"):
        if tokens:
          rows.append(({"tokens": tokens, "tags": tags},
                       f"{path} line {first}"))
          tokens, tags = [], []
        continue
      if len(parts) < 2:
        raise LmError(f"{path} line {lineno} has a single column "
                      f"({line.strip()!r}); CoNLL lines need the token first "
                      "and the tag last, separated by whitespace.")
      first = first if tokens else lineno
      tokens.append(parts[0])
      tags.append(parts[-1])
  if tokens:
    rows.append(({"tokens": tokens, "tags": tags}, f"{path} line {first}"))
  return rows


def _open_files(uri: str, scheme: str, rest: str,
                wanted: dict[str, tuple[str, str]]) -> tuple[list, list]:
  """(row, where) of every file matching `GLOB[SLICE]`, sliced, and a key."""
  pattern, (a, b) = sources.split_slice(uri, rest)
  paths = sources.glob_files(uri, pattern)
  rows = []
  for path in paths:  # binary refused, bad UTF-8 warned: see sources
    if scheme == "jsonl":
      rows += _read_jsonl(path, wanted)
    elif scheme == "squad":
      rows += _read_squad(path, wanted)
    elif scheme == "conll":
      rows += _read_conll(path)
    else:
      rows += _read_csv(path, wanted, scheme)
  n = len(rows)
  stats = [files.identity(p) for p in paths]
  return rows[int(n * a / 100):int(n * b / 100)], stats


# --- TFDS ---------------------------------------------------------------------


def _class_names(ds: Any, field: str, kind: str) -> list[str] | None:
  """The ClassLabel names of `field` (per element for "tags"), or None."""
  features = getattr(getattr(ds, "dataset_info", None), "features", None)
  try:
    feature = features[field]
  except Exception:  # pylint: disable=broad-except
    return None
  if kind == "tags":
    feature = getattr(feature, "feature", None)
  names = getattr(feature, "names", None)
  return list(names) if names else None


def _open_tfds(uri: str, rest: str, wanted: dict[str, tuple[str, str]],
               data_dir: str | None):
  """All rows of a TFDS split, its canonical URI, label names and a key."""
  ds, name, split = tfds_source.open_split(uri, rest, data_dir,
                                      example="glue/sst2")
  label = tfds_source.dataset_label(uri)
  features = sorted(ds[0].keys())
  for role, (field, _) in wanted.items():
    if field not in features:
      raise LmError(f"{label} dataset {name!r} has no feature {field!r} for role "
                    f"{role!r}; available features are {features}; map "
                    f"{role!r} to one of them.")
  names = {role: _class_names(ds, field, kind)
           for role, (field, kind) in wanted.items()
           if kind in ("label", "tags")}
  rows = []
  for i in range(len(ds)):
    example, row = ds[i], {}
    where = f"{label} dataset {name!r} split {split!r} example {i}"
    for role, (field, kind) in wanted.items():
      value = _scalar(example[field])
      if kind == "label" and type(value) is int and value == -1:
        raise LmError(f"{label} split {split!r} of {name!r} has no labels "
                      f"(feature {field!r} is -1 at example {i}); pick a "
                      "labelled split such as 'train' or 'validation'.")
      row[role] = _field_value(value, kind, role, field, where,
                               names=names.get(role))
    rows.append((row, where))
  version = getattr(getattr(ds, "dataset_info", None), "version", None)
  label_names = {role: n for role, n in names.items() if n}
  return (rows, f"{uri.partition(':')[0]}:{name}:{split}", label_names,
          [name, split, str(version)])


# --- entry point --------------------------------------------------------------


def _check_fields(fields: Any) -> dict[str, tuple[str, str]]:
  """The roles that name a field; e.g. {"text": ("s", "text"), "text_b":
  ("", "text")} -> {"text": ("s", "text")}."""
  if not isinstance(fields, dict):
    raise LmError(f"The record fields must map roles to (field_name, kind), "
                  f"got {fields!r}; e.g. {{'text': ('sentence', 'text')}}.")
  wanted = {}
  for role, spec in fields.items():
    if (not isinstance(spec, (tuple, list)) or len(spec) != 2
        or not isinstance(spec[0], str) or spec[1] not in KINDS):
      raise LmError(f"The record field for role {role!r} must be a "
                    f"(field_name, kind) pair with kind one of {KINDS}, got "
                    f"{spec!r}; fix the config.")
    if spec[0]:
      wanted[role] = (spec[0], spec[1])
  return wanted


def open_records(uri: str, fields: dict[str, tuple[str, str]], *,
                 data_dir: str | None = None) -> Records:
  """Opens the labeled examples named by `uri` (see the module docstring).

  Args:
    uri: e.g. "tfds:glue/mrpc:train", "jsonl:data/train.jsonl[:90%]",
      "tsv:SST-2/train.tsv", "conll:eng.train".
    fields: role -> (field name in the data, kind); a role whose field name
      is "" is skipped. E.g. {"text": ("sentence1", "text"),
      "text_b": ("sentence2", "text"), "label": ("label", "label")}.
    data_dir: the TFDS data directory (tfds: only).

  Returns:
    `Records` with one column per mapped role (for conll: "tokens" and
    "tags"). Example: open_records("tfds:imdb_reviews:test", {"text": ("text",
    "text"), "label": ("label", "label")}).columns["label"][:2] ->
    ['neg', 'pos'], with label_names {"label": ["neg", "pos"]}.
  """
  scheme, sep, rest = uri.partition(":")
  if not sep or scheme not in SCHEMES:
    raise LmError(f"Data URI {uri!r} has no known scheme for labeled records; "
                  "use 'jsonl:', 'csv:', 'tsv:', 'conll:', 'squad:', "
                  "'tfds:' or 'hf:' (e.g. "
                  "'tfds:glue/sst2:train').")
  wanted = _check_fields(fields)
  if scheme == "conll":
    extra = sorted(set(wanted) - {"tokens", "tags"})
    if extra:
      raise LmError(f"CoNLL files give only the roles 'tokens' and 'tags', "
                    f"but the fields also map {extra}; set those field names "
                    "to '' or use a jsonl: source.")
    wanted = {"tokens": ("tokens", "tokens"), "tags": ("tags", "tags")}
  elif not wanted:
    raise LmError(f"The record fields {fields!r} name no data field; map at "
                  "least one role, e.g. {'text': ('sentence', 'text')}.")
  kinds = {role: kind for role, (_, kind) in wanted.items()}
  label_names: dict[str, list[str]] = {}
  if scheme in ("tfds", "hf"):
    rows, name, label_names, key = _open_tfds(uri, rest, wanted, data_dir)
  else:
    rows, key = _open_files(uri, scheme, rest, wanted)
    name = uri
  for row, where in rows:
    _check_row(row, kinds, where)
  if not rows:
    raise LmError(f"Data URI {uri!r} selects no examples; check the files, "
                  "the split and the slice.")
  return Records(name, {role: [r[role] for r, _ in rows] for role in wanted},
                 label_names, [sorted(wanted.items()), key], kinds)
