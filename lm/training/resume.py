"""Checks that a workdir can hold this run, before anything is written.

`check_workdir` (the path itself), `prior_record` (the config of the newest
checkpoint whose config verifies, read-only), `check_resume` (that checkpoint
is this run's: model, tokenizer, tokenizer settings, batch layout), and the
one sentence for a write the file system refuses.
"""

from __future__ import annotations

import errno
import os

from lm import files
from lm.errors import LmError
from lm.models.config import recorded_model
from lm.training.checkpoint import Checkpointer, DamagedCheckpoint


def check_resume(stored: dict, resolved: dict, workdir: str,
                 skip: tuple[str, ...] = ()) -> None:
  """LmError when the checkpoint config `stored` is not this run's.

  `resolved` may lack the objective's data record (the `batch.train_*`
  keys of `Objective.data_record`, checked once the data is read); `skip`
  names batch settings left out for the same reason (`data_derived`)."""
  if stored.get("tokenizer", {}).get("sha256") != resolved["tokenizer"]["sha256"]:
    raise LmError(f"{workdir} holds a checkpoint trained with a different "
                  "tokenizer; use a new --workdir or drop data.tokenizer.path.")
  # fields added since the checkpoint was written take their defaults
  old = recorded_model(stored.get("model", {}))
  new = resolved["model"]
  diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
  if diff:
    k = diff[0]
    hint = (" (data.tokenizer.vocab_size or the tokenizer changed)"
            if k == "vocab_size" else "")
    raise LmError(f"{workdir} holds a checkpoint of a different model "
                  f"(model.{k} is {old.get(k)!r} there, {new.get(k)!r} now{hint}); "
                  "use a new --workdir or the config that wrote it.")
  old_tok = stored.get("config", {}).get("data", {}).get("tokenizer", {})
  new_tok = resolved["config"]["data"]["tokenizer"]
  if not new_tok.get("path") and old_tok and not old_tok.get("path"):
    for key in ("vocab_size", "model_type", "byte_fallback"):
      if key in old_tok and old_tok.get(key) != new_tok.get(key):
        raise LmError(f"{workdir} holds a checkpoint whose tokenizer was "
                      f"trained with data.tokenizer.{key}={old_tok[key]!r}, "
                      f"but the config now sets {new_tok.get(key)!r}; use a "
                      "new --workdir or the original setting.")
  old_batch = dict(stored.get("batch", {}))
  new_batch = dict(resolved["batch"])
  for key in list(old_batch):
    if key.startswith("train_") and key not in new_batch:
      old_batch.pop(key)
  for key in skip:
    old_batch.pop(key, None)
    new_batch.pop(key, None)
  if old_batch != new_batch:
    raise LmError(f"{workdir} holds a checkpoint with batch/data settings "
                  f"{old_batch} but the config now gives "
                  f"{new_batch}; resuming would not see the same "
                  "batches, so use a new --workdir or the original settings.")


def check_workdir(workdir: str) -> None:
  """LmError when `workdir` cannot be a run directory (read-only check);
  for a URI, also when its bucket cannot be reached."""
  if files.is_uri(workdir):
    files.check_bucket(workdir, "--workdir")
    if files.isfile(workdir):
      raise LmError(f"--workdir {workdir} is an object, not a directory; "
                    "pass a prefix under which the run's files can go.")
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise LmError(f"--workdir {workdir} is a file, not a directory; pass a "
                  "directory (it is created when missing).")
  parent = os.path.dirname(os.path.abspath(workdir))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise LmError(f"--workdir {workdir} lies under {parent}, which is a "
                  "file; pass a directory path.")


# errno values of a write the file system refused (permissions, read-only,
# full disk or quota).
WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                          errno.EDQUOT})


def workdir_write_error(workdir: str, e: OSError) -> LmError:
  """One sentence for a write into `workdir` that the file system refused."""
  where = f" ({e.filename})" if getattr(e, "filename", None) else ""
  return LmError(f"cannot write to workdir {workdir}: {e.strerror or e}{where}; "
                 "pass a --workdir on a writable file system with free space.")


def prior_record(workdir: str, objective) -> dict | None:
  """The resolved config of the newest checkpoint in `workdir` whose config
  reads and verifies, or None when it holds none (nothing is written)."""
  if not files.isdir(files.join(workdir, "checkpoints")):
    return None
  best_metric, best_mode = objective.best_metric
  ckpt = Checkpointer(workdir, best_metric=best_metric, best_mode=best_mode,
                      read_only=True)
  try:
    for step in reversed(ckpt.all_steps()):
      try:
        return ckpt.read_config(step)
      except DamagedCheckpoint:
        continue
    return None
  finally:
    ckpt.close()
