"""Tests for lm.data.tokenizer: round trips, char models, load_or_train."""

import os
import stat
import sysconfig
import types

import pytest

from lm.data import tokenizer as tokenizer_lib
from lm.data.sources import ListSource, open_source
from lm.data.tokenizer import Tokenizer, load_or_train, train_tokenizer
from lm.errors import LmError

STDLIB = sysconfig.get_paths()["stdlib"]
TRAIN_FILES = ["argparse.py", "ast.py", "textwrap.py", "tokenize.py",
               "functools.py", "dataclasses.py"]
HELD_OUT_FILES = ["json/decoder.py", "collections/__init__.py", "shlex.py",
                  "string.py", "typing.py"]

TRICKY = [
    "",
    " ",
    "   leading spaces",
    "trailing spaces   ",
    "multiple    inner     spaces",
    "\ttab\tseparated\t\tfields\t",
    "\n",
    "\n\n\nblank lines\n\n\n\n",
    "  \n \t \n\t\n",
    "crlf\r\nline\r\n",
    "unicode: héllo wörld — ünïcödé 日本語 Ωμέγα 🎉🐍",
    "def f(x):\n    if x:\n\treturn {'a': [1, 2]}  # note\n\n\n",
    "a\u00a0b\u200bc\ufeffd",  # no-break space, zero-width space, BOM
]


def _read(rel):
  with open(os.path.join(STDLIB, rel), encoding="utf-8") as f:
    return f.read()


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
  path = tmp_path_factory.mktemp("bpe") / "tok.model"
  return train_tokenizer([_read(f) for f in TRAIN_FILES], str(path),
                         vocab_size=600)


def test_special_ids_and_vocab(bpe):
  assert (bpe.pad_id, bpe.unk_id, bpe.bos_id, bpe.eos_id) == (0, 1, 2, 3)
  assert bpe.vocab_size == 600
  assert bpe.id_to_piece(4) == "\n" and bpe.id_to_piece(5) == "\t"
  assert os.path.isfile(bpe.path)
  assert os.path.isfile(os.path.splitext(bpe.path)[0] + ".vocab")
  # No temporary training directories are left behind.
  assert sorted(os.listdir(os.path.dirname(bpe.path))) == [
      "tok.model", "tok.vocab"]


@pytest.mark.parametrize("rel", TRAIN_FILES[:2] + HELD_OUT_FILES)
def test_exact_round_trip_on_stdlib_files(bpe, rel):
  text = _read(rel)
  ids = bpe.encode(text)
  assert bpe.decode(ids) == text
  assert len(ids) < len(text) / 1.5  # real compression, not one id per byte


def test_exact_round_trip_on_whole_validation_split(bpe):
  source = open_source("pystdlib:validation")
  docs = list(source)
  assert len(docs) >= 5
  for doc, ids in zip(docs, bpe.encode_batch(docs)):
    assert bpe.decode(ids) == doc


@pytest.mark.parametrize("text", TRICKY)
def test_exact_round_trip_on_tricky_text(bpe, text):
  assert bpe.decode(bpe.encode(text)) == text


def test_newlines_and_tabs_are_single_tokens(bpe):
  assert bpe.encode("\n") == [4]
  assert bpe.encode("\n\n\n") == [4, 4, 4]
  assert bpe.encode("\t") == [5]
  # Indentation is cheap: a 4-space run is one whitespace-only piece.
  assert len(bpe.encode("    ")) == 1


def test_decode_drops_special_ids_and_takes_arrays(bpe):
  import numpy as np
  ids = bpe.encode("x = 1\n")
  wrapped = [bpe.bos_id] + ids + [bpe.eos_id, bpe.pad_id, bpe.pad_id]
  assert bpe.decode(wrapped) == "x = 1\n"
  assert bpe.decode(np.array(wrapped, np.uint16)) == "x = 1\n"
  assert bpe.decode([bpe.vocab_size + 5]) == bpe.decode([bpe.unk_id])


def test_encode_batch_matches_encode(bpe):
  assert bpe.encode_batch(TRICKY) == [bpe.encode(t) for t in TRICKY]
  assert bpe.encode_batch([]) == []


def test_unseen_characters_use_byte_fallback(bpe):
  ids = bpe.encode("🐍")
  assert bpe.unk_id not in ids and len(ids) == 4  # four UTF-8 bytes


def test_training_is_deterministic(tmp_path, bpe):
  again = train_tokenizer([_read(f) for f in TRAIN_FILES],
                          str(tmp_path / "again.model"), vocab_size=600)
  assert again.fingerprint() == bpe.fingerprint()


def test_max_chars_limits_training_text(tmp_path):
  texts = ["abc " * 50, "xyz " * 50]
  tok = train_tokenizer(texts, str(tmp_path / "t.model"), vocab_size=8,
                        model_type="char", byte_fallback=False, max_chars=200)
  pieces = {tok.id_to_piece(i) for i in range(tok.vocab_size)}
  assert {"a", "b", "c"} <= pieces and not {"x", "y", "z"} & pieces


def test_unigram_round_trip(tmp_path):
  tok = train_tokenizer([_read(f) for f in TRAIN_FILES[:2]],
                        str(tmp_path / "u.model"), vocab_size=400,
                        model_type="unigram")
  for text in TRICKY + [_read("shlex.py")]:
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("vocab_size", [263, 300])
def test_tiny_vocab_on_unicode_rich_text_round_trips(tmp_path, vocab_size):
  # The stdlib has hundreds of distinct characters; with byte fallback the
  # rare ones become byte pieces instead of needing a vocabulary slot each.
  docs = [_read(f) for f in ("shlex.py", "string.py", "codecs.py")]
  assert len(set("".join(docs))) > vocab_size - 262
  tok = train_tokenizer(docs, str(tmp_path / "t.model"), vocab_size=vocab_size)
  assert tok.vocab_size == vocab_size
  for text in docs + TRICKY:
    assert tok.decode(tok.encode(text)) == text


def test_rare_chars():
  lines = ["a" * 10000, "b" * 10, "c"]
  assert tokenizer_lib._rare_chars(lines, budget=1) == {"b", "c"}
  assert tokenizer_lib._rare_chars(lines, budget=5) == {"c"}
  assert tokenizer_lib._rare_chars(lines, budget=0) == {"b", "c"}
  assert list(tokenizer_lib._without_chars(["ab©cd", "©"], {"©"})) == [
      "ab", "cd"]


SHAKESPEARE = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to "
    "die than to famish?\n\nAll:\nResolved. resolved!\n\n"
    "QUEEN ELIZABETH; JOHN OF GAUNT & VOLUMNIA: 'Kings' 3 quips-jaw ZEXY\n"
    "$ well-fixed, bow'd; O ye gods--quick!\n")


def test_char_tokenizer_one_token_per_character(tmp_path):
  tok = train_tokenizer([SHAKESPEARE], str(tmp_path / "c.model"),
                        vocab_size=65, model_type="char", byte_fallback=False)
  chars = sorted(set(SHAKESPEARE))
  # 4 specials + "\n", "\t" + one piece per other distinct character.
  assert tok.vocab_size == 4 + 2 + len(set(chars) - {"\n"})
  ids = tok.encode(SHAKESPEARE)
  assert len(ids) == len(SHAKESPEARE)
  assert tok.unk_id not in ids
  assert tok.decode(ids) == SHAKESPEARE
  for ch in chars:
    assert len(tok.encode(ch)) == 1, repr(ch)


def test_char_tokenizer_with_byte_fallback(tmp_path):
  tok = train_tokenizer([SHAKESPEARE], str(tmp_path / "c.model"),
                        vocab_size=65, model_type="char")
  assert tok.vocab_size == 4 + 2 + 256 + len(set(SHAKESPEARE) - {"\n"})
  assert len(tok.encode(SHAKESPEARE)) == len(SHAKESPEARE)
  assert tok.decode(tok.encode("Ω\n")) == "Ω\n"


def test_training_errors(tmp_path):
  with pytest.raises(LmError, match="model_type"):
    train_tokenizer(["abc"], str(tmp_path / "t.model"), vocab_size=300,
                    model_type="wordpiece")
  with pytest.raises(LmError, match="too high.*vocab_size"):
    train_tokenizer(["tiny text"], str(tmp_path / "t.model"), vocab_size=5000)
  with pytest.raises(LmError, match="empty"):
    train_tokenizer(["", "\n\n"], str(tmp_path / "t.model"), vocab_size=300)
  assert not os.path.exists(tmp_path / "t.model")
  assert os.listdir(tmp_path) == []


def test_load_errors(tmp_path):
  missing = tmp_path / "missing.model"
  with pytest.raises(LmError, match=str(missing)):
    Tokenizer.load(str(missing))
  corrupt = tmp_path / "corrupt.model"
  corrupt.write_bytes(b"not a sentencepiece model")
  with pytest.raises(LmError, match="corrupt.model"):
    Tokenizer.load(str(corrupt))


def test_directory_path_says_directory_and_names_the_file_inside(tmp_path,
                                                                  bpe):
  empty = tmp_path / "empty"
  empty.mkdir()
  for load in (tokenizer_lib.load_tokenizer, Tokenizer.load):
    with pytest.raises(LmError) as e:
      load(str(empty))
    assert str(e.value) == (
        f"Tokenizer path {empty} is a directory, not a tokenizer file, and "
        "holds no tokenizer.model or tokenizer.json; set "
        "--config.data.tokenizer.path to a SentencePiece .model file or a "
        "Hugging Face tokenizer.json, or '' to train one.")
  run = tmp_path / "run"
  run.mkdir()
  (run / "tokenizer.model").write_bytes(open(bpe.path, "rb").read())
  with pytest.raises(LmError) as e:
    load_or_train(_cfg(path=str(run)), str(tmp_path / "w"),
                  ListSource("m:", ["a"], []))
  assert str(e.value) == (
      f"Tokenizer path {run} is a directory, not a tokenizer file; set "
      f"--config.data.tokenizer.path={run}/tokenizer.model, the tokenizer "
      "inside it.")
  (run / "tokenizer.json").write_text("{}")
  with pytest.raises(LmError, match=f"path={run}/tokenizer.model \\(or "
                     f"{run}/tokenizer.json\\), the tokenizer inside it"):
    tokenizer_lib.load_tokenizer(str(run))
  (run / "tokenizer.model").unlink()
  with pytest.raises(LmError, match=f"path={run}/tokenizer.json, the "):
    tokenizer_lib.load_tokenizer(str(run))


def test_tokenizer_files_follow_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    tok = train_tokenizer(["ab\ncd"], str(tmp_path / "t.model"), vocab_size=8,
                          model_type="char", byte_fallback=False)
  finally:
    os.umask(old)
  assert sorted(os.listdir(tmp_path)) == ["t.model", "t.vocab"]
  for name in ("t.model", "t.vocab"):
    assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name
  old = os.umask(0o077)
  try:
    tokenizer_lib._write_model(tok.processor.serialized_model_proto(),
                               str(tmp_path / "u.model"))
  finally:
    os.umask(old)
  assert stat.S_IMODE(os.stat(tmp_path / "u.model").st_mode) == 0o600


def _cfg(**kw):
  base = dict(path="", vocab_size=512, model_type="bpe", byte_fallback=True,
              max_chars=100_000)
  base.update(kw)
  return types.SimpleNamespace(**base)


def test_load_or_train_trains_once_then_reuses(tmp_path, monkeypatch):
  source = ListSource("mem:", [_read("shlex.py"), _read("string.py")], key=[])
  tok = load_or_train(_cfg(), str(tmp_path), source)
  path = tmp_path / "tokenizer.model"
  assert tok.path == str(path) and tok.vocab_size == 512
  mtime = os.stat(path).st_mtime_ns

  def no_training(*args, **kwargs):
    raise AssertionError("retrained instead of loading")
  monkeypatch.setattr(tokenizer_lib, "train_tokenizer", no_training)
  again = load_or_train(_cfg(vocab_size=999), str(tmp_path), source)
  assert os.stat(path).st_mtime_ns == mtime
  assert again.fingerprint() == tok.fingerprint()
  # An explicit path wins over the workdir.
  explicit = load_or_train(_cfg(path=str(path)), None, source)
  assert explicit.fingerprint() == tok.fingerprint()


def test_load_or_train_without_workdir_uses_temp_dir(tmp_path):
  source = open_source("pystdlib:validation")
  tok = load_or_train(_cfg(max_chars=50_000), None, source)
  assert os.path.basename(tok.path) == "tokenizer.model"
  assert tok.decode(tok.encode(source[0])) == source[0]


def test_load_or_train_bad_path(tmp_path):
  bad = tmp_path / "nope" / "tok.model"
  with pytest.raises(LmError, match=str(bad)):
    load_or_train(_cfg(path=str(bad)), str(tmp_path),
                  ListSource("m:", ["a"], []))


# --- BERT special pieces ------------------------------------------------------


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
  path = tmp_path_factory.mktemp("bert") / "tok.model"
  return train_tokenizer([_read(f) for f in TRAIN_FILES[:3]], str(path),
                         vocab_size=600, bert_specials=True)


def test_bert_special_ids(bert):
  assert (bert.pad_id, bert.unk_id, bert.bos_id, bert.eos_id) == (0, 1, 2, 3)
  assert (bert.cls_id, bert.sep_id, bert.mask_id) == (4, 5, 6)
  assert [bert.id_to_piece(i) for i in range(9)] == [
      "[PAD]", "<unk>", "<s>", "</s>", "[CLS]", "[SEP]", "[MASK]", "\n", "\t"]
  assert bert.has_bert_specials
  assert bert.special_ids == [0, 1, 2, 3, 4, 5, 6]
  assert bert.vocab_size == 600
  assert bert.encode("\n\t") == [7, 8]


def test_plain_tokenizer_has_no_bert_specials(bpe):
  assert (bpe.cls_id, bpe.sep_id, bpe.mask_id) == (None, None, None)
  assert not bpe.has_bert_specials
  assert bpe.special_ids == [0, 1, 2, 3]
  assert bpe.id_to_piece(0) == "<pad>"


def test_bert_specials_never_come_from_text_and_decode_to_nothing(bert):
  text = "x = '[CLS]' + \"[MASK]\"  # [SEP] [PAD]\n"
  ids = bert.encode(text)
  assert not {bert.cls_id, bert.sep_id, bert.mask_id, bert.pad_id} & set(ids)
  assert bert.decode(ids) == text
  wrapped = [bert.cls_id] + ids + [bert.sep_id, bert.mask_id, bert.sep_id,
                                   bert.pad_id]
  assert bert.decode(wrapped) == text
  assert bert.processor.decode([bert.cls_id, bert.mask_id]) == ""


@pytest.mark.parametrize("text", TRICKY)
def test_bert_tokenizer_round_trips(bert, text):
  assert bert.decode(bert.encode(text)) == text


def test_bert_char_tokenizer_counts_specials(tmp_path):
  tok = train_tokenizer([SHAKESPEARE], str(tmp_path / "c.model"),
                        vocab_size=65, model_type="char", byte_fallback=False,
                        bert_specials=True)
  assert tok.vocab_size == 4 + 3 + 2 + len(set(SHAKESPEARE) - {"\n"})
  assert len(tok.encode(SHAKESPEARE)) == len(SHAKESPEARE)


def test_load_or_train_with_bert_specials(tmp_path, bpe):
  source = ListSource("mem:", [_read("shlex.py"), _read("string.py")], key=[])
  tok = load_or_train(_cfg(), str(tmp_path / "run"), source,
                      bert_specials=True)
  assert tok.has_bert_specials and tok.mask_id == 6
  again = load_or_train(_cfg(), str(tmp_path / "run"), source,
                        bert_specials=True)
  assert again.fingerprint() == tok.fingerprint()
  # A BERT tokenizer also serves runs that do not need the specials.
  load_or_train(_cfg(path=tok.path), None, source)


def test_load_or_train_rejects_tokenizer_without_bert_specials(tmp_path, bpe):
  source = ListSource("mem:", ["a"], key=[])
  with pytest.raises(LmError) as e:
    load_or_train(_cfg(path=bpe.path), str(tmp_path), source,
                  bert_specials=True)
  msg = str(e.value)
  assert bpe.path in msg and "[CLS]/[SEP]/[MASK]" in msg
  assert "tokenizer.path" in msg and "\n" not in msg
  workdir = tmp_path / "old"
  workdir.mkdir()
  (workdir / "tokenizer.model").write_bytes(open(bpe.path, "rb").read())
  with pytest.raises(LmError, match="masked-LM"):
    load_or_train(_cfg(), str(workdir), source, bert_specials=True)
