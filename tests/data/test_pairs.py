"""Tests for lm.data.pairs: docstring/code pairs, jsonl and tfds pairs, STS."""

import os
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lm.data import pairs, sources
from lm.data.pairs import (PairSource, docstring_code_pairs, open_pairs,
                           open_scored_pairs)
from lm.errors import LmError
from tests.data.files import write as _write, write_jsonl as _write_jsonl


# --- PairSource ---------------------------------------------------------------


def test_pair_source_documents_and_fingerprint():
  src = PairSource("mem:", ["a0", "a1"], ["p0", "p1"], negatives=["n0", "n1"],
                   key=[1])
  assert len(src) == 2 and list(src) == ["a0\np0\nn0", "a1\np1\nn1"]
  assert src[-1] == "a1\np1\nn1" and src.scores is None
  plain = PairSource("mem:", ["a0"], ["p0"], scores=[3])
  assert plain[0] == "a0\np0" and plain.scores == [3.0]
  assert src.fingerprint() == PairSource("mem:", ["x", "y"], ["z", "w"],
                                         key=[1]).fingerprint()
  assert src.fingerprint() != PairSource("mem:", ["a0", "a1"], ["p0", "p1"],
                                         key=[2]).fingerprint()
  with pytest.raises(ValueError, match="aligned"):
    PairSource("mem:", ["a"], ["p", "q"])


# --- docstring <-> code -------------------------------------------------------

_MODULE = '''\
"""Module docstring is not a function."""
import functools


def outer(x, y):
    """Add x and y
    after doubling both of them.

    More detail here.
    """
    def inner(z):
        """Double the given value z."""
        return 2 * z
    return inner(x) + inner(y)


class Box:
    """A class docstring is not a pair."""

    @functools.cache
    def method(self, key):
        """Look up the key in this box."""
        # a comment stays
        return self.items[key]

    async def fetch(self, url):
        """Fetch the url asynchronously please."""
        return await self.client.get(url)

    def template(self):
        """Render the C template text."""
        return """\\
int main(void) {
  return 0;
}"""


def only_pass():
    """This body only passes."""
    pass


def only_ellipsis():
    """This body is only dots."""
    ...


def not_implemented():
    """Subclasses must implement this."""
    raise NotImplementedError("subclass")


def not_implemented_bare():
    """Subclasses must implement this too."""
    raise NotImplementedError


def only_docstring():
    """Nothing but a docstring here."""


def one_liner(): """Docstring on the def line."""; return 1


def same_line_code():
    """Docstring then code on its line."""; return 1


def short_doc():
    """Too short."""
    return 1


def no_doc():
    return 1


def raises_other():
    """Raises a real error always."""
    raise ValueError("no")
'''


@pytest.fixture
def module_pairs(tmp_path):
  path = _write(tmp_path / "mod.py", _MODULE)
  src = docstring_code_pairs([str(path)], "file:mod")
  return dict(zip(src.anchors, src.positives)), src


def test_docstring_pairs_find_functions_methods_nested_and_async(
    module_pairs):
  by_doc, src = module_pairs
  assert src.uri == "file:mod" and src.negatives is None
  assert list(by_doc) == [
      "Add x and y\nafter doubling both of them.\n\nMore detail here.",
      "Double the given value z.",
      "Look up the key in this box.",
      "Fetch the url asynchronously please.",
      "Render the C template text.",
      "Raises a real error always.",
  ]
  assert by_doc["Fetch the url asynchronously please."] == (
      "async def fetch(self, url):\n    return await self.client.get(url)")


def test_docstring_pairs_remove_the_docstring_and_dedent(module_pairs):
  by_doc, _ = module_pairs
  method = by_doc["Look up the key in this box."]
  assert method == ("def method(self, key):\n    # a comment stays\n"
                    "    return self.items[key]")  # no decorator, dedented
  assert by_doc["Render the C template text."] == (
      'def template(self):\n    return """\\\nint main(void) {\n'
      '  return 0;\n}"""')  # string lines indented less than the def stay
  for doc, code in by_doc.items():
    assert doc not in code
    for line in doc.splitlines():
      assert not line.strip() or line.strip() not in code, (line, code)
  # The nested function's docstring leaves the outer function's code too.
  assert by_doc["Add x and y\nafter doubling both of them.\n\n"
                "More detail here."] == textwrap.dedent("""\
      def outer(x, y):
          def inner(z):
              return 2 * z
          return inner(x) + inner(y)""")
  assert by_doc["Double the given value z."] == (
      "def inner(z):\n    return 2 * z")


def test_docstring_pairs_skip_trivial_one_liners_and_short_docs(module_pairs):
  by_doc, _ = module_pairs
  text = "\n".join(by_doc)
  for skipped in ("passes", "only dots", "Subclasses", "Nothing but",
                  "def line", "code on its line", "Too short",
                  "Module docstring", "class docstring"):
    assert skipped not in text


def test_docstring_pairs_dedup_by_anchor_in_sorted_path_order(tmp_path):
  body = 'def {name}():\n    """Return the answer to everything."""\n' \
         '    return {value}\n'
  a = _write(tmp_path / "a.py", body.format(name="first", value=1))
  b = _write(tmp_path / "b.py", body.format(name="second", value=2)
             + body.format(name="third", value=3))
  bad = _write(tmp_path / "c.py", "def broken(:\n    '''Doc of a broken "
               "function.'''\n    return 1\n{{ template }}\n")
  src = docstring_code_pairs([str(bad), str(b), str(a)], "file:abc")
  assert src.anchors == ["Return the answer to everything."]
  assert src.positives == ["def first():\n    return 1"]
  hits = pairs._cached_pairs.cache_info().hits
  again = docstring_code_pairs([str(a), str(b), str(bad)], "file:abc")
  assert pairs._cached_pairs.cache_info().hits == hits + 1
  assert again.positives == src.positives
  assert again.fingerprint() == src.fingerprint()
  assert docstring_code_pairs([str(bad)], "file:c").anchors == []


def test_docstring_pairs_line_numbers_survive_form_feeds_and_crlf(tmp_path):
  path = tmp_path / "ff.py"
  path.write_bytes(b"\x0c\r\nimport os\x0c\r\n\r\ndef f(a):\r\n"
                   b"    '''Return a plus one please.'''\r\n"
                   b"    return a + 1\r\n")
  src = docstring_code_pairs([str(path)], "file:ff")
  assert src.anchors == ["Return a plus one please."]
  assert src.positives == ["def f(a):\n    return a + 1"]


# --- pystdlib -----------------------------------------------------------------


@pytest.fixture(scope="module")
def stdlib_pairs():
  return open_pairs("pystdlib:train"), open_pairs("pystdlib:validation")


def test_pystdlib_pairs_split_by_file(stdlib_pairs):
  train, val = stdlib_pairs
  assert train.uri == "pystdlib:train" and val.uri == "pystdlib:validation"
  assert len(train) > 2000 and 50 <= len(val) < 0.15 * len(train)
  assert train.fingerprint() != val.fingerprint()
  assert len(set(train.anchors)) == len(train)
  assert len(set(val.anchors)) == len(val)
  # Every validation function comes from a validation file.
  val_text = "\n".join(open(p, encoding="utf-8", errors="replace").read()
                       for p in sources._stdlib_files("validation"))
  for code in val.positives:
    assert code.splitlines()[0] in val_text
  assert open_pairs("pystdlib").anchors is not train.anchors
  assert open_pairs("pystdlib").positives == train.positives


def test_pystdlib_held_out_pairs_share_no_text_with_training(stdlib_pairs):
  train, val = stdlib_pairs
  seen = set(train.anchors) | set(train.positives)
  assert not seen & (set(val.anchors) | set(val.positives))
  # The stdlib repeats some functions across files; those are the ones dropped.
  everything = docstring_code_pairs(
      sources._stdlib_files("validation"), "pystdlib:validation")
  assert len(val) < len(everything)


def test_pystdlib_pairs_look_like_docstring_and_code(stdlib_pairs):
  train, val = stdlib_pairs
  both = list(zip(train.anchors + val.anchors, train.positives + val.positives))
  for doc, code in both:
    assert len(doc.split()) >= 3 and doc == doc.strip()
    assert code.startswith(("def ", "async def ")), code[:80]
    assert code == code.rstrip()
  # The docstring is removed, so the code hardly ever quotes its anchor.
  assert sum(doc in code for doc, code in both) <= 0.002 * len(both)
  by_doc = dict(both)
  makedirs = [d for d in by_doc if d.startswith("makedirs(name [, mode=")]
  assert len(makedirs) == 1
  code = by_doc[makedirs[0]]
  assert code.startswith("def makedirs(name, mode=0o777, exist_ok=False):")
  assert "Super-mkdir" not in code and "head, tail = path.split(name)" in code


def test_pystdlib_pairs_errors():
  with pytest.raises(LmError, match="pystdlib:validation"):
    open_pairs("pystdlib:test")
  with pytest.raises(LmError, match="no hard-negative column"):
    open_pairs("pystdlib:validation", negative_field="neg")
  with pytest.raises(LmError, match="no similarity scores"):
    open_scored_pairs("pystdlib:validation")


# --- jsonl --------------------------------------------------------------------


def test_jsonl_pairs_fields_negatives_dedup_and_slices(tmp_path):
  rows = [{"q": f"question {i}", "a": f"answer {i}", "neg": f"wrong {i}"}
          for i in range(10)]
  rows.insert(3, {"q": "question 1", "a": "a repeated anchor", "neg": "x"})
  rows.insert(5, {"q": "  ", "a": "blank anchor", "neg": "x"})
  rows.insert(7, {"q": "question 99", "a": "\n", "neg": "x"})
  _write_jsonl(tmp_path / "a.jsonl", rows[:6])
  _write_jsonl(tmp_path / "b.jsonl", rows[6:])
  src = open_pairs(f"jsonl:{tmp_path}/*.jsonl", fields=("q", "a"),
                   negative_field="neg")
  assert src.anchors == [f"question {i}" for i in range(10)]
  assert src.positives == [f"answer {i}" for i in range(10)]
  assert src.negatives == [f"wrong {i}" for i in range(10)]
  assert src.scores is None and src[2] == "question 2\nanswer 2\nwrong 2"
  head = open_pairs(f"jsonl:{tmp_path}/*.jsonl[:80%]", fields=("q", "a"))
  tail = open_pairs(f"jsonl:{tmp_path}/*.jsonl[80%:]", fields=("q", "a"))
  assert head.anchors == src.anchors[:8] and tail.anchors == src.anchors[8:]
  assert head.negatives is None
  assert len({head.fingerprint(), tail.fingerprint(), src.fingerprint()}) == 3


def test_jsonl_pairs_default_fields(tmp_path):
  path = _write_jsonl(tmp_path / "p.jsonl", [{"anchor": "x", "positive": "y"}])
  assert list(open_pairs(f"jsonl:{path}")) == ["x\ny"]


def test_jsonl_pairs_missing_field_names_file_line_field_and_keys(tmp_path):
  path = _write_jsonl(tmp_path / "a.jsonl", [{"q": "ok", "a": "ok"},
                                             {"q": "ok", "answer": "no"}])
  with pytest.raises(LmError) as e:
    open_pairs(f"jsonl:{path}", fields=("q", "a"))
  msg = str(e.value)
  assert str(path) in msg and "line 2" in msg and "'a'" in msg
  assert "['answer', 'q']" in msg and "config.contrastive.anchor_field/positive_field" in msg
  assert "\n" not in msg
  with pytest.raises(LmError) as e:
    open_pairs(f"jsonl:{path}", fields=("q", "q"), negative_field="neg")
  assert "'neg'" in str(e.value)
  assert "config.contrastive.negative_field" in str(e.value)


def test_jsonl_pairs_bad_json_non_object_and_non_string(tmp_path):
  bad = _write(tmp_path / "bad.jsonl", '{"q": "a", "a": "b"}\n{"q": \n')
  with pytest.raises(LmError, match="line 2 is not valid JSON"):
    open_pairs(f"jsonl:{bad}", fields=("q", "a"))
  arr = _write(tmp_path / "arr.jsonl", '\n["q", "a"]\n')
  with pytest.raises(LmError, match="line 2 is a JSON array, not an object"):
    open_pairs(f"jsonl:{arr}", fields=("q", "a"))
  num = _write_jsonl(tmp_path / "num.jsonl", [{"q": "a", "a": 3}])
  with pytest.raises(LmError) as e:
    open_pairs(f"jsonl:{num}", fields=("q", "a"))
  assert "field 'a' is a int, not a string" in str(e.value)
  assert "line 1" in str(e.value)


def test_jsonl_pairs_empty_and_bad_arguments(tmp_path):
  path = _write_jsonl(tmp_path / "a.jsonl", [{"q": " ", "a": "x"}])
  with pytest.raises(LmError, match="gives no pairs"):
    open_pairs(f"jsonl:{path}", fields=("q", "a"))
  with pytest.raises(LmError, match="No files match"):
    open_pairs(f"jsonl:{tmp_path}/none*.jsonl")
  with pytest.raises(LmError, match="must name 2 fields"):
    open_pairs(f"jsonl:{path}", fields=("q",))
  with pytest.raises(LmError, match="must name 2 fields"):
    open_pairs(f"jsonl:{path}", fields="qa")


def test_jsonl_records_reader_is_shared(tmp_path):
  path = _write(tmp_path / "r.jsonl", '{"a": 1}\n\n  \n{"b": [2]}\n')
  assert list(sources.read_jsonl_records(str(path))) == [
      (1, {"a": 1}), (4, {"b": [2]})]
  nul = _write(tmp_path / "n.jsonl", "null\n")
  with pytest.raises(LmError, match="JSON null, not an object.*'text:' URI"):
    sources.open_source(f"jsonl:{nul}")


# --- scored pairs -------------------------------------------------------------


def test_scored_pairs_jsonl_keep_every_row(tmp_path):
  rows = [{"text_a": "a cat", "text_b": "a dog", "score": 1},
          {"text_a": "a cat", "text_b": "the cat", "score": 4.5},
          {"text_a": "a cat", "text_b": "a cat", "score": 5},
          {"text_a": " ", "text_b": "", "score": 0.0}]
  path = _write_jsonl(tmp_path / "sts.jsonl", rows)
  src = open_scored_pairs(f"jsonl:{path}")
  assert src.anchors == ["a cat"] * 3 + [" "]
  assert src.positives == ["a dog", "the cat", "a cat", ""]
  assert src.scores == [1.0, 4.5, 5.0, 0.0]
  assert all(type(s) is float for s in src.scores)
  assert open_scored_pairs(f"jsonl:{path}[50%:]").scores == [5.0, 0.0]
  renamed = _write_jsonl(tmp_path / "r.jsonl", [{"s1": "x", "s2": "y",
                                                 "label": 2}])
  assert open_scored_pairs(f"jsonl:{renamed}", fields=(
      "s1", "s2", "label")).scores == [2.0]


@pytest.mark.parametrize("score", ["4.0", True, None, [1]])
def test_scored_pairs_non_numeric_score(tmp_path, score):
  path = _write_jsonl(tmp_path / "sts.jsonl",
                      [{"text_a": "x", "text_b": "y", "score": score}])
  with pytest.raises(LmError) as e:
    open_scored_pairs(f"jsonl:{path}")
  msg = str(e.value)
  assert "line 1" in msg and "field 'score'" in msg and "not a number" in msg
  assert "config.contrastive.sts_a_field/sts_b_field/sts_score_field" in msg


def test_scored_pairs_bad_fields(tmp_path):
  path = _write_jsonl(tmp_path / "sts.jsonl",
                      [{"text_a": "x", "text_b": "y", "score": 1}])
  with pytest.raises(LmError, match="must name 3 fields"):
    open_scored_pairs(f"jsonl:{path}", fields=("text_a", "text_b"))


# --- schemes without pairs ----------------------------------------------------


@pytest.mark.parametrize("uri", ["text:data/input.txt", "csv:x.csv",
                                 "data/input.txt"])
@pytest.mark.parametrize("opener", [open_pairs, open_scored_pairs])
def test_text_and_unknown_schemes_have_no_pairs(uri, opener):
  with pytest.raises(LmError) as e:
    opener(uri)
  msg = str(e.value)
  assert "no text pairs" in msg and "\n" not in msg
  for scheme in ("'jsonl:'", "'tfds:'", "'pystdlib:'"):
    assert scheme in msg


# --- tfds ---------------------------------------------------------------------


def test_tfds_mock_snli_pairs():
  with tfds.testing.mock_data(num_examples=6):
    src = open_pairs("tfds:snli", fields=("premise", "hypothesis"))
    examples = [tfds.data_source("snli", split="train")[i] for i in range(6)]
  assert src.uri == "tfds:snli:train" and 0 < len(src) <= 6
  expected = {}
  for ex in examples:
    if ex["premise"].strip() and ex["hypothesis"].strip():
      expected.setdefault(ex["premise"], ex["hypothesis"])
  assert dict(zip(src.anchors, src.positives)) == expected
  assert all(isinstance(t, str) for t in src.anchors + src.positives)


def test_tfds_mock_snli_scored_pairs_and_errors():
  with tfds.testing.mock_data(num_examples=5):
    src = open_scored_pairs("tfds:snli:validation",
                            fields=("premise", "hypothesis", "label"))
    assert src.uri == "tfds:snli:validation" and len(src) == 5
    assert all(type(s) is float and s in (0.0, 1.0, 2.0) for s in src.scores)
    with pytest.raises(LmError) as e:
      open_pairs("tfds:snli", fields=("premise", "sentence2"))
    msg = str(e.value)
    assert "'sentence2'" in msg and "['hypothesis', 'label', 'premise']" in msg
    with pytest.raises(LmError, match="feature 'label' is a .*not text"):
      open_pairs("tfds:snli", fields=("premise", "label"))
    with pytest.raises(LmError, match="feature 'premise' is a str, not a "
                       "number"):
      open_scored_pairs("tfds:snli", fields=("premise", "hypothesis",
                                             "premise"))


def test_tfds_decodes_bytes_and_numpy_scalars(monkeypatch, tmp_path):
  seen = {}

  def fake(name, split, data_dir, download=True):
    seen.update(name=name, split=split, data_dir=data_dir)
    return [{"s1": "caf\u00e9".encode(), "s2": np.array(b"two"),
             "label": np.float32(0.5)},
            {"s1": np.bytes_(b"\xffbad"), "s2": "x", "label": np.int64(3)}]
  monkeypatch.setattr(tfds, "data_source", fake)
  src = open_scored_pairs("tfds:glue/stsb:validation",
                          fields=("s1", "s2", "label"), data_dir=str(tmp_path))
  assert seen == {"name": "glue/stsb", "split": "validation",
                  "data_dir": str(tmp_path)}
  assert src.anchors == ["caf\u00e9", "\ufffdbad"]
  assert src.positives == ["two", "x"] and src.scores == [0.5, 3.0]
  assert src.uri == "tfds:glue/stsb:validation"
  neg = open_pairs("tfds:glue/stsb", fields=("s1", "s2"), negative_field="s2")
  assert neg.negatives == ["two", "x"]


def test_tfds_unknown_dataset():
  with pytest.raises(LmError) as e:
    open_pairs("tfds:no_such_dataset_xyz:train")
  msg = str(e.value)
  assert "'no_such_dataset_xyz' does not exist" in msg and "\n" not in msg
  with pytest.raises(LmError, match="names no TFDS dataset"):
    open_scored_pairs("tfds::train")


def test_jsonl_pairs_fingerprint_tracks_uri_and_file_changes(tmp_path,
                                                             monkeypatch):
  path = _write_jsonl(tmp_path / "p.jsonl", [{"anchor": "x", "positive": "y"}])
  before = open_pairs(f"jsonl:{path}").fingerprint()
  monkeypatch.chdir(tmp_path)
  assert open_pairs("jsonl:p.jsonl").fingerprint() != before  # URI differs
  _write_jsonl(path, [{"anchor": "x", "positive": "z"}])
  os.utime(path, ns=(1, 2))
  assert open_pairs(f"jsonl:{path}").fingerprint() != before
