"""launch/tpu_vm.sh: the gcloud commands it prints with --dry_run, and what
they do, run against a stand-in `gcloud` whose ssh runs the command here (a
temporary HOME plays the worker) and whose scp copies the file there."""

import os
import shlex
import shutil
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "launch", "tpu_vm.sh")
BASE = ["--name", "my-tpu", "--zone", "us-central2-b", "--dry_run"]
TPU = "+ gcloud compute tpus tpu-vm"
QUEUED = "+ gcloud compute tpus queued-resources"


def script(*args, path=SCRIPT, env=None):
  env = env or dict(os.environ, PATH="/usr/bin:/bin")  # --dry_run must not need gcloud
  return subprocess.run(["bash", path, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=60)


def lines(result, allowed=("+ gcloud compute tpus ",)):
  assert result.returncode == 0, result.stderr
  assert result.stderr == ""
  out = result.stdout.splitlines()
  assert out and all(l.startswith(allowed) for l in out), out
  return out


def command_of(line: str) -> str:
  """The --command=... value of a printed ssh line, as the worker gets it."""
  (cmd,) = [a[len("--command="):] for a in shlex.split(line[2:])
            if a.startswith("--command=")]
  return cmd


def test_create_one_vm_or_a_multi_slice_queued_resource():
  out = lines(script("create", *BASE, "--type", "v4-8", "--spot", "--project", "proj"))
  assert out == [f"{TPU} create my-tpu --zone=us-central2-b --project=proj "
                 "--accelerator-type=v4-8 --version=tpu-ubuntu2204-base --spot"]
  out = lines(script("create", *BASE, "--type=v5litepod-8", "--runtime=v2-alpha-tpuv5-lite"))
  assert out == [f"{TPU} create my-tpu --zone=us-central2-b "
                 "--accelerator-type=v5litepod-8 --version=v2-alpha-tpuv5-lite"]
  out = lines(script("create", *BASE, "--type", "v4-32", "--num_slices", "2", "--spot"))
  assert out == [f"{QUEUED} create my-tpu --zone=us-central2-b "
                 "--accelerator-type=v4-32 --runtime-version=tpu-ubuntu2204-base "
                 "--node-count=2 --node-prefix=my-tpu --spot"]
  out = lines(script("delete", *BASE, "--num_slices", "2"))
  assert out == [f"{QUEUED} delete my-tpu --zone=us-central2-b --quiet --force"]
  out = lines(script("delete", *BASE))
  assert out == [f"{TPU} delete my-tpu --zone=us-central2-b --quiet"]


def test_setup_installs_the_tpu_extra_only_on_every_worker_of_every_slice():
  out = lines(script("setup", *BASE), allowed=(TPU, "+ tar "))
  assert [l.split()[1] for l in out] == ["tar", "gcloud", "gcloud"]
  assert "git ls-files -co --exclude-standard" in out[0]
  assert " scp " in out[1] and "my-tpu:~/lm-src.tar.gz" in out[1]
  assert "--worker=all" in out[1] and "--worker=all" in out[2]
  assert 'pip install -e ".[tpu]"' in out[2] and ".[test]" not in out[2]
  out = lines(script("setup", *BASE, "--repo", "https://example.com/lm.git",
                     "--num_slices", "2"))
  assert [l.split()[5:7] for l in out] == [["ssh", "my-tpu-0"], ["ssh", "my-tpu-1"]]
  assert all("git clone https://example.com/lm.git ~/lm" in l
             and 'pip install -e ".[tpu]"' in l for l in out)


def test_run_starts_detached_jobs_and_multi_slice_runs_span_dcn():
  out = lines(script("run", *BASE, "--config", "configs/quickstart.py:runlocal",
                     "--workdir", "gs://bucket/runs/a", "--config.steps=7"))
  assert len(out) == 1 and "--worker=all" in out[0]
  cmd = command_of(out[0])
  assert cmd.startswith("rm -f ~/lm_train.exit; nohup setsid bash -c ")
  assert cmd.endswith(" > /dev/null 2>&1 < /dev/null &")
  job = shlex.split(cmd)[7]
  assert ("python3 -m launch.train --config configs/quickstart.py:runlocal "
          "--workdir gs://bucket/runs/a --config.steps=7 >> ~/lm_train.log") in job
  assert "gcloud storage cp -q ~/lm_train.log gs://bucket/runs/a/logs/$(hostname).log" in job
  out = lines(script("run", *BASE, "--config", "c.py", "--workdir", "/mnt/gcs/a"))
  job = shlex.split(command_of(out[0]))[7]
  assert "mkdir -p /mnt/gcs/a/logs && cp ~/lm_train.log /mnt/gcs/a/logs/" in job
  out = lines(script("run", *BASE, "--num_slices", "2", "--config", "c.py",
                     "--workdir", "gs://b/x"))
  assert [l.split()[6] for l in out] == ["my-tpu-0", "my-tpu-1"]
  assert all("--config.mesh.dcn_data=2" in l for l in out)
  out = lines(script("run", *BASE, "--num_slices", "2", "--config", "c.py",
                     "--workdir", "gs://b/x", "--config.mesh.dcn_fsdp=2"))
  assert all("dcn_data" not in l and "--config.mesh.dcn_fsdp=2" in l for l in out)


def test_run_with_wait_polls_the_job():
  out = lines(script("run", *BASE, "--wait", "--config", "c.py", "--workdir",
                     "gs://b/x"))
  assert len(out) == 2 and "launch.train" in out[0]
  assert "--worker=0" in out[1] and "pgrep" in out[1]


def test_logs_and_status():
  out = lines(script("logs", *BASE, "--worker", "1"))
  assert out == [f"{TPU} ssh my-tpu --zone=us-central2-b --worker=1 "
                 "--command='tail -n 200 -F ~/lm_train.log'"]
  out = lines(script("logs", *BASE, "--num_slices", "2", "--slice", "1"))
  assert out[0].split()[6] == "my-tpu-1"
  out = lines(script("status", *BASE, "--workdir", "gs://b/x"))
  assert len(out) == 1 and "--worker=0" in out[0]
  assert "gcloud storage cat gs://b/x/metrics.jsonl" in command_of(out[0])
  out = lines(script("status", *BASE, "--workdir", "/mnt/gcs/x"))
  assert "; cat /mnt/gcs/x/metrics.jsonl" in command_of(out[0])


def test_watch_recreates_preempted_vms_and_resumes_until_done():
  r = script("watch", *BASE, "--type", "v4-8", "--spot", "--config", "c.py",
             "--workdir", "gs://b/w", "--interval", "60", "--dry_run_states",
             "missing,CREATING,READY:running,PREEMPTED,READY:preempted,READY:done")
  assert r.returncode == 0, r.stderr
  actions = []
  for line in r.stdout.splitlines():
    if line.startswith("watch: "):
      actions.append(line)
    elif line.startswith("+ gcloud compute tpus tpu-vm describe"):
      actions.append("describe")
    elif line.startswith("+ gcloud"):
      words = line.split()
      actions.append(words[5] if words[5] != "ssh" else (
          "run" if "launch.train" in line else "setup"))
    elif line.startswith("+ "):
      actions.append(line.split()[1])
  assert actions == [
      "describe", "watch: the VM is missing", "create", "tar", "scp", "setup",
      "run", "sleep",
      "describe", "watch: the VM is CREATING", "sleep",
      "describe", "watch: the VM is READY, the job running", "sleep",
      "describe", "watch: the VM is PREEMPTED", "delete", "create", "tar",
      "scp", "setup", "run", "sleep",
      "describe", "watch: the VM is READY, the job preempted", "run", "sleep",
      "describe", "watch: the VM is READY, the job done",
      "watch: the run is done."]
  assert "+ sleep 60" in r.stdout
  r = script("watch", *BASE, "--type", "v4-8", "--config", "c.py", "--workdir",
             "gs://b/w", "--dry_run_states", "READY:failed 1")
  assert r.returncode == 1 and "the job failed 1" in r.stderr


def test_all_creates_sets_up_runs_waits_and_deletes_in_order():
  out = lines(script("all", *BASE, "--type", "v4-8", "--spot", "--repo", "https://x/lm.git",
                     "--config", "configs/gpt2_small.py", "--workdir", "gs://b/gpt2"))
  assert [l.split()[5] for l in out] == ["create", "ssh", "ssh", "ssh", "delete"]
  assert "--accelerator-type=v4-8" in out[0] and "--spot" in out[0]
  assert "git clone" in out[1]
  assert "launch.train --config configs/gpt2_small.py --workdir gs://b/gpt2" in out[2]
  assert "pgrep" in out[3]


def test_user_errors_are_one_line_with_status_2():
  for args, word in [(["create", "--zone", "z", "--type", "v4-8", "--dry_run"], "--name"),
                     (["create", "--name", "n", "--zone", "z", "--dry_run"], "--type"),
                     (["run", *BASE, "--workdir", "gs://b/x"], "--config"),
                     (["run", *BASE, "--config", "c.py", "--workdir", "runs/x"], "gs://"),
                     (["watch", *BASE, "--config", "c.py", "--workdir", "gs://b/x"], "--type"),
                     (["create", *BASE, "--type", "v4-8", "--num_slices", "0"], "--num_slices"),
                     (["logs", *BASE, "--slice", "1"], "--slice"),
                     (["status", *BASE, "--dry_run_states", "READY"], "--dry_run_states"),
                     (["launch", *BASE], "subcommand"),
                     (["delete", *BASE, "--bogus"], "--bogus")]:
    result = script(*args)
    assert result.returncode == 2, (args, result.stdout)
    assert result.stdout == ""
    err = result.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and word in err[0], err


# --- against a stand-in gcloud ----------------------------------------------

GCLOUD = r"""#!/bin/bash
echo "gcloud $*" >> "$FAKE_LOG"
if [[ "$1 $2 $3 $4" == "compute tpus tpu-vm scp" ]]; then
  cp "$5" "$HOME/${6#*:~/}"
elif [[ "$1 $2 $3 $4" == "compute tpus tpu-vm ssh" ]]; then
  for a in "$@"; do [[ "$a" == --command=* ]] && cmd="${a#--command=}"; done
  cd "$HOME" && exec bash -c "$cmd"
fi
"""
# python3 as the worker runs it: pip does nothing, training logs two steps,
# says it was preempted when FAKE_PREEMPT is set, and exits with FAKE_RC.
PYTHON = r"""#!/bin/bash
if [[ "$1 $2" == "-m launch.train" ]]; then
  printf '%s\n' "$@" > "$HOME/train_args"
  echo "step 3"; echo "step 6"
  [[ -n "$FAKE_PREEMPT" ]] && echo "preempted: saved checkpoint 6 in x; re-run the same command to resume"
  exit "${FAKE_RC:-0}"
fi
echo "python3 $*" >> "$FAKE_LOG"
"""


@pytest.fixture
def worker(tmp_path):
  """A project checkout (git, with an ignored runs/), a stand-in gcloud and
  python3 on PATH, and an empty HOME that plays every worker."""
  repo, home, bin_dir = tmp_path / "repo", tmp_path / "home", tmp_path / "bin"
  for d in (repo / "launch", repo / "runs", home, bin_dir):
    d.mkdir(parents=True)
  shutil.copy(SCRIPT, repo / "launch" / "tpu_vm.sh")
  (repo / ".gitignore").write_text("runs/\n*.log\n")
  (repo / "train.py").write_text("tracked\n")
  (repo / "notes.txt").write_text("untracked, not ignored\n")
  (repo / "runs" / "ckpt").write_text("a run's file\n")
  (repo / "debug.log").write_text("ignored\n")
  git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
  subprocess.run([*git, "init", "-q"], check=True)
  subprocess.run([*git, "add", "launch", ".gitignore", "train.py"], check=True)
  subprocess.run([*git, "commit", "-qm", "x"], check=True)
  for name, text in (("gcloud", GCLOUD), ("python3", PYTHON)):
    (bin_dir / name).write_text(text)
    (bin_dir / name).chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin", HOME=str(home),
             FAKE_LOG=str(tmp_path / "calls.log"))
  return repo, home, env


def _wait_for(path, seconds=20):
  deadline = time.time() + seconds
  while not os.path.exists(path):
    assert time.time() < deadline, f"{path} never appeared"
    time.sleep(0.05)


def test_setup_copies_only_the_checkouts_files(worker):
  repo, home, env = worker
  r = script("setup", "--name", "t", "--zone", "z",
             path=str(repo / "launch" / "tpu_vm.sh"), env=env)
  assert r.returncode == 0, r.stderr
  copied = sorted(str(p.relative_to(home / "lm")) for p in (home / "lm").rglob("*")
                  if p.is_file())
  assert copied == [".gitignore", "launch/tpu_vm.sh", "notes.txt", "train.py"]
  assert not (home / "lm-src.tar.gz").exists()
  assert 'python3 -m pip install -e .[tpu]' in open(env["FAKE_LOG"]).read()


@pytest.mark.parametrize("outcome,env_extra", [
    ("done", {}), ("preempted", {"FAKE_PREEMPT": "1"}),
    ("failed 3", {"FAKE_RC": "3"})])
def test_the_detached_job_runs_logs_and_reports_its_outcome(worker, outcome,
                                                            env_extra):
  repo, home, env = worker
  env.update(env_extra)
  (home / "lm").mkdir()
  prompt = "it's \"quoted\" $HOME"
  r = script("run", "--name", "t", "--zone", "z", "--config", "c.py:runlocal",
             "--workdir", "gs://b/run", f"--config.sample.prompt={prompt}",
             path=str(repo / "launch" / "tpu_vm.sh"), env=env)
  assert r.returncode == 0, r.stderr       # returns at once: the job is detached
  _wait_for(home / "lm_train.exit")
  deadline = time.time() + 20
  while not any(l.startswith("gcloud storage cp")
                for l in open(env["FAKE_LOG"]).read().splitlines()):
    assert time.time() < deadline
    time.sleep(0.05)
  assert (home / "lm_train.exit").read_text().strip() == outcome
  args = (home / "train_args").read_text().splitlines()
  assert args == ["-m", "launch.train", "--config", "c.py:runlocal",
                  "--workdir", "gs://b/run", f"--config.sample.prompt={prompt}"]
  assert "step 6" in (home / "lm_train.log").read_text()
  calls = open(env["FAKE_LOG"]).read()
  assert f"gcloud storage cp -q {home}/lm_train.log gs://b/run/logs/" in calls
  deadline = time.time() + 20
  while True:   # "running" until the job's last log copy has returned
    r = script("status", "--name", "t", "--zone", "z",
               path=str(repo / "launch" / "tpu_vm.sh"), env=env)
    assert r.returncode == 0, r.stderr
    if r.stdout.splitlines()[1] != "running" or time.time() > deadline:
      break
    time.sleep(0.1)
  assert r.stdout.splitlines()[1:] == [outcome, "step 6"]
