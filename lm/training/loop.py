"""The one training loop: data, model, optimizer, checkpoints and metrics.

`train(config, workdir)` knows nothing about a particular objective; it
builds everything from the config, resumes from the latest checkpoint in
`workdir` when there is one, and runs `train_step` until `config.steps`.
Every check that can fail on bad input runs before anything in the workdir
is written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import jax
import ml_collections
import numpy as np

from lm.data import pipeline, tokenizer as tokenizer_lib
from lm.errors import LmError
from lm import files
from lm.models.config import ModelConfig, describe, make_model_config
from lm.models.transformer import count_params
from lm.parallel import sharding as sharding_lib
from lm.parallel.mesh import make_mesh
from lm.training import (experiment, metrics as metrics_lib, optim, step as
                         step_lib, warm_start)
from lm.training.checkpoint import Checkpointer, NonFiniteState
from lm.training.lock import WorkdirLock
from lm.training.objective import Objective
from lm.training.preemption import PreemptionFlag
from lm.training.resume import (WRITE_ERRNOS, check_resume, check_workdir,
                                prior_record, workdir_write_error)
from lm.training.state import init_state, state_shardings
from lm.training.workdir import (load_recorded_tokenizer, own_tokenizer,
                                 read_resolved, stored_objective,
                                 tokenizer_record, write_json_atomic,
                                 write_text_atomic)


class NonFiniteLoss(LmError):
  """The training loss (or a norm, or the state) became NaN or infinite."""


# Step metrics that must stay finite for the state after the step to be
# saved, with how the error names them.
FINITE_METRICS = {"loss": "the training loss", "grad_norm": "the gradient norm",
                  "param_norm": "the parameter norm"}


def resolve_model_config(config, vocab_size: int) -> ModelConfig:
  overrides = experiment.model_overrides(config)
  if "vocab_size" in overrides and overrides["vocab_size"] < vocab_size:
    raise LmError(f"config.model.vocab_size={overrides['vocab_size']} is smaller "
                  f"than the tokenizer's {vocab_size} pieces; remove the override "
                  "or raise it.")
  overrides.setdefault("vocab_size", vocab_size)
  model_cfg = make_model_config(config.model.size, **overrides)
  if model_cfg.position == "learned" and config.seq_len > model_cfg.max_len:
    raise LmError(f"config.seq_len={config.seq_len} exceeds model.max_len="
                  f"{model_cfg.max_len} (the learned position table); lower "
                  "seq_len or raise model.max_len.")
  return model_cfg


@dataclasses.dataclass
class Run:
  """Everything `train` builds before the first step (also used by tests)."""
  config: ml_collections.ConfigDict
  model_cfg: ModelConfig
  model: object            # DecoderLM, LstmLM or BertModel (build_model)
  objective: Objective     # the experiment's (lm.experiments.make_objective)
  tokenizer: tokenizer_lib.Tokenizer
  train_data: object       # the objective's tokenized train corpus
  eval_data: object | None
  mesh: jax.sharding.Mesh
  rules: tuple
  resolved: dict
  prior: dict | None = None   # the config of the checkpoint it resumes


def prepare(config, workdir: str, make_objective,
            lock: WorkdirLock | None = None) -> Run:
  """Validates config and data, builds tokenizer and token streams.

  `make_objective(config, stored=None)` builds the objective the config
  names (`lm.experiments.make_objective`); the engine knows no names.

  Every check that needs no new file runs first, against the workdir's
  newest checkpoint too (model, tokenizer, batch settings); only then is
  `lock` taken (when given) and the workdir written: the tokenizer (trained,
  or copied in so the workdir holds its own) and the tokenized data.
  """
  experiment.validate(config)
  objective = make_objective(config)
  # The run config.init_from names, read once: its objective tells this one
  # what its weights hold (set_source); a fresh run also takes its tokenizer
  # and checks its model below. A resumed run needs neither, so a source
  # that moved since only matters to a fresh run, which reports it.
  source_dir, source_record, source_error = None, None, None
  if config.init_from:
    source_dir = warm_start.split_source(config.init_from)[0]
    try:
      source_record = read_resolved(source_dir)
      objective.set_source(stored_objective(source_record, make_objective))
    except LmError as e:
      source_error = e
  mesh = make_mesh(dict(data=config.mesh.data, fsdp=config.mesh.fsdp,
                        tensor=config.mesh.tensor),
                   dcn=dict(data=config.mesh.dcn_data, fsdp=config.mesh.dcn_fsdp,
                            tensor=config.mesh.dcn_tensor),
                   granule=config.mesh.dcn_granule)
  rules = sharding_lib.logical_rules(config.mesh.rules)
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  micro = config.batch_size // config.grad_accum_steps
  if config.batch_size % shards or micro % shards:
    raise LmError(f"config.batch_size={config.batch_size} (microbatch {micro}) "
                  f"is not divisible by the {shards} batch shards of the mesh "
                  "(data x fsdp); pick a multiple or set config.mesh.data/fsdp "
                  "to sizes that divide it.")
  if config.batch_size % jax.process_count():
    raise LmError(f"config.batch_size={config.batch_size} is not divisible by "
                  f"the {jax.process_count()} processes.")
  if config.eval_batch_size % shards or config.eval_batch_size % jax.process_count():
    raise LmError(f"config.eval_batch_size={config.eval_batch_size} is not "
                  f"divisible by the {shards} batch shards of the mesh (data x "
                  f"fsdp) and the {jax.process_count()} processes; pick a "
                  "multiple, or 0 to evaluate in batches of config.batch_size.")
  train_src = objective.open_source(config.data.train, train=True)
  eval_src = objective.open_source(config.data.eval, train=False)
  # Model errors before anything is written.
  objective.check_model(resolve_model_config(config, vocab_size=1))
  check_workdir(workdir)
  prior = prior_record(workdir, objective)
  tok_cfg, source_run = config.data.tokenizer, None
  if config.init_from and prior is None:
    # The run starts from another run's weights, so it reads that run's
    # tokenizer unless one is named (which must then be the same).
    if source_error is not None:
      raise source_error
    source_run = source_record
  tok = None
  if tok_cfg.path:
    tok = tokenizer_lib.load_tokenizer(files.expand(tok_cfg.path))
  elif source_run is not None:
    tok = load_recorded_tokenizer(source_dir, source_run)
  elif prior is not None:
    tok = load_recorded_tokenizer(workdir, prior)
  elif files.exists(files.join(workdir, "tokenizer.model")):
    tok = tokenizer_lib.Tokenizer.load(files.join(workdir, "tokenizer.model"))
  elif getattr(train_src, "tokenizer_path", None):
    # a pre-tokenized corpus carries the tokenizer that made it
    tok = tokenizer_lib.load_tokenizer(train_src.tokenizer_path)
  if tok is not None:
    tok = tokenizer_lib._check_specials(tok, objective.bert_specials,  # pylint: disable=protected-access
                                        objective.control_symbols)
    for src in (train_src, eval_src):   # pre-tokenized data: the same ids
      check = getattr(src, "check_tokenizer", None)
      if check is not None:
        check(tok)
    model_cfg = resolve_model_config(config, tok.vocab_size)
    if source_run is not None:
      if tok.fingerprint() != source_run["tokenizer"]["sha256"]:
        raise LmError(f"data.tokenizer.path={tok.path} is not the tokenizer of "
                      f"config.init_from={config.init_from}; leave "
                      "data.tokenizer.path empty to use that run's.")
      warm_start.check_model(source_run["model"], model_cfg, config.init_from)
    if prior is not None:
      check_resume(prior, _resolved(config, model_cfg, tok, objective, None),
                   workdir, skip=objective.data_derived)
  # -- from here on the workdir is written --------------------------------
  try:
    files.makedirs(workdir)
    if lock is not None:
      lock.acquire()
    if tok is None:
      tok = tokenizer_lib.load_or_train(
          tok_cfg, workdir, train_src, bert_specials=objective.bert_specials,
          control_symbols=objective.control_symbols)
      model_cfg = resolve_model_config(config, tok.vocab_size)
    else:
      tok = own_tokenizer(tok, workdir)
    max_chars = config.data.max_chars or None
    cache = files.join(workdir, "data")
    train_data = objective.open_data(train_src, tok, cache, max_chars)
    eval_data = (objective.open_data(eval_src, tok, cache, max_chars)
                 if eval_src is not None else None)
  except OSError as e:
    if e.errno not in WRITE_ERRNOS:
      raise
    raise workdir_write_error(workdir, e) from None
  resolved = _resolved(config, model_cfg, tok, objective, train_data, workdir)
  if prior is not None:
    check_resume(prior, resolved, workdir)
  return Run(config, model_cfg, objective.build_model(model_cfg), objective, tok,
             train_data, eval_data, mesh, rules, resolved, prior)


def _resolved(config, model_cfg, tok, objective, train_data,
              workdir: str | None = None) -> dict:
  """What `config.json` and every checkpoint record of the run."""
  batch = dict(objective.data_settings())
  if train_data is not None:
    batch.update(objective.data_record(train_data)[0])
  return {
      "config": json.loads(config.to_json_best_effort()),
      "model": dataclasses.asdict(model_cfg),
      "tokenizer": tokenizer_record(tok, workdir),
      "batch": batch,
  }


def make_run_optimizer(run: Run):
  """`optim.make_optimizer` for the run's config, objective and model."""
  return optim.make_optimizer(
      run.config.optimizer, run.config.steps,
      backbone_path=tuple(run.objective.backbone_path),
      num_layers=run.model_cfg.num_layers)


def count_key(objective) -> str:
  """What an objective's batch sums count, the name of that metric:
  "tokens" unless the objective says otherwise (`count_key`: "examples"
  for classification, "windows" for QA rows)."""
  return objective.count_key


def evaluate(run: Run, eval_fn, params, max_batches: int | None) -> dict:
  """The objective's metrics over `max_batches` eval batches (of
  `config.eval_batch_size` rows, or `config.batch_size`), as `eval_*`."""
  if run.eval_data is None:
    return {}
  return evaluate_data(run.objective, run.eval_data, eval_fn, params, run.mesh,
                       batch_size=eval_batch_size(run.config),
                       max_batches=max_batches)


def eval_batch_size(config) -> int:
  """Rows per eval batch: `config.eval_batch_size`, or `config.batch_size`
  when it is 0 (or absent, in configs stored before it existed)."""
  return int(config.get("eval_batch_size", 0) or config.batch_size)


def evaluate_data(objective, data, eval_fn, params, mesh, *, batch_size: int,
                  max_batches: int | None) -> dict:
  """Runs `eval_fn` (a jitted eval step) over the objective's eval batches.

  Every host reads its rows of each global batch; the per-batch sums are
  added up on the host and turned into metrics by `objective.summarize`.
  Returns `{"eval_<metric>": value}` with what was evaluated:
  `eval_<count_key>` (the counted tokens, or examples) and `eval_batches`
  (the eval steps run). An objective with metrics beyond batch sums
  (retrieval) computes them in its own `evaluate` with the same arguments.
  """
  counted = _Counted(eval_fn)
  out = objective.evaluate(data, counted, params, mesh,
                           batch_size=batch_size, max_batches=max_batches)
  if out is not None:      # the objective's own metrics
    return {**out, "eval_batches": float(counted.calls)} if out else out
  totals, _ = step_lib.eval_totals(
      counted, params, mesh,
      objective.eval_batches(data, batch_size, max_batches))
  if totals is None:
    return {}
  summary = {k: float(v) for k, v in objective.summarize(totals).items()}
  key = count_key(objective)
  return {**{f"eval_{k}": v for k, v in summary.items()},
          f"eval_{key}": float(totals[key]),
          "eval_batches": float(counted.calls)}


class _Counted:
  """`eval_fn` that counts its calls (the eval batches run)."""

  def __init__(self, fn):
    self.fn, self.calls = fn, 0

  def __call__(self, *args):
    self.calls += 1
    return self.fn(*args)


def extra_params(run):
  """`rng -> the objective's extra_params` for the train state."""
  return lambda rng: run.objective.extra_params(run.model_cfg, rng)


def evaluate_untrained(config, workdir: str, make_objective) -> dict:
  """The eval metrics of the model as `config.seed` initialises it: the
  baseline that training is measured against (nothing is trained)."""
  run = prepare(config, workdir, make_objective)
  tx, schedule = make_run_optimizer(run)
  state, _, shardings = init_state(run.model, tx, run.mesh, run.rules,
                                   config.seed, config.seq_len,
                                   extra=extra_params(run))
  _, eval_fn = step_lib.jit_steps(run.model, run.objective.loss, tx, schedule,
                                  config.seed, run.mesh, run.rules, shardings,
                                  summarize=run.objective.summarize)
  return evaluate(run, eval_fn, state.params, None)


def _best(objective) -> tuple[str, str]:
  return objective.best_metric


class SaveFailed(LmError):
  """Writing a checkpoint failed (a full disk, a lost mount)."""


def _save_failed(workdir: str, step: int, error: BaseException,
                 intact: int | None) -> SaveFailed:
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  why = lines[0][:200] if lines else type(error).__name__
  for hint in ("No space left on device", "RESOURCE_EXHAUSTED",
               "Read-only file system", "Permission denied"):
    if hint in str(error):
      why = hint
      break
  kept = (f"checkpoint {intact} is intact" if intact is not None
          else "no checkpoint was written yet")
  return SaveFailed(f"writing checkpoint {step} to {workdir}/checkpoints failed "
                    f"({why}); {kept}: free space or fix the file system, then "
                    "re-run the same command to resume.")


def train(config: ml_collections.ConfigDict, workdir: str, make_objective,
          preempted: "PreemptionFlag | None" = None) -> dict:
  """Trains (or resumes) the experiment in `workdir`; returns final metrics.

  `make_objective(config, stored=None)` builds the objective
  (`lm.experiments.train` passes the registry's).

  `preempted` (default: a SIGTERM handler installed now) asks the run to
  stop: before the first step it stops without saving anything, later it
  saves the step it reached."""
  preempted = preempted or PreemptionFlag()
  lock = WorkdirLock(workdir)
  try:
    return _train(config, workdir, make_objective, preempted, lock)
  except OSError as e:
    if e.errno not in WRITE_ERRNOS:
      raise
    raise workdir_write_error(workdir, e) from None
  finally:
    preempted.restore()
    lock.release()


def _train(config, workdir: str, make_objective, preempted, lock) -> dict:
  run = prepare(config, workdir, make_objective, lock=lock)
  c, mesh, rules = run.config, run.mesh, run.rules
  is_main = jax.process_index() == 0
  tx, schedule = make_run_optimizer(run)
  best_metric, best_mode = _best(run.objective)
  say_main = (lambda m: print(m, flush=True)) if is_main else (lambda _: None)
  warn = lambda m: say_main(f"warning: {m}")

  ckpt = Checkpointer(workdir, keep=c.keep_checkpoints,
                      async_save=c.async_checkpoints, best_metric=best_metric,
                      best_mode=best_mode)
  abstract, shardings = state_shardings(run.model, tx, mesh, rules, c.seq_len,
                                        extra_params(run))
  found = ckpt.restore_newest(
      abstract, shardings, say=warn,
      check_config=lambda stored: check_resume(stored, run.resolved, workdir))
  if found is not None:
    latest, state, data_state = found
    start = int(jax.device_get(state.step))
    if int(data_state.get("step", start)) != start:
      raise LmError(f"checkpoint {latest} in {workdir} stores data position "
                    f"{data_state.get('step')} but state step {start}; the "
                    "checkpoint is inconsistent, move that step directory aside.")
  else:
    latest, data_state = None, None
    if preempted.signalled:
      ckpt.close()
      return _stopped_before_start(workdir, None, say_main)
    state, _, _ = init_state(run.model, tx, mesh, rules, c.seed, c.seq_len,
                             shardings=shardings, extra=extra_params(run))
    start = 0
    if c.init_from:
      state = state.replace(params=warm_start.start_from(
          c.init_from, state.params, shardings.params, run.objective,
          make_objective))
      say_main(f"warm start: the backbone comes from {c.init_from}")
    state = state.replace(params=run.objective.start_params(
        state.params, shardings.params))
  if is_main:
    write_json_atomic(files.join(workdir, "config.json"), run.resolved)
  if start >= c.steps:
    ckpt.close()
    final = metrics_lib.final_metrics(workdir, start)
    say_main(f"{workdir} is already trained to step {start} "
             f"(config.steps={c.steps}); nothing to do. Raise config.steps to "
             "train further.")
    return {**final, "step": start}

  n_params = count_params(state.params)
  objective = run.objective
  fpt = objective.flops_per_token(run.model_cfg, n_params)
  peak = c.peak_tflops * 1e12 or _measured_peak()
  count = count_key(objective)

  train_fn, eval_fn = step_lib.jit_steps(
      run.model, objective.loss, tx, schedule, c.seed, mesh, rules, shardings,
      accum_steps=c.grad_accum_steps, summarize=objective.summarize,
      count=count, frozen=objective.frozen_inputs(mesh, rules, c.seq_len))
  batches = objective.train_batches(
      run.train_data, jax.process_index(), jax.process_count(),
      data_state=data_state)
  bsharding = sharding_lib.batch_sharding(mesh)
  if preempted.signalled:
    ckpt.close()
    return _stopped_before_start(workdir, latest, say_main)
  writer = (metrics_lib.MetricsWriter(
      workdir, start, config=json.loads(c.to_json_best_effort()),
      wandb=c.wandb.to_dict()) if is_main else None)
  bar = metrics_lib.ProgressBar(c.steps, start, enabled=c.progress_bar,
                               quiet=not is_main)
  say = bar.message if is_main else (lambda _: None)
  mfu = metrics_lib.MfuMeter(peak, measured=not c.peak_tflops,
                             warn=lambda m: say(f"warning: {m}"))
  say(f"model {c.model.size} ({describe(run.model_cfg)}): {n_params:,} "
      "parameters, vocab "
      f"{run.model_cfg.vocab_size}, mesh {dict(mesh.shape)}; "
      f"{'resuming at step ' + str(start) if start else 'starting'}; "
      f"train corpus {objective.data_record(run.train_data)[1]}")

  if is_main and start == 0:
    lines = sharding_lib.describe(shardings.params, abstract.params)
    write_text_atomic(files.join(workdir, "sharding.txt"),
                      "\n".join(lines) + "\n")
    say(f"parameter shardings ({len(lines)} arrays) written to "
        f"{files.join(workdir, 'sharding.txt')}")

  stop_now = False
  finished = False  # the loop reached its end without an error
  report = ""       # what the objective prints when training ends
  pending = []     # (step, device metrics) since the last log
  last = {}
  tokens_per_step = c.batch_size * c.seq_len
  timed_tokens = 0   # positions the timed steps ran (trimmed batches: fewer)
  clock, clock_step, paused = None, start, 0.0   # paused: eval and saves
  bar_step = start
  saving = None    # the step whose save may still be in flight

  def committed() -> int | None:
    """The newest checkpoint known to be on disk (waits for a pending save)."""
    nonlocal saving
    if saving is not None:
      try:
        ckpt.wait()
      except Exception as e:  # pylint: disable=broad-except
        step, saving = saving, None
        ckpt.manager.reload()
        raise _save_failed(workdir, step, e, ckpt.latest_step()) from None
      saving = None
    return ckpt.latest_step()

  def nonfinite(what: str, step: int) -> NonFiniteLoss:
    good = committed()
    again = (f"checkpoint {good} is the last good one; lower optimizer.lr or "
             "set optimizer.clip_norm and re-run to resume from it"
             if good is not None else
             "no checkpoint was saved; lower optimizer.lr or set "
             "optimizer.clip_norm and re-run to start over")
    return NonFiniteLoss(f"{what} at step {step}; stopped without saving it "
                         f"({again}).")

  def check_finite():
    """Every step since the last check had a finite loss, gradient norm and
    parameter norm (an overflowing norm means parameters beyond ~1e19: a
    state no sane learning rate recovers from)."""
    values = jax.device_get([{k: m[k] for k in FINITE_METRICS if k in m}
                             for _, m in pending])
    for (s, _), vals in zip(pending, values):
      for key, what in FINITE_METRICS.items():
        value = float(vals.get(key, 0.0))
        if not math.isfinite(value):
          raise nonfinite(f"{what} became {value}", s + 1)

  try:
    for s in range(start, c.steps):
      batch = pipeline.to_global(batches.batch(s), bsharding)
      state, m = train_fn(state, batch)
      pending.append((s, m))
      done = s + 1
      if clock is None:       # exclude the first step's compile from timings
        jax.block_until_ready(m)
        clock, clock_step = time.perf_counter(), done
      else:
        tokens = batch.get("tokens")   # fine-tuning rows, maybe trimmed
        timed_tokens += (c.batch_size * min(tokens.shape[1], c.seq_len)
                         if tokens is not None and tokens.ndim == 2
                         else tokens_per_step)
      stop_now = preempted.reached(ckpt, done)
      log_now = done % c.log_every == 0 or done == c.steps or stop_now
      eval_now = done % c.eval_every == 0 or done == c.steps
      save_now = done % c.checkpoint_every == 0 or done == c.steps or stop_now
      if log_now or save_now:
        check_finite()
      if log_now:
        vals = jax.device_get([m for _, m in pending])
        now = time.perf_counter()
        steps_timed = done - clock_step
        busy = now - clock - paused
        tps = timed_tokens / busy if steps_timed else 0.0
        last = {k: float(np.mean([v[k] for v in vals])) for k in vals[-1]}
        last["learning_rate"] = float(vals[-1]["learning_rate"])
        last.update(tokens_per_second=tps, epoch=batches.epoch(done))
        ratio = mfu(fpt * tps)
        if ratio is not None:
          last["mfu"] = ratio
        if writer:
          writer.write(done, last)
        bar.update(done, done - bar_step, last)
        bar_step = done
        clock, clock_step, paused = now, done, 0.0
        timed_tokens = 0
      if log_now or save_now:
        pending = []
      eval_metrics = {}
      if eval_now and run.eval_data is not None:
        eval_start = time.perf_counter()
        eval_metrics = evaluate(run, eval_fn, state.params, c.eval_steps or None)
        last.update(eval_metrics)
        if writer:
          writer.write(done, eval_metrics)
        say(metrics_lib.eval_line(done, eval_metrics, count, c.eval_steps))
        if clock is not None:
          paused += time.perf_counter() - eval_start
      if save_now:
        save_start = time.perf_counter()
        intact = committed()
        try:
          ckpt.save(done, state, batches.state(done), run.resolved,
                    metrics=eval_metrics, force=stop_now)
        except NonFiniteState:
          raise nonfinite("the parameters or optimizer state became "
                          "non-finite", done) from None
        except Exception as e:  # pylint: disable=broad-except
          ckpt.manager.reload()
          raise _save_failed(workdir, done, e, intact) from None
        saving = done
        if writer:
          writer.flush()    # an object-store workdir uploads its rows here
        if clock is not None:
          paused += time.perf_counter() - save_start
      if stop_now:
        break
    committed()
    finished = True
    if not stop_now and is_main:
      report = run.objective.after_training(run, state.params)
      if report:
        writer.text("sample", report, done)
  finally:
    bar.close()
    close = getattr(batches, "close", None)   # streamed input's workers
    if close is not None:
      close()
    try:
      ckpt.wait()
    except Exception:  # pylint: disable=broad-except
      pass           # reported above, or by the error being raised
    if writer:
      writer.close(last if finished and not stop_now else None)
  ckpt.close()

  if stop_now:
    say(f"preempted: saved checkpoint {done} in {ckpt.directory}; re-run "
        "the same command to resume")
    last.update(step=done, preempted=True)
    return last
  if report:
    print(report, flush=True)
  last["step"] = int(c.steps)
  return last


def _stopped_before_start(workdir: str, latest: int | None, say) -> dict:
  kept = (f"checkpoint {latest} is unchanged" if latest is not None
          else "nothing was saved")
  say(f"stopped by SIGTERM before the first step; {kept}. Re-run the same "
      f"command to {'resume' if latest is not None else 'start'} the run in "
      f"{workdir}.")
  return {"preempted": True, "step": latest or 0, "before_start": True}


def _measured_peak() -> float:
  peak = metrics_lib.measure_matmul_peak()
  if jax.devices()[0].platform != "cpu":   # simulated CPU devices share cores
    peak *= len(jax.devices())
  return peak
