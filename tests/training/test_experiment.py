import pytest

from lm.errors import LmError
from lm.training import experiment


def test_base_config_validates():
  experiment.validate(experiment.base_config())


def test_unknown_key_is_named():
  c = experiment.base_config()
  c.unlock()
  c.optimizer.learning_rte = 1.0
  with pytest.raises(LmError, match=r"unknown config key 'optimizer.learning_rte'"):
    experiment.validate(c)


def test_bad_values():
  c = experiment.base_config()
  c.steps = 0
  with pytest.raises(LmError, match="config.steps"):
    experiment.validate(c)


def test_unknown_objective_is_one_sentence_from_the_registry():
  from lm import experiments
  c = experiment.base_config()
  c.objective = "diffusion"
  with pytest.raises(LmError, match="config.objective='diffusion' is not known; "
                     "use one of 'causal', 'mlm'"):
    experiments.make_objective(c)


def test_model_overrides_only_set_fields():
  c = experiment.base_config()
  c.model.d_model = 96
  assert experiment.model_overrides(c) == {"d_model": 96}
