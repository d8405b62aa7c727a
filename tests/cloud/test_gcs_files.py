"""`lm.files` and the writers built on it, against a real GCS emulator:
objects, globs, exclusive creation, cache entries, `metrics.jsonl` without
append, TensorBoard events and the workdir lease."""

import json
import os
import socket
import time

import numpy as np
import pytest

from lm import files
from lm.data import packing
from lm.errors import LmError
from lm.training import lock as lock_lib
from lm.training.metrics import MetricsWriter, final_metrics


def test_uri_paths_keep_their_scheme():
  assert files.join("gs://b/runs/", "q", "config.json") == "gs://b/runs/q/config.json"
  assert files.dirname("gs://b/runs/q/") == "gs://b/runs"
  assert files.basename("gs://b/runs/q/") == "q"
  assert files.abspath("gs://b/runs/q/") == "gs://b/runs/q"
  assert files.relative_to("gs://b/q/tokenizer.model", "gs://b/q") == "tokenizer.model"
  assert files.relative_to("gs://b/other/t.model", "gs://b/q") is None
  assert files.relative_to("/tmp/q/t.model", "gs://b/q") is None
  assert files.isabs("gs://b/x") and not files.isabs("runs/x")
  assert files.bucket_of("gs://b/runs/q") == "gs://b"


def test_a_scheme_no_installed_package_reads_is_one_sentence():
  with pytest.raises(LmError, match=r"^nosuchfs://b/run: nosuchfs:// paths "
                     r"cannot be read here \(.*\); install that package"):
    files.exists("nosuchfs://b/run")


def test_emulator_settings_derive_from_storage_emulator_host():
  env = {"STORAGE_EMULATOR_HOST": "127.0.0.1:9023",
         "EPATH_USE_TF": "true"}              # a user's own setting is kept
  files.configure_emulator(env)
  assert env["TENSORSTORE_GCS_HTTP_URL"] == "http://127.0.0.1:9023"
  assert env["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] == "false"
  assert env["EPATH_USE_TF"] == "true"
  empty = {}
  files.configure_emulator(empty)
  assert empty == {}


def test_objects_read_write_glob_and_remove(bucket):
  root = f"{bucket}/d"
  files.write_text_atomic(files.join(root, "a.txt"), "alpha")
  files.write_atomic(files.join(root, "sub", "b.txt"), b"beta")
  files.makedirs(files.join(root, "never"))     # nothing on a store
  assert files.read_text(f"{root}/a.txt") == "alpha"
  assert files.isfile(f"{root}/a.txt") and not files.isdir(f"{root}/a.txt")
  assert files.isdir(root) and not files.exists(f"{root}/never")
  assert files.getsize(f"{root}/sub/b.txt") == 4
  assert files.glob(f"{root}/*.txt") == [f"{root}/a.txt"]
  assert files.walk_files(root) == ["a.txt", "sub/b.txt"]
  with files.open(f"{root}/a.txt") as f:
    assert f.read() == "alpha"
  with pytest.raises(ValueError, match="cannot be appended"):
    files.open(f"{root}/a.txt", "a")
  assert files.create_new(f"{root}/lock", b"1")
  assert not files.create_new(f"{root}/lock", b"2")
  assert files.read_bytes(f"{root}/lock") == b"1"
  files.move(f"{root}/sub", f"{root}/moved")
  assert files.walk_files(root) == ["a.txt", "lock", "moved/b.txt"]
  with files.local_copy(f"{root}/a.txt") as local:
    assert open(local).read() == "alpha"
  files.rmtree(root)
  assert not files.exists(f"{root}/a.txt")


def test_a_missing_bucket_is_one_sentence(emulator):
  with pytest.raises(LmError, match=r"bucket gs://no-such-bucket does not "
                     r"exist; create it \(gcloud storage buckets create"):
    files.check_bucket("gs://no-such-bucket/runs/q", "--workdir")


def test_cache_entries_on_a_store_count_once_their_checksums_are_there(bucket):
  path = f"{bucket}/data/stream-x"
  tokens = np.arange(10, dtype=np.uint16)
  built = []
  def build():
    built.append(1)
    return {"tokens": tokens}
  out = packing.cached_arrays(["k"], build, f"{bucket}/data", "arrays")
  np.testing.assert_array_equal(out["tokens"], tokens)
  packing.cached_arrays(["k"], build, f"{bucket}/data", "arrays")
  assert built == [1]                          # built once, then only read
  # a half-written entry (no checksums.json yet) is not taken as there
  files.write_atomic(f"{path}/tokens.npy", b"partial")
  assert not packing.entry_written(path)
  packing.save_arrays(path, {"tokens": tokens})
  assert packing.entry_written(path)
  files.write_atomic(f"{path}/tokens.npy", files.read_bytes(f"{path}/tokens.npy")[:-2] + b"\0\0")
  with pytest.raises(LmError, match="does not match its sha256"):
    packing.load_arrays(path)


def test_metrics_on_a_store_lose_only_unflushed_rows_and_never_duplicate(bucket):
  workdir = f"{bucket}/run"
  w = MetricsWriter(workdir, 0, config={"lr": 0.1}, flush_seconds=3600)
  for step in (1, 2, 3):
    w.write(step, {"loss": 4.0 - step})
  w.flush()                                    # as after checkpoint 3
  for step in (4, 5):
    w.write(step, {"loss": 4.0 - step})
  # kill -9 here: rows 4 and 5 never reached the store
  rows = [json.loads(l) for l in files.read_text(f"{workdir}/metrics.jsonl").splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3]
  events = files.glob(f"{workdir}/tensorboard/events.out.tfevents.*")
  assert len(events) == 1 and files.getsize(events[0]) > 0
  # resumed from checkpoint 2 (3 was lost too): rows after it are dropped
  w = MetricsWriter(workdir, 2, config={"lr": 0.1}, flush_seconds=3600)
  for step in (3, 4):
    w.write(step, {"loss": 10.0 + step})
  w.close({"loss": 14.0})
  rows = [json.loads(l) for l in files.read_text(f"{workdir}/metrics.jsonl").splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  assert rows[2]["loss"] == 13.0
  assert final_metrics(workdir, 4) == {"loss": 14.0}
  assert files.glob(f"{workdir}/tensorboard/hparams/*")


def _holder(path, **info):
  record = {"host": socket.gethostname(), "pid": os.getpid(), "token": "t",
            "heartbeat": time.time(), **info}
  files.write_text_atomic(path, json.dumps(record))


def test_the_lease_of_a_store_workdir(bucket):
  workdir = f"{bucket}/run"
  path = f"{workdir}/lock"
  lock = lock_lib.WorkdirLock(workdir)
  lock.acquire()
  held = json.loads(files.read_bytes(path))
  assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
  with pytest.raises(LmError, match=r"is being written by another run \(pid "
                     rf"{os.getpid()} on host "):
    lock_lib.WorkdirLock(workdir).acquire()
  lock.release()
  assert not files.exists(path)
  # a live run elsewhere, seen a moment ago: refused
  _holder(path, host="other-host", pid=1)
  with pytest.raises(LmError, match="expires 120 s after its last heartbeat"):
    lock_lib.WorkdirLock(workdir).acquire()
  # that run's heartbeat stopped long ago (its VM is gone): taken over
  _holder(path, host="other-host", pid=1,
          heartbeat=time.time() - lock_lib.STALE_SECONDS - 1)
  lock = lock_lib.WorkdirLock(workdir)
  lock.acquire()
  assert json.loads(files.read_bytes(path))["host"] == socket.gethostname()
  lock.release()
  # killed with -9 on this host (the pid is gone): taken over at once
  dead = 2 ** 22 + 12345
  _holder(path, pid=dead)
  lock = lock_lib.WorkdirLock(workdir)
  lock.acquire()
  assert json.loads(files.read_bytes(path))["pid"] == os.getpid()
  lock.release()


def test_streamed_documents_read_from_a_store_as_from_disk(bucket, tmp_path):
  # offset-indexed jsonl: and text: sources on gs://: the same documents,
  # the index cached on the store, and the same streamed rows
  from lm.data import indexed, streaming  # pylint: disable=g-import-not-at-top
  lines = "".join(f'{{"text": "doc {i} {"w" * (i % 7)}"}}\n' for i in range(40))
  text = "".join(f"line {i} of the text\n" for i in range(300))
  for root in (str(tmp_path), f"{bucket}/corpus"):
    files.write_text_atomic(files.join(root, "a.jsonl"), lines)
    files.write_text_atomic(files.join(root, "b.txt"), text)
  rows = {}
  for root in (str(tmp_path), f"{bucket}/corpus"):
    jsonl = indexed.open_indexed(f"jsonl:{root}/a.jsonl[10%:]")
    plain = indexed.open_indexed(f"text:{root}/b.txt", piece_bytes=512)
    jsonl.prepare(f"{root}/cache")
    plain.prepare(f"{root}/cache")
    assert len(jsonl) == 36 and jsonl[0] == 'doc 4 wwww'
    assert "".join(plain[i] for i in range(len(plain))) == text
    assert [n for n in files.listdir(f"{root}/cache")
            if n.startswith("index-")]

    class Tok:
      bos_id, eos_id, pad_id, vocab_size = 1, 2, 0, 300

      def encode_batch(self, texts):
        return [[3 + ord(c) % 200 for c in t] for t in texts]
    batches = streaming.StreamBatches(
        streaming.StreamCorpus(jsonl, Tok()), global_batch_size=4,
        seq_len=16, seed=0)
    rows[root.startswith("gs://")] = [batches.batch(s)["inputs"]
                                      for s in range(5)]
    batches.close()
    jsonl.close()
    plain.close()
  for a, b in zip(rows[False], rows[True]):
    assert (a == b).all()
