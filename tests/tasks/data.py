"""Small labelled data sets the fine-tuning tests write (learnable rules)."""

import json
import random

POSITIVE = ["good", "great", "fine", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "poor", "terrible", "dull"]
FILLER = ["the", "movie", "was", "a", "plot", "with", "friends", "today",
          "went", "to", "see", "city"]
PEOPLE = ["John Smith", "Mary Jones", "Ann Lee", "Bob"]
PLACES = ["New York", "Paris", "Berlin", "Rome"]


def write_pairs_tsv(path, n: int, seed: int = 0) -> str:
  """`premise<TAB>review<TAB>label`: the label is the sentiment of the
  review (the second text); the first is filler."""
  rng = random.Random(seed)
  lines = ["premise\treview\tlabel"]
  for _ in range(n):
    y = rng.random() < 0.5
    words = rng.choices(POSITIVE if y else NEGATIVE, k=2) + rng.choices(FILLER, k=3)
    rng.shuffle(words)
    lines.append(f"{' '.join(rng.choices(FILLER, k=4))}\t{' '.join(words)}\t"
                 f"{'yes' if y else 'no'}")
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def _ner_sentence(rng):
  words, tags = [], []
  for _ in range(2):
    words += rng.choices(FILLER, k=2)
    tags += ["O", "O"]
    if rng.random() < 0.5:
      name, kind = rng.choice(PEOPLE).split(), "PER"
    else:
      name, kind = rng.choice(PLACES).split(), "LOC"
    words += name
    tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1)
  return words, tags


def write_conll(path, n: int, seed: int = 0) -> str:
  """CoNLL-2003 text: a -DOCSTART- line, then `word POS CHUNK TAG` lines."""
  rng = random.Random(seed)
  out = ["-DOCSTART- -X- -X- O", ""]
  for _ in range(n):
    words, tags = _ner_sentence(rng)
    out += [f"{w} NN O {t}" for w, t in zip(words, tags)] + [""]
  path.write_text("\n".join(out) + "\n")
  return str(path)


def write_squad_jsonl(path, n: int, seed: int = 0) -> str:
  """Questions about who lives where, answered from a short context."""
  rng = random.Random(seed)
  with open(path, "w") as f:
    for i in range(n):
      who, where = rng.choice(PEOPLE), rng.choice(PLACES)
      context = (f"{' '.join(rng.choices(FILLER, k=3))}. {who} lives in "
                 f"{where}. " + " ".join(rng.choices(FILLER, k=6)) + ".")
      question, answer = rng.choice([(f"Where does {who} live?", where),
                                     (f"Who lives in {where}?", who)])
      f.write(json.dumps({
          "id": f"q{seed}-{i}", "question": question, "context": context,
          "answers": {"text": [answer],
                      "answer_start": [context.index(answer)]}}) + "\n")
  return str(path)
