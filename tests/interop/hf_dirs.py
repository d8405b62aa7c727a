"""Tiny Hugging Face model directories written by the tests (no downloads).

`bert_dir(path, cls)` saves a random tiny BERT of class `cls` with a
WordPiece `tokenizer.json` (lower-casing, "##" continuations) over the
words of `WORDS`; `gpt2_dir(path)` saves a random tiny GPT-2 with a
byte-level BPE trained on `SENTENCES`.
"""

from __future__ import annotations

import json
import os

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import trainers

POSITIVE = ["great", "wonderful", "funny", "moving", "brilliant", "superb"]
NEGATIVE = ["dull", "terrible", "boring", "awful", "clumsy", "tedious"]
WORDS = ["a", "the", "film", "movie", "plot", "was", "is", "and", "very",
         "acting", ",", ".", "!", "it", "story"] + POSITIVE + NEGATIVE
PIECES = ["##s", "##ly", "##ing", "##er"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SENTENCES = ["the film was great and very funny.",
             "a dull plot, and the acting is terrible!",
             "It was a moving story; brilliant acting.",
             "Tedious, boring and clumsy: an awful movie."] * 5


def write_bert_tokenizer(path) -> int:
  """Writes tokenizer.json + tokenizer_config.json; returns the vocab size."""
  vocab = {w: i for i, w in enumerate(SPECIALS + WORDS + PIECES)}
  tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece()
  os.makedirs(path, exist_ok=True)
  tok.save(os.path.join(path, "tokenizer.json"))
  with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
    json.dump({"tokenizer_class": "BertTokenizer", "cls_token": "[CLS]",
               "sep_token": "[SEP]", "mask_token": "[MASK]",
               "pad_token": "[PAD]", "unk_token": "[UNK]",
               "do_lower_case": True}, f)
  return len(vocab)


def bert_config(vocab_size: int, **kw) -> transformers.BertConfig:
  return transformers.BertConfig(
      vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
      num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
      **kw)


def bert_dir(path, cls=transformers.BertForPreTraining, seed: int = 0, **kw):
  """A random tiny `cls` (a transformers BERT class) saved in `path`."""
  vocab = write_bert_tokenizer(path)
  torch.manual_seed(seed)
  model = cls(bert_config(vocab, **kw)).eval()
  model.save_pretrained(path, safe_serialization=True)
  return model


def write_gpt2_tokenizer(path) -> int:
  """Trains and writes a byte-level BPE tokenizer.json; returns its size."""
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=320, special_tokens=["<|endoftext|>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tok.train_from_iterator(SENTENCES, trainer)
  os.makedirs(path, exist_ok=True)
  tok.save(os.path.join(path, "tokenizer.json"))
  with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
    json.dump({"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>",
               "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}, f)
  return tok.get_vocab_size()


def gpt2_dir(path, seed: int = 0, **kw):
  """A random tiny GPT2LMHeadModel with its tokenizer saved in `path`."""
  vocab = write_gpt2_tokenizer(path)
  torch.manual_seed(seed)
  cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32,
                                n_layer=2, n_head=4, bos_token_id=0,
                                eos_token_id=0, **kw)
  model = transformers.GPT2LMHeadModel(cfg).eval()
  model.save_pretrained(path, safe_serialization=True)
  return model


def differing_tensors(original, loaded, skip=()) -> list[str]:
  """Names of `original`'s state-dict tensors that `loaded` lacks or holds
  with other values (keys containing any of `skip` are ignored)."""
  mine, theirs = original.state_dict(), loaded.state_dict()
  return [k for k, v in mine.items()
          if not any(s in k for s in skip)
          and (k not in theirs or not torch.equal(v, theirs[k]))]


def encoded_and_reference(workdir, ref, tmp_path,
                          texts=("a great film", "the plot was dull and boring .")):
  """`(embedding, reference hidden states [T, D])` per text: the embeddings
  `launch.encode` writes for `texts` from the run in `workdir`, beside
  `ref`'s (a transformers BertModel) last hidden states on the same ids."""
  from lm.tasks.embed import encode_file
  from lm.experiments import load_trained
  (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
  emb, _ = encode_file(str(workdir), str(tmp_path / "in.txt"),
                       str(tmp_path / "emb.npy"), load_trained=load_trained)
  tok = load_trained(str(workdir)).tokenizer
  out = []
  for row, text in zip(emb, texts):
    ids = torch.tensor([[tok.cls_id, *tok.encode(text), tok.sep_id]])
    with torch.no_grad():
      out.append((row, ref(ids).last_hidden_state[0]))
  return out
