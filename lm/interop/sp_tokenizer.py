"""A SentencePiece model as a Hugging Face `tokenizer.json` with the same ids.

`transformers` cannot be trusted to read an `lm` SentencePiece model on its
own: given only `tokenizer.model` it picks a tokenizer class by the model
type (a GPT-2 export loads a byte-level `GPT2Tokenizer` that knows nothing
of "▁" pieces), and its SentencePiece converters assume Llama's options
(a dummy prefix, no whitespace-only pieces). So the export writes a
`tokenizer.json` built from the model's own proto, which `AutoTokenizer`
loads as a `PreTrainedTokenizerFast`:

  normalizer      the proto's rule: identity, or for the nmt/nfkc rules
                  the character map compiled into the proto (what
                  SentencePiece itself applies; NFKC when a model carries
                  none); runs of spaces squeezed and the ends stripped with
                  `remove_extra_whitespaces`; spaces -> "▁"; a leading "▁"
                  with `add_dummy_prefix`
  pre-tokenizer   SentencePiece's word split: a word is a run of "▁" and
                  the characters up to the next "▁" (with
                  `allow_whitespace_only_pieces`, a run of "▁" stays whole);
                  digits apart with `split_digits`
  model           BPE (merges ordered by the merged piece's score, which
                  is the order SentencePiece merges in) or Unigram (the
                  pieces' scores), with byte fallback as the proto says
  added tokens    the control symbols and <unk> (special) and the
                  user-defined pieces ("\\n", "\\t": never merged, as in
                  SentencePiece); T5's sentinels `<extra_id_i>` when asked
                  (`sentinels`), special, after the pieces in T5's order
                  (`<extra_id_0>` last)
  post-processor  what `lm` puts around a text: `<s> text` for decoders
                  (prompts start with BOS), `[CLS] a [SEP] b [SEP]` for
                  BERT runs, `text </s>` for encoder-decoders (T5's inputs
                  end with EOS)
  decoder         "▁" -> " ", byte pieces -> characters

Written here rather than taken from `transformers.convert_slow_tokenizer`
because training needs no `transformers` (it is a test-only dependency) and
its converters hard-code other options than `lm`'s tokenizers use.
`check_same_ids` encodes probe texts both ways, so a model with an option
this conversion does not cover is reported rather than exported silently
wrong.

T5's own `spiece.model` (no bos, pad 0, eos 1, unk 2, the nmt_nfkc rule,
a dummy prefix, squeezed whitespace) converts the same way: with its
sentinels and the "eos" frame it is the `tokenizer.json` that
`launch.import_hf` writes into a T5 workdir (the ids of transformers'
`T5Tokenizer`).

Example:
  spec = tokenizer_json(Tokenizer.load("runs/q/tokenizer/tokenizer.model"),
                        frame="bos")
  fast = tokenizers.Tokenizer.from_str(json.dumps(spec))
  fast.encode("def f():\\n    pass", add_special_tokens=False).ids
  # == the SentencePiece ids
"""

from __future__ import annotations

import json

from lm.errors import LmError

_WS = "\u2581"   # "▁"
# Probe texts of `check_same_ids`: code, runs of spaces, newlines, tabs,
# unicode outside most vocabularies.
PROBES = (
    "def add(a, b):\n    return a + b\n\n\tx  =  [1, 2,   3]  # ok\n",
    "The quick brown fox -- naïve café, 日本語, emoji \U0001F600 and \u00a0nbsp.",
    "  leading and trailing spaces   \n\n\n",
)


def _model_proto_class():
  """SentencePiece's `ModelProto` message class.

  The generated module `sentencepiece.sentencepiece_model_pb2` refuses to
  load under a protobuf runtime older than the one it was generated for
  (sentencepiece 0.2.3 wants protobuf >= 7.36, and Apache Beam, the
  `prepare` extra, keeps protobuf below 7). The schema itself is the
  serialized file descriptor inside that module, so in that case it is
  read from the module's source and built in a private descriptor pool:
  the same messages, field numbers and defaults, without the version
  check.
  """
  try:
    from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
    return sentencepiece_model_pb2.ModelProto
  except Exception:  # pylint: disable=broad-except  (protobuf's VersionError)
    pass
  import ast  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec("sentencepiece.sentencepiece_model_pb2")
  with open(spec.origin, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  data = next(node.value for node in ast.walk(tree)
              if isinstance(node, ast.Constant)
              and isinstance(node.value, bytes)
              and b"sentencepiece_model.proto" in node.value[:64])
  pool = descriptor_pool.DescriptorPool()
  pool.Add(descriptor_pb2.FileDescriptorProto.FromString(data))
  desc = pool.FindMessageTypeByName("sentencepiece.ModelProto")
  if hasattr(message_factory, "GetMessageClass"):
    return message_factory.GetMessageClass(desc)
  return message_factory.MessageFactory(pool).GetPrototype(desc)


def _proto(tok):
  m = _model_proto_class()()
  m.ParseFromString(tok.processor.serialized_model_proto())
  return m


FRAMES = ("bos", "bert", "eos", "none")
SENTINEL = "<extra_id_{}>"


def tokenizer_json(tok, *, frame: str, sentinels: int = 0) -> dict:
  """The `tokenizer.json` (as a dict) of the SentencePiece tokenizer `tok`
  (`lm.data.tokenizer.Tokenizer`); `frame` is "bos" (decoders), "bert"
  (`[CLS] a [SEP]`), "eos" (encoder-decoders: `a </s>`) or "none" for no
  post-processor. `sentinels` > 0 adds T5's `<extra_id_i>` at id
  `vocab_size + sentinels - 1 - i`."""
  if frame not in FRAMES:
    raise ValueError(f"frame {frame!r} is not one of {FRAMES}")
  from tokenizers import (  # pylint: disable=g-import-not-at-top
      AddedToken, Regex, Tokenizer, decoders, models, normalizers,
      pre_tokenizers, processors)
  m = _proto(tok)
  t, n = m.trainer_spec, m.normalizer_spec
  kinds = {1: "normal", 2: "unknown", 3: "control", 4: "user", 5: "unused",
           6: "byte"}
  pieces = [(p.piece, p.score, kinds.get(p.type, "normal")) for p in m.pieces]
  vocab = {piece: i for i, (piece, _, _) in enumerate(pieces)}
  unk = tok.unk_id
  model_type = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}.get(
      t.model_type, "unigram")
  if model_type == "word":
    raise LmError("a SentencePiece 'word' model has no tokenizer.json "
                  "equivalent here; export keeps tokenizer.model only.")
  if model_type == "bpe":
    mergeable = {piece for piece, _, kind in pieces if kind == "normal"}
    merges = []
    for i, (piece, score, kind) in enumerate(pieces):
      if kind != "normal" or len(piece) < 2:
        continue
      for cut in range(1, len(piece)):
        left, right = piece[:cut], piece[cut:]
        if left in mergeable and right in mergeable:
          merges.append((-score, i, vocab[left], vocab[right], left, right))
    merges.sort()
    model = models.BPE(vocab=vocab, merges=[(l, r) for *_, l, r in merges],
                       unk_token=pieces[unk][0], byte_fallback=t.byte_fallback,
                       fuse_unk=True, ignore_merges=False)
  else:
    model = models.Unigram([(piece, score) for piece, score, _ in pieces],
                           unk_id=unk, byte_fallback=t.byte_fallback)
  fast = Tokenizer(model)

  rule = n.name or "identity"
  steps = []
  if rule in ("nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf"):
    if n.precompiled_charsmap:    # the rule's table, as SentencePiece runs it
      steps.append(normalizers.Precompiled(n.precompiled_charsmap))
    else:
      steps.append(normalizers.NFKC())
      if rule.endswith("_cf"):
        steps.append(normalizers.Lowercase())
  elif rule != "identity":
    raise LmError(f"the SentencePiece normalization rule {rule!r} has no "
                  "tokenizer.json equivalent here; export keeps "
                  "tokenizer.model only.")
  if n.remove_extra_whitespaces:
    steps += [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
  if n.add_dummy_prefix:
    steps.append(normalizers.Prepend(_WS))
  steps.append(normalizers.Replace(" ", _WS))
  fast.normalizer = normalizers.Sequence(steps)

  if t.treat_whitespace_as_suffix:
    raise LmError("a SentencePiece model that treats whitespace as a suffix "
                  "has no tokenizer.json equivalent here.")
  split = []
  if t.split_by_whitespace:
    word = (f"{_WS}*[^{_WS}]+|{_WS}+" if t.allow_whitespace_only_pieces
            else f"{_WS}[^{_WS}]*|[^{_WS}]+")
    split.append(pre_tokenizers.Split(Regex(word), behavior="isolated"))
  if t.split_digits:
    split.append(pre_tokenizers.Digits(individual_digits=True))
  if split:
    fast.pre_tokenizer = pre_tokenizers.Sequence(split)

  fast.add_special_tokens([AddedToken(piece, special=True, normalized=False)
                           for piece, _, kind in pieces
                           if kind in ("control", "unknown")])
  fast.add_tokens([AddedToken(piece, special=False, normalized=False)
                   for piece, _, kind in pieces if kind == "user"])
  if sentinels:
    taken = [SENTINEL.format(i) for i in range(sentinels)
             if SENTINEL.format(i) in vocab]
    if taken:
      raise LmError(f"the SentencePiece model already has the piece "
                    f"{taken[0]!r}; T5's sentinels follow its pieces, so it "
                    "needs no extra_ids.")
    # new added tokens take the next ids in order: <extra_id_0> last
    fast.add_special_tokens([
        AddedToken(SENTINEL.format(i), special=True, normalized=False)
        for i in reversed(range(sentinels))])

  steps = [decoders.Replace(_WS, " ")]
  if t.byte_fallback:
    steps.append(decoders.ByteFallback())
  steps.append(decoders.Fuse())
  if n.add_dummy_prefix:
    steps.append(decoders.Strip(content=" ", left=1, right=0))
  fast.decoder = decoders.Sequence(steps)

  def piece(i):
    return pieces[i][0]
  if frame == "bos":
    bos = piece(tok.bos_id)
    fast.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1",
        special_tokens=[(bos, tok.bos_id)])
  elif frame == "bert":
    cls, sep = piece(tok.cls_id), piece(tok.sep_id)
    fast.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tok.cls_id), (sep, tok.sep_id)])
  elif frame == "eos":
    if tok.eos_id is None or tok.eos_id < 0:
      raise LmError("the SentencePiece model has no eos piece, which an "
                    "encoder-decoder ends every input with.")
    eos = piece(tok.eos_id)
    fast.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B:1 {eos}:1",
        special_tokens=[(eos, tok.eos_id)])
  return json.loads(fast.to_str())


def tokenizer_config(tok, *, frame: str, model_max_length: int) -> dict:
  """The `tokenizer_config.json` that makes `AutoTokenizer` load the
  `tokenizer.json` above with `lm`'s special tokens."""
  def piece(i):
    return tok.id_to_piece(i) if i is not None and i >= 0 else None
  config = {"tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": int(model_max_length),
            "clean_up_tokenization_spaces": False,
            "add_bos_token": frame == "bos", "add_eos_token": frame == "eos",
            "bos_token": piece(tok.bos_id), "eos_token": piece(tok.eos_id),
            "unk_token": piece(tok.unk_id), "pad_token": piece(tok.pad_id)}
  if frame == "bert":
    config.update(cls_token=piece(tok.cls_id), sep_token=piece(tok.sep_id),
                  mask_token=piece(tok.mask_id),
                  model_input_names=["input_ids", "token_type_ids",
                                     "attention_mask"])
  return {k: v for k, v in config.items() if v is not None}


def check_same_ids(tok, spec: dict, texts=PROBES) -> str | None:
  """The first text that the `tokenizer.json` `spec` encodes otherwise than
  `tok`, or None when they agree on all of `texts`."""
  from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
  fast = Tokenizer.from_str(json.dumps(spec))
  for text in texts:
    if fast.encode(text, add_special_tokens=False).ids != tok.encode(text):
      return text
  return None
