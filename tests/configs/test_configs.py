"""Every config file loads, plain and in its tiny variant, and validates."""

import glob
import importlib.util
import json
import os

import pytest

from lm import experiments
from lm.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if os.path.basename(p) not in ("__init__.py", "common.py"))


def load(path):
  spec = importlib.util.spec_from_file_location("cfg", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_there_are_configs():
  names = {os.path.basename(p) for p in CONFIGS}
  assert {"quickstart.py", "shakespeare_char.py", "gpt2_small.py"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_config_loads_and_validates(path, arg):
  c = load(path).get_config(arg)
  experiments.validate(c)
  model_cfg = loop.resolve_model_config(c, vocab_size=max(c.data.tokenizer.vocab_size, 70))
  assert model_cfg.vocab_size > 0
  for key in ("seed", "steps", "batch_size", "seq_len", "log_every", "eval_every",
              "checkpoint_every", "model", "data", "optimizer", "mesh"):
    assert key in c


SEQ2SEQ = [p for p in CONFIGS if os.path.basename(p) in (
    "finetune_translate.py", "finetune_summarize.py")]
FINETUNE = [p for p in CONFIGS if os.path.basename(p).startswith("finetune_")
            and p not in SEQ2SEQ]


@pytest.mark.parametrize("path", SEQ2SEQ, ids=os.path.basename)
def test_seq2seq_configs_from_scratch_from_a_t5_run_and_a_data_dir(path,
                                                                  tmp_path):
  mod = load(path)
  scratch = mod.get_config(None)
  assert (scratch.objective, scratch.model.size) == ("seq2seq", "t5_mini")
  assert scratch.data.train.startswith("tfds:")
  source = tmp_path / "t5"
  source.mkdir()
  (source / "config.json").write_text(json.dumps({"config": {"model": {
      "size": "t5_small"}}}))
  tuned = mod.get_config(f"{source},data={tmp_path},runlocal")
  assert tuned.init_from == str(source) and tuned.model.size == "t5_small"
  assert tuned.data.train == f"jsonl:{tmp_path}/train.jsonl"
  assert tuned.data.eval == f"jsonl:{tmp_path}/dev.jsonl"


@pytest.mark.parametrize("path", FINETUNE, ids=os.path.basename)
def test_fine_tune_configs_from_scratch_or_from_a_backbone(path, tmp_path):
  from configs import common
  mod = load(path)
  scratch = mod.get_config(None)
  assert not scratch.init_from
  assert scratch.model.size == common.SCRATCH_SIZE == "bert_mini"
  assert scratch.optimizer.lr == common.SCRATCH_LR == 1e-3
  assert scratch.optimizer.warmup_steps == round(0.05 * scratch.steps)
  # A backbone's run: its model shape, the fine-tuning rate and warmup.
  backbone = tmp_path / "bert"
  backbone.mkdir()
  (backbone / "config.json").write_text(json.dumps({"config": {"model": {
      "size": "bert_small", "num_layers": 6}}}))
  tuned = mod.get_config(str(backbone))
  assert tuned.init_from == str(backbone)
  assert (tuned.model.size, tuned.model.num_layers) == ("bert_small", 6)
  assert tuned.optimizer.lr <= 5e-5
  assert tuned.optimizer.warmup_steps > scratch.optimizer.warmup_steps
  # Without a readable config.json the backbone is taken to be bert_base
  # (the run checks it when it starts); runlocal keeps the rates.
  local = mod.get_config(f"{tmp_path / 'elsewhere'},runlocal")
  assert local.model.size == "bert_base" and local.optimizer.lr <= 5e-5
  assert mod.get_config("runlocal").optimizer.lr == 1e-3
