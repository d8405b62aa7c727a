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


@pytest.mark.parametrize("key,value,match", [
    ("steps", 0, "config.steps"),
    ("objective", "diffusion", "config.objective"),
])
def test_bad_values(key, value, match):
  c = experiment.base_config()
  c[key] = value
  with pytest.raises(LmError, match=match):
    experiment.validate(c)


def test_model_overrides_only_set_fields():
  c = experiment.base_config()
  c.model.d_model = 96
  assert experiment.model_overrides(c) == {"d_model": 96}
