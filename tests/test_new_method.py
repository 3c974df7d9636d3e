"""A new method is a config, an objective and one registry entry (``docs/architecture.md``): a toy method defined
here, with a field of its own, trains through the one way to train, keys its runs by its field, and leaves every
other method's run keys as they were."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch

from contrastseg import runs
from contrastseg.config import ExperimentConfig, experiment_config_class, preset, smoke
from contrastseg.method import Check, Method, MethodConfig, weight_check
from contrastseg.methods import METHODS
from contrastseg.objectives import CrossEntropyObjective


@dataclass(frozen=True)
class LogitPenaltyConfig(MethodConfig):
    """Fields:
    logit_penalty: weight of the mean squared logit."""

    logit_penalty: float = 0.01

    def checks(self) -> list[Check]:
        return super().checks() + [weight_check("logit_penalty", self.logit_penalty)]


class LogitPenaltyObjective(CrossEntropyObjective):
    """CE + ``logit_penalty`` x mean(logits²): a term of its own, with a weight and a diagnostic."""

    method_terms = ("penalty",)

    def __init__(self, num_classes: int, ignore_index: int = 255, *, logit_penalty: float = 0.01):
        super().__init__(num_classes, ignore_index)
        self.logit_penalty = logit_penalty

    @classmethod
    def from_config(cls, cfg, num_classes: int, ignore_index: int = 255) -> "LogitPenaltyObjective":
        return cls(num_classes, ignore_index, logit_penalty=cfg.logit_penalty)

    def forward(self, outputs, labels, step, unlabeled=None):
        terms = super().forward(outputs, labels, step)
        terms["penalty"] = outputs["logits"].float().pow(2).mean()
        self.last_counts = {"largest_logit": outputs["logits"].detach().abs().max()}
        return terms

    def weights(self, step):
        return super().weights(step) | {"penalty": self.logit_penalty}


TOY = Method("logit_penalty", LogitPenaltyConfig, LogitPenaltyObjective, summary="CE + a logit penalty")


@pytest.fixture
def toy_config_class():
    """The flat config class of the registry with the toy method's line added."""
    return experiment_config_class(METHODS | {TOY.name: TOY})


def toy_config(config_class, **changes):
    base = smoke(steps=6, checkpoint_every=3, num_train=16, num_val=4, batch_size=4, num_threads=1).to_dict()
    return config_class(**(base | {"method": TOY.name} | changes))


def test_the_flat_config_takes_the_new_methods_field(toy_config_class):
    names = [field.name for field in dataclasses.fields(toy_config_class)]
    assert "logit_penalty" in names and "logit_penalty" not in {f.name for f in dataclasses.fields(ExperimentConfig)}
    cfg = toy_config(toy_config_class, logit_penalty=0.5)
    assert cfg.key_fields()["logit_penalty"] == 0.5
    assert cfg.hash() != cfg.replace(logit_penalty=0.25).hash()
    with pytest.raises(ValueError, match=r"config field 'logit_penalty' must be in \[0, 100\], got -1.0"):
        cfg.replace(logit_penalty=-1.0)


def test_adding_a_method_changes_no_other_methods_run_key(toy_config_class):
    for name in ("ce", "pixel_contrast", "contextrast", "mask_classification", "rc2l"):
        standard = preset("smoke", method=name).to_dict()
        with_toy = toy_config_class(**standard)
        assert with_toy.hash() == ExperimentConfig(**standard).hash(), name


def test_the_new_method_trains_logs_its_term_and_is_found_again(toy_config_class, tmp_path):
    cfg = toy_config(toy_config_class, logit_penalty=0.5)
    result = runs.get_or_train(cfg, root=tmp_path, progress=False)
    log = result.log()
    assert len(log) == 6 and all(record["penalty"] > 0 for record in log)
    assert all("largest_logit" in record["diagnostics"] for record in log)
    first = log[0]
    assert first["loss"] == pytest.approx(first["ce"] + 0.5 * first["penalty"], rel=1e-6)
    assert result.run_dir.name.startswith("logit_penalty-")
    again = runs.get_or_train(cfg, root=tmp_path, progress=False)  # finished: found, not trained again
    assert again.run_dir == result.run_dir and again.log() == log
    assert torch.load(result.checkpoint, weights_only=True)["step"] == 6


def test_two_methods_that_declare_one_field_differently_are_refused():
    @dataclass(frozen=True)
    class OtherDefault(MethodConfig):
        logit_penalty: float = 0.02

    clash = Method("other", OtherDefault, LogitPenaltyObjective)
    with pytest.raises(TypeError, match="logit_penalty.*share one declaration"):
        experiment_config_class({TOY.name: TOY, clash.name: clash})
