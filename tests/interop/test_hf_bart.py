"""BART import/export parity against transformers (tiny random models, CPU),
and BART as a workdir: launch.import_hf with a byte-level BPE tokenizer.json
built offline (`tokenizers`), `<s> x </s>` inputs decoded from EOS as
transformers' `generate`, launch.sample, and launch.export_hf back."""

import dataclasses
import json
import textwrap

import numpy as np
import pytest
import torch
import transformers

from lm.errors import LmError
from lm.experiments import load_trained
from lm.generation.seq2seq import Seq2SeqDecoder, generate_texts, text_bos
from lm.interop import bart
from lm.interop.hf import export_kind, read_hf_dir, write_hf_dir
from lm.interop.tensors import Tensors, read_state
from lm.interop.workdir import export_hf, import_hf
from lm.models import build_model
from lm.models.config import make_model_config
from lm.objectives.seq2seq import seq2seq_rows
from tests.cli import cli

_SHAPE = dict(vocab_size=100, d_model=32, encoder_attention_heads=4,
              decoder_attention_heads=4, encoder_ffn_dim=64,
              decoder_ffn_dim=64, max_position_embeddings=64, dropout=0.0,
              attention_dropout=0.0, init_std=0.1)
# bart-base / bart-large: exact GELU, the head tied to the shared embedding,
# 2 + 2 blocks; imported with scanned blocks.
BASE = dict(_SHAPE, encoder_layers=2, decoder_layers=2,
            activation_function="gelu")
# The other options: tanh GELU, embeddings scaled by sqrt(d_model), a head
# of its own, 2 encoder and 3 decoder blocks; imported with a Python loop.
VARIANT = dict(_SHAPE, encoder_layers=2, decoder_layers=3,
               activation_function="gelu_new", scale_embedding=True,
               tie_word_embeddings=False)
# case -> (config, scanned, seed); seeds whose greedy output varies
CASES = {"base": (BASE, True, 4), "variant": (VARIANT, False, 2)}
# Encoder and decoder lengths; row 1 is right-padded in both (BART's pad 1).
S, T, S_PAD, T_PAD, PAD, START = 20, 18, 6, 4, 1, 2


def save_model(path, seed, **fields):
  """A random BartForConditionalGeneration saved to `path`, with every bias,
  norm and `final_logits_bias` randomised (they start at 0 and 1), unit
  variance embeddings and, when untied, its own head.

  The norm gains get random signs: with a tied head, a decoder whose output
  stays near its input token's embedding writes that token again and
  again, and greedy output of one repeated token would test little.
  """
  torch.manual_seed(seed)
  model = transformers.BartForConditionalGeneration(
      transformers.BartConfig(**fields)).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if "norm" in name and name.endswith(".weight"):
        sign = torch.randint(0, 2, param.shape) * 2 - 1
        param.uniform_(0.5, 1.5).mul_(sign)
      elif name.endswith(".bias"):
        param.normal_(0.0, 0.1)
      elif "embed_positions" in name or name.endswith("shared.weight"):
        param.normal_(0.0, 1.0)
    model.final_logits_bias.normal_(0.0, 0.5)
    if not fields.get("tie_word_embeddings", True):
      model.lm_head.weight = torch.nn.Parameter(
          torch.randn_like(model.model.shared.weight))
      # transformers 5 unties the stacks' embeddings too; ours share one
      for stack in (model.model.encoder, model.model.decoder):
        stack.embed_tokens.weight.copy_(model.model.shared.weight)
  model.save_pretrained(path, safe_serialization=True)
  return model


@pytest.fixture(scope="module", params=sorted(CASES))
def saved(request, tmp_path_factory):
  """`(path, reference model, our config, our params)` for each case."""
  fields, scanned, seed = CASES[request.param]
  path = tmp_path_factory.mktemp(request.param)
  ref = save_model(path, seed=seed, **fields)
  m = read_hf_dir(str(path))
  assert (m.model_type, m.architecture, m.head) == (
      "bart", "BartForConditionalGeneration", "seq2seq")
  cfg = m.config
  assert cfg.scan_layers and "layers" in m.params["encoder"]
  if not scanned:
    cfg = dataclasses.replace(cfg, scan_layers=False)
    state = read_state(str(path))
    params = bart.import_params(Tensors(state, str(path), kind=bart.KIND,
                                        prefix=bart.prefix(state)), cfg)
    assert "layers_1" in params["encoder"] and "layers" not in params["decoder"]
  else:
    params = m.params
  return path, ref, cfg, params


def _batch(cfg):
  """Right-padded encoder inputs and decoder inputs (from the start id)
  with their masks."""
  rng = np.random.default_rng(0)
  inputs = rng.integers(3, cfg.vocab_size, (2, S))
  targets = rng.integers(3, cfg.vocab_size, (2, T))
  targets[:, 0] = START
  in_mask, out_mask = np.ones((2, S), np.int64), np.ones((2, T), np.int64)
  in_mask[1, S - S_PAD:], out_mask[1, T - T_PAD:] = 0, 0
  inputs = np.where(in_mask == 1, inputs, PAD)
  targets = np.where(out_mask == 1, targets, PAD)
  return inputs, in_mask, targets, out_mask


def test_logits_match_transformers_with_padding(saved):
  _, ref, cfg, params = saved
  tied = cfg.tie_embeddings
  assert tied == ref.config.tie_word_embeddings
  assert ("unembed" in params) != tied
  assert cfg.scale_embeddings == ref.config.scale_embedding
  assert cfg.gelu_approximate == (ref.config.activation_function != "gelu")
  assert cfg.decoder_layers == ref.config.decoder_layers
  assert (cfg.position_offset, cfg.decoder_start_id) == (2, START)
  assert np.abs(params["logits_bias"]).max() > 0.1
  inputs, in_mask, targets, out_mask = _batch(cfg)
  with torch.no_grad():
    want = ref(input_ids=torch.tensor(inputs),
               attention_mask=torch.tensor(in_mask),
               decoder_input_ids=torch.tensor(targets),
               decoder_attention_mask=torch.tensor(out_mask)).logits.numpy()
  got, _ = build_model(cfg).apply({"params": params}, inputs, targets,
                                  input_segment_ids=in_mask,
                                  decoder_segment_ids=out_mask)
  valid = out_mask.astype(bool)
  assert np.abs(np.asarray(got)[valid] - want[valid]).max() <= 1e-4


# forced (bos, eos) ids of each greedy comparison: the saved config's
# (BART's default forced EOS, 2), bart-large-cnn's (BOS 0 first too), none
FORCED = {"as saved": (None, 2), "bos and eos": (0, 2), "none": (None, None)}


@pytest.mark.parametrize("forced", sorted(FORCED))
def test_greedy_generation_matches_transformers_generate(saved, forced):
  _, ref, cfg, params = saved
  bos, eos = FORCED[forced]
  assert (cfg.forced_bos_id, cfg.forced_eos_id) == FORCED["as saved"]
  cfg = dataclasses.replace(cfg, forced_bos_id=bos, forced_eos_id=eos)
  inputs = [[0, 5, 17, 42, 8, 9, 30, 2], [0, 11, 12, 2]]
  start = cfg.decoder_start(PAD)
  assert start == START
  got = Seq2SeqDecoder(build_model(cfg)).generate(
      params, inputs, max_new_tokens=12, start_id=start)
  distinct = set()
  for x, ours in zip(inputs, got.tokens):
    # A fixed length: no EOS ends it early, but a forced one is the last
    # token. use_cache=False: transformers sizes its cache by the encoder's
    # depth, which fails for the 3-block decoder of the variant.
    with torch.no_grad():
      want = ref.generate(torch.tensor([x]), max_new_tokens=12,
                          min_new_tokens=12, do_sample=False, num_beams=1,
                          decoder_start_token_id=START, eos_token_id=None,
                          forced_bos_token_id=bos, forced_eos_token_id=eos,
                          pad_token_id=PAD, use_cache=False)[0].tolist()
    assert want[0] == START
    assert ours == want[1:]
    assert (ours[0] == 0) == (bos == 0) or bos is None
    assert (ours[-1] == 2) or eos is None
    distinct.update(ours)
  assert len(distinct) > 3           # not one token repeated everywhere


def test_beam_search_forces_the_first_and_the_last_token(saved):
  _, _, cfg, params = saved
  cfg = dataclasses.replace(cfg, forced_bos_id=7, forced_eos_id=2)
  inputs = [[0, 5, 17, 42, 8, 9, 30, 2], [0, 11, 12, 2]]
  from lm.generation.seq2seq import beam_generate  # pylint: disable=g-import-not-at-top
  beams, scores = beam_generate(build_model(cfg), params, inputs, beam_size=3,
                                max_new_tokens=6, start_id=START, eos_id=2)
  lengths = set()
  for row, row_scores in zip(beams, scores):
    assert all(np.isfinite(row_scores))
    for beam in row:
      # 7 first; EOS (cut off) at the sixth token at the latest
      assert beam[0] == 7 and 2 not in beam and len(beam) <= 5, beam
      lengths.add(len(beam))
  assert 5 in lengths         # some beam ran to the forced EOS


def test_export_round_trips_through_transformers(saved, tmp_path):
  _, ref, cfg, params = saved
  assert export_kind(cfg) == "bart"
  write_hf_dir(str(tmp_path), cfg, params, head="seq2seq")
  back = transformers.BartForConditionalGeneration.from_pretrained(
      str(tmp_path))
  for key in ("activation_function", "scale_embedding", "tie_word_embeddings",
              "decoder_start_token_id", "decoder_layers"):
    assert getattr(back.config, key) == getattr(ref.config, key), key
  assert (back.generation_config.forced_bos_token_id,
          back.generation_config.forced_eos_token_id) == (None, 2)
  want, got = ref.state_dict(), back.state_dict()
  assert sorted(got) == sorted(want)
  for name, tensor in want.items():
    assert torch.equal(got[name], tensor), name
  with open(tmp_path / "config.json") as f:
    again = bart.model_config(json.load(f))
  assert again == dataclasses.replace(cfg, scan_layers=True)


def test_forced_tokens_read_generation_config_first_and_export_as_set(
    saved, tmp_path):
  path, _, cfg, params = saved
  with open(path / "config.json") as f:
    hf = json.load(f)
  assert bart.model_config({k: v for k, v in hf.items() if "forced" not in k}
                           ).forced_eos_id == 2        # BART's default
  got = bart.model_config({**hf, "forced_bos_token_id": 5},
                          {"forced_eos_token_id": None})
  assert (got.forced_bos_id, got.forced_eos_id) == (5, None)
  with pytest.raises(LmError, match=r"generation_config.json has "
                     r"forced_eos_token_id=\[2, 3\]; only one forced token"):
    bart.model_config(hf, {"forced_eos_token_id": [2, 3]})
  # what lm forces is what transformers forces after the export
  for bos, eos in ((0, 2), (None, None)):
    out = tmp_path / f"{bos}_{eos}"
    write_hf_dir(str(out), dataclasses.replace(
        cfg, forced_bos_id=bos, forced_eos_id=eos), params, head="seq2seq")
    back = transformers.BartForConditionalGeneration.from_pretrained(str(out))
    assert (back.generation_config.forced_bos_token_id,
            back.generation_config.forced_eos_token_id) == (bos, eos)
    assert read_hf_dir(str(out)).config.forced_eos_id == eos


def test_a_bare_bart_model_imports_with_its_tied_head(tmp_path):
  """facebook/bart-base ships a `BartModel`: no `model.` prefix and no
  final_logits_bias; transformers loads it into the generation class with
  the head tied and a zero bias, and so does the import."""
  torch.manual_seed(3)
  bare = transformers.BartModel(transformers.BartConfig(**BASE)).eval()
  bare.save_pretrained(tmp_path, safe_serialization=True)
  m = read_hf_dir(str(tmp_path))
  assert (m.architecture, m.head) == ("BartModel", "seq2seq")
  assert not np.any(m.params["logits_bias"])
  ref = transformers.BartForConditionalGeneration.from_pretrained(
      str(tmp_path)).eval()
  inputs, in_mask, targets, out_mask = _batch(m.config)
  with torch.no_grad():
    want = ref(input_ids=torch.tensor(inputs),
               attention_mask=torch.tensor(in_mask),
               decoder_input_ids=torch.tensor(targets),
               decoder_attention_mask=torch.tensor(out_mask)).logits.numpy()
  got, _ = build_model(m.config).apply({"params": m.params}, inputs, targets,
                                       input_segment_ids=in_mask,
                                       decoder_segment_ids=out_mask)
  valid = out_mask.astype(bool)
  assert np.abs(np.asarray(got)[valid] - want[valid]).max() <= 1e-4


def test_configs_and_models_without_an_equivalent_are_refused(saved,
                                                              tmp_path):
  path, ref, cfg, _ = saved
  hf = json.loads((path / "config.json").read_text())
  (tmp_path / "config.json").write_text(
      json.dumps({**hf, "architectures": ["BartForSequenceClassification"]}))
  with pytest.raises(LmError, match="holds a BartForSequenceClassification; "
                     "BART imports as BartForConditionalGeneration or "
                     "BartModel"):
    read_hf_dir(str(tmp_path))
  (tmp_path / "config.json").write_text(
      json.dumps({**hf, "model_type": "mbart"}))
  with pytest.raises(LmError, match="holds a 'mbart' model; importing "
                     "supports"):
    read_hf_dir(str(tmp_path))
  with pytest.raises(LmError, match="sets add_final_layer_norm=True, a "
                     "layout our encoder-decoder does not build"):
    bart.model_config({**hf, "add_final_layer_norm": True})
  with pytest.raises(LmError, match="has encoder_attention_heads=4 but "
                     "decoder_attention_heads=2; our encoder-decoder has one "
                     "head count"):
    bart.model_config({**hf, "decoder_attention_heads": 2})
  with pytest.raises(LmError, match="activation_function 'silu', which our "
                     "encoder-decoder has no MLP for"):
    bart.model_config({**hf, "activation_function": "silu"})
  with pytest.raises(LmError, match="only sequence-to-sequence runs"):
    write_hf_dir(str(tmp_path / "out"), cfg, {}, head="lm")
  # lm's own encoder-decoders are neither T5 nor BART
  original = make_model_config("transformer_base", vocab_size=10)
  with pytest.raises(LmError, match=r"; as BART: model.position='sinusoidal' "
                     r"\(BART has 'learned'\)\); only GPT-2-, Llama-, BERT-, "
                     "T5- and BART-shaped models export"):
    export_kind(original)
  if cfg.tie_embeddings:
    scaled = dataclasses.replace(cfg, scale_tied_head=True)
    with pytest.raises(LmError, match="model.scale_tied_head=True"):
      export_kind(scaled)
  else:      # an encoder embedding apart from the shared one
    state = read_state(str(path))
    state["model.encoder.embed_tokens.weight"] = np.zeros_like(
        state["model.shared.weight"])
    t = Tensors(state, str(path), kind=bart.KIND, prefix="model.")
    with pytest.raises(LmError, match="has a model.encoder.embed_tokens.weight "
                       "of its own, not shared.weight"):
      bart.import_params(t, cfg)


def test_decoder_start_id_starts_training_rows_and_is_checked():
  rows = seq2seq_rows([[5, 6, 7]], [[8, 9]], seq_len=5, target_len=4,
                      eos_id=2, pad_id=1, start_id=2)
  assert rows["decoder_inputs"].tolist() == [[2, 8, 9, 1]]
  assert rows["targets"].tolist() == [[8, 9, 2, 1]]
  same = seq2seq_rows([[5]], [[8]], seq_len=3, target_len=3, eos_id=2,
                      pad_id=1)
  assert same["decoder_inputs"].tolist() == [[1, 8, 1]]     # T5: the pad id
  t5 = make_model_config("t5_tiny", vocab_size=10)
  assert (t5.decoder_start_id, t5.decoder_start(0)) == (None, 0)
  with pytest.raises(LmError, match="decoder_start_id=10 must be a token id "
                     "below model.vocab_size=10"):
    make_model_config("t5_tiny", vocab_size=10, decoder_start_id=10)
  with pytest.raises(LmError, match="model.forced_bos_id=-1 must be a token "
                     "id below model.vocab_size=10, or None"):
    make_model_config("t5_tiny", vocab_size=10, forced_bos_id=-1)
  with pytest.raises(LmError, match="model.forced_eos_id=2 is an "
                     "encoder-decoder option"):
    make_model_config("tiny", vocab_size=10, forced_eos_id=2)
  with pytest.raises(LmError, match="model.logits_bias=True is an "
                     "encoder-decoder option that model.arch='transformer'"):
    make_model_config("tiny", vocab_size=10, logits_bias=True)
  with pytest.raises(LmError, match="model.position_offset=2 must be 0, or "
                     "positive with model.position='learned'"):
    make_model_config("t5_tiny", vocab_size=10, position_offset=2)



def test_runs_recorded_before_the_bart_fields_still_resume_and_warm_start():
  from lm.training import resume, warm_start
  cfg = make_model_config("t5_tiny", vocab_size=10)
  new = dataclasses.asdict(cfg)
  old = {k: v for k, v in new.items() if k not in (
      "position_offset", "embed_norm", "scale_embeddings", "scale_tied_head",
      "logits_bias", "decoder_start_id", "forced_bos_id", "forced_eos_id")}
  resolved = {"tokenizer": {"sha256": "x"}, "model": new, "batch": {},
              "config": {"data": {"tokenizer": {"path": "t.json"}}}}
  resume.check_resume({**resolved, "model": old}, resolved, "runs/old")
  warm_start.check_model(old, cfg, "runs/old")
  with pytest.raises(LmError, match="model.logits_bias is False there, True "
                     "now"):
    resume.check_resume({**resolved, "model": old},
                        {**resolved, "model": {**new, "logits_bias": True}},
                        "runs/old")

# --- BART as a workdir ------------------------------------------------------

TEXTS = ("the quick brown fox", "def wrap(text, width=70):",
         "  return lines\n\tindent")
NEW_TOKENS = 10
# BART's special tokens at BART's ids: <s> 0, <pad> 1, </s> 2, <unk> 3.
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


@pytest.fixture(scope="module")
def bart_dir(tmp_path_factory):
  """`(reference tokenizer, reference model, directory)`: a byte-level BPE
  tokenizer.json that frames a text as `<s> x </s>` (RoBERTa's
  post-processor, as BART's), trained on a standard-library module, and a
  random BART of its vocabulary saved beside it. The logits bias keeps
  <s>, <pad> and <unk> out of the output (the two sides' text would show
  them differently), and lets </s> end some outputs."""
  from tokenizers import (Tokenizer, decoders, models, pre_tokenizers,
                          processors, trainers)
  root = tmp_path_factory.mktemp("bart_dir")
  tok = Tokenizer(models.BPE(unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  with open(textwrap.__file__, encoding="utf-8") as f:
    lines = f.read().splitlines()
  tok.train_from_iterator(lines, trainers.BpeTrainer(
      vocab_size=320, special_tokens=list(SPECIALS), show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
  tok.save(str(root / "raw.json"))
  ref_tok = transformers.PreTrainedTokenizerFast(
      tokenizer_file=str(root / "raw.json"), bos_token="<s>",
      pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
  model_dir = root / "bart"
  ref = save_model(model_dir, 5, **dict(VARIANT, vocab_size=len(ref_tok)))
  with torch.no_grad():
    ref.final_logits_bias[0, [0, 1, 3]] = -1e4
    ref.final_logits_bias[0, 2] = 6.0
  ref.save_pretrained(model_dir, safe_serialization=True)
  ref_tok.save_pretrained(model_dir)
  return ref_tok, ref, str(model_dir)


def hf_generate(model, ids):
  """transformers' greedy ids after the start id, cut at </s> (with the
  forced tokens of the model's config: BART's forced EOS at the limit)."""
  with torch.no_grad():
    out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS,
                         do_sample=False, num_beams=1,
                         use_cache=False)[0].tolist()
  assert out[0] == START
  out = out[1:]
  return out[:out.index(2)] if 2 in out else out


@pytest.fixture(scope="module")
def bart_run(bart_dir, tmp_path_factory):
  """The BART directory imported as a seq2seq workdir."""
  _, _, hf_dir = bart_dir
  workdir = str(tmp_path_factory.mktemp("bart_run") / "run")
  r = import_hf(hf_dir, workdir, seq_len=32)
  assert r.objective == "seq2seq" and r.tokenizer.kind == "hf"
  return workdir


def test_workdir_decodes_texts_as_transformers_generate(bart_dir, bart_run):
  ref_tok, ref, _ = bart_dir
  trained = load_trained(bart_run)
  tok = trained.tokenizer
  assert trained.model_cfg.decoder_start_id == START
  assert text_bos(tok) == 0 and (tok.pad_id, tok.eos_id) == (PAD, 2)
  ids = generate_texts(trained.model, trained.params, list(TEXTS),
                       encode=tok.encode, decode=list, max_input=32,
                       max_new_tokens=NEW_TOKENS, start_id=START, eos_id=2,
                       bos_id=text_bos(tok))
  texts = trained.objective.transduce(trained, list(TEXTS),
                                      max_new_tokens=NEW_TOKENS)
  ended = 0
  for text, ours, out in zip(TEXTS, ids, texts):
    want = hf_generate(ref, ref_tok(text).input_ids)    # <s> text </s>
    assert ours == want, text
    assert out == ref_tok.decode(want, skip_special_tokens=True), text
    ended += len(want) < NEW_TOKENS - 1
  assert ended      # at least one output ends at </s> before the forced one
  p = cli("launch.sample", "--workdir", bart_run, "--prompt", TEXTS[0],
          "--temperature", "0", "--max_new_tokens", str(NEW_TOKENS))
  assert p.returncode == 0, p.stderr
  assert f"input: {TEXTS[0]}\noutput: {texts[0]}\n" in p.stdout


def test_workdir_exports_back_to_the_same_bart(bart_dir, bart_run, tmp_path):
  ref_tok, ref, _ = bart_dir
  out = str(tmp_path / "out")
  export_hf(bart_run, out)
  with open(f"{out}/config.json") as f:
    config = json.load(f)
  assert (config["decoder_start_token_id"], config["eos_token_id"],
          config["pad_token_id"], config["bos_token_id"]) == (START, 2, PAD, 0)
  back = transformers.BartForConditionalGeneration.from_pretrained(out)
  for name, tensor in ref.state_dict().items():
    assert torch.equal(back.state_dict()[name], tensor), name
  auto = transformers.AutoTokenizer.from_pretrained(out)
  assert auto(list(TEXTS)).input_ids == ref_tok(list(TEXTS)).input_ids
