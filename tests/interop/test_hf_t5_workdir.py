"""T5 as workdirs: launch.import_hf of a T5 directory (with a tokenizer.json,
or only T5's spiece.model, converted), greedy generation against
transformers' `generate`, span-corruption sentinels at T5's ids, and
launch.export_hf of an lm-trained span-corruption run back to transformers.

Everything is tiny and offline: a 200-piece SentencePiece model trained on
a standard-library module's source, 10 sentinels, a 2+2-block T5.
"""

import json
import os
import sys
import textwrap

import numpy as np
import pytest
import sentencepiece as spm
import torch
import transformers

from lm.data.hf_tokenizer import HfTokenizer
from lm.errors import LmError
from lm.experiments import load_trained
from lm.generation import seq2seq as seq2seq_gen
from lm.interop import sp_tokenizer, t5
from lm.interop.workdir import export_hf, import_hf
from lm.objectives import span_corruption as sc
from tests.cli import cli

N_EXTRA = 10
SP_SIZE = 200
VOCAB = SP_SIZE + N_EXTRA
NEW_TOKENS = 8
# ASCII texts: transformers 5's T5Tokenizer built from a vocabulary has no
# NFKC step, so only such texts have one right answer on both sides.
TEXTS = ("def wrap(text, width=70):", "the quick brown fox",
         "  return  lines\n\tindent")
SPECIALS = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def _sentinels(n):
  return [f"<extra_id_{i}>" for i in range(n)]


def t5_ids(n=N_EXTRA):
  """T5's sentinel ids: <extra_id_0> is the last id, counting down."""
  return [SP_SIZE + n - 1 - i for i in range(n)]


def greedy_ids(trained, texts, encode=None):
  """lm's greedy decoder ids for each text (EOS appended, cut at EOS)."""
  tok = trained.tokenizer
  return seq2seq_gen.generate_texts(
      trained.model, trained.params, list(texts), encode=encode or tok.encode,
      decode=list, max_input=trained.config.seq_len,
      max_new_tokens=NEW_TOKENS, start_id=tok.pad_id, eos_id=tok.eos_id)


def hf_generate(model, ids, eos_id):
  """transformers' greedy ids after the start id, cut at EOS."""
  with torch.no_grad():
    out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS,
                         do_sample=False, num_beams=1)[0, 1:].tolist()
  return out[:out.index(eos_id)] if eos_id in out else out


@pytest.fixture(scope="module")
def spiece(tmp_path_factory):
  """A T5-style SentencePiece model: pad 0, eos 1, unk 2, no bos."""
  d = tmp_path_factory.mktemp("spiece")
  with open(textwrap.__file__, encoding="utf-8") as f:
    (d / "corpus.txt").write_text(f.read())
  spm.SentencePieceTrainer.train(
      input=str(d / "corpus.txt"), model_prefix=str(d / "spiece"),
      vocab_size=SP_SIZE, model_type="unigram", pad_id=0, eos_id=1, unk_id=2,
      bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
      minloglevel=2)
  return str(d / "spiece.model")


@pytest.fixture(scope="module")
def t5_dirs(spiece, tmp_path_factory):
  """`(reference tokenizer, reference model, {"json": dir, "spiece": dir})`:
  one random T5 saved twice, beside transformers' tokenizer.json or beside
  only T5's spiece.model with its settings files.

  The LM head is random (so greedy output varies) with zero rows for <unk>
  and the sentinels: a zero logit is never the largest of 200 random ones,
  so neither side writes a token the two decoders show differently.
  """
  sp = spm.SentencePieceProcessor(model_file=spiece)
  vocab = ([(sp.id_to_piece(i), sp.get_score(i)) for i in range(SP_SIZE)]
           + [(s, 0.0) for s in reversed(_sentinels(N_EXTRA))])
  ref_tok = transformers.T5Tokenizer(vocab=vocab, extra_ids=N_EXTRA)
  assert len(ref_tok) == VOCAB
  torch.manual_seed(0)
  model = transformers.T5ForConditionalGeneration(transformers.T5Config(
      vocab_size=VOCAB, d_model=32, d_kv=8, num_heads=4, d_ff=64,
      num_layers=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
      dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0,
      eos_token_id=1)).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name.endswith("layer_norm.weight"):
        param.uniform_(0.5, 1.5)
      elif name.endswith("relative_attention_bias.weight"):
        param.normal_(0.0, 1.0)
    head = torch.randn_like(model.shared.weight)
    head[[2, *t5_ids()]] = 0.0
    model.lm_head.weight = torch.nn.Parameter(head)
  root = tmp_path_factory.mktemp("t5")
  dirs = {"json": str(root / "json"), "spiece": str(root / "spiece")}
  for d in dirs.values():
    model.save_pretrained(d, safe_serialization=True)
  ref_tok.save_pretrained(dirs["json"])
  with open(spiece, "rb") as f, open(os.path.join(dirs["spiece"],
                                                   "spiece.model"), "wb") as g:
    g.write(f.read())
  # the classic layout: spiece.model, tokenizer_config.json (extra_ids) and
  # special_tokens_map.json (the sentinels as additional special tokens)
  with open(os.path.join(dirs["spiece"], "tokenizer_config.json"), "w") as f:
    json.dump({"tokenizer_class": "T5Tokenizer", "extra_ids": N_EXTRA,
               "model_max_length": 512, **SPECIALS}, f)
  with open(os.path.join(dirs["spiece"], "special_tokens_map.json"), "w") as f:
    json.dump({**SPECIALS,
               "additional_special_tokens": _sentinels(N_EXTRA)}, f)
  return ref_tok, model, dirs


@pytest.fixture(scope="module")
def runs(t5_dirs, tmp_path_factory):
  """The two T5 directories imported as seq2seq workdirs; the spiece.model
  one through the command line."""
  _, _, dirs = t5_dirs
  root = tmp_path_factory.mktemp("runs")
  out = {"json": str(root / "json"), "spiece": str(root / "spiece")}
  r = import_hf(dirs["json"], out["json"], seq_len=64)
  assert r.objective == "seq2seq" and r.tokenizer.kind == "hf"
  p = cli("launch.import_hf", "--hf_dir", dirs["spiece"], "--workdir",
          out["spiece"], "--seq_len", "64")
  assert p.returncode == 0, p.stderr
  assert "as a 'seq2seq' run" in p.stdout and "(hf)" in p.stdout
  return out


def test_extra_ids_come_from_the_tokenizer_settings():
  sentinels = ["<x>", *_sentinels(3), {"content": "<extra_id_3>"}]
  assert t5.extra_ids({"extra_ids": 5}, "c.json") == 5
  assert t5.extra_ids({"additional_special_tokens": sentinels}, "c.json") == 4
  assert t5.extra_ids({"extra_ids": 0, "extra_special_tokens": sentinels[:2]},
                      "c.json") == 1
  assert t5.extra_ids({}, "c.json") == 100
  assert t5.extra_ids({"extra_ids": 0}, "c.json") == 0
  with pytest.raises(LmError, match="c.json gives extra_ids='many'; it must "
                     "be a count"):
    t5.extra_ids({"extra_ids": "many"}, "c.json")


def test_spiece_model_imports_as_a_tokenizer_json_with_t5_ids(spiece, t5_dirs,
                                                               runs):
  ref_tok, _, _ = t5_dirs
  tok_dir = os.path.join(runs["spiece"], "tokenizer")
  assert sorted(os.listdir(tok_dir)) == ["tokenizer.json",
                                         "tokenizer_config.json"]
  tok = load_trained(runs["spiece"]).tokenizer
  assert isinstance(tok, HfTokenizer) and tok.vocab_size == VOCAB
  assert (tok.pad_id, tok.eos_id, tok.unk_id) == (0, 1, 2)
  assert tok.piece_ids(_sentinels(N_EXTRA)) == t5_ids()
  assert tok.piece_ids(["<extra_id_10>"]) == [None]
  # the SentencePiece model's own ids, unicode and whitespace included
  sp = spm.SentencePieceProcessor(model_file=spiece)
  for text in (*sp_tokenizer.PROBES, *TEXTS, "ﬁ ｆｕｌｌ\u3000wide ①", ""):
    assert tok.encode(text) == sp.encode(text), text
  # transformers' T5 tokenizer: with </s> appended, sentinels written in
  # the text matched as themselves
  fast = tok.backend
  for text in (*TEXTS, "x <extra_id_0> y<extra_id_9>z", "a\n\nb"):
    want = ref_tok(text).input_ids
    assert fast.encode(text).ids == want, text
    assert tok.encode(text) + [tok.eos_id] == want, text
  # and transformers loads the converted files as they are
  auto = transformers.AutoTokenizer.from_pretrained(tok_dir)
  assert auto(list(TEXTS)).input_ids == ref_tok(list(TEXTS)).input_ids
  assert auto.convert_tokens_to_ids("<extra_id_0>") == VOCAB - 1


@pytest.mark.parametrize("layout", ["json", "spiece"])
def test_greedy_output_matches_transformers_generate(t5_dirs, runs, layout):
  ref_tok, ref, _ = t5_dirs
  trained = load_trained(runs[layout])
  assert trained.objective.name == "seq2seq"
  ours = greedy_ids(trained, TEXTS)
  texts = trained.objective.transduce(trained, list(TEXTS),
                                      max_new_tokens=NEW_TOKENS)
  distinct = set()
  for text, ids, out in zip(TEXTS, ours, texts):
    want = hf_generate(ref, ref_tok(text).input_ids, eos_id=1)
    assert ids == want, text
    assert out == ref_tok.decode(want, skip_special_tokens=True), text
    distinct.update(want)
  assert len(distinct) > 3          # not one token repeated everywhere


def test_launch_sample_writes_transformers_text(t5_dirs, runs):
  ref_tok, ref, _ = t5_dirs
  text = TEXTS[0]
  want = ref_tok.decode(hf_generate(ref, ref_tok(text).input_ids, eos_id=1),
                        skip_special_tokens=True)
  p = cli("launch.sample", "--workdir", runs["spiece"], "--prompt", text,
          "--temperature", "0", "--max_new_tokens", str(NEW_TOKENS))
  assert p.returncode == 0, p.stderr
  assert f"input: {text}\noutput: {want}\n" in p.stdout


def test_span_corruption_import_uses_t5_sentinels(t5_dirs, tmp_path):
  ref_tok, ref, dirs = t5_dirs
  workdir = str(tmp_path / "sc")
  r = import_hf(dirs["spiece"], workdir, objective="span_corruption",
                seq_len=32)
  assert r.objective == "span_corruption"
  trained = load_trained(workdir)
  assert trained.config.span_corruption.sentinels == N_EXTRA
  rows = sc.SpanCorruptionRows(trained.tokenizer, seq_len=32, density=0.15,
                               mean_span=3.0, sentinels=N_EXTRA)
  assert rows.sentinels.tolist() == t5_ids()
  assert (rows.eos_id, rows.pad_id) == (1, 0)
  # a masked input: the sentinel is T5's id on both sides, and the decoder
  # writes what transformers' does
  text = "def wrap(<extra_id_0>, width=70):"
  want_in = ref_tok(text).input_ids
  assert want_in[:-1].count(VOCAB - 1) == 1
  ids, = greedy_ids(trained, [text], encode=lambda t: want_in[:-1])
  assert ids == hf_generate(ref, want_in, eos_id=1)
  out, = trained.objective.transduce(trained, [text],
                                     max_new_tokens=NEW_TOKENS)
  assert out == trained.tokenizer.decode(ids)
  # a T5 is a seq2seq model, fine-tuned or pretrained further; nothing else
  with pytest.raises(LmError, match="a T5ForConditionalGeneration imports as "
                     "seq2seq or span_corruption, not 'causal'"):
    import_hf(dirs["spiece"], str(tmp_path / "causal"), objective="causal")
  with pytest.raises(LmError, match="sentinels=10 is fewer than the"):
    import_hf(dirs["spiece"], str(tmp_path / "long"),
              objective="span_corruption", seq_len=512)
  # a refused import writes nothing, not even the tokenizer
  assert not os.path.exists(tmp_path / "long")


def test_import_export_import_keeps_tokenizer_and_weights(t5_dirs, runs,
                                                          tmp_path):
  ref_tok, ref, _ = t5_dirs
  out = str(tmp_path / "out")
  export_hf(runs["spiece"], out)
  auto = transformers.AutoTokenizer.from_pretrained(out)
  assert auto(list(TEXTS)).input_ids == ref_tok(list(TEXTS)).input_ids
  back = transformers.T5ForConditionalGeneration.from_pretrained(out)
  for name, tensor in ref.state_dict().items():
    assert torch.equal(back.state_dict()[name], tensor), name
  assert back.config.decoder_start_token_id == 0
  again = str(tmp_path / "again")
  import_hf(out, again)
  a, b = load_trained(runs["spiece"]), load_trained(again)
  assert a.tokenizer.fingerprint() == b.tokenizer.fingerprint()
  assert greedy_ids(a, TEXTS) == greedy_ids(b, TEXTS)


@pytest.fixture(scope="module")
def span_run(tmp_path_factory):
  """A 2-step span-corruption run with its own (lm-trained) tokenizer."""
  workdir = str(tmp_path_factory.mktemp("span") / "run")
  p = cli("launch.train", "--config", "configs/t5_quickstart.py:runlocal",
          f"--workdir={workdir}", "--config.steps=2", "--config.eval_every=2",
          "--config.checkpoint_every=2")
  assert p.returncode == 0, p.stderr[-3000:]
  return workdir


def test_export_of_a_span_corruption_run_generates_like_lm(span_run,
                                                           tmp_path):
  out = str(tmp_path / "hf")
  p = cli("launch.export_hf", "--workdir", span_run, "--out_dir", out)
  assert p.returncode == 0, p.stderr
  trained = load_trained(span_run)
  tok = trained.tokenizer
  assert tok.kind == "sentencepiece" and tok.pad_id != tok.eos_id
  with open(os.path.join(out, "config.json")) as f:
    config = json.load(f)
  assert config["decoder_start_token_id"] == tok.pad_id
  assert (config["eos_token_id"], config["pad_token_id"]) == (tok.eos_id,
                                                             tok.pad_id)
  with open(os.path.join(out, "tokenizer_config.json")) as f:
    settings = json.load(f)
  for role in ("eos", "pad", "unk"):
    assert settings[f"{role}_token"] == tok.id_to_piece(
        getattr(tok, f"{role}_id"))
  auto = transformers.AutoTokenizer.from_pretrained(out)
  texts = ["def f(x):\n    return x  # ok", "import os\n\tclass A: pass"]
  for text in texts:
    assert auto(text).input_ids == tok.encode(text) + [tok.eos_id]
  # a masked input: the sentinel is the run's control piece on both sides
  masked = "def f(<extra_id_0>):\n    return x"
  sentinel = tok.piece_ids(["<extra_id_0>"])[0]
  assert sentinel in auto(masked).input_ids
  model = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
  inputs = {t: auto(t).input_ids for t in (*texts, masked)}
  ours = greedy_ids(trained, list(inputs), encode=lambda t: inputs[t][:-1])
  for ids, got in zip(inputs.values(), ours):
    assert got == hf_generate(model, ids, eos_id=tok.eos_id)


def test_bad_t5_directories_are_one_sentence(t5_dirs, tmp_path):
  _, _, dirs = t5_dirs
  bare = tmp_path / "bare"
  bare.mkdir()
  for name in ("config.json", "model.safetensors"):
    with open(os.path.join(dirs["spiece"], name), "rb") as f:
      (bare / name).write_bytes(f.read())
  with pytest.raises(LmError, match="has no tokenizer.json or tokenizer.model "
                     r"\(nor T5's spiece.model\); put the model's tokenizer"):
    import_hf(str(bare), str(tmp_path / "r1"))
  with open(os.path.join(dirs["spiece"], "spiece.model"), "rb") as f:
    (bare / "spiece.model").write_bytes(f.read())
  (bare / "tokenizer_config.json").write_text(json.dumps({"extra_ids": 50}))
  with pytest.raises(LmError, match="has 250 tokens but the model only 210 "
                     "embeddings"):
    import_hf(str(bare), str(tmp_path / "r2"))
  assert not os.path.exists(tmp_path / "r2")
  (bare / "tokenizer_config.json").write_text(json.dumps({"extra_ids": "x"}))
  with pytest.raises(LmError, match="tokenizer_config.json gives "
                     "extra_ids='x'"):
    import_hf(str(bare), str(tmp_path / "r3"))
  assert not os.path.exists(tmp_path / "r3" / "config.json")
