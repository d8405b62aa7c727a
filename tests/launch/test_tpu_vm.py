"""launch/tpu_vm.sh: the gcloud commands it prints with --dry_run."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = ["--name", "my-tpu", "--zone", "us-central2-b", "--dry_run"]
TPU = "+ gcloud compute tpus tpu-vm"


def script(*args):
  env = dict(os.environ, PATH="/usr/bin:/bin")  # --dry_run must not need gcloud
  return subprocess.run(["bash", os.path.join(ROOT, "launch", "tpu_vm.sh"), *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)


def lines(result):
  assert result.returncode == 0, result.stderr
  assert result.stderr == ""
  out = result.stdout.splitlines()
  assert out and all(l.startswith(TPU + " ") for l in out), out
  return out


def test_create():
  out = lines(script("create", *BASE, "--type", "v4-8", "--spot", "--project", "proj"))
  assert out == [f"{TPU} create my-tpu --zone=us-central2-b --project=proj "
                 "--accelerator-type=v4-8 --version=tpu-ubuntu2204-base --spot"]
  out = lines(script("create", *BASE, "--type=v5litepod-8", "--runtime=v2-alpha-tpuv5-lite"))
  assert out == [f"{TPU} create my-tpu --zone=us-central2-b "
                 "--accelerator-type=v5litepod-8 --version=v2-alpha-tpuv5-lite"]


def test_setup_copies_or_clones_and_installs_on_all_workers():
  out = lines(script("setup", *BASE))
  assert [l.split()[5] for l in out] == ["ssh", "scp", "ssh"]
  assert f"scp --recurse {ROOT} my-tpu:~/lm --zone=us-central2-b --worker=all" in out[1]
  assert "--worker=all" in out[2] and "pip install -e \".[test]\" \"jax[tpu]\"" in out[2]
  out = lines(script("setup", *BASE, "--repo", "https://example.com/lm.git"))
  assert len(out) == 1 and "--worker=all" in out[0]
  assert "git clone https://example.com/lm.git ~/lm" in out[0]
  assert "pip install -e \".[test]\"" in out[0]


def test_run_streams_training_on_all_workers():
  out = lines(script("run", *BASE, "--config", "configs/quickstart.py:runlocal",
                     "--workdir", "gs://bucket/runs/a", "--config.steps=7",
                     "--config.sample.prompt=def f"))
  assert len(out) == 1
  assert out[0].startswith(f"{TPU} ssh my-tpu --zone=us-central2-b --worker=all --command=")
  assert ("python3 -m launch.train --config configs/quickstart.py:runlocal "
          "--workdir gs://bucket/runs/a --config.steps=7 "
          "--config.sample.prompt='\\''def f'\\''") in out[0]
  assert "tee -a ~/lm_train.log" in out[0]


def test_logs_and_delete():
  out = lines(script("logs", *BASE, "--worker", "1"))
  assert out == [f"{TPU} ssh my-tpu --zone=us-central2-b --worker=1 "
                 "--command='tail -n 200 -F ~/lm_train.log'"]
  out = lines(script("delete", *BASE))
  assert out == [f"{TPU} delete my-tpu --zone=us-central2-b --quiet"]


def test_all_creates_sets_up_runs_and_deletes_in_order():
  out = lines(script("all", *BASE, "--type", "v4-8", "--spot", "--repo", "https://x/lm.git",
                     "--config", "configs/gpt2_small.py", "--workdir", "gs://b/gpt2"))
  assert [l.split()[5] for l in out] == ["create", "ssh", "ssh", "delete"]
  assert "--accelerator-type=v4-8" in out[0] and "--spot" in out[0]
  assert "git clone" in out[1]
  assert "launch.train --config configs/gpt2_small.py --workdir gs://b/gpt2" in out[2]


def test_user_errors_are_one_line_with_status_2():
  for args, word in [(["create", "--zone", "z", "--type", "v4-8", "--dry_run"], "--name"),
                     (["create", "--name", "n", "--zone", "z", "--dry_run"], "--type"),
                     (["run", *BASE, "--workdir", "gs://b/x"], "--config"),
                     (["run", *BASE, "--config", "c.py", "--workdir", "runs/x"], "gs://"),
                     (["launch", *BASE], "subcommand"),
                     (["delete", *BASE, "--bogus"], "--bogus")]:
    result = script(*args)
    assert result.returncode == 2, (args, result.stdout)
    assert result.stdout == ""
    err = result.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and word in err[0], err
