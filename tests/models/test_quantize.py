"""Int8 weight-only quantization: the numerics against a numpy reference,
int8 storage and its bytes, the models' logits against float, the
shardings, and serving a trained run through launch.sample, launch.predict
and launch.evaluate with --quantize int8."""

import contextlib
import io
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from configs import finetune_sst2, quickstart
from launch.evaluate import evaluate_workdir
from lm import experiments
from lm.errors import LmError
from lm.models import build_model, quantize
from lm.models.config import make_model_config
from lm.models.task_model import TaskModel
from tests.cli import cli
from tests.tasks import data
from tests.training.corpus import set_keys, write_corpus

V = 96


def _reference(w, contracted):
  """Per-output-channel symmetric int8 quantization, in numpy."""
  w = np.asarray(w, np.float32)
  amax = np.max(np.abs(w), axis=contracted, keepdims=True)
  scale = amax / np.float32(127)
  safe = np.where(scale > 0, scale, np.float32(1))
  q = np.clip(np.round(w / safe), -127, 127).astype(np.int8)
  return q, scale


@pytest.mark.parametrize("shape,contracted", [
    ((32, 4, 8), (0,)),          # a query projection [D, N, H]
    ((4, 8, 32), (0, 1)),        # the attention output [N, H, D]
    ((3, 16, 24), (1,)),         # a scanned MLP kernel [L, D, F]
    ((V, 16), (1,)),             # an embedding table, one scale per row
])
def test_round_trip_matches_numpy_reference(shape, contracted):
  w = np.random.default_rng(0).normal(0, 0.05, shape).astype(np.float32)
  w[..., 0] *= 40.0                       # channels of very different ranges
  q, scale = quantize.quantize_array(jnp.asarray(w), contracted)
  ref_q, ref_scale = _reference(w, contracted)
  assert q.dtype == jnp.int8 and q.shape == w.shape
  assert scale.dtype == jnp.float32
  assert scale.shape == tuple(1 if i in contracted else n
                              for i, n in enumerate(shape))
  np.testing.assert_allclose(np.asarray(scale), ref_scale, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(q), ref_q)
  assert np.abs(np.asarray(q)).max() == 127     # each channel's max is exact
  err = np.abs(np.asarray(quantize.dequantize(q, scale)) - w)
  assert np.all(err <= np.asarray(scale) / 2 * (1 + 1e-5))


def test_zero_channel_stays_zero():
  w = jnp.zeros((8, 3)).at[:, 1].set(jnp.arange(8.0))
  q, scale = quantize.quantize_array(w, (0,))
  assert np.asarray(scale)[0, 0] == 0 and not np.asarray(q)[:, 0].any()
  np.testing.assert_array_equal(quantize.dequantize(q, scale)[:, 0], 0.0)


@pytest.mark.parametrize("equation,x_shape,k_shape", [
    ("BTD,DNH->BTNH", (2, 3, 16), (16, 4, 8)),
    ("BTNH,NHD->BTD", (2, 3, 4, 8), (4, 8, 16)),
    ("BTD,VD->BTV", (2, 3, 16), (V, 16)),        # the tied head
    ("BD,DC->BC", (2, 16), (16, 3)),
])
def test_int8_einsum_is_einsum_with_dequantized_kernel(equation, x_shape,
                                                        k_shape):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  w = jnp.asarray(rng.normal(size=k_shape), jnp.float32)
  inputs, out = equation.split("->")
  kernel = inputs.split(",")[1]
  contracted = tuple(i for i, c in enumerate(kernel) if c not in out)
  q, scale = quantize.quantize_array(w, contracted)
  got = quantize.int8_einsum(equation, x, q, scale, jnp.float32)
  want = jnp.einsum(equation, x, quantize.dequantize(q, scale))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _float_and_int8(model, tokens):
  """(float params, their int8 form, the quantized params' axes); jitted,
  as running a model op by op costs seconds on CPU."""
  params = nn.meta.unbox(jax.jit(model.init)({"params": jax.random.key(0)},
                                             tokens)["params"])
  axes = quantize.quantizable_axes(model, tokens.shape[1])
  return params, quantize.quantize_params(params, axes), axes


def _flat(tree):
  return {"/".join(k): v for k, v in
          __import__("flax").traverse_util.flatten_dict(tree).items()}


@pytest.mark.parametrize("size,overrides", [
    ("tiny", {}),                                        # scanned, tied
    ("tiny", {"scan_layers": False, "tie_embeddings": False, "mlp": "swiglu",
              "num_kv_heads": 2, "position": "rope", "norm": "rmsnorm"}),
    ("t5_tiny", {}),          # cross-attention, relative bias, untied head
], ids=["gpt", "llama", "t5"])
def test_lm_logits_close_and_bytes_four_times_fewer(size, overrides):
  model = build_model(make_model_config(size, vocab_size=V, **overrides))
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, V)
  params, qparams, axes = _float_and_int8(model, tokens)
  flat, qflat = _flat(params), _flat(qparams)
  kernels = [k for k in flat if k.endswith(("/kernel", "/embedding"))
             and not k.startswith("position_embed")]
  assert {tuple(k.split("/")) for k in kernels} == set(axes)
  for k in kernels:
    assert k not in qflat
    assert qflat[k + "_q"].dtype == jnp.int8
    assert qflat[k + "_q"].shape == flat[k].shape
    assert qflat[k + "_scale"].dtype == jnp.float32
  # Norms, biases, the position table and T5's relative-position bias are
  # passed through, float.
  for k, v in flat.items():
    if k not in kernels:
      assert qflat[k].dtype == jnp.float32 and qflat[k] is v
  float_bytes = sum(flat[k].nbytes for k in kernels)
  int8_bytes = sum(qflat[k + "_q"].nbytes + qflat[k + "_scale"].nbytes
                   for k in kernels)
  assert 3.5 < float_bytes / int8_bytes <= 4.0
  # The whole tree, with its float position table, norms and biases.
  assert quantize.param_bytes(qparams) < 0.4 * quantize.param_bytes(params)
  apply = jax.jit(model.apply)
  logits, _ = apply({"params": params}, tokens)
  qlogits, _ = apply({"params": qparams}, tokens)
  assert qlogits.dtype == jnp.float32
  # Random-init weights: int8 rounding moves each logit by under 3% of
  # the largest. (The T5 case is the loosest: its fan-in initialisation
  # keeps activations at unit scale through the 38 quantized matmuls of
  # encoder, decoder and cross-attention, and reaches 2%; a wrong scale
  # axis or a kernel left unscaled moves logits by their own size.)
  assert np.abs(qlogits - logits).max() < 0.03 * np.abs(logits).max()


def test_bert_classifier_logits_close():
  cfg = make_model_config("bert_tiny", vocab_size=V, max_len=16,
                          scan_layers=False)
  model = TaskModel(cfg, head="sequence", num_labels=3, pooling="pooler")
  tokens = jax.random.randint(jax.random.key(2), (4, 12), 1, V)
  mask = jnp.ones_like(tokens)
  params, qparams, axes = _float_and_int8(model, tokens)
  names = {"/".join(p) for p in axes}
  assert {"backbone/token_embed/embedding", "backbone/pooler/dense/kernel",
          "head/dense/kernel"} <= names
  assert not any("type_embed" in n or "position_embed" in n for n in names)
  apply = jax.jit(lambda p: model.apply({"params": p}, tokens,
                                        segment_ids=mask)["logits"])
  out, qout = apply(params), apply(qparams)
  assert np.abs(qout - out).max() < 0.02 * np.abs(out).max() + 1e-3
  np.testing.assert_array_equal(np.argmax(qout, -1), np.argmax(out, -1))


def test_shardings_follow_the_kernel():
  mesh = jax.make_mesh((2, 4), ("data", "model"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  axes = {("attn", "query", "kernel"): (-3,),
          ("attn", "out", "kernel"): (-3, -2)}
  shardings = {"attn": {
      "query": {"kernel": NamedSharding(mesh, PartitionSpec(None, "data", "model")),
                "bias": NamedSharding(mesh, PartitionSpec("data", None))},
      "out": {"kernel": NamedSharding(mesh, PartitionSpec("data", None, "model"))}}}
  got = quantize.quantize_shardings(shardings, axes)["attn"]
  assert got["query"]["kernel_q"] == shardings["attn"]["query"]["kernel"]
  assert got["query"]["kernel_scale"].spec == PartitionSpec(None, "data", "model")
  assert got["query"]["bias"] == shardings["attn"]["query"]["bias"]
  assert got["out"]["kernel_scale"].spec == PartitionSpec(None, None, "model")
  # Placed as said, the quantized tree computes on the mesh.
  params = {"attn": {
      "query": {"kernel": jnp.ones((16, 4, 8)), "bias": jnp.zeros((4, 8))},
      "out": {"kernel": jnp.ones((4, 8, 16))}}}
  placed = jax.jit(lambda p: quantize.quantize_params(p, axes),
                   out_shardings=quantize.quantize_shardings(shardings, axes))(
                       params)
  assert placed["attn"]["out"]["kernel_q"].sharding.spec == PartitionSpec(
      "data", None, "model")


def test_modes():
  assert quantize.check_mode(None) == "none"
  assert quantize.check_mode("int8") == "int8"
  with pytest.raises(LmError, match=r"--quantize=int4 is not known; use one "
                     r"of none, int8\."):
    quantize.check_mode("int4")


# --- Served from a trained run, through the entry points ---------------------


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory):
  """An 80-step quickstart runlocal run on a repetitive written corpus: it
  has learned the corpus's shape, so greedy decoding has clear winners."""
  tmp = tmp_path_factory.mktemp("quantize_causal")
  glob = write_corpus(tmp / "corpus", n_docs=30)
  c = set_keys(quickstart.get_config("runlocal"), {
      "data.train": f"text:{glob}[:90%]", "data.eval": f"text:{glob}[90%:]",
      "data.tokenizer.vocab_size": 300, "sample.prompt": "", "steps": 80,
      "optimizer.warmup_steps": 5, "checkpoint_every": 80, "eval_every": 80,
      "eval_steps": 2, "log_every": 80})
  with contextlib.redirect_stdout(io.StringIO()):
    experiments.train(c, str(tmp / "run"))
  return str(tmp / "run")


def test_causal_run_served_int8(causal_run):
  flt = experiments.load_trained(causal_run)
  q = experiments.load_trained(causal_run, quantize="int8")
  assert quantize.param_bytes(q.params) < 0.35 * quantize.param_bytes(
      flt.params)
  assert jax.tree.structure(q.params) == jax.tree.structure(
      q.state_shardings.params)
  # The eval loss moves by little; the quantized result has its own file.
  r = evaluate_workdir(causal_run)
  rq = evaluate_workdir(causal_run, quantize="int8")
  assert rq["quantize"] == "int8" and "quantize" not in r
  assert rq["path"].endswith("-step80-int8.json") and r["path"] != rq["path"]
  assert abs(rq["loss"] - r["loss"]) < 0.02, (r, rq)
  assert json.load(open(rq["path"]))["quantize"] == "int8"
  # Greedy text through the real entry point is the float model's.
  args = ("--workdir", causal_run, "--prompt", "def ", "--prompt",
          "    return a", "--temperature", "0", "--max_new_tokens", "16")
  p = cli("launch.sample", *args)
  pq = cli("launch.sample", *args, "--quantize", "int8")
  assert p.returncode == 0 and pq.returncode == 0, p.stderr + pq.stderr
  assert pq.stdout == p.stdout and "=== sample 1" in p.stdout
  e = cli("launch.evaluate", "--workdir", causal_run, "--quantize", "int8")
  assert e.returncode == 0, e.stderr
  assert "step 80 (int8 weights) on text:" in e.stdout


@pytest.mark.parametrize("module", ["launch.sample", "launch.predict",
                                    "launch.encode", "launch.evaluate"])
def test_bad_quantize_value_is_one_sentence(module, tmp_path):
  work = tmp_path / "run"
  extra = (["--input", str(tmp_path / "in.txt"), "--output",
            str(tmp_path / "out.npy")] if module == "launch.encode" else [])
  p = cli(module, "--workdir", str(work), "--quantize", "int4", *extra)
  assert p.returncode == 2 and "Traceback" not in p.stderr
  lines = p.stderr.strip().splitlines()
  assert len(lines) == 1 and "--quantize" in lines[0] and "int8" in lines[0]
  assert os.listdir(tmp_path) == []


def test_flag_modes_are_the_library_modes():
  from absl import flags   # launch.evaluate, imported above, defines it
  assert tuple(flags.FLAGS["quantize"].parser.enum_values) == quantize.MODES


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
  """A bert_tiny sentiment classifier trained from scratch on TSV."""
  tmp = tmp_path_factory.mktemp("quantize_cls")
  train = data.write_pairs_tsv(tmp / "train.tsv", 320, seed=0)
  dev = data.write_pairs_tsv(tmp / "dev.tsv", 48, seed=1)
  c = set_keys(finetune_sst2.get_config("runlocal"), {
      "data.train": f"tsv:{train}", "data.eval": f"tsv:{dev}",
      "task.text_field": "review", "data.tokenizer.vocab_size": 300,
      "steps": 40, "eval_every": 40, "checkpoint_every": 40,
      "batch_size": 16, "log_every": 40})
  with contextlib.redirect_stdout(io.StringIO()):
    out = experiments.train(c, str(tmp / "run"))
  return out, str(tmp / "run"), tmp


def test_classifier_served_int8(classifier_run):
  out, workdir, tmp = classifier_run
  texts = ["great superb movie", "awful dull plot", "the film was fine",
           "a poor terrible day", "lovely good friends", "bad movie"]
  args = ["--workdir", workdir]
  for t in texts:
    args += ["--text", t]
  p = cli("launch.predict", *args, "--output", str(tmp / "float.jsonl"))
  pq = cli("launch.predict", *args, "--quantize", "int8", "--output",
           str(tmp / "int8.jsonl"))
  assert p.returncode == 0 and pq.returncode == 0, p.stderr + pq.stderr
  flt = [json.loads(l) for l in open(tmp / "float.jsonl")]
  q = [json.loads(l) for l in open(tmp / "int8.jsonl")]
  assert [r["label"] for r in q] == [r["label"] for r in flt]
  assert [r["label"] for r in flt] == ["yes", "no", "yes", "no", "yes", "no"]
  for a, b in zip(flt, q):
    assert abs(a["probability"] - b["probability"]) < 0.02
  r = evaluate_workdir(workdir, best=True)
  rq = evaluate_workdir(workdir, best=True, quantize="int8")
  assert r["accuracy"] >= 0.9 and rq["accuracy"] == r["accuracy"]
  assert abs(rq["loss"] - r["loss"]) < 0.02
  assert os.path.exists(rq["path"])
