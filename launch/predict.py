"""Print (and optionally save) the predictions of a fine-tuned run.

  python -m launch.predict --workdir runs/sst2 --text "a gripping, funny film"
  python -m launch.predict --workdir runs/sst2 --text "dull" --text "superb"
  python -m launch.predict --workdir runs/mrpc --text "He left." --text_b "He went away."
  python -m launch.predict --workdir runs/conll --text "John Smith lives in Paris"
  python -m launch.predict --workdir runs/squad --text "Where does he live?" \\
      --context "John Smith lives in Paris."
  python -m launch.predict --workdir runs/sst2 --input reviews.txt --output preds.jsonl
  python -m launch.predict --workdir runs/translate --text "Guten Morgen."
  python -m launch.predict --workdir runs/sst2 --text "dull" --quantize int8

Classification prints the label and its probability; tagging the entities
with their character spans; QA the answer with its score; seq2seq
(translation, summarization) the output text: one line per input, in
order. --text may be given several times; --text_b or --context
given once goes with every --text, or give one per --text. --input is a
.jsonl file with the run's field names, or one text per line; --output
writes one JSON object per input. Uses the best checkpoint by the task's
metric (or the latest, when none was evaluated) unless --step names one;
--quantize int8 serves it with int8 weights (`lm.models.quantize`).
"""

from __future__ import annotations

import json

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a fine-tuned run.")
_INPUT = flags.DEFINE_string("input", None, "A .jsonl file with the run's "
                             "fields, or a text file with one text per line.")
_TEXT = flags.DEFINE_multi_string("text", None, "A text to predict (the "
                                  "question, for QA); repeat for several.")
_TEXT_B = flags.DEFINE_multi_string("text_b", None, "The second text of a "
                                    "pair (once, or once per --text).")
_CONTEXT = flags.DEFINE_multi_string("context", None, "QA: the passage to "
                                     "answer from (once, or once per --text).")
_OUTPUT = flags.DEFINE_string("output", None, "Write predictions as JSON lines here.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the best).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Inputs per forward pass.")
_QUANTIZE = common.define_quantize_flag()


def _line(task: str, text: str, p: dict) -> str:
  if task == "classification":
    return f"{p['label']}\t{p['probability']:.4f}\t{text}"
  if task == "tagging":
    ents = ", ".join(f"{e['type']} {e['text']!r} [{e['start']}:{e['end']}]"
                     for e in p["entities"]) or "(no entities)"
    return f"{ents}\t{text}"
  if task == "seq2seq":
    return f"{p['output']}\t{text}"
  return f"{p['answer']!r}\t{p['score']:.3f}\t[{p['start']}:{p['end']}]\t{text}"


def main(argv):
  del argv
  if not _WORKDIR.value:
    common.fail("--workdir is required: the directory of a fine-tuned run.")
  if _TEXT_B.value and _CONTEXT.value:
    common.fail("give --text_b (a text pair) or --context (QA), not both.")
  common.quiet_logs()
  with common.user_errors():
    from lm.tasks.predict import predict, read_inputs
    from lm.experiments import load_trained
    trained = load_trained(_WORKDIR.value, _STEP.value, best=True,
                           quantize=_QUANTIZE.value)
    second = _CONTEXT.value or _TEXT_B.value
    records = read_inputs(trained, path=_INPUT.value, text=_TEXT.value,
                          text_b=second)
    preds = predict(trained, records, batch_size=_BATCH.value)
    task = trained.objective.serves
    first = {"qa": "question", "tagging": "tokens",
             "seq2seq": "input"}.get(task, "text")
    shown = [" ".join(t) if isinstance(t, list) else t
             for t in records.columns[first]]
    for text, p in zip(shown, preds):
      print(_line(task, text, p), flush=True)
    if _OUTPUT.value:
      from lm import files
      try:
        files.write_text_atomic(_OUTPUT.value, "".join(
            json.dumps({"input": text, **p}) + "\n"
            for text, p in zip(shown, preds)))
      except OSError as e:
        from lm.errors import LmError
        raise LmError(f"could not write --output {_OUTPUT.value} "
                      f"({e.strerror}); pick a writable path.") from None
    print(f"{len(preds)} predictions from step {trained.step} of "
          f"{_WORKDIR.value}" + (f" -> {_OUTPUT.value}" if _OUTPUT.value
                                 else ""), flush=True)


if __name__ == "__main__":
  common.run(main)
