"""The contrastive objective end to end: global negatives, SimCSE, pairs,
learning on held-out pystdlib functions, and warm starts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import bert_quickstart, code_search, quickstart
from lm import experiments
from lm.data import pairs as pairs_lib
from lm.errors import LmError
from lm.models.config import make_model_config
from lm.models.embedder import SentenceEncoder
from lm.objectives.contrastive import contrastive_loss, embed_texts
from lm.parallel.mesh import make_mesh
from lm.parallel.sharding import batch_sharding
from lm.tasks import retrieval
from lm.training import optim, warm_start
from lm.training.state import init_state
from lm.experiments import load_trained
from tests.training.corpus import set_keys

V, T = 64, 10


def _batch(b, seed=0, negatives=False):
  rng = np.random.default_rng(seed)
  out = {"weights": np.ones((b,), np.float32)}
  for name in ("anchor", "positive") + (("negative",) if negatives else ()):
    tokens = rng.integers(1, V, (b, T)).astype(np.int32)
    lengths = rng.integers(3, T + 1, b)
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
    out[name], out[name + "_mask"] = tokens * mask, mask
  return out


@pytest.mark.parametrize("negatives", [False, True])
def test_global_batch_on_8_devices_equals_one_device(negatives):
  cfg = make_model_config("bert_tiny", vocab_size=V, max_len=16)
  model = SentenceEncoder(cfg, pooling="mean", projection=True,
                          learn_temperature=True)
  batch = _batch(16, negatives=negatives)
  params = jax.jit(model.init)({"params": jax.random.key(0)},
                               jnp.asarray(batch["anchor"]),
                               segment_ids=jnp.asarray(batch["anchor_mask"]))
  params = jax.tree.map(np.asarray, params["params"])

  def value_and_grad(mesh):
    def f(p, b):
      return jax.value_and_grad(
          lambda q: contrastive_loss(q, b, jax.random.key(0), model,
                                     deterministic=True)[1]["loss_sum"])(p)
    sharded = jax.device_put(batch, batch_sharding(mesh))
    with jax.set_mesh(mesh):
      return jax.device_get(jax.jit(f)(params, sharded))

  assert len(jax.devices()) == 8
  loss8, grad8 = value_and_grad(make_mesh({"data": 8, "fsdp": 1, "tensor": 1}))
  one = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
  loss1, grad1 = value_and_grad(one)
  np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
  # An 8-row local loss (negatives from one shard only) would differ.
  half = {k: v[:8] for k, v in batch.items()}
  local = jax.jit(lambda p, b: contrastive_loss(
      p, b, None, model, deterministic=True)[1])(params, half)
  assert abs(float(local["loss_sum"]) * 2 - float(loss1)) > 1e-3
  for a, b in zip(jax.tree.leaves(grad8), jax.tree.leaves(grad1)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_simcse_views_differ_only_by_dropout():
  batch = _batch(8)
  del batch["positive"], batch["positive_mask"]
  losses, params = {}, None
  for rate in (0.0, 0.3):
    cfg = make_model_config("bert_tiny", vocab_size=V, max_len=16, dropout=rate,
                            attention_dropout=rate)
    model = SentenceEncoder(cfg, pooling="cls", temperature=0.05)
    if params is None:   # the same parameters for both rates
      params = jax.jit(model.init)({"params": jax.random.key(0)},
                                   jnp.asarray(batch["anchor"]))["params"]
    _, sums = jax.jit(lambda p, b, r, model=model: contrastive_loss(
        p, b, r, model, deterministic=False))(params, batch, jax.random.key(1))
    losses[rate] = float(sums["loss_sum"]) / 8
    if rate == 0.0:   # identical views: every row finds its twin
      assert float(sums["correct"]) == 8.0
  assert losses[0.3] > losses[0.0] + 1e-3, losses


def _code_search(**overrides):
  c = code_search.get_config("runlocal")
  return set_keys(c, {"seq_len": 32, "batch_size": 32, "steps": 200,
                      "eval_every": 200, "checkpoint_every": 200,
                      "log_every": 50, "eval_steps": 0,
                      "contrastive.eval_candidates": 256,
                      "optimizer.lr": 2e-3, "optimizer.warmup_steps": 20,
                      "data.tokenizer.vocab_size": 1024, **overrides})


def test_short_run_on_pystdlib_pairs_beats_the_untrained_encoder(tmp_path):
  c = _code_search()
  before = experiments.evaluate_untrained(c, str(tmp_path / "untrained"))
  after = experiments.train(c, str(tmp_path / "run"))
  assert after["eval_candidates"] == 256
  # Measured: recall@1 0.12 -> 0.33, recall@10 0.32 -> 0.61 (256 candidates).
  assert after["eval_recall@1"] > max(2 * before["eval_recall@1"],
                                      before["eval_recall@1"] + 0.1), (before, after)
  assert after["eval_recall@10"] > before["eval_recall@10"] + 0.1, (before, after)
  assert after["eval_mrr"] > before["eval_mrr"] + 0.1, (before, after)
  assert after["eval_loss"] < before["eval_loss"]
  # Embeddings of the held-out pairs reproduce the logged retrieval metrics.
  trained = load_trained(str(tmp_path / "run"))
  held_out = pairs_lib.open_pairs("pystdlib:validation")
  a = embed_texts(trained, held_out.anchors[:256], batch_size=48)
  p = embed_texts(trained, held_out.positives[:256], batch_size=48)
  assert a.shape == (256, trained.model_cfg.d_model) and a.dtype == np.float32
  again = retrieval.retrieval_metrics(a, p, ks=(1, 10))
  assert again["recall@1"] == pytest.approx(after["eval_recall@1"], abs=1e-6)
  assert again["mrr"] == pytest.approx(after["eval_mrr"], abs=1e-4)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
  """`source_run(kind)`: (corpus glob, workdir) of a 3-step masked-LM or
  causal run on a small written corpus, trained once per module (the tests
  only read it)."""
  from tests.training.corpus import write_corpus
  root = tmp_path_factory.mktemp("sources")
  train = write_corpus(root / "corpus", n_docs=30)
  runs = {}

  def run(kind):
    if kind not in runs:
      mod = bert_quickstart if kind == "mlm" else quickstart
      c = set_keys(mod.get_config("runlocal"),
                   {"steps": 3, "checkpoint_every": 3, "eval_every": 100,
                    "log_every": 1, "data.train": f"text:{train}",
                    "data.eval": "", "data.tokenizer.vocab_size": 300,
                    "sample.prompt": ""})
      runs[kind] = str(root / kind)
      experiments.train(c, runs[kind])
    return train, runs[kind]
  return run


def _simcse(train_glob, size, init_from, **overrides):
  c = code_search.get_config("runlocal")
  return set_keys(c, {"model.size": size, "init_from": init_from,
                      "contrastive.mode": "unsupervised",
                      "data.train": f"text:{train_glob}", "data.eval": "",
                      "steps": 2, "checkpoint_every": 2, "log_every": 1,
                      **overrides})


def _leaves(tree):
  return {"/".join(str(k.key) for k in p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("kind,size,pooling", [("mlm", "bert_tiny", "cls"),
                                               ("causal", "tiny", "last")])
def test_warm_start_takes_the_backbone_and_the_tokenizer(tmp_path, source_run,
                                                          kind, size, pooling):
  train, source = source_run(kind)
  c = _simcse(train, size, source, **{"contrastive.pooling": pooling,
                                      "contrastive.projection": True})
  run = experiments.prepare(c, str(tmp_path / "simcse"))
  src = load_trained(source)
  assert run.tokenizer.fingerprint() == src.tokenizer.fingerprint()
  tx, _ = optim.make_optimizer(c.optimizer, c.steps)
  state, _, shardings = init_state(run.model, tx, run.mesh, run.rules, c.seed,
                                   c.seq_len)
  params = warm_start.start_from(source, state.params, shardings.params,
                                 run.objective, experiments.make_objective)
  got, want = _leaves(params["backbone"]), _leaves(src.params)
  fresh = _leaves(state.params["backbone"])
  for name, value in got.items():
    np.testing.assert_array_equal(value, want[name])
  assert any(not np.array_equal(fresh[n], got[n]) for n in got)
  if kind == "mlm":   # BERT's pretraining heads are dropped
    assert set(want) - set(got) and all(
        n.split("/")[0] in ("pooler", "mlm_head", "nsp_head")
        for n in set(want) - set(got))
  else:
    assert set(got) == set(want)
  np.testing.assert_array_equal(
      _leaves(params["projection"])["dense/kernel"],
      _leaves(state.params["projection"])["dense/kernel"])
  # The loop does the same at step 0 and trains from there.
  summary = experiments.train(c, str(tmp_path / "simcse"))
  assert summary["step"] == 2 and np.isfinite(summary["loss"])


def test_warm_start_and_config_errors_are_one_sentence(tmp_path, source_run):
  train, source = source_run("mlm")
  c = _simcse(train, "bert_mini", source)
  with pytest.raises(LmError, match=r"holds a model with model.d_ff=512, "
                     r"but this run builds model.d_ff=1024; use the source"):
    experiments.prepare(c, str(tmp_path / "a"))
  c = _simcse(train, "bert_tiny", str(tmp_path / "nowhere"))
  with pytest.raises(LmError, match="does not exist"):
    experiments.prepare(c, str(tmp_path / "b"))
  c = _simcse(train, "bert_tiny", "", grad_accum_steps=2)
  with pytest.raises(LmError, match="accumulation would shrink them"):
    experiments.prepare(c, str(tmp_path / "c"))
  c = _simcse(train, "tiny", "", **{"contrastive.pooling": "cls"})
  with pytest.raises(LmError, match="pooling 'cls' reads the first token"):
    experiments.prepare(c, str(tmp_path / "d"))
  c = _simcse(train, "bert_tiny", "", **{"contrastive.mode": "triplet"})
  with pytest.raises(LmError, match="contrastive.mode='triplet' is not one"):
    experiments.prepare(c, str(tmp_path / "e"))
  c = _simcse(train, "bert_tiny", "", **{"data.train": f"text:{train}",
                                         "contrastive.mode": "supervised"})
  with pytest.raises(LmError, match="has no text pairs"):
    experiments.prepare(c, str(tmp_path / "f"))
