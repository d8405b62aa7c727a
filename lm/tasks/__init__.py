"""Fine-tuning tasks and downstream evaluation.

`lm.experiments.make_objective(config, stored)` returns the task
`config.objective` names; each subclasses `lm.tasks.finetune.Task`, on the
objective contract of `lm.training.objective`, so the one training loop
fine-tunes them:

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
