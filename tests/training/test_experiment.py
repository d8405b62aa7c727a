import pytest

from lm import experiments
from lm.errors import LmError
from lm.training import experiment


def test_base_config_validates():
  experiments.validate(experiments.base_config())


def test_base_config_is_the_engine_keys_and_each_objectives_section():
  c = experiments.base_config()
  engine = experiment.engine_config()
  assert set(engine.keys()) < set(c.keys())
  sections = set(c.keys()) - set(engine.keys())
  assert sections == {"sample", "mlm", "contrastive", "task", "span_corruption",
                      "seq2seq", "distill"}
  for name, (cls, _) in experiments.REGISTRY.items():
    for section, defaults in cls.config_sections.items():
      assert c[section].to_dict() == defaults().to_dict(), (name, section)


def test_unknown_key_is_named():
  c = experiments.base_config()
  c.unlock()
  c.optimizer.learning_rte = 1.0
  with pytest.raises(LmError, match=r"unknown config key 'optimizer.learning_rte'"):
    experiments.validate(c)


def test_unknown_key_in_an_objective_section_is_named():
  c = experiments.base_config()
  c.unlock()
  c.mlm.mask_rat = 0.2
  with pytest.raises(LmError, match=r"unknown config key 'mlm.mask_rat'"):
    experiments.validate(c)
  # the engine alone checks its own sections and leaves the others
  experiment.validate(c)


def test_bad_values():
  c = experiments.base_config()
  c.steps = 0
  with pytest.raises(LmError, match="config.steps"):
    experiments.validate(c)


def test_a_prompt_for_an_objective_that_does_not_generate_is_refused():
  c = experiments.base_config()
  c.objective = "mlm"
  c.sample.prompt = "hello"
  with pytest.raises(LmError, match="config.sample.prompt is set but objective "
                     "'mlm' does not generate text; clear sample.prompt or "
                     "train with objective 'causal'."):
    experiments.validate(c)


def test_unknown_objective_is_one_sentence_from_the_registry():
  c = experiments.base_config()
  c.objective = "diffusion"
  with pytest.raises(LmError, match="config.objective='diffusion' is not known; "
                     "use one of 'causal', 'mlm'"):
    experiments.make_objective(c)
  with pytest.raises(LmError, match="config.objective='diffusion' is not known"):
    experiments.validate(c)


def test_model_overrides_only_set_fields():
  c = experiments.base_config()
  c.model.d_model = 96
  assert experiment.model_overrides(c) == {"d_model": 96}
