"""Every config file loads, plain and in its tiny variant, and validates."""

import glob
import importlib.util
import os

import pytest

from lm.training import experiment, loop

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
  experiment.validate(c)
  model_cfg = loop.resolve_model_config(c, vocab_size=max(c.data.tokenizer.vocab_size, 70))
  assert model_cfg.vocab_size > 0
  for key in ("seed", "steps", "batch_size", "seq_len", "log_every", "eval_every",
              "checkpoint_every", "model", "data", "optimizer", "mesh"):
    assert key in c
