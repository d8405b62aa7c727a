"""Orbax checkpoints: train state, data position and resolved config together,
verified on every read.

Layout: `WORKDIR/checkpoints/<step>/{state,data,config,digest}`. Saves are
async; the manager keeps the latest `keep` steps plus the best one by an eval
metric (eval loss for pretraining, the task's main metric for fine-tuning).
Restores take the target shardings, so a checkpoint lands on whatever mesh
the current run uses.

Every checkpoint carries a digest of what it stores (`lm.training.digest`:
two 32-bit sums per array, sha256 of the two JSON items), written in the same
atomic Orbax commit. A save refuses a state with a non-finite array
(`NonFiniteState`), so no checkpoint ever holds NaN weights. A restore
recomputes the digest of what it read; a checkpoint that cannot be read or
does not match is `DamagedCheckpoint`. `restore_newest` walks the steps from
the newest down, says which damaged ones it skips and (for the writing run)
moves them to `WORKDIR/damaged_checkpoints/` rather than deleting them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import warnings
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

from lm import files
from lm.errors import LmError
from lm.training import digest as digest_lib

DAMAGED_DIR = "damaged_checkpoints"


class NonFiniteState(LmError):
  """The state to save holds NaN or infinite values; nothing was written."""


class DamagedCheckpoint(Exception):
  """A checkpoint that cannot be read or fails verification (`.reason`)."""

  def __init__(self, step: int, reason: str):
    super().__init__(f"checkpoint {step}: {reason}")
    self.step, self.reason = step, reason


def json_sha256(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _first_line(exc: BaseException, limit: int = 160) -> str:
  lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
  line = lines[0] if lines else type(exc).__name__
  line = line.split(" See full TensorStore details")[0]
  return line if len(line) <= limit else line[:limit - 3] + "..."


def _quiet_abandoned_reads() -> None:
  """After a failed read, TensorStore still completes the other reads of
  that restore and reports each one to the event loop Orbax has already
  closed, which Python prints as an unraisable `RuntimeError: Event loop is
  closed` traceback, or drops Orbax's read coroutines with their errors
  unretrieved ("Exception ignored in <coroutine ...>"). Those reads belong
  to a checkpoint already reported as damaged, so the hook drops exactly
  those and passes on the rest."""
  previous = sys.unraisablehook
  if getattr(previous, "_lm_quiet", False):
    return

  def hook(unraisable):
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
      return
    code = getattr(unraisable.object, "cr_code", None)   # an abandoned read
    if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
      return
    previous(unraisable)

  hook._lm_quiet = True  # pylint: disable=protected-access
  sys.unraisablehook = hook
  # The same abandoned reads, when their task is collected before it is
  # awaited, reach asyncio's exception handler, which logs "Task exception
  # was never retrieved" with the TensorStore error: dropped likewise.
  # A read coroutine that never started is reported as never awaited.
  warnings.filterwarnings("ignore", category=RuntimeWarning,
                          message=r"coroutine '_read\w*' was never awaited")
  asyncio_logger = logging.getLogger("asyncio")
  if not any(isinstance(f, _WithoutAbandonedReads)
             for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_WithoutAbandonedReads())


# Directories of checkpoints already reported as damaged in this process.
_DAMAGED_DIRS: set[str] = set()


class _WithoutAbandonedReads(logging.Filter):
  """Drops asyncio's records of unretrieved read errors of a damaged
  checkpoint ("Task exception was never retrieved", "_GatheringFuture ...",
  "Future ..."): the exception was raised inside an Orbax module, or it is
  TensorStore's own error (with its spec, or naming a checkpoint already
  reported damaged)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if "exception was never retrieved" not in str(record.msg):
      return True
    exc = record.exc_info[1] if record.exc_info else None
    if exc is None:
      return True
    text = str(exc)
    return not (_raised_in_orbax(exc) or "tensorstore_spec=" in text
                or any(d in text for d in _DAMAGED_DIRS))


def _raised_in_orbax(exc: BaseException | None) -> bool:
  marker = f"{os.sep}orbax{os.sep}"
  seen = 0
  while exc is not None and seen < 8:
    tb = exc.__traceback__
    while tb is not None:
      if marker in tb.tb_frame.f_code.co_filename:
        return True
      tb = tb.tb_next
    exc, seen = exc.__cause__ or exc.__context__, seen + 1
  return False


class _WithoutOrbaxRecords(logging.Filter):
  """Drops the log records of Orbax's own modules.

  A save or restore that fails reaches the caller as an exception, which the
  loop and the entry points turn into one sentence. Orbax also logs each
  failure, with its traceback, from every background thread it touches (and
  again at exit for the writes still in flight), so its records would repeat
  that sentence as pages of tracebacks."""

  def filter(self, record: logging.LogRecord) -> bool:
    return f"{os.sep}orbax{os.sep}" not in (record.pathname or "")


def _quiet_orbax_logs() -> None:
  """Orbax logs through absl's logger: filter it once per process."""
  absl_logger = logging.getLogger("absl")
  if not any(isinstance(f, _WithoutOrbaxRecords) for f in absl_logger.filters):
    absl_logger.addFilter(_WithoutOrbaxRecords())


def _agree(ok: bool) -> bool:
  """True when `ok` holds on every process (all processes take the same
  branch, so a damaged shard on one host cannot split a run)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.array([int(ok)], np.int32))
  return bool(np.all(flags))


def _tree_paths(tree) -> set[str]:
  is_leaf = lambda x: hasattr(x, "shape") and hasattr(x, "dtype")
  return {digest_lib.path_name(p) for p, _ in
          jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]}


class _Manager(ocp.CheckpointManager):
  """Orbax's manager, except that a step whose metrics file does not parse
  is kept without a rank (with one warning) instead of failing to open the
  whole directory: the metrics only order checkpoints, the digest guards the
  state."""

  _warned: set = set()

  def _get_metrics(self, step: int):
    try:
      return super()._get_metrics(step)
    except Exception as e:  # pylint: disable=broad-except
      key = (str(self.directory), step)
      if key in self._warned:
        return None
      self._warned.add(key)
      print(f"warning: the eval metrics of checkpoint {self.directory}/{step} "
            f"are unreadable ({_first_line(e)}); it is not ranked as best.",
            file=sys.stderr, flush=True)
      return None


class Checkpointer:
  """Checkpoints of one workdir.

  Keeps the latest `keep` steps plus the best one by `best_metric` (an
  eval metric name such as "eval_loss" or "eval_accuracy"; `best_mode`
  "min" or "max"). `read_only` opens the checkpoints of another run
  (sampling, evaluation, `init_from`): nothing is created, saved or moved.
  """

  def __init__(self, workdir: str, *, keep: int = 2, async_save: bool = True,
               best_metric: str = "eval_loss", best_mode: str = "min",
               read_only: bool = False):
    _quiet_abandoned_reads()
    _quiet_orbax_logs()
    self.workdir = files.abspath(workdir)
    self.directory = files.join(self.workdir, "checkpoints")
    self.best_metric, self.best_mode = best_metric, best_mode
    self.read_only = read_only
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=keep),
        ocp.checkpoint_managers.BestN(
            get_metric_fn=lambda m: m[best_metric],
            reverse=best_mode == "min", n=1,
            keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=None if read_only else policy,
        enable_async_checkpointing=async_save,
        # best_fn makes Orbax write each step's metrics, so the best step is
        # still known after a restart; retention is the policy above.
        best_fn=lambda m: m[best_metric], best_mode=best_mode,
        create=not read_only, read_only=read_only,
        # a save interrupted by kill -9 or a full disk leaves a temporary
        # directory; the next writer removes it.
        cleanup_tmp_directories=not read_only)
    if read_only and not files.isdir(self.directory):
      raise LmError(f"{self.workdir} has no checkpoints yet; let training "
                    "reach its first checkpoint_every step.")
    self.manager = _Manager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": ocp.JsonCheckpointHandler(),
                       "config": ocp.JsonCheckpointHandler(),
                       "digest": ocp.JsonCheckpointHandler()})

  # -- listing --------------------------------------------------------------

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def best_step(self) -> int | None:
    """The kept step with the best `best_metric` (None if none has it)."""
    scored = []
    for step in self.manager.all_steps():
      try:
        m = self.manager.metrics(step)
      except Exception:  # pylint: disable=broad-except
        m = None          # unreadable metrics only lose the ranking
      if m and self.best_metric in m:
        value = float(m[self.best_metric])
        scored.append((value if self.best_mode == "min" else -value, step))
    return min(scored)[1] if scored else None

  # -- saving ---------------------------------------------------------------

  def save(self, step: int, state, data_state: dict, config: dict,
           metrics: dict | None = None, force: bool = False) -> bool:
    """Saves `step` with its digest; `metrics` (eval metrics of this step,
    or None) rank it for the best-checkpoint policy when they hold
    `best_metric`. Raises `NonFiniteState` (writing nothing) when an array
    of `state` holds NaN or infinity."""
    digest = digest_lib.state_digest(state)
    if not digest["finite"]:
      raise NonFiniteState(f"the state at step {step} holds non-finite values; "
                           "it was not saved.")
    record = {"format": 1, "state": digest["sums"],
              "data": json_sha256(data_state), "config": json_sha256(config)}
    metrics = ({k: float(v) for k, v in metrics.items()}
               if metrics and self.best_metric in metrics else None)
    return self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config),
            digest=ocp.args.JsonSave(record)),
        metrics=metrics, force=force)

  # -- reading --------------------------------------------------------------

  def _read_json(self, step: int, *names: str) -> dict:
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(
          **{n: ocp.args.JsonRestore() for n in names}))
      values = {n: out[n] for n in names}
    except Exception as e:  # pylint: disable=broad-except
      raise DamagedCheckpoint(step, f"cannot read it ({_first_line(e)})") from None
    for n, v in values.items():
      if not isinstance(v, dict):
        raise DamagedCheckpoint(step, f"its {n} item is not a JSON object")
    return values

  def read_config(self, step: int) -> dict:
    """The resolved config stored with `step`, checked against its digest
    (no arrays are read); `DamagedCheckpoint` when it does not match."""
    items = self._read_json(step, "config", "digest")
    if items["digest"].get("config") != json_sha256(items["config"]):
      raise DamagedCheckpoint(step, "its config does not match its checksum")
    return items["config"]

  def _check_tree(self, step: int, abstract_state) -> None:
    try:
      stored = self.manager.item_metadata(step)["state"]
      stored_paths = _tree_paths(stored)
    except Exception as e:  # pylint: disable=broad-except
      raise DamagedCheckpoint(step, f"cannot read its metadata ({_first_line(e)})"
                              ) from None
    wanted = _tree_paths(abstract_state)
    if stored_paths == wanted:
      return
    params = lambda paths: {p for p in paths if p.startswith("params/")}
    where = f"{self.directory}/{step}"
    if params(stored_paths) != params(wanted):
      missing = sorted(params(wanted) - params(stored_paths))
      extra = sorted(params(stored_paths) - params(wanted))
      name = (missing or extra)[0]
      raise LmError(f"checkpoint {where} does not match the model being built "
                    f"(parameter {name} is {'missing there' if missing else 'not in this model'}); "
                    "use a new --workdir or the config that wrote it.")
    raise LmError(f"checkpoint {where} was written with other optimizer settings "
                  "(its optimizer state has another structure); resume with the "
                  "original optimizer config, or continue from its weights with a "
                  f"fresh optimizer in a new workdir: --workdir NEW "
                  f"--config.init_from={where}")

  def restore(self, step: int, abstract_state, shardings) -> tuple[Any, dict]:
    """(state, data_state) for `step`, placed with `shardings` and verified
    against the step's digest. Raises `DamagedCheckpoint` when it cannot be
    read or does not verify, `LmError` when it is intact but of another
    model or optimizer."""
    items = self._read_json(step, "data", "digest")
    record = items["digest"]
    if record.get("data") != json_sha256(items["data"]):
      raise DamagedCheckpoint(step, "its data position does not match its checksum")
    target = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        abstract_state, shardings)
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))
    except Exception as e:  # pylint: disable=broad-except
      # Another model or optimizer is a refusal (LmError) and unreadable
      # metadata is damage; only the metadata check tells them apart, so it
      # runs when the restore fails, not on every restore.
      self._check_tree(step, abstract_state)
      _DAMAGED_DIRS.add(files.join(self.directory, str(step)) + "/")
      raise DamagedCheckpoint(step, f"cannot read its arrays ({_first_line(e)})"
                              ) from None
    state = out["state"]
    try:
      sums = digest_lib.state_digest(state)["sums"]
    except Exception as e:  # pylint: disable=broad-except
      raise DamagedCheckpoint(step, f"cannot read its arrays ({_first_line(e)})"
                              ) from None
    if sums != record.get("state"):
      bad = sorted(k for k in set(sums) | set(record.get("state") or {})
                   if sums.get(k) != (record.get("state") or {}).get(k))
      raise DamagedCheckpoint(step, f"array {bad[0] if bad else '?'} does not "
                              "match its checksum")
    return state, items["data"]

  def restore_newest(self, abstract_state, shardings, *,
                     check_config: Callable[[dict], None] | None = None,
                     steps: list[int] | None = None,
                     say: Callable[[str], None] | None = None,
                     ) -> tuple[int, Any, dict] | None:
    """`(step, state, data_state)` of the newest intact checkpoint among
    `steps` (default: all, newest first), or None when there are none.

    `check_config(config)` may raise LmError for an intact checkpoint that
    this run must not resume (another model, tokenizer or batch layout):
    that stops the search. A damaged checkpoint is reported with `say` (one
    warning naming it and the step it falls back to) and, unless read-only,
    moved to `WORKDIR/damaged_checkpoints/`. With no intact one left, one
    LmError sentence.
    """
    say = say or (lambda m: print(f"warning: {m}", file=sys.stderr, flush=True))
    candidates = sorted(self.all_steps() if steps is None else steps,
                        reverse=True)
    if not candidates:
      return None
    damaged: list[DamagedCheckpoint] = []
    for i, step in enumerate(candidates):
      err = None
      try:
        config = self.read_config(step)
      except DamagedCheckpoint as e:
        err = e
      if not _agree(err is None):
        err = err or DamagedCheckpoint(step, "another process cannot read it")
      if err is None:
        if check_config is not None:
          check_config(config)
        try:
          state, data = self.restore(step, abstract_state, shardings)
        except DamagedCheckpoint as e:
          err = e
        if not _agree(err is None):
          err = err or DamagedCheckpoint(step, "another process cannot read it")
      if err is None:
        if damaged and not self.read_only:
          for d in damaged:
            self.move_aside(d.step)
        return step, state, data
      damaged.append(err)
      following = candidates[i + 1] if i + 1 < len(candidates) else None
      where = (f"moving it to {files.join(self.workdir, DAMAGED_DIR)}/ and "
               if not self.read_only else "")
      say(f"checkpoint {self.directory}/{step} is damaged ({err.reason}); "
          + (f"{where}falling back to checkpoint {following}"
             if following is not None else "no older checkpoint is left"))
    listed = ", ".join(f"{d.step} ({d.reason})" for d in damaged)
    raise LmError(f"no intact checkpoint in {self.directory}: {listed}; restore "
                  "the files from a copy, or move the checkpoints directory "
                  "aside to start the run over.")

  def move_aside(self, step: int) -> str:
    """Moves `step`'s directory to `WORKDIR/damaged_checkpoints/<step>`
    (`<step>.2`, ... when taken) and forgets it; returns the new path."""
    target_dir = files.join(self.workdir, DAMAGED_DIR)
    if jax.process_index() == 0:
      files.makedirs(target_dir)
      target, n = files.join(target_dir, str(step)), 1
      while files.exists(target):
        n += 1
        target = files.join(target_dir, f"{step}.{n}")
      files.move(files.join(self.directory, str(step)), target)
    else:
      target = files.join(target_dir, str(step))
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"lm-move-aside-{step}")
    self.manager.reload()
    return target

  def restore_unsharded(self, step: int) -> tuple[Any, dict]:
    """(state tree, data_state) onto this process's first device, whatever
    mesh or process count wrote it, verified: for tools and tests."""
    try:
      meta = self.manager.item_metadata(step)["state"]
    except Exception as e:  # pylint: disable=broad-except
      raise DamagedCheckpoint(step, f"cannot read its metadata ({_first_line(e)})"
                              ) from None
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    is_leaf = lambda m: hasattr(m, "shape") and hasattr(m, "dtype")
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
                            meta, is_leaf=is_leaf)
    shardings = jax.tree.map(lambda _: device, abstract)
    return self.restore(step, abstract, shardings)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
