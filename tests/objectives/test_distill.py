"""Knowledge distillation (`objective="distill"`): the KL term, the frozen
teacher, the teacher record on resume, layer-subset initialisation, and end
to end runs from a tiny causal teacher and a tiny BERT classifier."""

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import distill_causal, distill_sst2, finetune_sst2, quickstart
from lm import experiments
from lm.errors import LmError
from lm.models import build_model
from lm.models.config import make_model_config
from lm.objectives import distill
from lm.objectives.causal import causal_lm_loss
from lm.training.workdir import read_resolved
from tests.cli import cli
from tests.tasks import data
from tests.training.corpus import set_keys


def _digest(workdir: str, step: int) -> dict:
  path = os.path.join(workdir, "checkpoints", str(step), "digest", "metadata")
  with open(path, encoding="utf-8") as f:
    return json.load(f)["state"]


def _rows(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _np_kl(s, t, w, temperature):
  """sum w * KL(softmax(t/T) || softmax(s/T)) in float64."""
  def log_softmax(x):
    x = x / temperature
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))
  lt, ls = log_softmax(t.astype(np.float64)), log_softmax(s.astype(np.float64))
  return float((w * (np.exp(lt) * (lt - ls)).sum(-1)).sum())


def test_kl_term_matches_numpy_with_temperature_and_padding():
  rng = np.random.default_rng(0)
  s = rng.normal(size=(3, 5, 7)).astype(np.float32)
  t = (3 * rng.normal(size=(3, 5, 7))).astype(np.float32)
  w = (rng.random((3, 5)) > 0.3).astype(np.float32)
  for temperature in (1.0, 2.0, 4.0):
    got = float(distill.kl_sum(jnp.asarray(s), jnp.asarray(t), jnp.asarray(w),
                               temperature))
    np.testing.assert_allclose(got, _np_kl(s, t, w, temperature), rtol=1e-5)
  # rows of weight 0 count nothing, whatever their logits
  s2 = np.where(w[..., None] > 0, s, 100.0 * rng.normal(size=s.shape))
  np.testing.assert_allclose(
      float(distill.kl_sum(jnp.asarray(s2), jnp.asarray(t), jnp.asarray(w), 2.0)),
      _np_kl(s, t, w, 2.0), rtol=1e-5)
  assert float(distill.kl_sum(jnp.asarray(t), jnp.asarray(t), jnp.asarray(w),
                              2.0)) == pytest.approx(0.0, abs=1e-5)
  # d/ds = w (p_s - p_t) / T on both sides of the softmax
  grad = jax.grad(lambda x: distill.kl_sum(x, jnp.asarray(t), jnp.asarray(w),
                                           2.0))(jnp.asarray(s))

  def softmax(x):
    e = np.exp(x / 2.0 - (x / 2.0).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
  want = w[..., None] * (softmax(s.astype(np.float64))
                         - softmax(t.astype(np.float64))) / 2.0
  np.testing.assert_allclose(np.asarray(grad), want, atol=1e-6)


def _tiny_pair(low: int = 0):
  """A tiny causal model, a batch of 2 x 16 random ids in [low, 50), and two
  initialisations of the model (student, teacher)."""
  model = build_model(make_model_config("tiny", vocab_size=50, max_len=16))
  tokens = jnp.asarray(np.random.default_rng(0).integers(low, 50, (2, 17)),
                       jnp.int32)
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
           "positions": jnp.broadcast_to(jnp.arange(16), (2, 16)),
           "segment_ids": jnp.ones((2, 16), jnp.int32),
           "loss_mask": jnp.ones((2, 16), jnp.float32)}
  return (model, batch, model.init(jax.random.key(0), batch["inputs"])["params"],
          model.init(jax.random.key(1), batch["inputs"])["params"])


def test_no_gradient_reaches_the_teacher():
  model, batch, student, teacher = _tiny_pair()

  def loss(s, t):
    return distill.distill_loss(
        s, batch, jax.random.key(2), model, student_loss=causal_lm_loss,
        teacher_loss=causal_lm_loss, teacher_model=model, alpha=0.5,
        temperature=2.0, deterministic=True, frozen=t)[0]
  g_student, g_teacher = jax.grad(loss, argnums=(0, 1))(student, teacher)
  assert all(float(jnp.abs(x).max()) == 0.0
             for x in jax.tree.leaves(g_teacher))
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g_student)) > 0
  # alpha 0 is the student's own loss; without the teacher, too
  own = causal_lm_loss(student, batch, None, model, deterministic=True)[0]
  zero = distill.distill_loss(
      student, batch, None, model, student_loss=causal_lm_loss,
      teacher_loss=causal_lm_loss, teacher_model=model, alpha=0.0,
      temperature=2.0, deterministic=True, frozen=teacher)[0]
  alone = distill.distill_loss(
      student, batch, None, model, student_loss=causal_lm_loss,
      teacher_loss=causal_lm_loss, teacher_model=model, alpha=0.5,
      temperature=2.0, deterministic=True, frozen=None)[0]
  np.testing.assert_allclose([float(zero), float(alone)], float(own), rtol=1e-6)


def test_layer_subset_takes_every_kth_layer_in_either_layout():
  teacher = {"embed": np.ones((4, 3)),
             "decoder": {"layers": {"w": np.arange(4.0)[:, None] * np.ones(3)},
                         "norm": np.full(3, 2.0)}}
  scanned = {"embed": np.zeros((4, 3)),
             "decoder": {"layers": {"w": np.zeros((2, 3))}, "norm": np.zeros(3)}}
  out = distill.layer_subset(scanned, teacher)
  assert out["decoder"]["layers"]["w"][:, 0].tolist() == [0.0, 2.0]
  assert out["embed"].tolist() == teacher["embed"].tolist()
  assert out["decoder"]["norm"].tolist() == [2.0] * 3
  looped = {"embed": np.zeros((4, 3)),
            "decoder": {"layers_0": {"w": np.zeros(3)},
                        "layers_1": {"w": np.zeros(3)},
                        "layers_2": {"w": np.zeros(3)},
                        "norm": np.zeros(3)}}
  out = distill.layer_subset(looped, teacher)     # 3 of 4: layers 0, 1, 2
  assert [out["decoder"][f"layers_{i}"]["w"][0] for i in range(3)] == [0, 1, 2]
  wide = {"embed": np.zeros((4, 5)), "decoder": scanned["decoder"]}
  with pytest.raises(LmError, match="student's parameter /embed is \\(4, 5\\) "
                     "but the teacher's is \\(4, 3\\)"):
    distill.layer_subset(wide, teacher)
  deep = {"decoder": {"layers": {"w": np.zeros((5, 3))}, "norm": np.zeros(3)}}
  with pytest.raises(LmError, match="student has 5 layers at /decoder but "
                     "the teacher 4"):
    distill.layer_subset(deep, teacher)


@pytest.fixture(scope="module")
def causal_teacher(tmp_path_factory):
  """A quickstart runlocal run (2 layers of the tiny size), 6 steps."""
  workdir = str(tmp_path_factory.mktemp("teacher") / "run")
  experiments.train(quickstart.get_config("runlocal"), workdir)
  return workdir


def test_causal_student_learns_from_the_teacher_and_resumes_bitwise(
    causal_teacher, tmp_path):
  straight = str(tmp_path / "straight")
  c = distill_causal.get_config(f"{causal_teacher},runlocal")
  assert c.distill.objective == "" and c.model.num_layers == 1
  out = experiments.train(c, straight)
  assert out["step"] == 6 and np.isfinite(out["eval_loss"])
  record = read_resolved(straight)
  teacher = record["batch"]["distill"]
  assert teacher["teacher"] == causal_teacher and teacher["teacher_step"] == 6
  assert len(teacher["teacher_sha256"]) == 64
  assert record["config"]["distill"]["objective"] == "causal"
  # the student keeps the teacher's tokenizer and is half as deep
  assert record["tokenizer"]["sha256"] == read_resolved(
      causal_teacher)["tokenizer"]["sha256"]
  assert record["model"]["num_layers"] == 1
  train = [r for r in _rows(straight) if "kl" in r]
  assert train and all(r["kl"] >= 0 and np.isfinite(r["distill_loss"])
                       for r in train)
  # the checkpoint holds the student alone
  trained = experiments.load_trained(straight)
  shapes = jax.tree.map(lambda x: x.shape, trained.params)
  assert shapes == jax.tree.map(
      lambda x: x.shape, nn.unbox(build_model(trained.model_cfg).init(
          jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]))
  # stopped at 3 and resumed: bitwise the run that never stopped
  resumed = str(tmp_path / "resumed")
  experiments.train(set_keys(distill_causal.get_config(
      f"{causal_teacher},runlocal"), {"steps": 3}), resumed)
  experiments.train(distill_causal.get_config(f"{causal_teacher},runlocal"),
                    resumed)
  assert _digest(resumed, 6) == _digest(straight, 6)
  # it samples as a causal run
  result = cli("launch.sample", "--workdir", straight, "--prompt", "def ",
               "--max_new_tokens", "4")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "def " in result.stdout


def test_resume_with_a_changed_teacher_is_refused(causal_teacher, tmp_path):
  teacher = str(tmp_path / "teacher")
  shutil.copytree(causal_teacher, teacher)
  student = str(tmp_path / "student")
  experiments.train(set_keys(distill_causal.get_config(
      f"{teacher},runlocal"), {"steps": 3}), student)
  # the teacher trains on: its newest checkpoint is another model now
  experiments.train(set_keys(quickstart.get_config("runlocal"),
                             {"steps": 9, "eval_every": 9,
                              "checkpoint_every": 9}), teacher)
  before = sorted(os.listdir(os.path.join(student, "checkpoints")))
  with pytest.raises(LmError, match="teacher_sha256"):
    experiments.train(distill_causal.get_config(f"{teacher},runlocal"),
                      student)
  assert sorted(os.listdir(os.path.join(student, "checkpoints"))) == before


def test_student_from_every_other_teacher_layer(causal_teacher, tmp_path):
  c = set_keys(distill_causal.get_config(
      f"{causal_teacher},runlocal,init=teacher"),
      {"steps": 1, "eval_every": 1, "checkpoint_every": 1,
       "distill.teacher_dtype": "bfloat16"})
  obj = experiments.make_objective(c)
  teacher = obj.teacher().params
  run = experiments.prepare(c, str(tmp_path / "probe"))
  from lm.training import optim  # pylint: disable=g-import-not-at-top
  from lm.training.state import init_state  # pylint: disable=g-import-not-at-top
  tx, _ = optim.make_optimizer(c.optimizer, c.steps)
  state, _, shardings = init_state(run.model, tx, run.mesh, run.rules, c.seed,
                                   c.seq_len)
  start = jax.device_get(obj.start_params(state.params, shardings.params))
  got = start["decoder"]["layers"]
  want = jax.tree.map(lambda x: x[:1], teacher["decoder"]["layers"])
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(start["token_embed"]["embedding"],
                                teacher["token_embed"]["embedding"])
  # the run itself (with a bfloat16 teacher) trains from there
  out = experiments.train(c, str(tmp_path / "run"))
  assert out["step"] == 1 and np.isfinite(out["eval_loss"])


def test_bad_distillation_configs_are_one_sentence(causal_teacher, tmp_path):
  with pytest.raises(LmError, match="needs config.distill.teacher"):
    experiments.make_objective(distill_causal.get_config("runlocal"))
  with pytest.raises(LmError):
    experiments.make_objective(
        distill_causal.get_config(f"{tmp_path / 'nowhere'},runlocal"))
  with pytest.raises(LmError, match="alpha=1.5 must be a number in"):
    experiments.make_objective(
        distill_causal.get_config(f"{causal_teacher},runlocal,alpha=1.5"))
  # another tokenizer: refused before the workdir is written
  other = str(tmp_path / "other")
  experiments.train(set_keys(quickstart.get_config("runlocal"),
                             {"steps": 1, "data.tokenizer.vocab_size": 400,
                              "eval_every": 1, "checkpoint_every": 1}), other)
  c = distill_causal.get_config(f"{causal_teacher},runlocal")
  c.data.tokenizer.path = read_resolved(other)["tokenizer"]["path"]
  c.data.tokenizer.path = experiments.load_trained(other).tokenizer.path
  workdir = tmp_path / "student"
  with pytest.raises(LmError, match="is not the tokenizer of the teacher"):
    experiments.train(c, str(workdir))
  assert not (workdir / "checkpoints").exists()
  # TinyBERT's terms: a negative weight, another head count for attention
  # maps, a layer map of the wrong length; refused before anything is written
  with pytest.raises(LmError, match="hidden_weight=-1.0 must be a number >= 0"):
    experiments.make_objective(set_keys(distill_causal.get_config(
        f"{causal_teacher},runlocal"), {"distill.hidden_weight": -1}))
  for keys, message in (
      ({"model.num_heads": 2}, "student has 2 heads and the teacher 4"),
      ({"distill.layer_map": "0,1"}, "layer_map='0,1' must list 1 teacher "
       "layers")):
    c = set_keys(distill_causal.get_config(
        f"{causal_teacher},runlocal,attention=1"), keys)
    workdir = tmp_path / "tinybert"
    with pytest.raises(LmError, match=message):
      experiments.train(c, str(workdir))
    assert not (workdir / "checkpoints").exists()
  # a width the teacher does not have cannot start from its layers
  c = set_keys(distill_causal.get_config(
      f"{causal_teacher},runlocal,init=teacher"), {"model.d_model": 32})
  with pytest.raises(LmError, match="init_from_teacher_layers needs the "
                     "teacher's width"):
    experiments.train(c, str(tmp_path / "narrow"))


def test_classifier_distilled_into_a_smaller_bert(tmp_path):
  train = data.write_pairs_tsv(tmp_path / "train.tsv", 160, seed=0)
  dev = data.write_pairs_tsv(tmp_path / "dev.tsv", 32, seed=1)
  keys = {"data.train": f"tsv:{train}", "data.eval": f"tsv:{dev}",
          "task.text_field": "review", "data.tokenizer.vocab_size": 300}
  teacher = str(tmp_path / "teacher")
  experiments.train(set_keys(finetune_sst2.get_config("runlocal"), keys),
                    teacher)
  c = set_keys(distill_sst2.get_config(f"{teacher},runlocal"),
               {k: v for k, v in keys.items() if k != "data.tokenizer.vocab_size"})
  c.model.num_layers = 1
  student = str(tmp_path / "student")
  out = experiments.train(c, student)
  assert out["step"] == 6 and 0.0 <= out["eval_accuracy"] <= 1.0
  record = read_resolved(student)
  assert record["batch"]["labels"] == read_resolved(teacher)["batch"]["labels"]
  assert any("kl" in r for r in _rows(student))
  result = cli("launch.predict", "--workdir", student, "--text", "good superb")
  assert result.returncode == 0, result.stderr[-2000:]
  assert any(label in result.stdout for label in ("yes", "no"))
  # input augmentation with the BERT tokenizer's [MASK], on the task's rows
  c = set_keys(distill_sst2.get_config(f"{teacher},runlocal,augment=0.15"),
               {k: v for k, v in keys.items() if k != "data.tokenizer.vocab_size"})
  c.model.num_layers = 1
  assert c.distill.augment_replace == "mask"
  augmented = str(tmp_path / "augmented")
  out = experiments.train(c, augmented)
  assert out["step"] == 6 and 0.0 <= out["eval_accuracy"] <= 1.0
  rows = [r for r in _rows(augmented) if "augment_kl" in r]
  assert rows and all(np.isfinite(r["augment_kl"]) and r["augment_kl"] >= 0
                      for r in rows)


def _captured(model, params, batch):
  """Per-layer block outputs and attention logits of one forward pass."""
  _, state = model.apply({"params": params}, batch["inputs"],
                         positions=batch["positions"],
                         segment_ids=batch["segment_ids"],
                         mutable=["intermediates"])
  found = state["intermediates"]
  return (distill.per_layer(found, "hidden"),
          distill.per_layer(found, "scores"))


def test_tinybert_terms_match_numpy_and_train_the_projection():
  teacher_cfg = make_model_config("tiny", vocab_size=50, max_len=16,
                                  num_layers=2)
  student_cfg = make_model_config("tiny", vocab_size=50, max_len=16,
                                  num_layers=1, d_model=32)
  teacher_model, student_model = build_model(teacher_cfg), build_model(student_cfg)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, 50, (2, 17)), jnp.int32)
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
           "positions": jnp.broadcast_to(jnp.arange(16), (2, 16)),
           "segment_ids": jnp.asarray([[1] * 16, [1] * 10 + [0] * 6]),
           "loss_mask": jnp.ones((2, 16), jnp.float32)}
  student = student_model.init(jax.random.key(0), batch["inputs"])["params"]
  teacher = teacher_model.init(jax.random.key(1), batch["inputs"])["params"]
  w = jnp.asarray(rng.normal(size=(32, teacher_cfg.d_model)) / 6, jnp.float32)

  def loss(s, t, proj, hidden=1.0, attention=0.5):
    return distill.distill_loss(
        s, batch, None, student_model, student_loss=causal_lm_loss,
        teacher_loss=causal_lm_loss, teacher_model=teacher_model, alpha=0.5,
        temperature=2.0, deterministic=True, frozen=t, hidden_weight=hidden,
        attention_weight=attention, projection=proj)

  value, sums = loss(student, teacher, w)
  hs, scores_s = _captured(student_model, student, batch)
  ht, scores_t = _captured(teacher_model, teacher, batch)
  assert len(hs) == 1 and len(ht) == 2 and hs[0].shape == (2, 16, 32)
  assert scores_s[0].shape == (2, teacher_cfg.num_heads, 16, 16)
  # student layer 0 is matched with the teacher's last layer (uniform map)
  want_hidden = np.mean((np.asarray(hs[0], np.float64) @ np.asarray(w)
                         - np.asarray(ht[1])) ** 2)
  want_attention = np.mean((np.asarray(scores_s[0], np.float64)
                            - np.asarray(scores_t[1])) ** 2)
  tokens_n = float(sums["tokens"])
  np.testing.assert_allclose(float(sums["hidden_sum"]) / tokens_n,
                             want_hidden, rtol=1e-5)
  np.testing.assert_allclose(float(sums["attention_sum"]) / tokens_n,
                             want_attention, rtol=1e-5)
  plain = loss(student, teacher, w, 0.0, 0.0)[0]
  np.testing.assert_allclose(float(value), float(plain) + want_hidden
                             + 0.5 * want_attention, rtol=1e-5)
  # masked logits are 0: causal entries above the diagonal and the padded
  # row's keys past its segment
  s = np.asarray(scores_t[0])
  assert np.all(np.triu(s[0, 0], 1) == 0) and np.all(s[1, :, :, 10:] == 0)
  assert np.all(s[0, 0][np.tril_indices(16)] != 0)
  # the projection and the student learn; the teacher gets nothing
  g_s, g_t, g_w = jax.grad(lambda a, b, c: loss(a, b, c)[0],
                           argnums=(0, 1, 2))(student, teacher, w)
  assert float(jnp.abs(g_w).max()) > 0
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g_t))
  # a student equal to its teacher, through the identity, matches exactly
  _, same = distill.distill_loss(
      teacher, batch, None, teacher_model, student_loss=causal_lm_loss,
      teacher_loss=causal_lm_loss, teacher_model=teacher_model, alpha=0.5,
      temperature=2.0, deterministic=True, frozen=teacher, hidden_weight=1.0,
      attention_weight=1.0, projection=jnp.eye(teacher_cfg.d_model))
  assert float(same["hidden_sum"]) < 1e-9 and float(same["attention_sum"]) < 1e-9
  # looped blocks sow what the scanned stack does
  from lm.generation.decode import unrolled  # pylint: disable=g-import-not-at-top
  looped, to_looped = unrolled(teacher_model)
  lh, ls = _captured(looped, to_looped(teacher), batch)
  for a, b in zip(lh + ls, ht + scores_t):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_tinybert_student_trains_resumes_and_serves_without_projection(
    causal_teacher, tmp_path):
  teacher = str(tmp_path / "teacher")
  shutil.copytree(causal_teacher, teacher)
  arg = f"{teacher},runlocal,hidden=1,attention=0.5"
  straight = str(tmp_path / "straight")
  c = set_keys(distill_causal.get_config(arg), {"model.d_model": 32})
  out = experiments.train(c, straight)
  assert np.isfinite(out["hidden_mse"]) and np.isfinite(out["attention_mse"])
  assert read_resolved(straight)["config"]["distill"]["teacher_width"] == 64
  # the projection is trained and checkpointed with the student ...
  resumed = str(tmp_path / "resumed")
  experiments.train(set_keys(distill_causal.get_config(arg),
                             {"model.d_model": 32, "steps": 3}), resumed)
  experiments.train(c, resumed)
  assert _digest(resumed, 6) == _digest(straight, 6)
  assert any("objective" in key for key in _digest(straight, 6))
  # ... and a finished run serves the student alone, teacher gone
  shutil.rmtree(teacher)
  trained = experiments.load_trained(straight)
  assert "objective" not in trained.params
  assert trained.params["token_embed"]["embedding"].shape[1] == 32


def test_augmented_tokens_keep_special_ids_and_follow_the_probability():
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(0, 40, (64, 48)), jnp.int32)
  protected = (0, 1, 2, 3, 6)
  special = np.isin(np.asarray(ids), protected)
  key = jax.random.key(3)
  masked = distill.augment_tokens(
      ids, key, distill.Augment("inputs", 0.3, protected, 6, 40, 1.0))
  out, before = np.asarray(masked), np.asarray(ids)
  changed = out != before
  assert not changed[special].any()
  assert set(np.unique(out[changed])) == {6}
  assert abs(changed[~special].mean() - 0.3) < 0.02
  # the same key draws the same copy, another key another
  np.testing.assert_array_equal(out, np.asarray(distill.augment_tokens(
      ids, key, distill.Augment("inputs", 0.3, protected, 6, 40, 1.0))))
  assert (np.asarray(distill.augment_tokens(
      ids, jax.random.key(4),
      distill.Augment("inputs", 0.3, protected, 6, 40, 1.0))) != out).any()
  # random replacements: ids of the vocabulary outside the protected ones
  drawn = np.asarray(distill.augment_tokens(
      ids, key, distill.Augment("inputs", 0.5, protected, None, 40, 1.0)))
  new = drawn[drawn != before]
  assert new.size and new.min() >= 0 and new.max() < 40
  assert not np.isin(new, protected).any()
  assert not (drawn != before)[special].any()
  # probability 0 changes nothing
  np.testing.assert_array_equal(np.asarray(distill.augment_tokens(
      ids, key, distill.Augment("inputs", 0.0, protected, 6, 40, 1.0))), before)


def test_augmented_kl_term_is_the_kl_on_the_augmented_copy():
  model, batch, student, teacher = _tiny_pair(low=4)
  augment = distill.Augment("inputs", 0.25, (0, 1, 2, 3), None, 50, 0.7)
  rng = jax.random.key(5)

  def run(s, t, aug):
    return distill.distill_loss(
        s, batch, rng, model, student_loss=causal_lm_loss,
        teacher_loss=causal_lm_loss, teacher_model=model, alpha=0.5,
        temperature=2.0, deterministic=True, frozen=t, augment=aug)
  _, plain = run(student, teacher, None)
  _, sums = run(student, teacher, augment)
  assert "augment_kl_sum" not in plain
  # the copy the loss drew, scored by hand
  copy = dict(batch, inputs=distill.augment_tokens(
      batch["inputs"], jax.random.fold_in(rng, 0x617567), augment))
  assert (np.asarray(copy["inputs"]) != np.asarray(batch["inputs"])).any()
  _, _, (s_out,) = causal_lm_loss(student, copy, None, model,
                                  deterministic=True, return_logits=True)
  _, _, (t_out,) = causal_lm_loss(teacher, copy, None, model,
                                  deterministic=True, return_logits=True)
  want = _np_kl(np.asarray(s_out[0]), np.asarray(t_out[0]),
                np.asarray(s_out[1]), 2.0)
  np.testing.assert_allclose(float(sums["augment_kl_sum"]), want, rtol=1e-5)
  np.testing.assert_allclose(
      float(sums["loss_sum"]),
      float(plain["loss_sum"]) + 0.5 * 4.0 * 0.7 * want, rtol=1e-5)
  # the teacher still gets no gradient, the student one from the copy too
  g_s, g_t = jax.grad(lambda s, t: run(s, t, augment)[0],
                      argnums=(0, 1))(student, teacher)
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g_t))
  g_plain = jax.grad(lambda s: run(s, teacher, None)[0])(student)
  assert any(not np.allclose(a, b) for a, b in
             zip(jax.tree.leaves(g_s), jax.tree.leaves(g_plain)))


def test_augmented_student_trains_resumes_bitwise_and_refuses_a_missing_mask(
    causal_teacher, tmp_path):
  straight = str(tmp_path / "straight")
  c = distill_causal.get_config(f"{causal_teacher},runlocal,augment=0.2")
  assert c.distill.augment_replace == "random"
  experiments.train(c, straight)
  train = [r for r in _rows(straight) if "augment_kl" in r]
  assert train and all(r["augment_kl"] > 0 for r in train)
  resumed = str(tmp_path / "resumed")
  experiments.train(set_keys(distill_causal.get_config(
      f"{causal_teacher},runlocal,augment=0.2"), {"steps": 3}), resumed)
  experiments.train(distill_causal.get_config(
      f"{causal_teacher},runlocal,augment=0.2"), resumed)
  assert _digest(resumed, 6) == _digest(straight, 6)
  # the quickstart tokenizer has no [MASK]: refused before anything is written
  workdir = tmp_path / "masked"
  with pytest.raises(LmError, match="augment_replace='mask' needs a \\[MASK\\] "
                     "token"):
    experiments.train(set_keys(distill_causal.get_config(
        f"{causal_teacher},runlocal,augment=0.2"),
        {"distill.augment_replace": "mask"}), str(workdir))
  assert not (workdir / "checkpoints").exists()
  for keys, message in (({"distill.augment_prob": 1.0}, "augment_prob=1.0 "
                         "must be a number in \\[0, 1\\)"),
                        ({"distill.augment_replace": "drop"},
                         "augment_replace='drop' is not one of mask, random"),
                        ({"distill.augment_weight": -1.0},
                         "augment_weight=-1.0 must be a number >= 0")):
    with pytest.raises(LmError, match=message):
      experiments.make_objective(set_keys(distill_causal.get_config(
          f"{causal_teacher},runlocal"), keys))


def test_augmented_copy_is_the_same_on_an_8_device_mesh():
  """The draws depend on the key and the shape, not on how the batch is
  sharded: a run's augmented copies are the same on any mesh."""
  from lm.parallel import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from lm.parallel.mesh import make_mesh  # pylint: disable=g-import-not-at-top
  ids = np.random.default_rng(1).integers(0, 60, (16, 24)).astype(np.int32)
  augment = distill.Augment("tokens", 0.3, (0, 1, 2, 3), None, 60, 1.0)
  key = jax.random.key(7)
  one = np.asarray(jax.jit(distill.augment_tokens, static_argnums=2)(
      jnp.asarray(ids), key, augment))
  mesh = make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
  sharded = jax.device_put(ids, sharding_lib.batch_sharding(mesh))
  many = np.asarray(jax.jit(distill.augment_tokens, static_argnums=2)(
      sharded, key, augment))
  np.testing.assert_array_equal(many, one)
  assert (one != ids).any()
