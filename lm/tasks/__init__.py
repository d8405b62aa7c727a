"""Fine-tuning tasks and downstream evaluation.

`make_task(config, labels)` returns the task `config.objective` names; each
follows the objective contract of `lm.objectives` (loss, summarize, data,
batches, evaluate), so the one training loop fine-tunes them:

  "classification"  `Classification` (lm.tasks.classification): one label
                    per text or text pair (IMDb, SST-2, GLUE pairs).
  "tagging"         `Tagging` (lm.tasks.token_classification): one BIO tag
                    per word (CoNLL-2003 NER), entity-level F1.
  "qa"              `QuestionAnswering` (lm.tasks.qa): extractive answer
                    spans (SQuAD v1.1), exact match and F1.

Shared machinery is in `lm.tasks.finetune`, the metrics in
`lm.tasks.scores`; `lm.tasks.retrieval` and `lm.tasks.embed` serve the
contrastive objective.
"""

from __future__ import annotations

TASKS = ("classification", "tagging", "qa")


def make_task(config, stored=None):
  """The task `config.objective` names; `stored` is a trained run's stored
  data settings (its labels and label counts; None: read from the training
  data)."""
  if config.objective == "classification":
    from lm.tasks.classification import Classification  # pylint: disable=g-import-not-at-top
    return Classification(config, stored)
  if config.objective == "tagging":
    from lm.tasks.token_classification import Tagging  # pylint: disable=g-import-not-at-top
    return Tagging(config, stored)
  from lm.tasks.qa import QuestionAnswering  # pylint: disable=g-import-not-at-top
  return QuestionAnswering(config, stored)
