"""What users moving models between lm and the Hugging Face ecosystem rely
on: exported tokenizers that load to the same ids, every source tensor
kept, the class a run really is, sentence-transformers directories, chat
templates and generation configs carried both ways."""

import json
import os

import numpy as np
import torch
import transformers

from configs import quickstart
from lm import experiments
from lm.data.tokenizer import train_tokenizer
from lm.interop.sp_tokenizer import tokenizer_config, tokenizer_json
from lm.interop.workdir import export_hf, import_hf
from lm.experiments import load_trained
from tests.cli import cli
from tests.interop import hf_dirs

# Code with runs of spaces, tabs, blank lines and characters outside the
# vocabulary (byte pieces).
TEXT = ("def add(a, b):\n    return a + b\n\n\n\tx  =   [1, 2]  # naïve 日本 "
        "\U0001F600 ok\n")


def test_native_run_exports_a_tokenizer_that_autotokenizer_reads_alike(tmp_path):
  from lm.generation.text import generate_text
  c = quickstart.get_config("runlocal")
  c.steps, c.eval_every, c.checkpoint_every, c.log_every = 2, 2, 2, 2
  c.sample.prompt = ""
  c.data.tokenizer.vocab_size = 600
  experiments.train(c, str(tmp_path / "run"))
  export_hf(str(tmp_path / "run"), str(tmp_path / "out"))
  trained = load_trained(str(tmp_path / "run"))
  tok = trained.tokenizer
  hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
  assert hf_tok.encode(TEXT, add_special_tokens=False) == tok.encode(TEXT)
  assert hf_tok(TEXT)["input_ids"] == [tok.bos_id] + tok.encode(TEXT)
  assert hf_tok.decode(tok.encode(TEXT)) == TEXT
  model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
  prompt = "def main():\n    "
  got, = generate_text(trained.model, trained.params, tok, trained.mesh,
                       [prompt], temperature=0.0, max_new_tokens=16)
  enc = hf_tok(prompt, return_tensors="pt")
  with torch.no_grad():
    out = model.generate(**enc, max_new_tokens=16, do_sample=False,
                         eos_token_id=None, pad_token_id=tok.pad_id)
  n = enc["input_ids"].shape[1]
  assert out[0, n:].tolist() == got.ids
  assert hf_tok.decode(out[0, n:], skip_special_tokens=True) == got.text


def test_bert_sentencepiece_tokenizer_converts_with_its_frame(tmp_path):
  docs = [TEXT * 3, " ".join(hf_dirs.SENTENCES), "[CLS] in text stays text"]
  tok = train_tokenizer(docs, str(tmp_path / "t.model"), vocab_size=300,
                        bert_specials=True, model_type="unigram")
  (tmp_path / "tokenizer.json").write_text(
      json.dumps(tokenizer_json(tok, frame="bert")))
  config = tokenizer_config(tok, frame="bert", model_max_length=64)
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_file=str(tmp_path / "tokenizer.json"),
      model_input_names=config["model_input_names"])
  for text in (TEXT, hf_dirs.SENTENCES[1]):
    ids = tok.encode(text)
    assert fast.encode(text, add_special_tokens=False) == ids
    assert fast(text)["input_ids"] == [tok.cls_id, *ids, tok.sep_id]
    pair = fast(text, "b")
    assert pair["input_ids"] == [tok.cls_id, *ids, tok.sep_id,
                                 *tok.encode("b"), tok.sep_id]
    assert pair["token_type_ids"][-1] == 1 and pair["token_type_ids"][0] == 0


def _sentence_transformers_dir(path, normalize: bool):
  """A tiny sentence-transformers layout over a BertModel (mean pooling)."""
  ref = hf_dirs.bert_dir(path, transformers.BertModel, seed=11)
  modules = [{"idx": 0, "name": "0", "path": "",
              "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling",
              "type": "sentence_transformers.models.Pooling"}]
  if normalize:
    modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize"})
    os.makedirs(path / "2_Normalize")
  (path / "modules.json").write_text(json.dumps(modules))
  os.makedirs(path / "1_Pooling")
  (path / "1_Pooling" / "config.json").write_text(json.dumps(
      {"word_embedding_dimension": 32, "pooling_mode_cls_token": False,
       "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False}))
  (path / "sentence_bert_config.json").write_text(
      json.dumps({"max_seq_length": 24, "do_lower_case": False}))
  return ref


def test_sentence_transformers_directory_encodes_and_exports_whole(tmp_path):
  ref = _sentence_transformers_dir(tmp_path / "st", normalize=True)
  p = cli("launch.import_hf", "--hf_dir", str(tmp_path / "st"), "--workdir",
          str(tmp_path / "run"))
  assert p.returncode == 0, p.stderr
  assert "as a 'contrastive' run" in p.stdout
  # the real shape, and a size that says it matches no named one
  assert "model size custom: 2 layers x 32 wide, 4 heads" in p.stdout
  stored = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
  assert stored["model"]["size"] == "custom" and stored["seq_len"] == 24
  k = stored["contrastive"]
  assert (k["pooling"], k["normalize"], k["pooler"]) == ("mean", True, True)
  for row, hidden in hf_dirs.encoded_and_reference(tmp_path / "run", ref,
                                                   tmp_path):
    want = torch.nn.functional.normalize(hidden.mean(0), dim=-1).numpy()
    np.testing.assert_allclose(row, want, atol=1e-5)
    assert abs(np.linalg.norm(row) - 1) < 1e-5
  export_hf(str(tmp_path / "run"), str(tmp_path / "out"))
  back, info = transformers.BertModel.from_pretrained(
      tmp_path / "out", output_loading_info=True)
  # every tensor, the pooler included, comes back exactly
  assert info["missing_keys"] == [] or not info["missing_keys"]
  assert hf_dirs.differing_tensors(ref, back) == []
  modules = json.loads((tmp_path / "out" / "modules.json").read_text())
  assert [m["type"].rsplit(".", 1)[1] for m in modules] == [
      "Transformer", "Pooling", "Normalize"]
  pooling = json.loads((tmp_path / "out" / "1_Pooling" / "config.json"
                        ).read_text())
  assert pooling["pooling_mode_mean_tokens"] and not pooling[
      "pooling_mode_cls_token"]
  # the export imports back to the same sentence encoder
  again = import_hf(str(tmp_path / "out"), str(tmp_path / "again"))
  assert again.objective == "contrastive" and again.initialised == ()


def test_unsupported_sentence_transformers_module_is_one_sentence(tmp_path):
  _sentence_transformers_dir(tmp_path / "st", normalize=False)
  modules = json.loads((tmp_path / "st" / "modules.json").read_text())
  modules.append({"idx": 2, "name": "2", "path": "2_Dense",
                  "type": "sentence_transformers.models.Dense"})
  (tmp_path / "st" / "modules.json").write_text(json.dumps(modules))
  p = cli("launch.import_hf", "--hf_dir", str(tmp_path / "st"), "--workdir",
          str(tmp_path / "run"))
  assert p.returncode != 0 and "Traceback" not in p.stderr
  assert "Dense" in p.stderr and "cannot be reproduced" in p.stderr
  assert not (tmp_path / "run").exists()


def test_bare_bert_as_masked_lm_gets_no_nsp_head_and_exports_as_masked_lm(
    tmp_path):
  ref = hf_dirs.bert_dir(tmp_path / "hf", transformers.BertModel, seed=12)
  p = cli("launch.import_hf", "--hf_dir", str(tmp_path / "hf"), "--workdir",
          str(tmp_path / "run"), "--seq_len", "32")
  assert p.returncode == 0, p.stderr
  assert "as a 'mlm' run" in p.stdout
  # the one head masked LM needs and the checkpoint lacks is said once
  assert p.stdout.count("mlm_head") == 1 and "nsp_head" not in p.stdout
  trained = load_trained(str(tmp_path / "run"))
  assert "nsp_head" not in trained.params and "pooler" in trained.params
  assert trained.config.mlm.nsp is False
  export_hf(str(tmp_path / "run"), str(tmp_path / "out"))
  config = json.loads((tmp_path / "out" / "config.json").read_text())
  assert config["architectures"] == ["BertForMaskedLM"]
  back, info = transformers.BertForMaskedLM.from_pretrained(
      tmp_path / "out", output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  # BertForMaskedLM has no pooler; the encoder comes back exactly
  assert hf_dirs.differing_tensors(ref, back.bert, skip=("pooler",)) == []


def test_chat_template_and_generation_config_travel_and_chat_samples(tmp_path):
  ref = hf_dirs.gpt2_dir(tmp_path / "hf", seed=13)
  template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
              "{% endfor %}{% if add_generation_prompt %}assistant:"
              "{% endif %}")
  (tmp_path / "hf" / "chat_template.jinja").write_text(template)
  assert (tmp_path / "hf" / "generation_config.json").is_file()
  import_hf(str(tmp_path / "hf"), str(tmp_path / "run"))
  assert (tmp_path / "run" / "generation_config.json").is_file()
  p = cli("launch.sample", "--workdir", str(tmp_path / "run"), "--chat",
          "--system", "be brief", "--prompt", "the film was", "--temperature",
          "0", "--max_new_tokens", "6", "--show_ids")
  assert p.returncode == 0, p.stderr
  hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
  messages = [{"role": "system", "content": "be brief"},
              {"role": "user", "content": "the film was"}]
  ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True,
                                   tokenize=True)
  ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
  with torch.no_grad():
    want = ref.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False,
                        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                        pad_token_id=0, eos_token_id=None)[0, len(ids):]
  assert f"ids: {want.tolist()}" in p.stdout
  assert "user: the film was\nassistant: " in p.stdout
  export_hf(str(tmp_path / "run"), str(tmp_path / "out"))
  assert (tmp_path / "out" / "chat_template.jinja").read_text() == template
  gen = json.loads((tmp_path / "out" / "generation_config.json").read_text())
  assert gen == json.loads((tmp_path / "hf" / "generation_config.json"
                            ).read_text())
  assert transformers.AutoTokenizer.from_pretrained(
      tmp_path / "out").chat_template == template
  # a run without a template refuses --chat in one sentence
  os.remove(tmp_path / "run" / "tokenizer" / "chat_template.jinja")
  p = cli("launch.sample", "--workdir", str(tmp_path / "run"), "--chat",
          "--prompt", "hi")
  assert p.returncode != 0 and "has no chat template" in p.stderr
  assert "Traceback" not in p.stderr
