"""SentencePiece tokenizers: train from a corpus, load from a `.model` file.

Every tokenizer trained here has the same special ids (pad=0, unk=1, bos=2,
eos=3), then the user-defined pieces "\\n" (4) and "\\t" (5), and round-trips
text exactly: `decode(encode(s)) == s` for any string, including source code
with runs of spaces, tabs, blank lines and non-ASCII characters. That takes:

  * `normalization_rule_name="identity"`, `remove_extra_whitespaces=False` and
    `add_dummy_prefix=False`: no text is changed or added before encoding;
  * `byte_fallback=True`: characters outside the vocabulary become byte pieces
    instead of `<unk>`;
  * "\\n" and "\\t" as user-defined pieces: SentencePiece trains on lines, so
    it would never learn a newline; as a user-defined piece it is always one
    token;
  * `allow_whitespace_only_pieces=True`: indentation runs ("▁▁▁▁") become
    single pieces.

With `bert_specials=True` (masked-LM pretraining), "[CLS]", "[SEP]" and
"[MASK]" are added as SentencePiece *control symbols* and the pad piece is
named "[PAD]". SentencePiece numbers control symbols before user-defined
ones, so such a tokenizer has

  [PAD]=0  <unk>=1  <s>=2  </s>=3  [CLS]=4  [SEP]=5  [MASK]=6  "\\n"=7  "\\t"=8

(byte pieces follow). Control symbols are never produced from text (the
literal string "[CLS]" encodes as ordinary pieces such as "[", "CLS", "]")
and decode to nothing. Read the ids from `Tokenizer.cls_id`, `sep_id`,
`mask_id` rather than hard-coding them. Without `bert_specials` the model is
byte-identical to one trained before the option existed.

`load_tokenizer` also opens a Hugging Face `tokenizer.json` (an imported
model's own tokenizer) as an `lm.data.hf_tokenizer.HfTokenizer`, which has
this class's interface; `load_or_train` uses it for an explicit path.

Example:
  tok = train_tokenizer(docs, "/tmp/tok.model", vocab_size=512)
  tok.encode("def f():\\n    pass")  # -> e.g. [301, 87, 95, 4, 262, 340]
  tok.decode(tok.encode(s)) == s       # -> True
  bert = train_tokenizer(docs, "/tmp/b.model", vocab_size=512,
                         bert_specials=True)
  (bert.cls_id, bert.sep_id, bert.mask_id)  # -> (4, 5, 6)
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import sentencepiece as spm

from lm.data.hf_tokenizer import HfTokenizer, directory_error, tokenizer_setting
from lm.errors import LmError
from lm import files

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
MODEL_TYPES = ("bpe", "unigram", "char")
# Always-present user-defined pieces (ids 4 and 5, or 7 and 8 with the BERT
# control symbols), see the module docstring.
BASE_SYMBOLS = ("\n", "\t")
# Control symbols reserved by `train_tokenizer(..., bert_specials=True)`.
BERT_SPECIALS = ("[CLS]", "[SEP]", "[MASK]")
BERT_PAD_PIECE = "[PAD]"
DEFAULT_MAX_CHARS = 20_000_000
_CHARACTER_COVERAGE = 0.9995
# Training lines longer than this many bytes are skipped by SentencePiece.
_MAX_LINE_BYTES = 16384
_N_BYTE_PIECES = 256


class Tokenizer:
  """A loaded SentencePiece model with fixed special ids.

  Example:
    tok = Tokenizer.load("workdir/tokenizer.model")
    tok.encode("hi\\n")                          # -> e.g. [411, 4]
    tok.decode([tok.bos_id, 411, 4, tok.eos_id])  # -> "hi\\n"
  """

  kind = "sentencepiece"

  def __init__(self, processor: spm.SentencePieceProcessor, path: str):
    self._sp = processor
    self._path = path
    self._cls_id = self._piece_id(BERT_SPECIALS[0])
    self._sep_id = self._piece_id(BERT_SPECIALS[1])
    self._mask_id = self._piece_id(BERT_SPECIALS[2])
    self._drop = {i for i in (processor.pad_id(), processor.bos_id(),
                              processor.eos_id(), self._cls_id, self._sep_id,
                              self._mask_id) if i is not None and i >= 0}

  def _piece_id(self, piece: str) -> int | None:
    """The id of `piece`, or None when the vocabulary has no such piece.

    `piece_to_id` answers `unk_id` for unknown pieces, so the id is checked
    by mapping it back. Example: "[CLS]" -> 4 (BERT tokenizer) or None.
    """
    i = self._sp.piece_to_id(piece)
    if 0 <= i < self._sp.vocab_size() and self._sp.id_to_piece(i) == piece:
      return int(i)
    return None

  @classmethod
  def load(cls, path: str) -> Tokenizer:
    """Loads a `.model` file; a missing or unreadable file, or a directory,
    raises LmError."""
    if files.isdir(path):
      raise directory_error(path)
    if not files.isfile(path):
      raise LmError(f"Tokenizer file {path} does not exist; set "
                    "--config.data.tokenizer.path to a SentencePiece .model "
                    "file, a Hugging Face tokenizer.json, or '' to train "
                    "one.")
    sp = spm.SentencePieceProcessor()
    try:
      if files.is_uri(path):
        sp.LoadFromSerializedProto(files.read_bytes(path))
      else:
        sp.Load(path)
    except (OSError, RuntimeError) as e:
      reason = (str(e).strip() or "unreadable").splitlines()[0]
      raise LmError(f"Tokenizer file {path} is not a valid SentencePiece model "
                    f"({reason}); point --config.data.tokenizer.path at a "
                    ".model file or a tokenizer.json, or delete it to "
                    "retrain.") from None
    return cls(sp, path)

  @property
  def path(self) -> str:
    """The `.model` file this tokenizer was loaded from."""
    return self._path

  @property
  def vocab_size(self) -> int:
    return self._sp.vocab_size()

  @property
  def pad_id(self) -> int:
    return self._sp.pad_id()

  @property
  def unk_id(self) -> int:
    return self._sp.unk_id()

  @property
  def bos_id(self) -> int:
    return self._sp.bos_id()

  @property
  def eos_id(self) -> int:
    return self._sp.eos_id()

  @property
  def cls_id(self) -> int | None:
    """The id of "[CLS]", or None when the model has no such piece."""
    return self._cls_id

  @property
  def sep_id(self) -> int | None:
    """The id of "[SEP]", or None when the model has no such piece."""
    return self._sep_id

  @property
  def mask_id(self) -> int | None:
    """The id of "[MASK]", or None when the model has no such piece."""
    return self._mask_id

  @property
  def adds_bos(self) -> bool:
    """Whether a prompt starts with bos: `lm` frames every document with
    it, so True, unless a `tokenizer_config.json` beside the model (an
    imported Hugging Face model's) sets `add_bos_token` false."""
    return tokenizer_setting(self._path, "add_bos_token") is not False

  @property
  def has_bert_specials(self) -> bool:
    """True when "[CLS]", "[SEP]" and "[MASK]" all exist."""
    return None not in (self._cls_id, self._sep_id, self._mask_id)

  def piece_ids(self, pieces: Sequence[str]) -> list[int | None]:
    """The id of each piece, None where the vocabulary lacks it (for
    example T5's sentinels "<extra_id_0>", ... reserved by
    `train_tokenizer(..., control_symbols=...)`)."""
    return [self._piece_id(p) for p in pieces]

  @property
  def special_ids(self) -> list[int]:
    """Sorted ids of pad/unk/bos/eos and whichever of cls/sep/mask exist.

    Example: a BERT tokenizer -> [0, 1, 2, 3, 4, 5, 6]; a plain one ->
    [0, 1, 2, 3].
    """
    ids = (self.pad_id, self.unk_id, self.bos_id, self.eos_id, self._cls_id,
           self._sep_id, self._mask_id)
    return sorted({int(i) for i in ids if i is not None and i >= 0})

  @property
  def word_style(self) -> str:
    """How pieces mark word starts: always "sentencepiece" (pieces starting
    with "▁" begin words; see `lm.data.masking.word_start_table`)."""
    return "sentencepiece"

  @property
  def processor(self) -> spm.SentencePieceProcessor:
    """The underlying `SentencePieceProcessor`."""
    return self._sp

  def fingerprint(self) -> str:
    """A 16-hex-digit hash of the serialized model (names cached streams)."""
    return hashlib.sha256(self._sp.serialized_model_proto()).hexdigest()[:16]

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without bos/eos. Example: "ab" -> [97, 98]."""
    return self._sp.encode(text, out_type=int)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """`encode` of each text, multi-threaded.

    Example: ["a", "b"] -> [[97], [98]].
    """
    if not texts:
      return []
    return self._sp.encode(list(texts), out_type=int,
                           num_threads=os.cpu_count() or 1)

  def encode_with_offsets(self, texts: Sequence[str]
                          ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`(ids, starts, ends)` per text: int32 token ids and the character
    span `text[starts[i]:ends[i]]` each token covers (empty for the leading
    bytes of a character split into byte pieces).

    Example: "a bc" -> e.g. ids of ["a", "▁bc"], starts [0, 1], ends [1, 4]
    (the piece "▁bc" covers the space before "bc").
    """
    if not texts:
      return []
    protos = self._sp.encode(list(texts), return_type="proto",
                             num_threads=os.cpu_count() or 1)
    out = []
    for proto in protos:
      ids = np.fromiter((p.id for p in proto.pieces), np.int32,
                        len(proto.pieces))
      lens = np.fromiter((len(p.surface) for p in proto.pieces), np.int64,
                         len(proto.pieces))
      ends = np.cumsum(lens)
      out.append((ids, ends - lens, ends))
    return out

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`; pad, bos, eos, [CLS], [SEP] and [MASK] ids are dropped.

    Ids outside the vocabulary (a model whose embedding is padded past
    `vocab_size` can sample them) decode like `unk_id`, as " ⁇ ".
    Example: [bos, 97, 98, eos, pad] -> "ab".
    """
    n = self.vocab_size
    kept = [int(i) for i in ids if int(i) not in self._drop]
    return self._sp.decode([i if 0 <= i < n else self.unk_id for i in kept])

  def id_to_piece(self, i: int) -> str:
    """The vocabulary piece of id `i`. Example: 4 -> "\\n"."""
    return self._sp.id_to_piece(int(i))

  def __repr__(self) -> str:
    return f"Tokenizer({self._path!r}, vocab_size={self.vocab_size})"


def _training_lines(texts: Iterable[str],
                    max_chars: int | None) -> Iterator[str]:
  """Non-empty lines of `texts`, stopping once `max_chars` characters are used.

  Example: ["a\\nb", "c"] with max_chars=2 -> "a", "b" (newlines are not
  training text: "\\n" is a user-defined piece).
  """
  budget = max_chars if max_chars is not None else float("inf")
  for text in texts:
    if budget <= 0:
      return
    if len(text) > budget:
      text = text[:int(budget)]
    budget -= len(text)
    for line in text.split("\n"):
      if line:
        yield line


def _trainer_error(path: str, exc: Exception) -> LmError:
  """An LmError for a failed `SentencePieceTrainer.train` call."""
  msg = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
  if "] " in msg:  # drop "INTERNAL: src/trainer.cc(744) [check] " prefixes
    msg = msg.split("] ", 1)[1]
  return LmError(f"Could not train the tokenizer {path}: {msg.rstrip('.')}; "
                 "adjust --config.data.tokenizer.vocab_size or model_type.")


def _rare_chars(lines: Sequence[str], budget: int) -> set[str]:
  """Characters to leave out of the vocabulary.

  Keeps the most frequent characters covering 99.95% of the text, but at
  most `budget` of them; returns the rest. Example: 10000 "a", 10 "b", 1 "c"
  with budget 1 -> {"b", "c"}; with budget 5 -> {"c"}.
  """
  counts: dict[int, int] = {}
  for i in range(0, len(lines), 4096):
    text = "".join(lines[i:i + 4096]).encode("utf-32-le")
    chars, n = np.unique(np.frombuffer(text, np.uint32), return_counts=True)
    for c, k in zip(chars.tolist(), n.tolist()):
      counts[c] = counts.get(c, 0) + k
  ranked = sorted(counts, key=lambda c: (-counts[c], c))
  cum = np.cumsum([counts[c] for c in ranked]) / sum(counts.values())
  keep = min(int(np.searchsorted(cum, _CHARACTER_COVERAGE)) + 1, budget)
  return {chr(c) for c in ranked[max(1, keep):]}


def _without_chars(lines: Iterable[str], chars: set[str]) -> Iterator[str]:
  """Splits `lines` at `chars`, dropping them and empty pieces.

  Example: ["ab©cd", "©"] without {"©"} -> "ab", "cd".
  """
  table = {ord(c): "\n" for c in chars}
  for line in lines:
    for part in line.translate(table).split("\n") if table else [line]:
      if part:
        yield part


def _write_model(model: bytes, path: str) -> None:
  """Writes `path` (the .model) and a `.vocab` beside it, each atomically,
  with the mode `open(path, "w")` would give them under the umask.

  The .vocab lists "piece<TAB>score" per id, as `spm_train` writes it (with
  newline, tab and carriage-return pieces escaped as \\n, \\t, \\r).
  """
  path = files.abspath(path)
  files.makedirs(files.dirname(path))
  sp = spm.SentencePieceProcessor(model_proto=model)
  escape = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
  pieces = [sp.id_to_piece(i) for i in range(sp.vocab_size())]
  vocab = "".join(f"{escape.get(p, p)}\t{sp.get_score(i):g}\n"
                  for i, p in enumerate(pieces))
  outputs = [(os.path.splitext(path)[0] + ".vocab", vocab.encode("utf-8")),
             (path, model)]
  for target, data in outputs:
    files.write_atomic(target, data)


def train_tokenizer(texts: Iterable[str], path: str, *, vocab_size: int,
                    model_type: str = "bpe", byte_fallback: bool = True,
                    max_chars: int | None = DEFAULT_MAX_CHARS,
                    user_defined_symbols: Sequence[str] = (),
                    bert_specials: bool = False,
                    control_symbols: Sequence[str] = ()) -> Tokenizer:
  """Trains a SentencePiece model on `texts` and writes it to `path`.

  Training uses the first `max_chars` characters of `texts` in order (None:
  all), split into lines. The `.model` (and a `.vocab` beside it) are written
  to temporary files next to `path` and moved into place with `os.replace`,
  so a reader never sees a half-written file. Training is deterministic: the
  same texts and options give a byte-identical `.model`.

  With `byte_fallback` (bpe/unigram), the rarest characters (beyond 99.95%
  coverage, or beyond half the free vocabulary slots for a small vocab) are
  not pieces of their own: they encode as UTF-8 byte pieces.

  `model_type="char"` makes one piece per distinct training character (the
  vocabulary grows to cover all of them, whatever `vocab_size` says), so every
  character is one token; with `byte_fallback` unseen characters become bytes.

  `bert_specials=True` reserves "[CLS]", "[SEP]" and "[MASK]" as control
  symbols (ids 4, 5, 6; "\\n" and "\\t" move to 7 and 8) and names the pad
  piece "[PAD]" (still id 0); see the module docstring. `control_symbols`
  reserves more control symbols after those (an objective's own, e.g. T5's
  sentinels): pieces that never come out of `encode` and decode to "".

  Example: train_tokenizer(["ab\\ncd"], "/tmp/t.model", vocab_size=8,
  model_type="char", byte_fallback=False).encode("ca\\n") -> three ids.
  """
  if model_type not in MODEL_TYPES:
    raise LmError(f"Unknown tokenizer model_type {model_type!r}; use one of "
                  f"{list(MODEL_TYPES)} (--config.data.tokenizer.model_type).")
  symbols = list(dict.fromkeys([*BASE_SYMBOLS, *user_defined_symbols]))
  controls = ((list(BERT_SPECIALS) if bert_specials else [])
              + list(control_symbols))
  n_meta = (4 + len(controls) + len(symbols)
            + (_N_BYTE_PIECES if byte_fallback else 0))
  is_char = model_type == "char"
  options: dict[str, Any] = dict(
      vocab_size=max(vocab_size, n_meta + 1) if is_char else vocab_size,
      model_type=model_type,
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      add_dummy_prefix=False,
      allow_whitespace_only_pieces=True,
      split_digits=False,
      byte_fallback=byte_fallback,
      character_coverage=1.0,
      user_defined_symbols=symbols,
      pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
      hard_vocab_limit=not is_char,
      use_all_vocab=is_char,
      max_sentence_length=_MAX_LINE_BYTES,
      num_threads=os.cpu_count() or 1,
      minloglevel=2,
  )
  if bert_specials:  # only then: keeps default models byte-identical
    options.update(pad_piece=BERT_PAD_PIECE)
  if controls:
    options.update(control_symbols=controls)
  lines = list(_training_lines(texts, max_chars))
  if not lines:
    raise LmError("The tokenizer training text is empty; check the data URI "
                  "(--config.data.train) or set --config.data.tokenizer.path.")
  if byte_fallback and not is_char:
    # Rare characters become byte pieces rather than each taking a
    # vocabulary slot; keep at least half of the free slots for merges.
    rare = _rare_chars(lines, budget=(vocab_size - n_meta) // 2)
    lines = list(_without_chars(lines, rare))
  try:
    model = io.BytesIO()
    spm.set_random_generator_seed(0)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines),
                                   model_writer=model, **options)
  except RuntimeError as e:
    raise _trainer_error(path, e) from None
  _write_model(model.getvalue(), path)
  return Tokenizer.load(path)


def load_tokenizer(path: str) -> Tokenizer | HfTokenizer:
  """A tokenizer file of either kind: a Hugging Face `tokenizer.json` (any
  path ending in ".json") or a SentencePiece `.model` (anything else).

  A directory is an LmError that names the tokenizer.model or tokenizer.json
  inside it, if any (it is not opened in its place: the config should say
  which file it means).

  Example: load_tokenizer("bert/tokenizer.json") -> HfTokenizer(...);
  load_tokenizer("run/tokenizer.model") -> Tokenizer(...).
  """
  if files.isdir(path):
    raise directory_error(path)
  if path.lower().endswith(".json"):
    return HfTokenizer.load(path)
  return Tokenizer.load(path)


def load_or_train(tok_cfg: Any, workdir: str | None, source: Iterable[str],
                  bert_specials: bool = False,
                  control_symbols: Sequence[str] = ()
                  ) -> Tokenizer | HfTokenizer:
  """The run's tokenizer: an explicit file, the workdir's, or a new one.

  1. `tok_cfg.path` set -> load it with `load_tokenizer`, so a
     `tokenizer.json` gives an `HfTokenizer` (missing or corrupt -> LmError
     naming it).
  2. else `workdir/tokenizer.model` exists -> load it (a resumed run reuses
     the tokenizer it started with, never retrains).
  3. else train on the documents of `source`, in order, up to
     `tok_cfg.max_chars` characters, with `tok_cfg.vocab_size`,
     `tok_cfg.model_type` and `tok_cfg.byte_fallback`, and save it to
     `workdir/tokenizer.model` (a new temporary directory if `workdir` is None).

  With `bert_specials` a new tokenizer gets the [CLS]/[SEP]/[MASK] control
  symbols, and a loaded one (1. or 2.) without them raises LmError.

  Example: load_or_train(cfg.tokenizer, "/tmp/run", open_source("pystdlib"))
  -> Tokenizer("/tmp/run/tokenizer.model", vocab_size=4096).
  """
  if getattr(tok_cfg, "path", ""):
    path = files.expand(tok_cfg.path)
    return _check_specials(load_tokenizer(path), bert_specials,
                           control_symbols)
  if workdir is None:
    workdir = tempfile.mkdtemp(prefix="lm-tokenizer-")
  path = files.join(workdir, "tokenizer.model")
  if files.exists(path):
    return _check_specials(Tokenizer.load(path), bert_specials,
                           control_symbols)
  max_chars = getattr(tok_cfg, "max_chars", DEFAULT_MAX_CHARS) or None
  return train_tokenizer(
      iter(source), path, vocab_size=int(tok_cfg.vocab_size),
      model_type=str(tok_cfg.model_type),
      byte_fallback=bool(tok_cfg.byte_fallback), max_chars=max_chars,
      bert_specials=bert_specials, control_symbols=control_symbols)


def _check_specials(tok: Tokenizer | HfTokenizer, bert_specials: bool,
                    control_symbols: Sequence[str] = ()
                    ) -> Tokenizer | HfTokenizer:
  """`tok`, or LmError when `bert_specials` or `control_symbols` ask for
  pieces it lacks."""
  if control_symbols:
    missing = [p for p, i in zip(control_symbols,
                                 tok.piece_ids(control_symbols)) if i is None]
    if missing:
      raise LmError(
          f"tokenizer {tok.path} has no piece {missing[0]!r} (nor "
          f"{len(missing) - 1} more of the {len(control_symbols)} this "
          "objective reserves); leave data.tokenizer.path empty so the run "
          "trains a tokenizer that reserves them.")
  if bert_specials and not tok.has_bert_specials:
    fix = ("name cls_token, sep_token and mask_token in a "
           "tokenizer_config.json beside it, or "
           if tok.kind == "hf" else "")
    raise LmError(f"Tokenizer {tok.path} has no [CLS]/[SEP]/[MASK] pieces, "
                  f"which masked-LM training needs; {fix}train a new one by "
                  "leaving --config.data.tokenizer.path empty in a new "
                  "workdir.")
  return tok
