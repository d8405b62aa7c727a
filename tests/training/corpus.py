"""A small synthetic text corpus that tests write to disk."""

import random


def write_corpus(path, n_docs: int = 60, seed: int = 0) -> str:
  """Writes `n_docs` short code-like documents into one file per doc."""
  rng = random.Random(seed)
  words = ["alpha", "beta", "gamma", "delta", "value", "index", "count", "total"]
  path.mkdir(parents=True, exist_ok=True)
  for d in range(n_docs):
    lines = []
    for i in range(rng.randint(5, 15)):
      a, b = rng.choice(words), rng.choice(words)
      lines.append(f"def {a}_{i}({b}):\n    return {b} + {rng.randint(0, 9)}\n")
    (path / f"doc{d:03d}.txt").write_text("\n".join(lines))
  return str(path / "*.txt")


def set_keys(config, overrides: dict):
  """Sets dotted keys ("optimizer.lr") of an ml_collections config; returns it."""
  for key, value in overrides.items():
    node = config
    *parents, last = key.split(".")
    for part in parents:
      node = node[part]
    node[last] = value
  return config
