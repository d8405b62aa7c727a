"""The one file-system layer of lm: every path may be local or a cloud URI.

Workdirs, data files, tokenizers, `init_from`, HF directories and the
`--input`/`--output` files of the launchers all go through these functions.
A local path is handled with `os` and `open` as before (so a local run is
byte-for-byte what it was); a URI (`gs://bucket/dir`, or any scheme fsspec
knows) goes through etils `epath`, which Orbax uses too, backed by fsspec
(`gcsfs` for `gs://`). Checkpoints do not come through here: Orbax writes
them with TensorStore's own GCS driver.

Object stores have no rename and no append. A write to a URI uploads the
whole object in one request, so readers see the old object or the new one
(the same guarantee `atomic_path` gives locally with a rename); directories
exist implicitly, so `makedirs` does nothing there.

A GCS emulator (for tests, or to try a cloud run on a laptop) needs only
`STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT`: on import this module
derives from it what the libraries below need and a user would otherwise
have to set (`TENSORSTORE_GCS_HTTP_URL` for Orbax's TensorStore, fsspec
rather than TensorFlow's gfile for epath, no gcsfs bucket-layout probe,
which an emulator does not answer, and a fixed token so TensorStore does not
search for credentials), each only when not already set.

File modes: `tempfile.mkstemp` creates its file 0600 whatever the umask, so
a file written to a temporary name and renamed into place would be readable
by its owner only; `atomic_path` chmods it to `default_file_mode()` first.

Example (umask 022):
  >>> oct(default_file_mode())
  '0o644'
  >>> join("gs://b/runs", "q", "config.json")
  'gs://b/runs/q/config.json'
"""

from __future__ import annotations

import builtins
import contextlib
import glob as glob_lib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator

from lm.errors import LmError, first_line

_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def configure_emulator(environ=os.environ) -> None:
  """Settings derived from `STORAGE_EMULATOR_HOST` (see the module
  docstring); a value the user set is kept. Called on import."""
  host = environ.get("STORAGE_EMULATOR_HOST")
  if not host:
    return
  url = host if "://" in host else "http://" + host
  environ.setdefault("TENSORSTORE_GCS_HTTP_URL", url.rstrip("/"))
  environ.setdefault("EPATH_USE_TF", "false")
  environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
  # an emulator takes any token: TensorStore then looks for no credentials
  environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")


configure_emulator()


def _umask_from_proc() -> int | None:
  """The process umask from /proc/self/status (Linux 4.7+), or None."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  return None


def _umask_at_import() -> int:
  # Setting and restoring the umask is the only portable way to read it; done
  # once, while the module is imported, rather than on every write.
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


_IMPORT_UMASK = _umask_at_import()


def current_umask() -> int:
  """The process umask, read without changing it where the OS allows."""
  mask = _umask_from_proc()
  return _IMPORT_UMASK if mask is None else mask


def default_file_mode() -> int:
  """The mode a new regular file gets: 0o666 less the umask (0o644 for 022)."""
  return 0o666 & ~current_umask()


def default_dir_mode() -> int:
  """The mode a new directory gets: 0o777 less the umask (0o755 for 022).

  `tempfile.mkdtemp` creates its directory 0700 whatever the umask; a
  directory built under a temporary name and renamed into place is chmod-ed
  to this first, so it ends up as `os.makedirs(path)` would have made it.
  """
  return 0o777 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """A fresh temporary name next to `path` for a writer to fill.

  When the block ends without an error, the file is given `default_file_mode()`
  and renamed onto `path`, so readers see the old file or the whole new one and
  the mode is what `open(path, "w")` would have given; on an error it is
  removed. Example:

    with atomic_path("out/model.safetensors") as tmp:
      save_file(tensors, tmp)
  """
  if is_uri(path):
    # a local temporary file, uploaded in one request when the block ends
    with tempfile.TemporaryDirectory(prefix="lm-upload-") as d:
      tmp = os.path.join(d, basename(path))
      yield tmp
      _epath(path).write_bytes(_read_local(tmp))
    return
  directory, name = os.path.split(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}-", suffix=".tmp")
  os.close(fd)
  try:
    yield tmp
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def _read_local(path: str) -> bytes:
  with builtins.open(path, "rb") as f:
    return f.read()


def write_atomic(path: str, data: bytes) -> None:
  """Writes `data` to `path` so a reader sees the old file or all of the new
  one: locally through `atomic_path` (umask-respecting mode), on an object
  store as one upload."""
  if is_uri(path):
    _epath(path).write_bytes(data)
    return
  with atomic_path(path) as tmp:
    with builtins.open(tmp, "wb") as f:
      f.write(data)


def write_text_atomic(path: str, text: str) -> None:
  """`write_atomic` of `text` encoded as UTF-8."""
  write_atomic(path, text.encode("utf-8"))


# -- paths -------------------------------------------------------------------


def is_uri(path) -> bool:
  """Whether `path` is a URI (`gs://b/x`, `s3://b/x`) rather than a local
  path. Example: is_uri("gs://b/run") -> True; is_uri("runs/q") -> False."""
  return bool(_URI.match(str(path or "")))


def scheme(path) -> str:
  """The URI scheme of `path` ("gs"), or "" for a local path."""
  m = _URI.match(str(path or ""))
  return m.group(1) if m else ""


_checked_schemes: set[str] = set()


def _check_scheme(path: str) -> None:
  """LmError when no installed fsspec backend reads `path`'s scheme (an
  `s3://` path without `s3fs`), before any operation on it."""
  name = scheme(path)
  if name in _checked_schemes:
    return
  import fsspec  # pylint: disable=g-import-not-at-top  (slow import)
  try:
    fsspec.get_filesystem_class(name)
  except (ImportError, ValueError) as e:
    raise LmError(f"{path}: {name}:// paths cannot be read here ({e}); "
                  "install that package, or use a gs:// or local path."
                  ) from None
  _checked_schemes.add(name)


def _fs(path: str):
  """(fsspec filesystem, path inside it) of the URI `path`."""
  _check_scheme(path)
  import fsspec  # pylint: disable=g-import-not-at-top
  return fsspec.core.url_to_fs(path)


def _epath(path):
  _check_scheme(path)
  from etils import epath  # pylint: disable=g-import-not-at-top  (slow import)
  return epath.Path(path)


def join(base: str, *parts: str) -> str:
  """`os.path.join` that keeps a URI a URI. Example:
  join("gs://b/runs/", "q") -> "gs://b/runs/q"."""
  if is_uri(base):
    out = base
    for part in parts:
      if is_uri(part):
        out = part
      elif part:
        out = out.rstrip("/") + "/" + part.lstrip("/")
    return out
  return os.path.join(base, *parts)


def abspath(path: str) -> str:
  """An absolute form of `path`: URIs unchanged (their trailing slash
  dropped), local paths through `os.path.abspath` after `~` expansion."""
  if is_uri(path):
    return path.rstrip("/") if path.rstrip("/").count("/") > 2 else path
  return os.path.abspath(os.path.expanduser(path))


def expand(path: str) -> str:
  """`~` expanded in a local path; a URI unchanged."""
  return path if is_uri(path) else os.path.expanduser(path)


def dirname(path: str) -> str:
  """The directory part of `path` (URIs keep their scheme)."""
  if is_uri(path):
    return abspath(path).rsplit("/", 1)[0]
  return os.path.dirname(path)


def basename(path: str) -> str:
  """The last part of `path` ("q" for "gs://b/runs/q/")."""
  return os.path.basename(abspath(path) if is_uri(path) else
                          os.path.normpath(path))


def relative_to(path: str, root: str) -> str | None:
  """`path` relative to the directory `root`, or None when it is not inside
  it. Example: relative_to("gs://b/q/tokenizer.model", "gs://b/q") ->
  "tokenizer.model"."""
  if is_uri(path) != is_uri(root):
    return None
  if is_uri(path):
    p, r = abspath(path), abspath(root).rstrip("/") + "/"
    return p[len(r):] if p.startswith(r) else None
  rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
  return None if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def isabs(path: str) -> bool:
  """Whether `path` names a place by itself (a URI or an absolute path)."""
  return is_uri(path) or os.path.isabs(path)


# -- queries -----------------------------------------------------------------


def exists(path: str) -> bool:
  return _epath(path).exists() if is_uri(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  """A local directory, or a URI prefix holding at least one object."""
  return _epath(path).is_dir() if is_uri(path) else os.path.isdir(path)


def isfile(path: str) -> bool:
  return _epath(path).is_file() if is_uri(path) else os.path.isfile(path)


def getsize(path: str) -> int:
  return _epath(path).stat().length if is_uri(path) else os.path.getsize(path)


def identity(path: str) -> tuple:
  """What says a file changed, for cache keys: (absolute path, size,
  modification time in ns; for an object, its mtime as the store gives it).
  """
  if is_uri(path):
    st = _epath(path).stat()
    return (abspath(path), int(st.length), int(float(st.mtime or 0) * 1e9))
  st = os.stat(path)
  return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def listdir(path: str) -> list[str]:
  """The names in directory `path`, sorted."""
  if is_uri(path):
    return sorted(p.name for p in _epath(path).iterdir())
  return sorted(os.listdir(path))


def glob(pattern: str, recursive: bool = True) -> list[str]:
  """The files `pattern` matches, sorted (`**` crosses directories). On a
  URI the pattern is fsspec's, e.g. "gs://b/corpus/*.txt"."""
  if is_uri(pattern):
    fs, _ = _fs(pattern)
    prefix = scheme(pattern) + "://"
    found = fs.glob(pattern)
    return sorted(prefix + p if not is_uri(p) else p for p in found
                  if fs.isfile(p))
  matches = glob_lib.glob(os.path.expanduser(pattern), recursive=recursive)
  return sorted(p for p in matches if os.path.isfile(p))


def walk_files(root: str) -> list[str]:
  """Every file under directory `root`, relative to it, sorted."""
  if is_uri(root):
    fs, prefix = _fs(abspath(root))
    prefix = prefix.rstrip("/") + "/"
    return sorted(p[len(prefix):] for p in fs.find(prefix)
                  if p.startswith(prefix))
  out = []
  for dirpath, _, names in os.walk(root):
    for name in names:
      out.append(os.path.relpath(os.path.join(dirpath, name), root))
  return sorted(out)


# -- reading and writing -----------------------------------------------------


def open(path: str, mode: str = "r", encoding: str | None = None,
         errors: str | None = None, newline: str | None = None):  # pylint: disable=redefined-builtin
  """`open` for local paths and URIs. Example: with open("gs://b/x.txt")
  as f: ..."""
  if not is_uri(path):
    if "b" in mode:
      return builtins.open(path, mode)
    return builtins.open(path, mode, encoding=encoding, errors=errors,
                         newline=newline)
  if "a" in mode or "+" in mode:
    raise ValueError(f"{path}: objects in a store cannot be appended to or "
                     "updated in place")
  f = _epath(path).open(mode.replace("t", "").replace("b", "") + "b")
  if "b" in mode:
    return f
  import io  # pylint: disable=g-import-not-at-top
  return io.TextIOWrapper(f, encoding=encoding or "utf-8", errors=errors,
                          newline=newline)


def read_bytes(path: str) -> bytes:
  if is_uri(path):
    return _epath(path).read_bytes()
  return _read_local(path)


def read_text(path: str, errors: str | None = None) -> str:
  return read_bytes(path).decode("utf-8", errors or "strict")


def makedirs(path: str) -> None:
  """`os.makedirs(path, exist_ok=True)`; nothing on an object store, where
  a directory is only the common prefix of its objects."""
  if not is_uri(path):
    os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
  """Deletes the file `path` (FileNotFoundError when it is not there)."""
  if is_uri(path):
    p = _epath(path)
    if not p.exists():
      raise FileNotFoundError(path)
    p.unlink()
  else:
    os.remove(path)


def rmtree(path: str) -> None:
  """Deletes the directory `path` and everything under it, if present."""
  if is_uri(path):
    p = _epath(path)
    if p.exists():
      p.rmtree()
  elif os.path.isdir(path):
    shutil.rmtree(path)


def copyfile(source: str, target: str) -> None:
  """Copies the file `source` to `target` (either may be a URI); a reader
  of `target` sees the old file or all of the new one."""
  if not is_uri(source) and not is_uri(target):
    with atomic_path(target) as tmp:
      shutil.copyfile(source, tmp)
    return
  write_atomic(target, read_bytes(source))


def copytree(source: str, target: str) -> list[str]:
  """Copies every file under `source` to the same place under `target`;
  returns the copies."""
  out = []
  for rel in walk_files(source):
    dst = join(target, rel)
    makedirs(dirname(dst))
    copyfile(join(source, rel), dst)
    out.append(dst)
  return out


def move(source: str, target: str) -> None:
  """Moves a file or directory (on an object store: copy, then delete)."""
  if not is_uri(source) and not is_uri(target):
    shutil.move(source, target)
    return
  if isdir(source):
    copytree(source, target)
    rmtree(source)
  else:
    copyfile(source, target)
    remove(source)


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
  """A local file with the bytes of `path`, for libraries that read only
  local files (SentencePiece, safetensors): `path` itself when local, else a
  temporary download removed when the block ends."""
  if not is_uri(path):
    yield path
    return
  with tempfile.TemporaryDirectory(prefix="lm-download-") as d:
    tmp = os.path.join(d, basename(path))
    with builtins.open(tmp, "wb") as f:
      f.write(read_bytes(path))
    yield tmp


@contextlib.contextmanager
def local_dir(path: str, *, upload: bool) -> Iterator[str]:
  """A local directory standing for the directory `path`: `path` itself
  when local; for a URI a temporary directory holding a copy of what is
  there (when `upload` is False: for reading) or whose files are uploaded
  to `path` when the block ends without an error (`upload` True)."""
  if not is_uri(path):
    if upload:
      os.makedirs(path, exist_ok=True)
    yield path
    return
  with tempfile.TemporaryDirectory(prefix="lm-dir-") as d:
    if not upload:
      for rel in walk_files(path):
        os.makedirs(os.path.dirname(os.path.join(d, rel)) or d, exist_ok=True)
        with builtins.open(os.path.join(d, rel), "wb") as f:
          f.write(read_bytes(join(path, rel)))
    yield d
    if upload:
      copytree(d, path)




def bucket_of(path: str) -> str:
  """The bucket URI of `path`. Example: bucket_of("gs://b/runs/q") -> "gs://b"."""
  rest = path[len(scheme(path)) + 3:]
  return f"{scheme(path)}://{rest.split('/', 1)[0]}"


def check_bucket(path: str, what: str) -> None:
  """LmError when the bucket of the URI `path` does not exist or cannot be
  reached (no credentials, no network); nothing is written. `what` names
  the setting ("--workdir")."""
  bucket = bucket_of(path)
  fs, root = _fs(bucket)
  try:
    found = fs.exists(root)
  except Exception as e:  # pylint: disable=broad-except  (auth, network, ...)
    raise LmError(f"{what} {path}: cannot reach {bucket} "
                  f"({first_line(e)}); check "
                  "the credentials (gcloud auth application-default login, "
                  "or the VM's service account) or, for an emulator, "
                  "STORAGE_EMULATOR_HOST.") from None
  if not found:
    raise LmError(f"{what} {path}: bucket {bucket} does not exist; create it "
                  f"(gcloud storage buckets create {bucket}) or fix the name.")


def create_new(path: str, data: bytes) -> bool:
  """Writes `data` to `path` only if nothing is there; False when something
  is. Atomic against another creator: locally `O_CREAT|O_EXCL`, on GCS an
  upload with the precondition `ifGenerationMatch=0`."""
  if not is_uri(path):
    try:
      fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                   default_file_mode())
    except FileExistsError:
      return False
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    return True
  fs, p = _fs(path)
  try:
    fs.pipe_file(p, data, mode="create")
  except FileExistsError:
    return False
  return True
