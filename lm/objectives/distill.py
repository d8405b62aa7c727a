"""Knowledge distillation: a student trained to match a frozen teacher.

`config.objective = "distill"` wraps the objective the teacher run was
trained with (causal LM, masked LM, classification, tagging or QA: any
`Objective.distillable`). The student is the run's own model (`config.model`,
usually a smaller size), reads the same data as that objective would and
keeps the teacher's tokenizer (and, for tasks, its label vocabulary); a
different tokenizer is refused. The loss on a batch is

  alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
      + (1 - alpha) * the student's own loss

(Hinton et al. 2015), the KL summed over every row of logits the
objective scores (each next token, masked position, sentence, tag or
answer boundary, with the objective's own weights) and divided by the same
normaliser as the student's loss. `distill.alpha` and
`distill.temperature` set the two numbers.

The teacher (`distill.teacher`: any `lm` workdir, an imported Hugging Face
model included; its best checkpoint when it has one, else the newest) runs
inside the jitted train step on the run's mesh, sharded by its own logical
axes (`Objective.frozen_inputs`): its parameters are an argument of the
step, not part of the optimizer state or of the checkpoints.
`distill.teacher_dtype="bfloat16"` computes it in bfloat16. The run records
the teacher's workdir, step and a fingerprint of its parameters with its
batch settings, so a resume with another teacher is refused. Evaluation
scores the student alone (its own loss and metrics, comparable with a run
trained without a teacher), and a finished run serves as the wrapped
objective does (`launch.sample`, `predict`, `evaluate`, `export_hf`).

Hidden states and attention maps (TinyBERT, Jiao et al. 2020):
`distill.hidden_weight` adds that weight times the sum over mapped layers
of the mean squared error between the student's block outputs, through a
learned projection W [student width, teacher width] (an `extra_params`
parameter, trained and checkpointed with the student's and dropped when
the run serves; the identity when the widths are equal), and the teacher's;
`distill.attention_weight` adds the same for the attention logits
(q k^T / sqrt(H), masked entries 0; the two need the same head count).
Student layer i matches teacher layer (i + 1) * L_teacher // L_student - 1
(the last layer the last), or the teacher layers `distill.layer_map` lists
("1,3,5", 0-based). The means run over every entry, padding included, as
TinyBERT's. Both need Transformer stacks (GPT, Llama, BERT) on both sides;
the matching reads what the blocks `sow` into the "intermediates"
collection, at the cost of one extra q k^T per layer for the attention
term. The embedding layer is not matched.

Input augmentation (Tang et al. 2019, "Distilling task-specific knowledge
from BERT into simple neural networks"; TinyBERT's augmented transfer set):
with `distill.augment_prob` p > 0 every train step also builds a copy of
its batch in which each input token outside the tokenizer's special ids is
replaced with probability p, by [MASK] (`distill.augment_replace="mask"`,
the default; the tokenizer must have one) or by a token drawn uniformly
from the vocabulary ("random"). Teacher and student both read the copy,
and the loss gains `alpha * T^2 * augment_weight * KL` on it, over the same
rows and weights and with the same normaliser as the clean KL; the
student's own loss stays on the clean batch (a replaced word can change
the label, the teacher's probabilities say by how much). The draws are a
function of the step's random key, so a resumed run sees the same copies.
It costs one more forward of the teacher and one more forward and
backward of the student per step.

`distill.init_from_teacher_layers` starts the student from the teacher
(DistilBERT's initialisation): every parameter outside the layer stacks
copied, and student layer i from teacher layer i * L_teacher // L_student
of each stack (one layer in two for half the depth). The widths must match.

Example:
  c = configs.distill_causal.get_config("runs/quickstart")
  experiments.train(c, "runs/distilled")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lm.errors import LmError
from lm.objectives.distill_layers import (  # noqa: F401  (re-exported)
    Capture, layer_pairs, layer_subset, mean_squared, per_layer)
from lm.parallel import axes
from lm.training import digest as digest_lib
from lm.training.objective import Objective
from lm.training.state import EXTRA_KEY, model_params, state_shardings

def config_section() -> ml_collections.ConfigDict:
  """The `distill` section of the experiment config."""
  s = ml_collections.ConfigDict()
  s.teacher = ""                 # the teacher's workdir (required)
  s.objective = ""               # set from the teacher run's objective
  s.alpha = 0.5                  # weight of the KL term (1 - alpha: own loss)
  s.temperature = 2.0            # softmax temperature of both sides
  s.teacher_dtype = "float32"    # float32 | bfloat16 (teacher compute)
  s.init_from_teacher_layers = False   # DistilBERT's initialisation
  s.hidden_weight = 0.0          # TinyBERT: block outputs through a projection
  s.attention_weight = 0.0       # TinyBERT: attention logits (same heads)
  s.layer_map = ""               # teacher layer per student layer ("" uniform)
  s.teacher_width = 0            # set from the teacher (the projection's)
  s.augment_prob = 0.0           # input augmentation: P(a token is replaced)
  s.augment_replace = "mask"     # mask | random (what replaces it)
  s.augment_weight = 1.0         # weight of the KL on the augmented copy
  return s


AUGMENT_REPLACE = ("mask", "random")


@dataclasses.dataclass(frozen=True)
class Augment:
  """Input augmentation settings (module docstring): which batch field,
  with what probability, replaced by `mask_id` (None: uniform draws over
  `vocab_size`), never touching `protected` ids; `weight` of its KL."""
  field: str
  prob: float
  protected: tuple[int, ...]
  mask_id: int | None
  vocab_size: int
  weight: float


def augment_tokens(ids, rng, augment: Augment):
  """`ids` with each token outside `augment.protected` replaced with
  probability `augment.prob` by `augment.mask_id`, or (None) by a uniform
  draw over the vocabulary; a draw that lands on a protected id leaves the
  token as it was.

  >>> a = Augment("inputs", 1.0, (0,), 9, 10, 1.0)
  >>> augment_tokens(jnp.array([[0, 4, 5]]), jax.random.key(0), a).tolist()
  [[0, 9, 9]]
  """
  pick, draw = jax.random.split(rng)
  protected = jnp.asarray(augment.protected, ids.dtype)
  hit = (~jnp.isin(ids, protected)
         & jax.random.bernoulli(pick, augment.prob, ids.shape))
  if augment.mask_id is not None:
    new = jnp.full_like(ids, augment.mask_id)
  else:
    new = jax.random.randint(draw, ids.shape, 0, augment.vocab_size, ids.dtype)
    hit = hit & ~jnp.isin(new, protected)
  return jnp.where(hit, new, ids)


def kl_sum(student_logits, teacher_logits, weights, temperature: float):
  """sum over rows of weights * KL(p_teacher || p_student), both softened by
  `temperature`; the teacher side carries no gradient.

  student_logits, teacher_logits [..., C]; weights [...] (0 = ignored).

  >>> float(kl_sum(jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.ones(1), 2.0))
  0.0
  """
  t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)) / temperature
  s = student_logits.astype(jnp.float32) / temperature
  log_pt = jax.nn.log_softmax(t, axis=-1)
  log_ps = jax.nn.log_softmax(s, axis=-1)
  kl = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)          # [...]
  return jnp.sum(weights.astype(jnp.float32) * kl)


def distill_loss(params, batch, rng, model, *, student_loss, teacher_loss,
                 teacher_model, alpha: float, temperature: float,
                 deterministic: bool = False, frozen=None,
                 hidden_weight: float = 0.0, attention_weight: float = 0.0,
                 projection=None, layer_map: str = "",
                 augment: Augment | None = None):
  """Objective contract: with the teacher's parameters (`frozen`), the
  distillation loss (module docstring) and sums `loss_sum` (that loss),
  `student_loss_sum` (the student's own), `kl_sum`, with the TinyBERT terms
  `hidden_sum` and `attention_sum` (each mean squared error summed over the
  mapped layers, times `tokens`), with `augment` `augment_kl_sum` (the KL
  on the augmented copy of the batch), and the student's other sums;
  without them (evaluation), the student's own loss and sums.
  `projection`: `[D_student, D_teacher]`, for `hidden_weight`."""
  if frozen is None:
    return student_loss(params, batch, rng, model, deterministic=deterministic)
  plain_model, plain_teacher = model, teacher_model
  matching = hidden_weight > 0 or attention_weight > 0
  if matching:
    model, teacher_model = Capture(model), Capture(teacher_model)
  _, sums, outputs = student_loss(params, batch, rng, model,
                                  deterministic=deterministic,
                                  return_logits=True)
  _, _, teacher_outputs = teacher_loss(frozen, batch, rng, teacher_model,
                                       deterministic=True, return_logits=True)
  kl = sum(kl_sum(s, t, w, temperature)
           for (s, w), (t, _) in zip(outputs, teacher_outputs))
  sums = dict(sums)
  tokens = sums["tokens"]
  sums["student_loss_sum"] = sums["loss_sum"]
  sums["kl_sum"] = kl
  sums["loss_sum"] = (alpha * temperature ** 2 * kl
                      + (1.0 - alpha) * sums["student_loss_sum"])
  if augment is not None and augment.prob > 0:
    copy = dict(batch)
    copy[augment.field] = augment_tokens(
        batch[augment.field], jax.random.fold_in(rng, 0x617567), augment)
    _, _, s_aug = student_loss(params, copy, jax.random.fold_in(rng, 1),
                               plain_model, deterministic=deterministic,
                               return_logits=True)
    _, _, t_aug = teacher_loss(frozen, copy, rng, plain_teacher,
                               deterministic=True, return_logits=True)
    sums["augment_kl_sum"] = sum(kl_sum(s, t, w, temperature)
                                 for (s, w), (t, _) in zip(s_aug, t_aug))
    sums["loss_sum"] = (sums["loss_sum"] + alpha * temperature ** 2
                        * augment.weight * sums["augment_kl_sum"])
  if matching:
    found_s, found_t = model.found, teacher_model.found
    for name, weight, key in (("hidden", hidden_weight, "hidden_sum"),
                              ("scores", attention_weight, "attention_sum")):
      if weight <= 0:
        continue
      s_layers, t_layers = per_layer(found_s, name), per_layer(found_t, name)
      total = 0.0
      for i, j in layer_pairs(len(s_layers), len(t_layers), layer_map):
        s_value = s_layers[i]
        if name == "hidden":
          s_value = jnp.einsum("...d,de->...e", s_value.astype(jnp.float32),
                               projection.astype(jnp.float32))
        total = total + mean_squared(
            s_value, jax.lax.stop_gradient(t_layers[j]))
      sums[key] = total * tokens
      sums["loss_sum"] = sums["loss_sum"] + weight * sums[key]
  return sums["loss_sum"] / jnp.maximum(tokens, 1e-9), sums


@dataclasses.dataclass
class _Teacher:
  """The loaded teacher: its objective, model, host params and record, and
  its tokenizer's special ids, [MASK] id and vocabulary size."""
  objective: Objective
  model_cfg: object
  params: object
  record: dict
  special_ids: tuple[int, ...] = ()
  mask_id: int | None = None
  vocab_size: int = 0


class Distill(Objective):
  """A student trained on a frozen teacher's predictions (module docstring).

  Built by the registry with `make_student(config)`, the objective the
  teacher was trained with bound to this config (and the teacher's label
  vocabulary for tasks), and `load_teacher(workdir)`, which returns the
  teacher's trained run (`lm.training.workdir.Trained`) and its recorded
  `config.json`; the teacher is read only when training needs it.
  """

  name = "distill"
  config_sections = {"distill": config_section}

  # contract attributes that follow the student's objective
  _FOLLOWED = ("summarize", "bert_specials", "control_symbols",
               "backbone_path", "best_metric", "count_key", "labels",
               "stored", "head", "generates_text", "embeds", "predicts",
               "scores_sts", "transduces")

  def __init__(self, config, stored, *, make_student, load_teacher,
               read_teacher):
    s = config.distill
    if not s.teacher:
      raise LmError("config.objective='distill' needs config.distill.teacher, "
                    "the workdir of a trained teacher run.")
    if not (isinstance(s.alpha, (int, float)) and 0.0 <= s.alpha <= 1.0):
      raise LmError(f"config.distill.alpha={s.alpha!r} must be a number in "
                    "[0, 1] (the weight of the teacher's term).")
    if not (isinstance(s.temperature, (int, float)) and s.temperature > 0):
      raise LmError(f"config.distill.temperature={s.temperature!r} must be a "
                    "positive number.")
    for name in ("hidden_weight", "attention_weight", "augment_weight"):
      value = s.get(name, 0.0)
      if not (isinstance(value, (int, float)) and value >= 0):
        raise LmError(f"config.distill.{name}={value!r} must be a number >= 0 "
                      "(0 = off).")
    prob = s.get("augment_prob", 0.0)
    if not (isinstance(prob, (int, float)) and 0.0 <= prob < 1.0):
      raise LmError(f"config.distill.augment_prob={prob!r} must be a number "
                    "in [0, 1) (the chance that an input token is replaced; "
                    "0 = off).")
    if s.get("augment_replace", "mask") not in AUGMENT_REPLACE:
      raise LmError(f"config.distill.augment_replace="
                    f"{s.get('augment_replace')!r} is not one of "
                    f"{', '.join(AUGMENT_REPLACE)}.")
    if s.teacher_dtype not in ("float32", "bfloat16"):
      raise LmError(f"config.distill.teacher_dtype={s.teacher_dtype!r} is "
                    "not float32 or bfloat16.")
    self.config = config
    self._load_teacher = load_teacher
    self._teacher = None
    if not s.objective:       # a new run: the teacher's objective and data
      record, tokenizer_path = read_teacher(s.teacher)
      s.objective = record["config"]["objective"]
      if not config.data.tokenizer.path:
        config.data.tokenizer.path = tokenizer_path
      if stored is None and record.get("batch") is not None:
        stored = record["batch"]
    if self._weights()[0] > 0 and not s.get("teacher_width"):
      # recorded with the run, so that it serves without its teacher
      s.teacher_width = int(read_teacher(s.teacher)[0]["model"]["d_model"])
    if s.objective == self.name:
      raise LmError(f"config.distill.teacher={s.teacher} is itself a "
                    "distillation run; name the run it was distilled from, or "
                    "serve this one as it is.")
    student_config = ml_collections.ConfigDict(config.to_dict())
    student_config.objective = s.objective
    self.student = make_student(student_config, stored)
    if not self.student.distillable:
      raise LmError(f"the teacher {s.teacher} is a {s.objective!r} run, whose "
                    "objective has no predictions to distil; distil a "
                    "causal, mlm, classification, tagging or qa run.")
    for name in self._FOLLOWED:
      setattr(self, name, getattr(self.student, name))
    self.distillable = False
    self.loss = self._loss
    self.summarize = self._summarize

  @property
  def serves(self) -> str:
    return self.student.serves

  def __getattr__(self, name):
    # what a particular objective adds to the contract (e.g. a task's
    # `predict_texts`) comes from the student's
    if name.startswith("_") or "student" not in self.__dict__:
      raise AttributeError(name)
    return getattr(self.__dict__["student"], name)

  # --- the teacher ------------------------------------------------------------

  def teacher(self) -> _Teacher:
    """The teacher run, read once (its best checkpoint, else the newest)."""
    if self._teacher is None:
      trained, record = self._load_teacher(self.config.distill.teacher)
      params = jax.device_get(trained.params)
      sums = digest_lib.state_digest(trained.params)["sums"]
      fingerprint = hashlib.sha256(
          json.dumps(sums, sort_keys=True).encode()).hexdigest()
      self._teacher = _Teacher(
          trained.objective, trained.model_cfg, params,
          {"teacher": self.config.distill.teacher, "teacher_step": trained.step,
           "teacher_sha256": fingerprint,
           "teacher_tokenizer": record["tokenizer"]["sha256"]},
          tuple(int(i) for i in trained.tokenizer.special_ids),
          trained.tokenizer.mask_id, int(trained.tokenizer.vocab_size))
      del trained
    return self._teacher

  def _teacher_model(self):
    """(teacher module, its config in `distill.teacher_dtype`), built once."""
    if "_teacher_built" not in self.__dict__:
      t = self.teacher()
      cfg = t.model_cfg
      if self.config.distill.teacher_dtype == "bfloat16":
        cfg = dataclasses.replace(cfg, dtype="bfloat16",
                                  param_dtype="bfloat16")
      self.__dict__["_teacher_built"] = (t.objective.build_model(cfg), cfg)
    return self.__dict__["_teacher_built"]

  def _layer_map(self) -> str:
    return str(self.config.distill.get("layer_map", "") or "")

  def _weights(self) -> tuple[float, float]:
    s = self.config.distill
    return (float(s.get("hidden_weight", 0.0)),
            float(s.get("attention_weight", 0.0)))

  def _augment(self) -> Augment | None:
    """The input augmentation settings, None when it is off (no
    replacement, or its KL weighted 0: no extra forward passes)."""
    s = self.config.distill
    if (float(s.get("augment_prob", 0.0)) <= 0
        or float(s.get("augment_weight", 1.0)) <= 0):
      return None
    t = self.teacher()
    return Augment(self.student.token_field, float(s.augment_prob),
                   t.special_ids,
                   t.mask_id if s.get("augment_replace", "mask") == "mask"
                   else None, t.vocab_size,
                   float(s.get("augment_weight", 1.0)))

  def _loss(self, params, batch, rng, model, *, deterministic=False,
            frozen=None):
    extra = params.get(EXTRA_KEY) if isinstance(params, dict) else None
    params = model_params(params)
    if frozen is None:
      return self.student.loss(params, batch, rng, model,
                               deterministic=deterministic)
    s = self.config.distill
    hidden, attention = self._weights()
    teacher_model, _ = self._teacher_model()
    return distill_loss(params, batch, rng, model,
                        student_loss=self.student.loss,
                        teacher_loss=self.teacher().objective.loss,
                        teacher_model=teacher_model, alpha=float(s.alpha),
                        temperature=float(s.temperature),
                        deterministic=deterministic, frozen=frozen,
                        hidden_weight=hidden, attention_weight=attention,
                        projection=None if extra is None
                        else extra["hidden_projection"],
                        layer_map=self._layer_map(), augment=self._augment())

  def extra_params(self, model_cfg, rng):
    """TinyBERT's projection `[D_student, D_teacher]` when
    `distill.hidden_weight` is on: the identity for equal widths, else
    N(0, 1/D_student)."""
    if self._weights()[0] <= 0:
      return None
    d_s, d_t = model_cfg.d_model, int(self.config.distill.teacher_width)
    if d_s == d_t:
      w = jnp.eye(d_s, dtype=jnp.float32)
    else:
      w = jax.random.normal(rng, (d_s, d_t), jnp.float32) / np.sqrt(d_s)
    return {"hidden_projection": nn.LogicallyPartitioned(
        w, names=(axes.EMBED, None))}

  def _summarize(self, sums) -> dict:
    """The student's metrics of its own loss (comparable with a run trained
    without a teacher), plus `distill_loss` (what is minimised) and `kl`
    when the sums come from a train step with the teacher."""
    if "kl_sum" not in sums:
      return self.student.summarize(sums)
    own = {k: v for k, v in sums.items()
           if k not in ("hidden_sum", "attention_sum")}
    own["loss_sum"] = sums["student_loss_sum"]
    out = dict(self.student.summarize(own))
    n = jnp.maximum(sums["tokens"], 1e-9)
    out["distill_loss"] = sums["loss_sum"] / n
    out["kl"] = sums["kl_sum"] / n
    if "augment_kl_sum" in sums:
      out["augment_kl"] = sums["augment_kl_sum"] / n
    for key, name in (("hidden_sum", "hidden_mse"),
                      ("attention_sum", "attention_mse")):
      if key in sums:
        out[name] = sums[key] / n
    return out

  def frozen_inputs(self, mesh, rules, seq_len: int):
    """The teacher's parameters on the run's mesh, by their logical axes."""
    model, cfg = self._teacher_model()
    _, shardings = state_shardings(model, optax.set_to_zero(), mesh, rules,
                                   seq_len)
    dtype = cfg.weight_dtype
    params = jax.tree.map(
        lambda x: np.asarray(x, dtype) if jnp.issubdtype(x.dtype, jnp.floating)
        else x, self.teacher().params)
    return jax.device_put(params, shardings.params), shardings.params

  def start_params(self, params, shardings):
    if not self.config.distill.init_from_teacher_layers:
      return params
    host = jax.device_get(params)
    filled = layer_subset(model_params(host), self.teacher().params)
    if isinstance(host, dict) and EXTRA_KEY in host:
      filled[EXTRA_KEY] = host[EXTRA_KEY]
    return jax.device_put(filled, shardings)

  # --- the contract, the student's ---------------------------------------------

  def check_model(self, model_cfg) -> None:
    self.student.check_model(model_cfg)
    t = self.teacher()
    hidden, attention = self._weights()
    if hidden > 0 or attention > 0:
      for who, cfg in (("student", model_cfg), ("teacher", t.model_cfg)):
        if cfg.arch not in ("transformer", "bert"):
          raise LmError(f"distill.hidden_weight and attention_weight match "
                        f"Transformer blocks, but the {who} is "
                        f"arch={cfg.arch!r}; set both to 0.")
      layer_pairs(model_cfg.num_layers, t.model_cfg.num_layers,
                  self._layer_map())
    width = int(self.config.distill.get("teacher_width", 0) or 0)
    if hidden > 0 and width != t.model_cfg.d_model:
      raise LmError(f"config.distill.teacher_width={width} but the teacher "
                    f"{self.config.distill.teacher} is {t.model_cfg.d_model} "
                    "wide; leave teacher_width at 0 (it is set from the "
                    "teacher).")
    s = self.config.distill
    if float(s.get("augment_prob", 0.0)) > 0:
      if not self.student.token_field:
        raise LmError(f"distill.augment_prob replaces input tokens, but a "
                      f"{self.student.name!r} batch has none; set it to 0.")
      if s.get("augment_replace", "mask") == "mask" and t.mask_id is None:
        raise LmError(f"distill.augment_replace='mask' needs a [MASK] token, "
                      f"but the tokenizer of the teacher {s.teacher} has "
                      "none; set distill.augment_replace='random'.")
    if attention > 0 and model_cfg.num_heads != t.model_cfg.num_heads:
      raise LmError(f"distill.attention_weight matches attention maps head by "
                    f"head, but the student has {model_cfg.num_heads} heads "
                    f"and the teacher {t.model_cfg.num_heads}; give the "
                    "student model.num_heads="
                    f"{t.model_cfg.num_heads} or set it to 0.")
    if t.objective.name != self.student.name:
      raise LmError(f"the teacher {self.config.distill.teacher} is a "
                    f"{t.objective.name!r} run but config.distill.objective "
                    f"is {self.student.name!r}; leave distill.objective empty.")
    if t.model_cfg.position == "learned" and (
        t.model_cfg.max_len < self.config.seq_len):
      raise LmError(f"config.seq_len={self.config.seq_len} exceeds the "
                    f"teacher's {t.model_cfg.max_len} positions; lower it.")

  def build_model(self, model_cfg):
    return self.student.build_model(model_cfg)

  def open_source(self, uri: str, *, train: bool):
    return self.student.open_source(uri, train=train)

  def open_data(self, source, tokenizer, cache_dir: str, max_chars):
    want = self.teacher().record["teacher_tokenizer"]
    if tokenizer.fingerprint() != want:
      raise LmError(f"data.tokenizer.path={tokenizer.path} is not the tokenizer "
                    f"of the teacher {self.config.distill.teacher}; a student "
                    "reads the teacher's ids, so leave data.tokenizer.path "
                    "empty.")
    return self.student.open_data(source, tokenizer, cache_dir, max_chars)

  def train_batches(self, data, process_index: int, process_count: int,
                    data_state: dict | None = None):
    return self.student.train_batches(data, process_index, process_count,
                                      data_state)

  def eval_batches(self, data, batch_size: int, max_batches: int | None):
    return self.student.eval_batches(data, batch_size, max_batches)

  @property
  def data_derived(self) -> tuple[str, ...]:
    return self.student.data_derived

  def data_settings(self) -> dict:
    """The student's, plus the teacher's workdir, step and fingerprint."""
    t = self.teacher().record
    return {**self.student.data_settings(),
            "distill": {k: t[k] for k in ("teacher", "teacher_step",
                                          "teacher_sha256")}}

  def flops_per_token(self, model_cfg, n_params: int) -> float:
    """The student's training FLOPs plus the teacher's forward pass (a third
    of its training FLOPs)."""
    t = self.teacher()
    n_teacher = sum(int(np.size(x)) for x in jax.tree.leaves(t.params))
    return (self.student.flops_per_token(model_cfg, n_params)
            + t.objective.flops_per_token(t.model_cfg, n_teacher) / 3.0)

  def data_record(self, data):
    return self.student.data_record(data)

  def evaluate(self, data, eval_fn, params, mesh, *, batch_size: int,
               max_batches: int | None):
    return self.student.evaluate(data, eval_fn, params, mesh,
                                 batch_size=batch_size, max_batches=max_batches)

  def set_source(self, source) -> None:
    self.student.set_source(source)

  def set_sts(self, uri: str) -> None:
    self.student.set_sts(uri)

  def transduce(self, trained, texts, **kw):
    return self.student.transduce(trained, texts, **kw)

  def embed(self, trained, texts, *, batch_size: int = 64):
    return self.student.embed(trained, texts, batch_size=batch_size)

  def has_pretrained_pooler(self) -> bool:
    return self.student.has_pretrained_pooler()

  def after_training(self, run, params) -> str:
    return self.student.after_training(run, model_params(params))
