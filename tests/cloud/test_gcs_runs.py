"""A whole run on `gs://` against a real GCS emulator, as a user runs it.

Every command is the real command line (`python -m launch.…`), started in
an empty directory with its own TMPDIR, and given only
`STORAGE_EMULATOR_HOST`: the corpus is read from the bucket, the run is
trained there, killed with -9 after its first checkpoint and resumed (to a
final checkpoint bitwise equal to an uninterrupted run's on a local disk),
then sampled, evaluated, exported to a Hugging Face directory in the bucket
and imported back, a second run warm-starts from it with
`init_from=gs://…`, and a third distils it into a student (the teacher
read from the bucket, TinyBERT's hidden-state term on). Afterwards the working directory is still empty: the
runs wrote nothing on the local disk but temporary files.
"""

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time

from lm import files
from tests.cli import ROOT

STEPS = 9
CONFIG = os.path.join(ROOT, "configs", "quickstart.py") + ":runlocal"
BASE = ("--config", CONFIG, f"--config.steps={STEPS}",
        "--config.keep_checkpoints=1", "--config.checkpoint_every=3",
        "--config.eval_every=3", "--config.log_every=1")
TIMEOUT = 400


def _corpus() -> list[tuple[str, str]]:
  """(name, text) of 40 standard-library modules: a small real corpus."""
  root = sysconfig.get_paths()["stdlib"]
  names = sorted(n for n in os.listdir(root) if n.endswith(".py"))[:40]
  return [(n, open(os.path.join(root, n), encoding="utf-8").read())
          for n in names]


def _data(where: str) -> tuple[str, str]:
  """The train and eval URIs of the corpus under `where`."""
  return (f"--config.data.train=text:{where}/*.py[:90%]",
          f"--config.data.eval=text:{where}/*.py[90%:]")


def _env(tmp, emulator) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             STORAGE_EMULATOR_HOST=emulator.url, TMPDIR=str(tmp))
  for key in ("TENSORSTORE_GCS_HTTP_URL", "EPATH_USE_TF",
              "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT",
              "GOOGLE_AUTH_TOKEN_FOR_TESTING"):
    env.pop(key, None)                 # derived by lm itself, as for a user
  return env


def _start(module, *args, cwd, env):
  return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd,
                          env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=TIMEOUT):
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, (proc.args, out[-2000:], err[-4000:])
  assert "Traceback" not in out + err, err[-4000:]
  return out


def _digest(workdir: str, step: int) -> dict:
  path = files.join(workdir, "checkpoints", str(step), "digest", "metadata")
  return json.loads(files.read_bytes(path))["state"]


def test_train_kill_resume_sample_evaluate_export_import_on_gs(
    emulator, bucket, tmp_path):
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  (tmp_path / "tmp").mkdir()
  local_corpus = tmp_path / "corpus"
  local_corpus.mkdir()
  for name, text in _corpus():
    files.write_text_atomic(f"{bucket}/corpus/{name}", text)
    (local_corpus / name).write_text(text, encoding="utf-8")
  env = _env(tmp_path / "tmp", emulator)
  run = f"{bucket}/runs/q"

  # The uninterrupted reference trains on a local disk meanwhile.
  reference = str(tmp_path / "reference")
  ref = _start("launch.train", *BASE, *_data(str(local_corpus)),
               "--workdir", reference, cwd=ROOT, env=env)
  first = _start("launch.train", *BASE, *_data(f"{bucket}/corpus"),
                 "--workdir", run, cwd=cwd, env=env)
  committed = "runs/q/checkpoints/3/commit_success.txt"
  deadline = time.monotonic() + TIMEOUT
  while committed not in emulator.objects(bucket[len("gs://"):]):
    assert first.poll() is None, first.communicate()[1][-4000:]
    assert time.monotonic() < deadline
    time.sleep(0.05)
  first.send_signal(signal.SIGKILL)
  first.communicate()
  assert files.exists(f"{run}/lock")            # a dead run's lease remains
  out = _finish(_start("launch.train", *BASE, *_data(f"{bucket}/corpus"),
                       "--workdir", run, cwd=cwd, env=env))
  assert "resum" in out.lower()
  _finish(ref)
  assert _digest(run, STEPS) == _digest(reference, STEPS)
  rows = [json.loads(l)["step"] for l in
          files.read_text(f"{run}/metrics.jsonl").splitlines()]
  train_rows = sorted(set(rows))
  assert train_rows == list(range(1, STEPS + 1))   # each step once or twice
  assert len(rows) == STEPS + STEPS // 3            # (train row + eval row)
  assert not files.exists(f"{run}/lock")
  assert files.glob(f"{run}/tensorboard/events.out.tfevents.*")

  hf_dir, imported = f"{bucket}/hf/q", f"{bucket}/runs/imported"
  sample = ("--prompt", "def ", "--temperature", "0", "--max_new_tokens", "8")
  files.write_text_atomic(f"{bucket}/prompts.txt", "def \n")
  procs = [_start("launch.sample", "--workdir", run, "--prompt_file",
                  f"{bucket}/prompts.txt", *sample[2:], cwd=cwd, env=env),
           _start("launch.evaluate", "--workdir", run, cwd=cwd, env=env)]
  sampled, evaluated = (_finish(p) for p in procs)
  assert files.glob(f"{run}/eval/*-step{STEPS}.json"), evaluated
  _finish(_start("launch.export_hf", "--workdir", run, "--out_dir", hf_dir,
                 cwd=cwd, env=env))
  assert files.isfile(f"{hf_dir}/model.safetensors")
  procs = [_start("launch.import_hf", "--hf_dir", hf_dir, "--workdir",
                  imported, cwd=cwd, env=env),
           _start("launch.train", *BASE, *_data(f"{bucket}/corpus"),
                  "--config.steps=3", f"--config.init_from={run}",
                  "--workdir", f"{bucket}/runs/warm", cwd=cwd, env=env),
           _start("launch.train", "--config", os.path.join(
               ROOT, "configs", "distill_causal.py") + f":{run},runlocal,"
                  "hidden=1", *BASE[2:], *_data(f"{bucket}/corpus"),
                  "--config.steps=3", "--workdir", f"{bucket}/runs/student",
                  cwd=cwd, env=env)]
  _finish(procs[0])
  warm = _finish(procs[1])
  assert f"warm start: the backbone comes from {run}" in warm, warm[-2000:]
  _finish(procs[2])
  record = json.loads(files.read_text(f"{bucket}/runs/student/config.json"))
  assert record["batch"]["distill"]["teacher"] == run, record["batch"]
  assert record["batch"]["distill"]["teacher_step"] == STEPS
  assert files.exists(f"{bucket}/runs/student/checkpoints/3")
  again = _finish(_start("launch.sample", "--workdir", imported, *sample,
                         cwd=cwd, env=env))
  text = lambda out: [l for l in out.splitlines() if not l.startswith("step")]
  assert text(again)[-2:] == text(sampled)[-2:]    # the same greedy sample
  assert list(cwd.iterdir()) == []                # nothing on the local disk
  assert not os.path.exists(os.path.join(ROOT, "gs:"))


def test_cloud_paths_that_are_wrong_are_one_sentence(emulator, tmp_path):
  env = _env(tmp_path, emulator)
  missing = "gs://no-such-bucket/lm-cli-test"
  procs = [_start("launch.train", "--config", CONFIG,
                  f"--workdir={missing}", cwd=tmp_path, env=env),
           _start("launch.sample", f"--workdir={missing}", "--prompt", "x",
                  cwd=tmp_path, env=env)]
  errors = []
  for proc in procs:
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
    errors += [l for l in err.splitlines() if l.startswith("error: ")]
  assert errors[0].startswith(f"error: --workdir {missing}: bucket "
                              "gs://no-such-bucket does not exist"), errors
  assert errors[1].startswith(f"error: workdir {missing} does not exist"), errors
  assert [p.name for p in tmp_path.iterdir()] == []
