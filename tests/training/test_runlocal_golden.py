"""Every objective and task trains to the same numbers as recorded: the
`:runlocal` config of each (causal GPT, character-level LSTM, masked LM +
NSP, unsupervised and supervised contrastive, classification,
tagging, QA), three steps on small files the test writes, compared with
`runlocal_golden.json`: counts exactly, float metrics to a relative 1e-5.

Bitwise equality holds on one machine but not across them: XLA's CPU
backend generates code for the host's instruction set (AVX2, AVX-512,
AMX), and the reductions it emits differ in their last bits (seen: up to
4.4e-7 relative in a perplexity, 2.3e-7 in a gradient norm). A wrong
mask, token, learning rate or loss term moves these metrics by far more
than 1e-5 after three steps. The golden file is what the code produced
when it was recorded; a change meant to move no number must leave it
passing. A change meant to move them rewrites it, with the reason in the
commit:

  python -m tests.training.test_runlocal_golden --write
"""

from lm import experiments
import glob
import json
import os
import sys

import pytest

from tests.training.corpus import set_keys, write_corpus

GOLDEN = os.path.join(os.path.dirname(__file__), "runlocal_golden.json")
CASES = ("quickstart", "lstm_shakespeare_char",
         "bert_quickstart", "simcse_quickstart", "code_search",
         "finetune_sst2", "finetune_conll", "finetune_squad")
# metrics that count things: compared exactly
COUNTS = ("step", "tokens", "examples", "pairs", "windows", "eval_tokens",
          "eval_batches", "eval_examples", "eval_candidates", "eval_entities",
          "eval_pairs", "eval_questions", "eval_windows")
SHORT = {"steps": 3, "log_every": 1, "eval_every": 3, "checkpoint_every": 3,
         "eval_steps": 2}


def _config(name: str, tmp):
  """The `:runlocal` config of `configs/<name>.py`, three steps on local
  files."""
  import importlib
  from tests.tasks import data
  mod = importlib.import_module(f"configs.{name}")
  if name == "lstm_shakespeare_char":
    text = tmp / "chars.txt"
    docs = sorted(glob.glob(write_corpus(tmp / "c", n_docs=20)))
    text.write_text("".join(open(d, encoding="utf-8").read() for d in docs))
    # nanoGPT's batch of 12 does not split over the 8 simulated devices
    return set_keys(mod.get_config(f"path={text},runlocal"),
                    {**SHORT, "batch_size": 16})
  c = mod.get_config("runlocal")
  keys = dict(SHORT)
  corpus = write_corpus(tmp / "corpus", n_docs=30)
  if name in ("quickstart", "bert_quickstart"):
    keys.update({"data.train": f"text:{corpus}", "data.eval": f"text:{corpus}",
                 "data.tokenizer.vocab_size": 300})
  elif name in ("simcse_quickstart", "code_search"):
    pairs = tmp / "pairs.jsonl"
    docs = [open(d, encoding="utf-8").read() for d in sorted(glob.glob(corpus))]
    pairs.write_text("".join(json.dumps(
        {"anchor": d.splitlines()[0], "positive": d}) + "\n" for d in docs))
    train = f"text:{corpus}" if name == "simcse_quickstart" else f"jsonl:{pairs}"
    keys.update({"data.train": train, "data.eval": f"jsonl:{pairs}",
                 "data.tokenizer.vocab_size": 300,
                 "contrastive.eval_candidates": 16})
  if name.startswith("finetune_"):
    keys["data.tokenizer.vocab_size"] = 300
  if name == "finetune_sst2":
    tsv = data.write_pairs_tsv(tmp / "train.tsv", 48)
    keys.update({"data.train": f"tsv:{tsv}", "data.eval": f"tsv:{tsv}",
                 "task.text_field": "review"})
  elif name == "finetune_conll":
    conll = data.write_conll(tmp / "train.conll", 24)
    keys.update({"data.train": f"conll:{conll}", "data.eval": f"conll:{conll}"})
  elif name == "finetune_squad":
    squad = data.write_squad_jsonl(tmp / "train.jsonl", 16)
    keys.update({"data.train": f"jsonl:{squad}", "data.eval": f"jsonl:{squad}"})
  if "sample" in c:
    keys["sample.prompt"] = ""
  return set_keys(c, keys)


def run_case(name: str, tmp) -> dict:
  """The final metrics (train and eval) of case `name`, as floats."""
  out = experiments.train(_config(name, tmp), str(tmp / "run"))
  return {k: float(v) for k, v in sorted(out.items())
          if isinstance(v, (int, float)) and k not in (
              "tokens_per_second", "mfu")}


@pytest.mark.parametrize("name", CASES)
def test_runlocal_config_trains_to_the_recorded_numbers(name, tmp_path):
  with open(GOLDEN, encoding="utf-8") as f:
    want = json.load(f)[name]
  got = run_case(name, tmp_path)
  assert sorted(got) == sorted(want)
  for key, value in want.items():
    if key in COUNTS:
      assert got[key] == value, key
    else:
      assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


if __name__ == "__main__":
  import tempfile
  import pathlib
  if sys.argv[1:] != ["--write"]:
    sys.exit("usage: python -m tests.training.test_runlocal_golden --write")
  import tests.conftest  # noqa: F401  (the 8 simulated devices the tests use)
  golden = {}
  for case in CASES:
    with tempfile.TemporaryDirectory() as d:
      golden[case] = run_case(case, pathlib.Path(d))
      print(case, golden[case], flush=True)
  with open(GOLDEN, "w", encoding="utf-8") as f:
    json.dump(golden, f, indent=1, sort_keys=True)
    f.write("\n")
