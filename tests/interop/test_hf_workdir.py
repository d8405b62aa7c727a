"""launch.import_hf / launch.export_hf: imported workdirs work with every
command, and import -> export -> transformers gives the same tensors."""

import json
import os
import random

import jax
import numpy as np
import pytest
import torch
import transformers

from configs import finetune_imdb, finetune_sst2
from lm import experiments
from lm.errors import LmError
from lm.interop.workdir import export_hf, import_hf
from lm.experiments import load_trained
from tests.cli import cli
from tests.interop import hf_dirs

def _leaves(tree):
  return {"/".join(str(k.key) for k in p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_gpt2_import_samples_and_evaluates_like_transformers(tmp_path):
  from launch.evaluate import evaluate_workdir
  from lm.generation.text import generate_text
  ref = hf_dirs.gpt2_dir(tmp_path / "hf")
  p = cli("launch.import_hf", "--hf_dir", str(tmp_path / "hf"),
          "--workdir", str(tmp_path / "run"))
  assert p.returncode == 0, p.stderr
  assert "as a 'causal' run" in p.stdout and "(hf)" in p.stdout
  trained = load_trained(str(tmp_path / "run"))
  tok = trained.tokenizer
  assert tok.bos_id == tok.eos_id == 0      # <|endoftext|>
  prompt = "the film was"

  def reference(ids):
    with torch.no_grad():
      return ref.generate(torch.tensor([ids]), max_new_tokens=12,
                          attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          do_sample=False, pad_token_id=0,
                          eos_token_id=None)[0, len(ids):].tolist()

  # GPT-2's tokenizer adds no BOS, so neither does sampling by default: the
  # ids are those of generate(**tokenizer(prompt)).
  hf_ids = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")(
      prompt)["input_ids"]
  assert not tok.adds_bos and hf_ids == tok.encode(prompt)
  want = reference(hf_ids)
  got, = generate_text(trained.model, trained.params, tok, trained.mesh,
                       [prompt], temperature=0.0, max_new_tokens=12)
  assert got.ids == want
  forced, = generate_text(trained.model, trained.params, tok, trained.mesh,
                          [prompt], temperature=0.0, max_new_tokens=12,
                          add_bos=True)
  with_bos = reference([tok.bos_id] + hf_ids)
  assert forced.ids == with_bos != want
  p = cli("launch.sample", "--workdir", str(tmp_path / "run"), "--prompt",
          prompt, "--temperature", "0", "--max_new_tokens", "12",
          "--show_ids", "--bos", "yes")
  assert p.returncode == 0, p.stderr
  assert f"ids: {with_bos}" in p.stdout
  # Evaluation on a text file: the loss is transformers' on the same rows.
  (tmp_path / "eval.txt").write_text("\n".join(hf_dirs.SENTENCES[:4]))
  r = evaluate_workdir(str(tmp_path / "run"), data=f"text:{tmp_path}/eval.txt")
  assert r["objective"] == "causal" and np.isfinite(r["loss"])
  assert r["tokens"] > 20


def test_gpt2_round_trip_gives_identical_tensors(tmp_path):
  ref = hf_dirs.gpt2_dir(tmp_path / "hf", seed=3)
  import_hf(str(tmp_path / "hf"), str(tmp_path / "run"))
  written = export_hf(str(tmp_path / "run"), str(tmp_path / "out"))
  assert any(w.endswith("tokenizer.json") for w in written)
  back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
  assert type(back).__name__ == "GPT2LMHeadModel"
  assert hf_dirs.differing_tensors(ref, back) == []
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_file=str(tmp_path / "out" / "tokenizer.json"))
  assert fast.encode(hf_dirs.SENTENCES[0]) == load_trained(
      str(tmp_path / "run")).tokenizer.encode(hf_dirs.SENTENCES[0])


def test_bert_pretraining_imports_evaluates_and_round_trips(tmp_path):
  from launch.evaluate import evaluate_workdir
  ref = hf_dirs.bert_dir(tmp_path / "hf")
  r = import_hf(str(tmp_path / "hf"), str(tmp_path / "run"), seq_len=32)
  assert r.objective == "mlm" and r.initialised == ()
  assert r.tokenizer.kind == "hf"
  stored = json.loads((tmp_path / "run" / "config.json").read_text())
  assert stored["config"]["mlm"]["nsp"] is True
  assert stored["tokenizer"]["kind"] == "hf"
  (tmp_path / "eval.txt").write_text(
      "\n\n".join(" ".join(random.Random(i).choices(hf_dirs.WORDS, k=12))
                  for i in range(12)))
  m = evaluate_workdir(str(tmp_path / "run"), data=f"text:{tmp_path}/eval.txt")
  assert m["objective"] == "mlm" and np.isfinite(m["loss"])
  assert 0 <= m["nsp_accuracy"] <= 1
  export_hf(str(tmp_path / "run"), str(tmp_path / "out"))
  back = transformers.BertForPreTraining.from_pretrained(tmp_path / "out")
  assert hf_dirs.differing_tensors(ref, back) == []


def test_bert_classifier_predicts_like_transformers_and_round_trips(tmp_path):
  from lm.tasks.predict import predict, read_inputs
  ref = hf_dirs.bert_dir(tmp_path / "hf",
                         transformers.BertForSequenceClassification, seed=5,
                         id2label={0: "neg", 1: "pos", 2: "mixed"})
  r = import_hf(str(tmp_path / "hf"), str(tmp_path / "run"), seq_len=32)
  assert r.objective == "classification"
  trained = load_trained(str(tmp_path / "run"))
  assert trained.objective.labels == ["neg", "pos", "mixed"]
  text = "The acting was brilliant, and the plot moving!"
  got, = predict(trained, read_inputs(trained, text=text))
  ids = [trained.tokenizer.cls_id, *trained.tokenizer.encode(text),
         trained.tokenizer.sep_id]
  with torch.no_grad():
    probs = torch.softmax(ref(torch.tensor([ids])).logits, -1)[0].numpy()
  assert got["label"] == ["neg", "pos", "mixed"][int(probs.argmax())]
  assert abs(got["probability"] - probs.max()) < 1e-5
  export_hf(str(tmp_path / "run"), str(tmp_path / "out"))
  back = transformers.AutoModelForSequenceClassification.from_pretrained(
      tmp_path / "out")
  assert back.config.id2label == {0: "neg", 1: "pos", 2: "mixed"}
  assert hf_dirs.differing_tensors(ref, back) == []


def test_bare_bert_as_sentence_encoder_matches_transformers(tmp_path):
  ref = hf_dirs.bert_dir(tmp_path / "hf", transformers.BertModel, seed=2)
  p = cli("launch.import_hf", "--hf_dir", str(tmp_path / "hf"), "--workdir",
          str(tmp_path / "run"), "--objective", "contrastive",
          "--pooling", "mean", "--seq_len", "32")
  assert p.returncode == 0, p.stderr
  for row, hidden in hf_dirs.encoded_and_reference(tmp_path / "run", ref,
                                                   tmp_path):
    assert np.abs(row - hidden.mean(0).numpy()).max() < 1e-4
  export_hf(str(tmp_path / "run"), str(tmp_path / "out"))
  back = transformers.BertModel.from_pretrained(tmp_path / "out")
  # Every tensor, the (unused) pooler included, comes back exactly.
  assert hf_dirs.differing_tensors(ref, back) == []


def test_sst2_config_fine_tunes_an_imported_bert(tmp_path):
  hf_dirs.bert_dir(tmp_path / "hf", transformers.BertForMaskedLM, seed=1)
  r = import_hf(str(tmp_path / "hf"), str(tmp_path / "bert"), seq_len=32)
  # A BertForMaskedLM has neither the pooler nor the NSP head: the run has
  # neither (nothing random), and the classifier pools [CLS] instead.
  assert r.initialised == ()
  stored = json.loads((tmp_path / "bert" / "config.json").read_text())
  assert stored["config"]["mlm"]["nsp"] is False
  assert stored["config"]["mlm"]["pooler"] is False
  rng = random.Random(0)
  data = tmp_path / "sst2"
  data.mkdir()
  for split, n in (("train", 48), ("dev", 16)):
    rows = ["sentence\tlabel"]
    for _ in range(n):
      y = rng.random() < 0.5
      words = rng.choices(hf_dirs.POSITIVE if y else hf_dirs.NEGATIVE, k=2)
      rows.append(f"the film was {' and '.join(words)} .\t{int(y)}")
    (data / f"{split}.tsv").write_text("\n".join(rows) + "\n")
  c = finetune_sst2.get_config(f"{tmp_path}/bert,data={data},runlocal")
  assert c.model.size == "custom" and c.model.d_model == 32
  imdb = finetune_imdb.get_config(f"{tmp_path}/bert")
  assert imdb.init_from == f"{tmp_path}/bert" and imdb.model.d_model == 32
  c.steps, c.eval_every, c.checkpoint_every = 2, 2, 2
  c.optimizer.freeze_backbone = True
  experiments.train(c, str(tmp_path / "tuned"))
  tuned = load_trained(str(tmp_path / "tuned"))
  source = load_trained(str(tmp_path / "bert"))
  assert tuned.objective.pooling() == "cls"
  assert json.loads((tmp_path / "tuned" / "config.json").read_text())[
      "batch"]["pooling"] == "cls"
  assert "pooler" not in tuned.params["backbone"]
  assert tuned.tokenizer.fingerprint() == source.tokenizer.fingerprint()
  got, want = _leaves(tuned.params["backbone"]), _leaves(source.params)
  for name, value in got.items():     # frozen: exactly the imported weights
    np.testing.assert_array_equal(value, want[name], err_msg=name)
  p = cli("launch.predict", "--workdir", str(tmp_path / "tuned"), "--text",
          "a superb , funny film")
  assert p.returncode == 0, p.stderr
  assert p.stdout.split("\t")[0] in ("0", "1")


def test_sharded_checkpoints_import_and_bad_ones_are_one_sentence(tmp_path):
  from lm.interop.hf import load_hf_dir
  ref = hf_dirs.gpt2_dir(tmp_path / "one", seed=4)
  ref.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
  names = os.listdir(tmp_path / "sharded")
  assert "model.safetensors.index.json" in names
  assert sum(n.endswith(".safetensors") for n in names) > 1
  cfg, params = load_hf_dir(str(tmp_path / "sharded"))
  cfg1, params1 = load_hf_dir(str(tmp_path / "one"))
  assert cfg == cfg1
  for name, value in _leaves(params).items():
    np.testing.assert_array_equal(value, _leaves(params1)[name])
  # A shard named by the index but missing.
  shard = sorted(n for n in names if n.endswith(".safetensors"))[0]
  os.remove(tmp_path / "sharded" / shard)
  with pytest.raises(LmError, match=f"names the shard {shard}"):
    load_hf_dir(str(tmp_path / "sharded"))
  # A missing tensor and a config.json that disagrees with the weights.
  from safetensors.numpy import load_file, save_file
  state = load_file(str(tmp_path / "one" / "model.safetensors"))
  del state["transformer.h.1.mlp.c_fc.bias"]
  save_file(state, str(tmp_path / "one" / "model.safetensors"))
  with pytest.raises(LmError, match="no tensor 'transformer.h.1.mlp.c_fc.bias'"):
    load_hf_dir(str(tmp_path / "one"))
  hf = json.loads((tmp_path / "one" / "config.json").read_text())
  hf["n_inner"] = 96
  (tmp_path / "one" / "config.json").write_text(json.dumps(hf))
  with pytest.raises(LmError, match=r"has shape \(32, 128\) but config.json "
                     r"implies \(32, 96\)"):
    load_hf_dir(str(tmp_path / "one"))


def test_import_and_export_refuse_bad_requests(tmp_path):
  hf_dirs.gpt2_dir(tmp_path / "hf")
  import_hf(str(tmp_path / "hf"), str(tmp_path / "run"))
  with pytest.raises(LmError, match="already holds a run"):
    import_hf(str(tmp_path / "hf"), str(tmp_path / "run"))
  with pytest.raises(LmError, match="imports as causal"):
    import_hf(str(tmp_path / "hf"), str(tmp_path / "r2"), objective="mlm")
  os.remove(tmp_path / "hf" / "tokenizer.json")
  with pytest.raises(LmError, match="no tokenizer.json or tokenizer.model"):
    import_hf(str(tmp_path / "hf"), str(tmp_path / "r3"))
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "config.json").write_text("{}")
  p = cli("launch.export_hf", "--workdir", str(tmp_path / "run"),
          "--out_dir", str(tmp_path / "out"))
  assert p.returncode == 2 and "already holds a model" in p.stderr
  assert "Traceback" not in p.stderr
  from lm.interop.hf import write_hf_dir
  from lm.models.config import make_model_config
  with pytest.raises(LmError, match="no Hugging Face equivalent"):
    write_hf_dir(str(tmp_path / "lstm"), make_model_config(
        "lstm_tiny", vocab_size=16), {}, head="lm")


def test_llama_with_a_sentencepiece_model_imports_samples_and_exports(tmp_path):
  from lm.data.tokenizer import train_tokenizer
  from lm.generation.text import generate_text
  hf = tmp_path / "hf"
  tok = train_tokenizer(hf_dirs.SENTENCES, str(hf / "tokenizer.model"),
                        vocab_size=300)
  torch.manual_seed(6)
  ref = transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
      max_position_embeddings=64, initializer_range=0.2,
      bos_token_id=tok.bos_id, eos_token_id=tok.eos_id,
      pad_token_id=tok.pad_id)).eval()
  ref.save_pretrained(hf, safe_serialization=True)
  r = import_hf(str(hf), str(tmp_path / "run"))
  assert (r.objective, r.tokenizer.kind) == ("causal", "sentencepiece")
  trained = load_trained(str(tmp_path / "run"))
  assert trained.model_cfg.kv_heads == 2
  ids = [tok.bos_id] + tok.encode("the film")
  got, = generate_text(trained.model, trained.params, trained.tokenizer,
                       trained.mesh, ["the film"], temperature=0.0,
                       max_new_tokens=10)
  with torch.no_grad():
    want = ref.generate(torch.tensor([ids]), max_new_tokens=10,
                        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                        do_sample=False, eos_token_id=None)[0, len(ids):]
  assert got.ids == want.tolist()
  written = export_hf(str(tmp_path / "run"), str(tmp_path / "out"))
  assert str(tmp_path / "out" / "tokenizer.model") in written
  back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
  assert type(back).__name__ == "LlamaForCausalLM"
  assert back.config.eos_token_id == tok.eos_id
  assert hf_dirs.differing_tensors(ref, back) == []


@pytest.mark.parametrize("cls,objective,labels", [
    (transformers.BertForTokenClassification, "tagging",
     ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]),
    (transformers.BertForQuestionAnswering, "qa", None),
])
def test_bert_tagger_and_qa_models_import_and_round_trip(tmp_path, cls,
                                                         objective, labels):
  kw = {"id2label": dict(enumerate(labels))} if labels else {}
  ref = hf_dirs.bert_dir(tmp_path / "hf", cls, seed=7, **kw)
  r = import_hf(str(tmp_path / "hf"), str(tmp_path / "run"), seq_len=32)
  assert r.objective == objective and r.initialised == ()
  trained = load_trained(str(tmp_path / "run"))
  if labels:
    assert trained.objective.labels == labels
  tok = trained.tokenizer
  ids = np.array([[tok.cls_id, *tok.encode("the story was moving , and "
                                           "very funny"), tok.sep_id]])
  out = trained.model.apply({"params": trained.params}, ids,
                            token_types=np.zeros_like(ids),
                            segment_ids=np.ones_like(ids))
  with torch.no_grad():
    want = ref(torch.tensor(ids))
  if objective == "qa":
    for key in ("start_logits", "end_logits"):
      assert np.abs(np.asarray(out[key]) - getattr(want, key).numpy()).max() < 1e-4
  else:
    assert np.abs(np.asarray(out["logits"]) - want.logits.numpy()).max() < 1e-4
  export_hf(str(tmp_path / "run"), str(tmp_path / "out"))
  back = cls.from_pretrained(tmp_path / "out")
  assert hf_dirs.differing_tensors(ref, back) == []


def test_causal_training_continues_from_an_imported_gpt2(tmp_path):
  from configs import common, quickstart
  hf_dirs.gpt2_dir(tmp_path / "hf", seed=8)
  import_hf(str(tmp_path / "hf"), str(tmp_path / "gpt2"), seq_len=32)
  (tmp_path / "train.txt").write_text("\n".join(hf_dirs.SENTENCES))
  c = quickstart.get_config("runlocal")
  common.from_backbone(c, str(tmp_path / "gpt2"))
  c.data.train = c.data.eval = f"text:{tmp_path}/train.txt"
  c.steps, c.eval_every, c.checkpoint_every = 3, 3, 3
  c.optimizer.lr = 0.0          # the weights must come through unchanged
  c.sample.prompt = ""
  out = experiments.train(c, str(tmp_path / "run"))
  assert np.isfinite(out["eval_loss"])
  tuned, source = load_trained(str(tmp_path / "run")), load_trained(
      str(tmp_path / "gpt2"))
  assert tuned.tokenizer.kind == "hf"
  got, want = _leaves(tuned.params), _leaves(source.params)
  assert got.keys() == want.keys()
  for name, value in got.items():
    np.testing.assert_array_equal(value, want[name], err_msg=name)
