"""Tests for lm.data.hf_tokenizer and `load_tokenizer`: tiny tokenizer.json
files built here with the `tokenizers` library (BERT WordPiece, GPT-2
byte-level BPE), their special ids, offsets, decoding and word starts."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")

from lm.data import masking  # noqa: E402
from lm.data.hf_tokenizer import HfTokenizer  # noqa: E402
from lm.data.sources import ListSource  # noqa: E402
from lm.data.tokenizer import (Tokenizer, load_or_train,  # noqa: E402
                               load_tokenizer, train_tokenizer)
from lm.errors import LmError  # noqa: E402

from tokenizers import (decoders, models, normalizers,  # noqa: E402
                        pre_tokenizers, processors, trainers)

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_WORDS = ["the", "quick", "brown", "fox", "jump", "##s", "##ed", "over",
              "lazy", "dog", "caf", "##e", "un", "##believ", "##able", "a",
              "##b", ",", ".", "!", "(", ")"]
BERT_VOCAB = BERT_SPECIALS + BERT_WORDS
BERT_TEXT = "The quick fox JUMPED over Café, unBELIEVable!"
EOT = "<|endoftext|>"
# Byte-level BPE shows byte b < 33 as chr(256 + b): "\t\n\v\f\r " here.
BYTE_LEVEL_BLANKS = "".join(chr(256 + b) for b in b"\t\n\x0b\x0c\r ")
GPT2_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "def f(x):\n    return x + 1  # the answer\n",
    "Café au lait, naïve façade; 日本語 text.",
    "A tab\there and  two spaces, then a newline\n",
]


def _write_json(path, obj):
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f)


def _bert_backend(vocab=BERT_VOCAB):
  tok = tokenizers.Tokenizer(models.WordPiece(
      {p: i for i, p in enumerate(vocab)}, unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece(prefix="##")
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
  tok.add_special_tokens(BERT_SPECIALS)
  return tok


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
  """A directory with a BERT-style tokenizer.json and tokenizer_config.json."""
  d = tmp_path_factory.mktemp("bert")
  _bert_backend().save(str(d / "tokenizer.json"))
  _write_json(d / "tokenizer_config.json", {
      "do_lower_case": True, "cls_token": "[CLS]", "sep_token": "[SEP]",
      "mask_token": "[MASK]", "pad_token": "[PAD]", "unk_token": "[UNK]"})
  return d


@pytest.fixture(scope="module")
def bert(bert_dir):
  return HfTokenizer.load(str(bert_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
  """A GPT-2-style byte-level BPE trained here, saved without config files."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.ByteLevel(trim_offsets=True)
  trainer = trainers.BpeTrainer(
      vocab_size=400, special_tokens=[EOT], show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(GPT2_CORPUS * 3, trainer)
  path = tmp_path_factory.mktemp("gpt2") / "tokenizer.json"
  tok.save(str(path))
  return HfTokenizer.load(str(path))


# --- BERT WordPiece ------------------------------------------------------------


def test_bert_ids_and_special_ids(bert):
  ids = {p: i for i, p in enumerate(BERT_VOCAB)}
  expected = ["the", "quick", "fox", "jump", "##ed", "over", "caf", "##e", ",",
              "un", "##believ", "##able", "!"]
  assert bert.encode(BERT_TEXT) == [ids[p] for p in expected]
  assert [bert.id_to_piece(i) for i in bert.encode(BERT_TEXT)] == expected
  assert (bert.pad_id, bert.unk_id, bert.cls_id, bert.sep_id,
          bert.mask_id) == (0, 1, 2, 3, 4)
  # A BERT tokenizer frames causal documents as [CLS] doc [SEP].
  assert (bert.bos_id, bert.eos_id) == (bert.cls_id, bert.sep_id)
  assert bert.has_bert_specials
  assert bert.special_ids == [0, 1, 2, 3, 4]
  assert bert.vocab_size == len(BERT_VOCAB)
  assert bert.kind == "hf" and bert.word_style == "wordpiece"
  assert bert.subword_prefix == "##"
  assert repr(bert).startswith("HfTokenizer(") and "vocab_size=27" in repr(bert)
  # Unknown words become [UNK]; no [CLS]/[SEP] are added.
  assert bert.encode("zebra fox") == [bert.unk_id, ids["fox"]]
  assert bert.encode("") == []


def test_bert_encode_batch_matches_encode(bert):
  texts = [BERT_TEXT, "", "the lazy dog.", "A (B) ab"]
  assert bert.encode_batch(texts) == [bert.encode(t) for t in texts]
  assert bert.encode_batch([]) == []


def test_bert_offsets_point_into_the_original_text(bert):
  texts = [BERT_TEXT, "  the   LAZY dog. "]
  out = bert.encode_with_offsets(texts)
  assert len(out) == 2
  for text, (ids, starts, ends) in zip(texts, out):
    assert ids.dtype == np.int32 and ids.tolist() == bert.encode(text)
    assert starts.shape == ends.shape == ids.shape
  ids, starts, ends = out[0]
  assert [BERT_TEXT[s:e] for s, e in zip(starts, ends)] == [
      "The", "quick", "fox", "JUMP", "ED", "over", "Caf", "é", ",", "un",
      "BELIEV", "able", "!"]
  _, starts, ends = out[1]
  assert [texts[1][s:e] for s, e in zip(starts, ends)] == [
      "the", "LAZY", "dog", "."]
  assert bert.encode_with_offsets([]) == []


def test_bert_decode_drops_specials_and_survives_bad_ids(bert):
  ids = bert.encode(BERT_TEXT)
  text = "the quick fox jumped over cafe, unbelievable!"
  assert bert.decode(ids) == text
  framed = [bert.cls_id, *ids, bert.sep_id, bert.mask_id, bert.pad_id,
            bert.pad_id]
  assert bert.decode(np.asarray(framed, np.int32)) == text
  # Ids past the vocabulary (a padded embedding) decode as [UNK].
  assert bert.decode([ids[0], bert.vocab_size + 5, -1]) == "the [UNK] [UNK]"
  assert bert.id_to_piece(bert.vocab_size + 5) == ""


def test_bert_matches_transformers(bert_dir, bert):
  transformers = pytest.importorskip("transformers")
  path = str(bert_dir / "tokenizer.json")
  ref = transformers.PreTrainedTokenizerFast(tokenizer_file=path)
  for text in [BERT_TEXT, "the lazy dog.", "zebra (fox) ab!", "", "  A  b "]:
    assert bert.encode(text) == ref.encode(text, add_special_tokens=False)


def test_bert_word_start_table(bert):
  starts = masking.word_start_table(bert)
  alone = masking.standalone_table(bert)
  assert starts.shape == alone.shape == (bert.vocab_size,)
  for i, piece in enumerate(BERT_VOCAB):
    assert starts[i] == (not piece.startswith("##")), piece
    assert alone[i] == (i in bert.special_ids), piece
  ids = np.array(bert.encode("unbelievable fox jumps"))
  assert masking.word_starts(ids, starts, alone).tolist() == [
      True, False, False, True, True, False]


def test_conventional_specials_without_config_files(tmp_path, bert):
  _bert_backend().save(str(tmp_path / "tokenizer.json"))
  tok = HfTokenizer.load(str(tmp_path / "tokenizer.json"))
  assert tok.special_ids == bert.special_ids
  assert (tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id, tok.unk_id,
          tok.bos_id, tok.eos_id) == (2, 3, 4, 0, 1, 2, 3)


def test_special_tokens_map_overrides_config(tmp_path):
  vocab = BERT_VOCAB + ["<s>", "</s>"]
  _bert_backend(vocab).save(str(tmp_path / "tokenizer.json"))
  _write_json(tmp_path / "tokenizer_config.json",
              {"bos_token": "[CLS]", "eos_token": "[SEP]", "pad_token": None})
  _write_json(tmp_path / "special_tokens_map.json", {
      "bos_token": {"content": "<s>", "lstrip": False},
      "eos_token": {"content": "</s>", "single_word": False}})
  tok = HfTokenizer.load(str(tmp_path / "tokenizer.json"))
  assert (tok.bos_id, tok.eos_id) == (len(BERT_VOCAB), len(BERT_VOCAB) + 1)
  # pad_token null: no pad token, so pad is the eos id.
  assert tok.pad_id == tok.eos_id
  assert 0 not in tok.special_ids  # "[PAD]" is now an ordinary piece


def test_fingerprint_is_stable_and_follows_file_and_specials(tmp_path, bert,
                                                             bert_dir):
  fp = bert.fingerprint()
  assert len(fp) == 16 and int(fp, 16) >= 0
  again = HfTokenizer.load(str(bert_dir / "tokenizer.json"))
  assert again.fingerprint() == fp
  # Another file: one more vocabulary piece.
  _bert_backend(BERT_VOCAB + ["zebra"]).save(str(tmp_path / "tokenizer.json"))
  other = HfTokenizer.load(str(tmp_path / "tokenizer.json"))
  assert other.fingerprint() != fp
  # Same file, other special tokens.
  _bert_backend().save(str(tmp_path / "tokenizer.json"))
  same = HfTokenizer.load(str(tmp_path / "tokenizer.json"))
  assert same.fingerprint() == fp
  _write_json(tmp_path / "tokenizer_config.json", {"pad_token": None})
  assert HfTokenizer.load(str(tmp_path / "tokenizer.json")).fingerprint() != fp


def test_bad_special_token_config(tmp_path):
  _bert_backend().save(str(tmp_path / "tokenizer.json"))
  path = str(tmp_path / "tokenizer.json")
  _write_json(tmp_path / "tokenizer_config.json", {"mask_token": "<mask>"})
  with pytest.raises(LmError, match="mask_token '<mask>'.*not in its vocab"):
    HfTokenizer.load(path)
  _write_json(tmp_path / "tokenizer_config.json", {"mask_token": ["[MASK]"]})
  with pytest.raises(LmError, match="mask_token"):
    HfTokenizer.load(path)
  (tmp_path / "tokenizer_config.json").write_text("{not json")
  with pytest.raises(LmError, match="tokenizer_config.json is not readable"):
    HfTokenizer.load(path)


# --- GPT-2 byte-level BPE ---------------------------------------------------------


def test_gpt2_special_ids(gpt2):
  eot = gpt2.backend.token_to_id(EOT)
  assert gpt2.bos_id == gpt2.eos_id == gpt2.pad_id == eot
  assert gpt2.special_ids == [eot]
  assert gpt2.unk_id is None
  assert (gpt2.cls_id, gpt2.sep_id, gpt2.mask_id) == (None, None, None)
  assert not gpt2.has_bert_specials
  assert gpt2.word_style == "bytelevel"


@pytest.mark.parametrize("text", [
    "", " ", "the quick brown fox", "  leading and trailing  ",
    "def g(y):\n\treturn  y\n\n", "Café naïve 日本語 ü ✓ 🙂", "crlf\r\nline",
])
def test_gpt2_round_trip(gpt2, text):
  ids = gpt2.encode(text)
  assert gpt2.decode(ids) == text
  eot = gpt2.eos_id
  assert gpt2.decode([eot, *ids, eot, eot]) == text


def test_gpt2_decode_skips_ids_outside_the_vocabulary(gpt2):
  ids = gpt2.encode("the fox")
  assert gpt2.decode([ids[0], gpt2.vocab_size, 10**6, -3, *ids[1:]]) == (
      "the fox")


def test_gpt2_offsets(gpt2):
  text = "the fox 日本 ok"
  ids, starts, ends = gpt2.encode_with_offsets([text])[0]
  assert ids.tolist() == gpt2.encode(text)
  assert (starts <= ends).all() and (ends <= len(text)).all()
  covered = "".join(text[s:e] for s, e in zip(starts, ends))
  # Spaces before words are trimmed off; each character is covered once,
  # by the last byte piece of a character split into bytes.
  assert covered == text.replace(" ", "")
  for ch in "日本":
    at = text.index(ch)
    owners = np.flatnonzero((starts <= at) & (ends > at))
    assert len(owners) == 1


def test_gpt2_word_start_table(gpt2):
  starts = masking.word_start_table(gpt2)
  alone = masking.standalone_table(gpt2)
  for i in range(gpt2.vocab_size):
    piece = gpt2.id_to_piece(i)
    blank = bool(piece) and not piece.strip(BYTE_LEVEL_BLANKS)
    if i in gpt2.special_ids or blank:
      assert starts[i] and alone[i], piece
    else:
      assert starts[i] == piece.startswith("\u0120") and not alone[i], piece
  text = "the fox\n    jumps over"
  ids = np.array(gpt2.encode(text))
  pieces = [gpt2.id_to_piece(i) for i in ids]
  flags = masking.word_starts(ids, starts, alone)
  for t, piece in enumerate(pieces):
    if t > 0 and alone[ids[t - 1]]:
      assert flags[t], pieces


# --- other word styles --------------------------------------------------------


def test_word_styles_of_other_tokenizers(tmp_path):
  metaspace = tokenizers.Tokenizer(models.BPE())
  metaspace.pre_tokenizer = pre_tokenizers.Metaspace()
  metaspace.decoder = decoders.Metaspace()
  metaspace.train_from_iterator(
      GPT2_CORPUS, trainers.BpeTrainer(vocab_size=120, show_progress=False,
                                       special_tokens=["<unk>", "<s>", "</s>"]))
  tok = HfTokenizer(metaspace, "metaspace.json")
  assert tok.word_style == "sentencepiece"
  assert (tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  assert tok.pad_id == tok.eos_id and not tok.has_bert_specials
  starts = masking.word_start_table(tok)
  for i in range(tok.vocab_size):
    piece = tok.id_to_piece(i)
    if i not in tok.special_ids and piece.strip("\u2581\n\t"):
      assert starts[i] == piece.startswith("\u2581"), piece

  words = tokenizers.Tokenizer(models.WordLevel(
      {"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
  words.pre_tokenizer = pre_tokenizers.Whitespace()
  tok = HfTokenizer(words, "words.json")
  assert tok.word_style == "token"
  assert masking.word_start_table(tok).all()
  # Neither bos, eos, [CLS] nor [SEP]: asking for a frame token says so.
  assert tok.pad_id == 0 and tok.special_ids == [0]
  with pytest.raises(LmError, match="no bos token.*tokenizer_config.json"):
    _ = tok.bos_id


# --- load_tokenizer and load_or_train -----------------------------------------


def _cfg(**kw):
  base = dict(path="", vocab_size=64, model_type="char", byte_fallback=False,
              max_chars=100_000)
  base.update(kw)
  return types.SimpleNamespace(**base)


def test_load_tokenizer_dispatches_on_extension(tmp_path, bert_dir):
  model = str(tmp_path / "sp.model")
  sp = train_tokenizer(["abc def\nghi"], model, vocab_size=16,
                       model_type="char", byte_fallback=False)
  loaded = load_tokenizer(model)
  assert isinstance(loaded, Tokenizer) and loaded.kind == "sentencepiece"
  assert loaded.word_style == "sentencepiece"
  assert loaded.fingerprint() == sp.fingerprint()
  hf = load_tokenizer(str(bert_dir / "tokenizer.json"))
  assert isinstance(hf, HfTokenizer) and hf.kind == "hf"


def test_load_or_train_with_a_tokenizer_json(tmp_path, bert_dir, gpt2):
  source = ListSource("mem:", ["never trained on"], key=[])
  path = str(bert_dir / "tokenizer.json")
  tok = load_or_train(_cfg(path=path), str(tmp_path), source,
                      bert_specials=True)
  assert isinstance(tok, HfTokenizer) and tok.path == path
  assert not os.path.exists(tmp_path / "tokenizer.model")
  assert isinstance(load_or_train(_cfg(path=gpt2.path), None, source),
                    HfTokenizer)
  with pytest.raises(LmError, match="no \\[CLS\\].*tokenizer_config.json"):
    load_or_train(_cfg(path=gpt2.path), None, source, bert_specials=True)
  # Without a path the SentencePiece behaviour is unchanged.
  trained = load_or_train(_cfg(), str(tmp_path), source)
  assert isinstance(trained, Tokenizer)
  assert trained.path == str(tmp_path / "tokenizer.model")


def test_directory_path_is_named_a_directory(tmp_path):
  hub = tmp_path / "bert.json"  # a directory, though named like a file
  hub.mkdir()
  (hub / "tokenizer.json").write_text("{}")
  for load in (HfTokenizer.load, load_tokenizer):
    with pytest.raises(LmError, match=f"Tokenizer path {hub} is a directory, "
                       "not a tokenizer file; set --config.data.tokenizer."
                       f"path={hub}/tokenizer.json, the tokenizer inside it."):
      load(str(hub))


def test_missing_or_corrupt_tokenizer_json(tmp_path):
  source = ListSource("mem:", ["a"], key=[])
  missing = tmp_path / "nope" / "tokenizer.json"
  with pytest.raises(LmError, match=f"{missing} does not exist.*tokenizer.json"):
    load_or_train(_cfg(path=str(missing)), str(tmp_path), source)
  with pytest.raises(LmError, match="does not exist"):
    load_tokenizer(str(missing))
  corrupt = tmp_path / "tokenizer.json"
  for data in (b"{not json", b'{"model": 3}', b"\xff\xfe"):
    corrupt.write_bytes(data)
    with pytest.raises(LmError, match="not a valid Hugging Face tokenizer"):
      load_tokenizer(str(corrupt))
  bad_model = tmp_path / "bad.model"
  bad_model.write_bytes(b"junk")
  with pytest.raises(LmError, match="bad.model.*tokenizer.json"):
    load_tokenizer(str(bad_model))


def test_importing_the_tokenizer_module_does_not_need_tokenizers():
  code = ("import sys, lm.data.tokenizer, lm.data.masking; "
          "assert 'tokenizers' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True,
                 cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                     os.path.abspath(__file__)))))
