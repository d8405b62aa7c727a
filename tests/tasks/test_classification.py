"""Sequence classification rows, label handling and the class-weighted loss,
against hand-computed values."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.errors import LmError
from lm.models.config import make_model_config
from lm.models.task_model import TaskModel
from lm.experiments import make_objective as make_task
from lm.tasks import finetune
from lm.tasks.classification import pair_rows, truncate_pair
from lm.experiments import base_config

F, S, P = 4, 5, 0                 # [CLS], [SEP], [PAD] ids


def _config(size="bert_tiny", **task):
  config = base_config()
  config.objective = "classification"
  config.model.size = size
  config.seq_len = 8
  config.task.update(task)
  return config


# --- truncate_pair ------------------------------------------------------------


def test_truncate_pair_longest_first():
  assert truncate_pair(10, 3, 8) == (5, 3)     # docstring
  assert truncate_pair(6, 6, 8) == (4, 4)
  assert truncate_pair(3, 2, 10) == (3, 2)     # fits: unchanged
  assert truncate_pair(2, 9, 5) == (2, 3)      # the second text is longer
  assert truncate_pair(0, 9, 4) == (0, 4)
  assert truncate_pair(5, 5, 9) == (4, 5)      # a tie trims the first text
  assert truncate_pair(7, 4, 0) == (0, 0)
  assert truncate_pair(7, 0, 3) == (3, 0)      # a single text


# --- pair_rows ----------------------------------------------------------------


def test_pair_rows_single_text_docstring_example():
  tokens, types, mask = pair_rows([[7, 8]], None, seq_len=5, first=F, sep=S,
                                  pad=P)
  assert tokens.tolist() == [[F, 7, 8, S, P]]
  assert types.tolist() == [[0, 0, 0, 0, 0]]
  assert mask.tolist() == [[1, 1, 1, 1, 0]]
  assert tokens.dtype == types.dtype == mask.dtype == np.int32


def test_pair_rows_pairs_frame_and_token_types():
  tokens, types, mask = pair_rows([[7, 8, 9], [10]], [[20, 21], []],
                                  seq_len=9, first=F, sep=S, pad=P)
  assert tokens.tolist() == [[F, 7, 8, 9, S, 20, 21, S, P],
                             [F, 10, S, S, P, P, P, P, P]]
  # 0: [CLS] a [SEP]; 1: b [SEP]; 0: padding.
  assert types.tolist() == [[0, 0, 0, 0, 0, 1, 1, 1, 0],
                            [0, 0, 0, 1, 0, 0, 0, 0, 0]]
  assert mask.tolist() == [[1] * 8 + [0], [1] * 4 + [0] * 5]


def test_pair_rows_truncation():
  # Pair: budget 8 - 3 = 5 of (6, 2) -> (3, 2).
  a, b = [list(range(11, 17))], [[20, 21]]
  tokens, types, mask = pair_rows(a, b, seq_len=8, first=F, sep=S, pad=P)
  assert tokens.tolist() == [[F, 11, 12, 13, S, 20, 21, S]]
  assert types.tolist() == [[0, 0, 0, 0, 0, 1, 1, 1]]
  assert mask.tolist() == [[1] * 8]
  # The longer second text loses tokens from its end: (2, 6) -> (2, 3).
  tokens, types, _ = pair_rows([[7, 8]], [list(range(30, 36))], seq_len=8,
                               first=F, sep=S, pad=P)
  assert tokens.tolist() == [[F, 7, 8, S, 30, 31, 32, S]]
  assert types.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1]]
  # Single text: seq_len - 2 tokens kept.
  tokens, _, mask = pair_rows([list(range(11, 21))], None, seq_len=5, first=F,
                              sep=S, pad=P)
  assert tokens.tolist() == [[F, 11, 12, 13, S]] and mask.sum() == 5


def test_pair_rows_empty_text_and_no_room():
  tokens, _, mask = pair_rows([[]], None, seq_len=4, first=F, sep=S, pad=P)
  assert tokens.tolist() == [[F, S, P, P]] and mask.tolist() == [[1, 1, 0, 0]]
  pair_rows([[1]], None, seq_len=3, first=F, sep=S, pad=P)  # 1 token of room
  with pytest.raises(LmError, match="seq_len >= 3"):
    pair_rows([[1]], None, seq_len=2, first=F, sep=S, pad=P)
  with pytest.raises(LmError, match="seq_len >= 4"):
    pair_rows([[1]], [[2]], seq_len=3, first=F, sep=S, pad=P)


# --- labels -------------------------------------------------------------------


def test_sort_labels():
  assert finetune.sort_labels(["10", "2", "2"]) == ["2", "10"]
  assert finetune.sort_labels(["pos", "neg"]) == ["neg", "pos"]
  assert finetune.sort_labels(["1", "-1", "0"]) == ["-1", "0", "1"]
  # Not all integers: plain string order.
  assert finetune.sort_labels(["10", "2", "a"]) == ["10", "2", "a"]
  assert finetune.sort_labels([]) == []


def test_parse_class_weights_empty_and_balanced():
  counts = np.array([3, 1])
  assert finetune.parse_class_weights("", ["a", "b"], counts) is None
  # n / (C * count): 4 / (2 * 3), 4 / (2 * 1).
  got = finetune.parse_class_weights("balanced", ["a", "b"], counts)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, [2 / 3, 2.0], rtol=1e-6)
  got = finetune.parse_class_weights("balanced", ["a", "b", "c"],
                                     np.array([1, 2, 5]))
  np.testing.assert_allclose(got, [8 / 3, 8 / 6, 8 / 15], rtol=1e-6)


def test_parse_class_weights_named():
  labels, counts = ["neg", "pos"], np.array([5, 5])
  got = finetune.parse_class_weights("pos=2,neg=0.5", labels, counts)
  assert got.dtype == np.float32 and got.tolist() == [0.5, 2.0]
  # Unnamed labels get 1; empty parts are skipped; zero is allowed.
  got = finetune.parse_class_weights("b=3,", ["a", "b", "c"], np.ones(3))
  assert got.tolist() == [1.0, 3.0, 1.0]
  got = finetune.parse_class_weights("c=0", ["a", "b", "c"], np.ones(3))
  assert got.tolist() == [1.0, 1.0, 0.0]
  # The label is everything before the last "=".
  got = finetune.parse_class_weights("x=y=4", ["x=y", "z"], np.ones(2))
  assert got.tolist() == [4.0, 1.0]


@pytest.mark.parametrize("spec,match", [
    ("zzz=2", "does not name a label"),
    ("pos", "does not name a label"),
    ("pos=two", "has no number"),
    ("pos=", "has no number"),
    ("pos=-1", "negative"),
    ("pos=nan", "negative"),
])
def test_parse_class_weights_errors(spec, match):
  with pytest.raises(LmError, match=match):
    finetune.parse_class_weights(spec, ["neg", "pos"], np.array([1, 1]))


def test_parse_class_weights_balanced_needs_every_class():
  with pytest.raises(LmError, match=r"balanced.*\['b'\]"):
    finetune.parse_class_weights("balanced", ["a", "b", "c"],
                                 np.array([2, 0, 1]))


def test_label_ids():
  got = finetune.label_ids(["b", "a", "b"], ["a", "b"], "mem:x")
  assert got.dtype == np.int32 and got.tolist() == [1, 0, 1]
  with pytest.raises(LmError, match=r"mem:dev example 1 has label 'c'"):
    finetune.label_ids(["a", "c"], ["a", "b"], "mem:dev")


# --- the task -----------------------------------------------------------------


def test_pooling_choice():
  assert make_task(_config()).pooling() == "pooler"          # auto, BERT
  assert make_task(_config("tiny")).pooling() == "last"      # auto, decoder
  assert make_task(_config(pooling="mean")).pooling() == "mean"
  with pytest.raises(LmError, match="'last' or 'mean'"):
    make_task(_config("tiny", pooling="cls")).pooling()
  with pytest.raises(LmError, match="is not a classification metric"):
    make_task(_config(metric="f1"))


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def tiny_model():
  # Looped layers: a scanned stack costs seconds to run unjitted on CPU.
  model = TaskModel(make_model_config("bert_tiny", vocab_size=64,
                                      scan_layers=False),
                    head="sequence", num_labels=3)
  rng = np.random.default_rng(0)
  tokens = rng.integers(6, 64, (4, 8)).astype(np.int32)
  mask = np.ones((4, 8), np.int32)
  mask[1, 5:] = 0
  mask[3, 3:] = 0
  tokens = tokens * mask
  types = np.zeros((4, 8), np.int32)
  types[0, 4:] = 1
  batch = {"tokens": tokens, "token_types": types, "mask": mask,
           "label": np.array([0, 2, 1, 2], np.int32),
           "weights": np.array([1, 1, 1, 0], np.float32)}   # row 3 is padding
  params = nn.meta.unbox(model.init(jax.random.key(0), jnp.asarray(tokens),
                                    token_types=jnp.asarray(types),
                                    segment_ids=jnp.asarray(mask))["params"])
  logits = np.asarray(model.apply({"params": params}, batch["tokens"],
                                  token_types=batch["token_types"],
                                  segment_ids=batch["mask"])["logits"],
                      np.float64)
  return model, params, batch, logits


def test_classification_loss_with_class_weights_matches_numpy(tiny_model):
  model, params, batch, logits = tiny_model
  task = make_task(_config())
  task.labels = ["a", "b", "c"]
  nll = -_log_softmax(logits)[np.arange(4), batch["label"]]
  # Unweighted: the mean over the three real rows.
  loss, sums = task.loss(params, batch, jax.random.key(0), model,
                         deterministic=True)
  assert float(loss) == pytest.approx(nll[:3].mean(), rel=1e-5)
  # Weighted mean: sum_i w_{y_i} nll_i / sum_i w_{y_i} over real rows; the
  # padding row (label c, weight 0) counts for nothing.
  task.class_weights = np.array([2.0, 0.5, 3.0], np.float32)
  loss, sums = task.loss(params, batch, jax.random.key(0), model,
                         deterministic=True)
  cw = np.array([2.0, 3.0, 0.5, 0.0])
  want = (cw * nll).sum() / cw.sum()
  assert float(loss) == pytest.approx(want, rel=1e-5)
  assert float(sums["loss_sum"]) == pytest.approx((cw * nll).sum(), rel=1e-5)
  assert float(sums["tokens"]) == pytest.approx(5.5)
  assert float(sums["examples"]) == 3.0
  pred = logits.argmax(-1)
  assert float(sums["correct"]) == float((pred == batch["label"])[:3].sum())
  confusion = np.zeros((3, 3))
  for y, p in zip(batch["label"][:3], pred[:3]):
    confusion[y, p] += 1
  np.testing.assert_allclose(np.asarray(sums["confusion"]), confusion)
  assert float(task.summarize(sums)["loss"]) == pytest.approx(want, rel=1e-5)


def test_classification_loss_weight_zero_class(tiny_model):
  # A class of weight 0 drops its rows from the mean entirely.
  model, params, batch, logits = tiny_model
  task = make_task(_config())
  task.labels = ["a", "b", "c"]
  task.class_weights = np.array([1.0, 1.0, 0.0], np.float32)
  loss, _ = task.loss(params, batch, jax.random.key(0), model,
                      deterministic=True)
  nll = -_log_softmax(logits)[np.arange(4), batch["label"]]
  assert float(loss) == pytest.approx((nll[0] + nll[2]) / 2, rel=1e-5)


def test_the_streaming_pipeline_is_refused_for_labelled_examples():
  config = _config()
  config.data.pipeline = "stream"
  with pytest.raises(LmError, match="reads its labelled examples into memory"):
    make_task(config)
