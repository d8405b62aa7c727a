"""Checkpoints that cannot be poisoned, and damaged ones skipped, through the
real command lines.

Every case starts from a copy of one finished quickstart run (checkpoints 3
and 6), damages or diverges it, and runs `launch.train` or `launch.sample`
as a user would.
"""

import glob
import json
import os
import re
import shutil

from tests.cli import cli
from tests.reliability.conftest import (CONFIG, digest, no_traceback,
                                        one_error, run_all, warnings_of)


def _largest_array_file(step_dir: str) -> str:
  files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "*"),
                                recursive=True) if os.path.isfile(f)]
  return max(files, key=os.path.getsize)


def _flip_bit(path: str) -> None:
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    data[len(data) // 2] ^= 0x10
    f.seek(0)
    f.write(bytes(data))


def _truncate(path: str) -> None:
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _write(path: str, text: str) -> None:
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


def _empty(step_dir: str) -> None:
  shutil.rmtree(step_dir)
  os.makedirs(step_dir)


DAMAGE = {
    "truncated array file": lambda d: _truncate(_largest_array_file(d)),
    "deleted array file": lambda d: os.remove(_largest_array_file(d)),
    "one flipped bit": lambda d: _flip_bit(_largest_array_file(d)),
    "deleted data/metadata": lambda d: os.remove(os.path.join(d, "data", "metadata")),
    "corrupt digest JSON": lambda d: _write(os.path.join(d, "digest", "metadata"), "{x"),
    "empty step directory": _empty,
    "half-deleted step": lambda d: shutil.rmtree(os.path.join(d, "state")),
    "removed manifest": lambda d: os.remove(os.path.join(d, "state", "manifest.ocdbt")),
}


def test_readers_skip_a_damaged_newest_checkpoint(copy_run):
  """Each kind of damage to checkpoint 6: `launch.sample` warns once, names
  it, falls back to checkpoint 3 and moves nothing."""
  workdirs = {}
  for i, (name, damage) in enumerate(DAMAGE.items()):
    workdirs[name] = copy_run(f"case{i}")
    damage(os.path.join(workdirs[name], "checkpoints", "6"))
  results = run_all(*[("launch.sample", "--workdir", w, "--prompt", "def ",
                       "--max_new_tokens", "2") for w in workdirs.values()])
  for (name, workdir), result in zip(workdirs.items(), results):
    no_traceback(result)
    assert result.returncode == 0, (name, result.stderr[-2000:])
    warned = warnings_of(result)
    assert len(warned) == 1, (name, result.stderr)
    assert "checkpoints/6 is damaged" in warned[0], (name, warned)
    assert "checkpoint 3" in warned[0], (name, warned)
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "6")), name
    assert not os.path.exists(os.path.join(workdir, "damaged_checkpoints"))


def test_metrics_that_do_not_parse_only_lose_the_ranking(copy_run):
  workdir = copy_run()
  _write(os.path.join(workdir, "checkpoints", "6", "metrics", "metrics"), "{x")
  result = cli("launch.evaluate", "--workdir", workdir, "--best",
               "--max_batches", "1")
  no_traceback(result)
  assert result.returncode == 0, result.stderr[-2000:]
  assert any("metrics of checkpoint" in w for w in warnings_of(result))


def test_training_moves_a_damaged_checkpoint_aside_and_resumes_exactly(
    copy_run, finished_run):
  workdir = copy_run()
  _flip_bit(_largest_array_file(os.path.join(workdir, "checkpoints", "6")))
  result = cli("launch.train", "--config", CONFIG, "--workdir", workdir,
               "--config.steps=9")
  no_traceback(result)
  assert result.returncode == 0, result.stderr[-2000:]
  warned = warnings_of(result)
  assert len(warned) == 1 and "falling back to checkpoint 3" in warned[0], warned
  assert "resuming at step 3" in result.stdout
  moved = os.path.join(workdir, "damaged_checkpoints", "6")
  assert os.path.isdir(os.path.join(moved, "state")), "moved aside, not deleted"
  # steps 4-6 were trained again from checkpoint 3: bitwise the original.
  assert digest(workdir, 6) == digest(finished_run, 6)


def test_no_intact_checkpoint_is_one_sentence_and_moves_nothing(copy_run):
  workdir = copy_run()
  for step in (3, 6):
    _flip_bit(_largest_array_file(os.path.join(workdir, "checkpoints", str(step))))
  train, sample = run_all(
      ("launch.train", "--config", CONFIG, "--workdir", workdir,
       "--config.steps=9"),
      ("launch.sample", "--workdir", workdir, "--prompt", "def ",
       "--max_new_tokens", "2"))
  assert "no intact checkpoint" in one_error(train)
  assert "no intact checkpoint" in one_error(sample)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  assert not os.path.exists(os.path.join(workdir, "damaged_checkpoints"))


def _steps(workdir: str) -> list[int]:
  path = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(path) if n.isdigit())


def test_a_diverged_run_saves_nothing_and_the_suggested_rerun_works(copy_run,
                                                                    tmp_path):
  workdir = copy_run()
  fresh = str(tmp_path / "fresh")
  resumed, scratch = run_all(
      ("launch.train", "--config", CONFIG, "--workdir", workdir,
       "--config.steps=12", "--config.optimizer.lr=1e30",
       "--config.optimizer.warmup_steps=1"),
      # diverges within the first steps; a save every step must not happen
      ("launch.train", "--config", CONFIG, "--workdir", fresh,
       "--config.optimizer.lr=1e30", "--config.optimizer.warmup_steps=1",
       "--config.checkpoint_every=1"))
  message = one_error(resumed)
  # (lr 1e6 once took until step 10 to overflow, after saving blown-up but
  # finite weights at step 9; when it overflows depends on the kernels'
  # rounding). What must hold: nothing from the bad step on was saved, and
  # the message names the newest checkpoint, which a re-run resumes from
  found = re.search(r"became (?:nan|inf) at step (\d+).*checkpoint (\d+) is the last "
                    r"good one", message)
  assert found, message
  bad, good = int(found.group(1)), int(found.group(2))
  assert 6 <= good < bad <= 12, message
  assert max(_steps(workdir)) == good, (_steps(workdir), message)
  message = one_error(scratch)
  assert "no checkpoint was saved" in message, message
  assert _steps(fresh) == []
  # the re-run the message suggests (a sane lr) resumes from that checkpoint
  again = cli("launch.train", "--config", CONFIG, "--workdir", workdir,
              f"--config.steps={good + 3}")
  no_traceback(again)
  assert again.returncode == 0, again.stderr[-2000:]
  assert f"resuming at step {good}" in again.stdout
  assert good + 3 in _steps(workdir)


def test_other_optimizer_settings_get_the_init_from_route(copy_run, tmp_path):
  workdir = copy_run()
  refused = cli("launch.train", "--config", CONFIG, "--workdir", workdir,
                "--config.steps=9", "--config.optimizer.clip_norm=0")
  message = one_error(refused)
  match = re.search(r"--workdir NEW (--config\.init_from=\S+)", message)
  assert match, message
  assert _steps(workdir) == [3, 6]
  new = str(tmp_path / "new")
  follow = cli("launch.train", "--config", CONFIG, "--workdir", new,
               match.group(1), "--config.optimizer.clip_norm=0",
               "--config.steps=3")
  no_traceback(follow)
  assert follow.returncode == 0, follow.stderr[-2000:]
  with open(os.path.join(new, "config.json"), encoding="utf-8") as f:
    assert json.load(f)["config"]["init_from"].endswith("checkpoints/6")
