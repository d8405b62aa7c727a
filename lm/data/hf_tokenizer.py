"""Hugging Face `tokenizer.json` tokenizers, with `Tokenizer`'s interface.

Models imported from Hugging Face (BERT's WordPiece, GPT-2's byte-level BPE,
Llama's SentencePiece-style BPE) keep the tokenizer they were trained with.
`HfTokenizer` wraps a `tokenizers.Tokenizer` read from a `tokenizer.json` and
answers the same questions as `lm.data.tokenizer.Tokenizer`: ids of text,
character offsets, text of ids, and the special ids that packing, masking and
the task heads use.

Special tokens. When `tokenizer_config.json` or `special_tokens_map.json`
sits next to the `tokenizer.json`, its `cls_token`, `sep_token`,
`mask_token`, `pad_token`, `unk_token`, `bos_token` and `eos_token` entries
(strings, or dicts with a "content" string; null means "none") name them,
`special_tokens_map.json` winning where both do. A role neither file names
is the first conventional token found in the vocabulary:

  cls "[CLS]"            sep "[SEP]"        mask "[MASK]", "<mask>"
  pad "[PAD]", "<pad>"   unk "[UNK]", "<unk>"
  bos "<s>", "<|endoftext|>"                eos "</s>", "<|endoftext|>"

Then the gaps are filled so every objective finds its frame tokens:

  * bos falls back to cls and eos to sep (a BERT tokenizer packs causal
    documents as `[CLS] doc [SEP]`), then bos and eos to each other (a
    tokenizer with one end token, as GPT-2's "<|endoftext|>", uses it for
    both);
  * pad falls back to eos (GPT-2 practice), else to id 0; a pad id taken
    from id 0 is a real token, so it is not one of `special_ids` and
    `decode` keeps it.

Text is encoded without the tokenizer's post-processor specials (no [CLS] or
<s> are added; the data pipeline frames documents itself). As in
`transformers`, a special token written literally in the text ("[SEP]",
"<|endoftext|>") is matched as that token. Truncation and padding saved in
the `tokenizer.json` are switched off, so long documents are never cut.

Example:
  tok = HfTokenizer.load("bert/tokenizer.json")
  tok.encode("Hello world")            # -> e.g. [7592, 2088]
  (tok.cls_id, tok.sep_id, tok.bos_id)  # -> (101, 102, 101)
  tok.decode([101, 7592, 2088, 102])   # -> "hello world"
  gpt2 = HfTokenizer.load("gpt2/tokenizer.json")
  gpt2.bos_id == gpt2.eos_id == gpt2.pad_id == 50256  # -> True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lm import files
from lm.errors import LmError

ROLES = ("pad", "unk", "bos", "eos", "cls", "sep", "mask")
# Files beside a tokenizer.json that name its special tokens; later wins.
CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")
CONVENTIONAL_TOKENS = {
    "cls": ("[CLS]",),
    "sep": ("[SEP]",),
    "mask": ("[MASK]", "<mask>"),
    "pad": ("[PAD]", "<pad>"),
    "unk": ("[UNK]", "<unk>"),
    "bos": ("<s>", "<|endoftext|>"),
    "eos": ("</s>", "<|endoftext|>"),
}
WORD_STYLES = ("sentencepiece", "wordpiece", "bytelevel", "token")
_METASPACE = "\u2581"  # "▁"


# Files that travel with a tokenizer file when it is copied: the special
# tokens and settings, and the chat template (`lm.generation.chat`).
COMPANION_FILES = (*CONFIG_FILES, "chat_template.jinja")


def tokenizer_setting(path: str, key: str):
  """`key` of the `tokenizer_config.json` beside the tokenizer file `path`,
  or None (no file, no key, or unreadable: the special-token reader reports
  a broken file).

  Example: tokenizer_setting("llama/tokenizer.json", "add_bos_token") -> True.
  """
  file = files.join(files.dirname(files.abspath(path)), CONFIG_FILES[0])
  try:
    config = json.loads(files.read_bytes(file))
  except (OSError, ValueError):
    return None
  return config.get(key) if isinstance(config, dict) else None


# Tokenizer files a directory may hold, in the order a fix names them.
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")


def directory_error(path: str) -> LmError:
  """The sentence for a tokenizer path that is a directory (either kind of
  tokenizer), naming the tokenizer file inside it if there is one.

  Example: "run/" holding tokenizer.model -> LmError("Tokenizer path run/ is
  a directory, not a tokenizer file; set
  --config.data.tokenizer.path=run/tokenizer.model, the tokenizer inside
  it.").
  """
  found = [files.join(path, f) for f in TOKENIZER_FILES
           if files.isfile(files.join(path, f))]
  if not found:
    return LmError(f"Tokenizer path {path} is a directory, not a tokenizer "
                   f"file, and holds no {' or '.join(TOKENIZER_FILES)}; set "
                   "--config.data.tokenizer.path to a SentencePiece .model "
                   "file or a Hugging Face tokenizer.json, or '' to train "
                   "one.")
  other = f" (or {found[1]})" if len(found) > 1 else ""
  return LmError(f"Tokenizer path {path} is a directory, not a tokenizer "
                 f"file; set --config.data.tokenizer.path={found[0]}{other}, "
                 "the tokenizer inside it.")


class HfTokenizer:
  """A Hugging Face `tokenizer.json` tokenizer (see the module docstring).

  Example:
    tok = HfTokenizer.load("run/tokenizer/tokenizer.json")
    ids, starts, ends = tok.encode_with_offsets(["Hi there"])[0]
    # -> e.g. ids of ["hi", "there"], starts [0, 3], ends [2, 8]
  """

  kind = "hf"

  def __init__(self, backend: Any, path: str, *, raw: bytes | None = None,
               named: Mapping[str, str | None] | None = None):
    """Wraps `backend` (a `tokenizers.Tokenizer`) read from `path`.

    `raw` is the file's bytes (for `fingerprint`; default: the backend's
    serialization); `named` maps roles ("cls", "pad", ...) to token strings
    or None, as the config files beside the file give them.
    """
    self._tok = backend
    self._tok.no_truncation()
    self._tok.no_padding()
    self._path = path
    self._adds_bos = None
    self._raw = raw if raw is not None else backend.to_str().encode("utf-8")
    vocab = backend.get_vocab(with_added_tokens=True)
    self._vocab_size = max(backend.get_vocab_size(with_added_tokens=True),
                           max(vocab.values(), default=-1) + 1)
    self._ids = _resolve_specials(backend, dict(named or {}), path)
    self._pad_id = self._ids["pad"]
    self._pad_is_token = self._pad_id is not None
    if self._pad_id is None:
      self._pad_id = self._ids["eos"] if self._ids["eos"] is not None else 0
      self._pad_is_token = self._ids["eos"] is not None
    spec = json.loads(backend.to_str())
    self._word_style, self._subword_prefix = _word_style(spec)
    self._drop = {i for r, i in self._ids.items() if r != "unk"
                  and i is not None}
    if self._pad_is_token:
      self._drop.add(self._pad_id)

  @classmethod
  def load(cls, path: str) -> HfTokenizer:
    """Loads a `tokenizer.json` and the special-token files beside it.

    A missing or unreadable file raises LmError naming it.
    Example: HfTokenizer.load("gpt2/tokenizer.json").eos_id -> 50256.
    """
    if files.isdir(path):
      raise directory_error(path)
    if not files.isfile(path):
      raise LmError(f"Tokenizer file {path} does not exist; set "
                    "--config.data.tokenizer.path to a Hugging Face "
                    "tokenizer.json, a SentencePiece .model file, or '' to "
                    "train one.")
    try:
      import tokenizers  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise LmError(f"Loading the tokenizer {path} needs the `tokenizers` "
                    "package; install it with `pip install tokenizers`."
                    ) from None
    try:
      raw = files.read_bytes(path)
      backend = tokenizers.Tokenizer.from_str(raw.decode("utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception
      reason = (str(e).strip() or type(e).__name__).splitlines()[0]
      raise LmError(f"Tokenizer file {path} is not a valid Hugging Face "
                    f"tokenizer.json ({reason}); point "
                    "--config.data.tokenizer.path at a tokenizer.json saved "
                    "by `tokenizers` or `transformers`.") from None
    named = _named_specials(files.dirname(files.abspath(path)))
    return cls(backend, path, raw=raw, named=named)

  @property
  def path(self) -> str:
    """The `tokenizer.json` this tokenizer was loaded from."""
    return self._path

  @property
  def backend(self) -> Any:
    """The underlying `tokenizers.Tokenizer`."""
    return self._tok

  @property
  def vocab_size(self) -> int:
    """Number of ids, added tokens included (one past the largest id)."""
    return self._vocab_size

  def _required(self, role: str) -> int:
    """The id of `role`, or LmError when the tokenizer has none."""
    i = self._ids[role]
    if i is None:
      raise LmError(f"Tokenizer {self._path} has no {role} token (nor bos, "
                    "eos, [CLS] or [SEP] to stand in); name bos_token and "
                    "eos_token in a tokenizer_config.json beside it.")
    return i

  @property
  def pad_id(self) -> int:
    """The pad token, else the eos token, else 0 (see the module docstring)."""
    return self._pad_id

  @property
  def unk_id(self) -> int | None:
    """The unknown token, or None (byte-level BPE never needs one)."""
    return self._ids["unk"]

  @property
  def bos_id(self) -> int:
    """The bos token, else [CLS], else eos; LmError when there is none."""
    return self._required("bos")

  @property
  def eos_id(self) -> int:
    """The eos token, else [SEP], else bos; LmError when there is none."""
    return self._required("eos")

  @property
  def cls_id(self) -> int | None:
    """The [CLS] token, or None when the tokenizer has none."""
    return self._ids["cls"]

  @property
  def sep_id(self) -> int | None:
    """The [SEP] token, or None when the tokenizer has none."""
    return self._ids["sep"]

  @property
  def mask_id(self) -> int | None:
    """The [MASK] token, or None when the tokenizer has none."""
    return self._ids["mask"]

  @property
  def adds_bos(self) -> bool:
    """Whether the tokenizer starts a text with the bos token, as
    `transformers` would encode a prompt: `add_bos_token` in the
    `tokenizer_config.json` beside it, else what the `tokenizer.json`'s
    post-processor puts first (GPT-2's adds nothing: False; Llama's adds
    <s>: True)."""
    if self._adds_bos is None:      # read once, on first use
      setting = tokenizer_setting(self._path, "add_bos_token")
      if isinstance(setting, bool):
        self._adds_bos = setting
      else:
        bos = self._ids["bos"]
        ids = self._tok.encode("a", add_special_tokens=True).ids
        self._adds_bos = bos is not None and bool(ids) and ids[0] == bos and (
            self._tok.encode("a", add_special_tokens=False).ids[:1] != [bos])
    return self._adds_bos

  @property
  def has_bert_specials(self) -> bool:
    """True when [CLS], [SEP] and [MASK] all exist."""
    return None not in (self._ids["cls"], self._ids["sep"], self._ids["mask"])

  def piece_ids(self, pieces) -> list:
    """The id of each token string, None where the vocabulary lacks it
    (T5's "<extra_id_0>", ... are added tokens of its tokenizer)."""
    return [self._tok.token_to_id(p) for p in pieces]

  @property
  def special_ids(self) -> list[int]:
    """Sorted ids of the special tokens that exist.

    Example: BERT -> [0, 100, 101, 102, 103] (pad, unk, cls = bos,
    sep = eos, mask); GPT-2 -> [50256].
    """
    ids = {i for i in self._ids.values() if i is not None}
    if self._pad_is_token:
      ids.add(self._pad_id)
    return sorted(ids)

  @property
  def word_style(self) -> str:
    """How pieces mark word starts, for whole-word masking.

    "wordpiece": pieces starting with `subword_prefix` ("##") continue a
    word, all others start one; "bytelevel": pieces starting with "Ġ" (a
    byte-level space) start words; "sentencepiece": pieces starting with
    "▁" start words; "token": the pieces say nothing about words (a
    word-level model, or a pre-tokenizer not recognised), so every token is
    a word of its own.
    """
    return self._word_style

  @property
  def subword_prefix(self) -> str:
    """The prefix of word-continuing pieces ("##"); "" unless "wordpiece"."""
    return self._subword_prefix

  def fingerprint(self) -> str:
    """16 hex digits of sha256 over the file's bytes and the special ids.

    Names cached token streams: a changed file or special-token setting
    changes it. Example: -> "3f9a0c1e5b7d2468".
    """
    h = hashlib.sha256(self._raw)
    settings = dict(self._ids, pad=self._pad_id,
                    pad_is_token=self._pad_is_token)
    h.update(json.dumps(settings, sort_keys=True).encode("utf-8"))
    return h.hexdigest()[:16]

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without special tokens.

    Example: "Hello world" -> e.g. [7592, 2088].
    """
    return list(self._tok.encode(text, add_special_tokens=False).ids)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """`encode` of each text, multi-threaded.

    Example: ["a", "b"] -> e.g. [[1037], [1038]].
    """
    if not texts:
      return []
    return [list(e.ids) for e in
            self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def encode_with_offsets(self, texts: Sequence[str]
                          ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`(ids, starts, ends)` per text: int32 token ids and the character
    span `text[starts[i]:ends[i]]` of the original text each token covers.

    Spans are `tokenizers`' offsets (byte-level BPE trims the space before
    a word off its span), made disjoint: a character that several tokens
    share (the byte pieces of "日") belongs to the last of them only, so
    the leading bytes of a character get an empty span, as in
    `Tokenizer.encode_with_offsets`.

    Example: "Hi there" (BERT) -> ids of ["hi", "there"], starts [0, 3],
    ends [2, 8].
    """
    if not texts:
      return []
    out = []
    for e in self._tok.encode_batch(list(texts), add_special_tokens=False):
      ids = np.asarray(e.ids, np.int32)
      spans = np.asarray(e.offsets, np.int64).reshape(-1, 2)
      out.append((ids, *_disjoint(spans[:, 0], spans[:, 1])))
    return out

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`; pad, bos, eos, [CLS], [SEP] and [MASK] ids are dropped.

    Ids outside the vocabulary (a model whose embedding is padded past
    `vocab_size` can sample them) decode like `unk_id`, or are dropped when
    there is no unknown token. Example (BERT): [101, 7592, 2088, 102, 0] ->
    "hello world".
    """
    n, unk = self._vocab_size, self._ids["unk"]
    kept = []
    for i in ids:
      i = int(i)
      if i in self._drop:
        continue
      if not 0 <= i < n:
        if unk is None:
          continue
        i = unk
      kept.append(i)
    return self._tok.decode(kept, skip_special_tokens=False)

  def id_to_piece(self, i: int) -> str:
    """The vocabulary piece of id `i` ("" for an id no token has).

    Example (BERT): 2088 -> "world"; (GPT-2) 995 -> "Ġworld".
    """
    i = int(i)
    if not 0 <= i < self._vocab_size:
      return ""
    return self._tok.id_to_token(i) or ""

  def __repr__(self) -> str:
    return f"HfTokenizer({self._path!r}, vocab_size={self.vocab_size})"


def _disjoint(starts: np.ndarray, ends: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
  """Spans cut so each character belongs to the last token covering it.

  Each end is clipped to the start of the next non-empty span after it.
  Example: byte pieces of "日本" with spans [0,1) [0,2) [1,2) [1,2) ->
  [0,0) [0,1) [1,1) [1,2).
  """
  starts = np.asarray(starts, np.int64)
  ends = np.asarray(ends, np.int64)
  nonempty = np.where(ends > starts, starts, np.iinfo(np.int64).max)
  later = np.minimum.accumulate(nonempty[::-1])[::-1]   # min start from k on
  next_start = np.append(later[1:], np.iinfo(np.int64).max)
  return starts, np.maximum(starts, np.minimum(ends, next_start))


def _token_content(value: Any, key: str, source: str) -> str | None:
  """The token string of a config entry: a string, {"content": ...} or None.

  Example: {"content": "[CLS]", "lstrip": false} -> "[CLS]".
  """
  if value is None or isinstance(value, str):
    return value
  if isinstance(value, dict) and isinstance(value.get("content"), str):
    return value["content"]
  raise LmError(f"{source} gives {key} as {value!r}; write it as a string or "
                "as a dict with a \"content\" string.")


def _named_specials(directory: str) -> dict[str, str | None]:
  """Roles -> token strings named by the config files in `directory`.

  Example: tokenizer_config.json {"cls_token": "[CLS]", "pad_token": null}
  -> {"cls": "[CLS]", "pad": None}.
  """
  named: dict[str, str | None] = {}
  for name in CONFIG_FILES:
    file = files.join(directory, name)
    if not files.isfile(file):
      continue
    try:
      config = json.loads(files.read_bytes(file))
    except (OSError, ValueError) as e:
      reason = (str(e).strip() or type(e).__name__).splitlines()[0]
      raise LmError(f"{file} is not readable JSON ({reason}); fix or delete "
                    "it.") from None
    if not isinstance(config, dict):
      raise LmError(f"{file} is not a JSON object; fix or delete it.")
    for role in ROLES:
      key = f"{role}_token"
      if key in config:
        named[role] = _token_content(config[key], key, file)
  return named


def _resolve_specials(backend: Any, named: dict[str, str | None],
                      path: str) -> dict[str, int | None]:
  """Role -> id (or None), by the rules of the module docstring."""
  ids: dict[str, int | None] = {}
  for role in ROLES:
    if role in named:
      token = named[role]
      ids[role] = None if token is None else backend.token_to_id(token)
      if token is not None and ids[role] is None:
        raise LmError(f"The {role}_token {token!r} named beside {path} is not "
                      "in its vocabulary; fix the entry in "
                      "tokenizer_config.json or special_tokens_map.json.")
    else:
      found = (backend.token_to_id(t) for t in CONVENTIONAL_TOKENS[role])
      ids[role] = next((i for i in found if i is not None), None)
  if ids["bos"] is None:
    ids["bos"] = ids["cls"]
  if ids["eos"] is None:
    ids["eos"] = ids["sep"]
  if ids["bos"] is None:
    ids["bos"] = ids["eos"]
  if ids["eos"] is None:
    ids["eos"] = ids["bos"]
  return ids


def _types(component: Any) -> set[str]:
  """Every "type" named in a serialized component, nested ones included.

  Example: {"type": "Sequence", "pretokenizers": [{"type": "Split"},
  {"type": "ByteLevel"}]} -> {"Sequence", "Split", "ByteLevel"}.
  """
  if isinstance(component, dict):
    kind = component.get("type")
    out = {kind} if isinstance(kind, str) else set()
    for value in component.values():
      out |= _types(value)
    return out
  if isinstance(component, list):
    return set().union(*(_types(v) for v in component))
  return set()


def _word_style(spec: dict) -> tuple[str, str]:
  """(word_style, subword_prefix) of a serialized tokenizer.

  WordPiece -> "wordpiece" with its continuing-subword prefix; a ByteLevel
  pre-tokenizer or decoder -> "bytelevel"; a Metaspace pre-tokenizer or
  decoder, or a normalizer or decoder writing "▁" (Llama) ->
  "sentencepiece"; a BPE with a continuing-subword prefix -> "wordpiece";
  anything else -> "token".
  """
  model = spec.get("model") or {}
  prefix = model.get("continuing_subword_prefix") or ""
  if model.get("type") == "WordPiece":
    return "wordpiece", prefix or "##"
  parts = (spec.get("pre_tokenizer"), spec.get("decoder"))
  types = _types(list(parts))
  if "ByteLevel" in types:
    return "bytelevel", ""
  writes_metaspace = _METASPACE in json.dumps(
      [spec.get("normalizer"), spec.get("decoder")], ensure_ascii=False)
  if "Metaspace" in types or writes_metaspace:
    return "sentencepiece", ""
  if prefix:
    return "wordpiece", prefix
  return "token", ""
