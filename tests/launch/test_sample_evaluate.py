"""launch.sample and launch.evaluate on a tiny trained workdir."""

import contextlib
import io
import json
import os
import socket
import subprocess
import sys

import pytest

from configs import quickstart
from launch.evaluate import evaluate_workdir, summary_line
from lm import experiments
from lm.errors import LmError
from lm.generation.text import cut_at_stop, generate_text
from lm.experiments import load_trained
from tests.training.corpus import write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A 4-step quickstart runlocal run; its console output is train.log next
  to it. Its peak_tflops is far below what even a CPU reaches, so MFU comes
  out above 1 and must be reported as unreliable."""
  tmp = tmp_path_factory.mktemp("sample")
  glob = write_corpus(tmp / "corpus", n_docs=30)
  c = quickstart.get_config("runlocal")
  c.data.train = f"text:{glob}[:90%]"
  c.data.eval = f"text:{glob}[90%:]"
  c.data.tokenizer.vocab_size = 300
  c.sample.prompt = ""
  c.peak_tflops = 1e-6
  c.steps = 4
  c.checkpoint_every = 2
  c.eval_every = 4
  c.eval_steps = 1
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    experiments.train(c, str(tmp / "run"))
  (tmp / "train.log").write_text(out.getvalue())
  return str(tmp / "run")


def metrics_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def parts(trained):
  return trained.model, trained.params, trained.tokenizer, trained.mesh


def cli(module, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_generate_text_samples_and_beams(workdir):
  trained = load_trained(workdir)
  assert trained.step == 4
  out = generate_text(*parts(trained), ["def ", "return"], num_samples=2, temperature=1.0,
                      top_k=20, max_new_tokens=8, seed=3)
  assert [o.prompt for o in out] == ["def ", "def ", "return", "return"]
  for o in out:
    assert isinstance(o.text, str) and len(o.ids) <= 8
    assert o.text == trained.tokenizer.decode(o.ids)
  again = generate_text(*parts(trained), ["def ", "return"], num_samples=2, temperature=1.0,
                        top_k=20, max_new_tokens=8, seed=3)
  assert out == again
  beams = generate_text(*parts(trained), ["def "], num_samples=2, max_new_tokens=6, beam_size=3)
  assert len(beams) == 2 and all(b.finish_reason == "beam" for b in beams)
  with pytest.raises(LmError, match="context"):
    generate_text(*parts(trained), ["x " * 200], max_new_tokens=4)


def test_cut_at_stop():
  assert cut_at_stop("a\n\nb", ["\n\n"]) == ("a", True)
  assert cut_at_stop("abc", ["x"]) == ("abc", False)


def test_training_log_shows_each_logged_loss_and_what_eval_covered(workdir):
  log = open(os.path.join(os.path.dirname(workdir), "train.log")).read()
  lines = log.splitlines()
  rows = metrics_rows(workdir)
  train = [r for r in rows if "loss" in r]
  evals = [r for r in rows if "eval_loss" in r]
  assert [r["step"] for r in train] == [2, 4] and len(evals) == 1
  assert lines[0].startswith("model tiny (2 layers x 64 wide, 4 heads, mlp "
                             "256): ")
  # Not a terminal: one plain line per log step, with the loss just logged.
  for r in train:
    line = next(l for l in lines if l.startswith(f"step {r['step']}/4: "))
    assert line.startswith(f"step {r['step']}/4: loss {r['loss']:.4f}, "), line
    assert "mfu" not in line
  assert "\r" not in log
  # MFU above 1 is one warning and no mfu in the metrics.
  warned = [l for l in lines if "MFU came out at" in l]
  assert len(warned) == 1 and "config.peak_tflops=1e-06" in warned[0], log
  assert not any("mfu" in r for r in train)
  ev = evals[0]
  assert ev["eval_batches"] == 1 and 0 < ev["eval_tokens"] <= 8 * 32
  assert (f"step 4: eval loss {ev['eval_loss']:.4f}, perplexity "
          f"{ev['eval_perplexity']:.4f}, accuracy {ev['eval_accuracy']:.4f} "
          f"over {ev['eval_tokens']:.0f} tokens in 1 batch "
          "(config.eval_steps=1)") in lines


def test_evaluate_defaults_to_the_runs_eval_steps_and_full_takes_all(workdir):
  ev = [r for r in metrics_rows(workdir) if "eval_loss" in r][-1]
  r = evaluate_workdir(workdir)
  assert r["loss"] == pytest.approx(ev["eval_loss"], rel=1e-5)
  assert (r["tokens"], r["batches"]) == (ev["eval_tokens"], 1)
  assert summary_line(r).endswith(
      f" over {r['tokens']} tokens in 1 batch (the run's config.eval_steps=1; "
      f"--full for the whole split) -> {r['path']}")
  full = evaluate_workdir(workdir, full=True)
  assert full["tokens"] > r["tokens"] and full["batches"] > 1
  assert full["loss"] != r["loss"] and full["scope"] == "the whole split"
  with pytest.raises(LmError, match="--full .* or --max_batches, not both"):
    evaluate_workdir(workdir, full=True, max_batches=2)


def test_evaluate_writes_json(workdir):
  r = evaluate_workdir(workdir, max_batches=2)
  assert r["step"] == 4 and r["tokens"] > 0
  assert r["perplexity"] == pytest.approx(2.718281828 ** r["loss"], rel=1e-4)
  saved = json.load(open(r["path"]))
  assert saved["loss"] == r["loss"] and r["path"].startswith(os.path.join(workdir, "eval"))
  earlier = evaluate_workdir(workdir, step=2, max_batches=2)
  assert earlier["step"] == 2 and earlier["loss"] != r["loss"]


def test_sample_cli_prints_samples(workdir):
  r = cli("launch.sample", f"--workdir={workdir}", "--prompt=def ", "--num_samples=2",
          "--max_new_tokens=5", "--top_p=0.9")
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.count("=== sample") == 2


@pytest.mark.parametrize("args,needle", [
    (["--top_p=1.5"], "--top_p"),
    (["--no_repeat_ngram=-2"], "--no_repeat_ngram=-2 is negative"),
    (["--step=3"], "step 3 does not exist"),
    (["--max_new_tokens=1000"], "context"),
    (["--prompt_file=/no/such/file.txt"], "/no/such/file.txt"),
])
def test_sample_cli_bad_input(workdir, args, needle):
  r = cli("launch.sample", f"--workdir={workdir}", "--prompt=def ", *args)
  assert r.returncode == 2, r.stderr[-2000:]
  lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1 and needle in lines[0], r.stderr


def test_evaluate_on_an_unprepared_tfds_dataset_offline_names_its_flag(
    workdir, tmp_path, monkeypatch):
  with socket.socket() as s:     # a port nothing listens on: no network
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  monkeypatch.setenv("LM_NETWORK_PROBE", f"127.0.0.1:{port}")
  r = cli("launch.evaluate", f"--workdir={workdir}",
          "--data=tfds:tiny_shakespeare:test", f"--data_dir={tmp_path}")
  assert r.returncode == 2, r.stderr[-2000:]
  lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1, r.stderr
  assert "is not prepared in" in lines[0] and str(tmp_path) in lines[0]
  assert lines[0].endswith("with --data_dir."), lines[0]


@pytest.mark.parametrize("module", ["launch.sample", "launch.evaluate"])
def test_missing_or_empty_workdir(tmp_path, module):
  extra = ["--prompt=x"] if module == "launch.sample" else []
  r = cli(module, f"--workdir={tmp_path / 'nothing'}", *extra)
  assert r.returncode == 2 and "does not exist" in r.stderr
  (tmp_path / "empty").mkdir()
  r = cli(module, f"--workdir={tmp_path / 'empty'}", *extra)
  assert r.returncode == 2 and "no trained run" in r.stderr


def test_lstm_is_trained_evaluated_and_sampled_by_the_same_tools(tmp_path):
  glob = write_corpus(tmp_path / "corpus", n_docs=20)
  from configs import lstm_shakespeare_char
  c = lstm_shakespeare_char.get_config("runlocal")
  c.model.size = "lstm_tiny"
  c.data.train = f"text:{glob}[:90%]"
  c.data.eval = f"text:{glob}[90%:]"
  c.steps, c.checkpoint_every, c.eval_every, c.log_every = 6, 6, 6, 3
  c.batch_size = 8
  c.sample.prompt = "def"
  c.sample.max_new_tokens = 5
  c.peak_tflops = 1.0
  workdir = str(tmp_path / "lstm")
  summary = experiments.train(c, workdir)
  assert summary["eval_loss"] < 5.0
  trained = load_trained(workdir)
  assert type(trained.model).__name__ == "LstmLM"
  out = generate_text(*parts(trained), ["def", "return x"], max_new_tokens=6, temperature=0.0)
  assert len(out) == 2 and all(len(o.ids) <= 6 for o in out)
  beams = generate_text(*parts(trained), ["def"], max_new_tokens=4, beam_size=2, num_samples=2)
  assert len(beams) == 2
  assert evaluate_workdir(workdir, max_batches=1)["tokens"] > 0
