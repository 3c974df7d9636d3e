"""Hydra and OmegaConf users: the experiment config is a structured config as it is (a frozen dataclass of
primitives), so ``OmegaConf.structured(smoke())`` types and checks its fields, and ``OmegaConf.to_object`` gives back
the ``ExperimentConfig`` that ``runs.get_or_train`` takes (the README's example)."""

from __future__ import annotations

import omegaconf
import pytest
from omegaconf import OmegaConf

from contrastseg.config import ExperimentConfig, smoke


def test_a_structured_config_round_trips_to_the_same_run():
    structured = OmegaConf.structured(smoke())
    assert structured.method == "ce" and structured.steps == smoke().steps
    merged = OmegaConf.merge(structured, OmegaConf.from_dotlist(["steps=50", "method=contextrast"]))
    config = OmegaConf.to_object(merged)
    assert isinstance(config, ExperimentConfig)
    assert config == smoke(steps=50, method="contextrast")
    assert config.hash() == smoke(steps=50, method="contextrast").hash()


def test_a_structured_config_refuses_unknown_names_and_wrong_types():
    structured = OmegaConf.structured(smoke())
    with pytest.raises(omegaconf.errors.ConfigKeyError, match="steps"):  # the suggestion names the valid field
        OmegaConf.merge(structured, OmegaConf.from_dotlist(["stepz=3"]))
    with pytest.raises(omegaconf.errors.ValidationError, match="steps"):
        OmegaConf.merge(structured, OmegaConf.from_dotlist(["steps=many"]))


def test_the_yaml_of_a_structured_config_names_every_field():
    text = OmegaConf.to_yaml(OmegaConf.structured(smoke()))
    assert all(f"\n{name}:" in "\n" + text for name in smoke().to_dict())
