"""The document-source contract: a random-access list of documents named
by a URI (`lm.data.sources` opens them; `lm.data.tfds_source`,
`lm.data.indexed`, `lm.data.prepared` and the pair sources implement it).
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any


def content_hash(parts: Sequence[Any]) -> str:
  """A 16-hex-digit sha256 of the `repr` of `parts`."""
  return hashlib.sha256(repr(list(parts)).encode()).hexdigest()[:16]


class DocumentSource(abc.ABC):
  """A random-access list of documents (strings) named by a URI.

  Example:
    src = open_source("text:data/input.txt[:90%]")
    len(src)      # -> 1
    src[0][:10]   # -> 'First Citi'
  """

  uri: str

  @abc.abstractmethod
  def __len__(self) -> int:
    """The number of documents."""

  @abc.abstractmethod
  def _get(self, i: int) -> str:
    """Document `i`, with `0 <= i < len(self)`."""

  @abc.abstractmethod
  def fingerprint(self) -> str:
    """A short stable hash that changes whenever the documents may change."""

  def __getitem__(self, i: int) -> str:
    """Document `i` (negative indices count from the end)."""
    n = len(self)
    if not -n <= i < n:
      raise IndexError(f"document index {i} out of range for {n} documents")
    return self._get(i % n)

  def __iter__(self) -> Iterator[str]:
    """The documents in order."""
    for i in range(len(self)):
      yield self._get(i)

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.uri!r}, {len(self)} documents)"
