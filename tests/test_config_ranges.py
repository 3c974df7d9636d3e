"""Tests of the ranges of ExperimentConfig's float fields: finite, bounded, and errors that name field, value and
range."""

from __future__ import annotations

import math
import re
from dataclasses import fields

import pytest

from contrastseg.config import ExperimentConfig

FLOAT_FIELDS = [f.name for f in fields(ExperimentConfig) if f.type == "float"]


@pytest.mark.parametrize("value", [math.inf, 1e308, 10.5])
def test_lr_above_its_bound_is_rejected_by_name(value):
    with pytest.raises(ValueError, match=re.escape("config field 'lr' must be in (0, 10]") + ".*" +
                       re.escape(repr(value))):
        ExperimentConfig(lr=value)


def _rejection(name: str, value: float) -> str:
    """The error message of a config with ``name=value``, or "accepted"."""
    try:
        ExperimentConfig(**{name: value})
    except ValueError as error:
        return str(error)
    return "accepted"


def test_every_float_field_rejects_non_finite_values_naming_field_value_and_range():
    wrong = {}
    for name in FLOAT_FIELDS:
        for value in (math.inf, -math.inf, math.nan):
            message = _rejection(name, value)
            names_all = (f"config field {name!r} must be in " in message and message.endswith(f"got {value!r}"))
            if not names_all:
                wrong[f"{name}={value}"] = message
    assert not wrong, wrong


@pytest.mark.parametrize("name, value, rule", [
    ("weight_decay", 1.5, "in [0, 1]"),
    ("poly_power", 11.0, "in [0, 10]"),
    ("scale_max", 5.0, "in (0, 4]"),
    ("aux_weight", 101.0, "in [0, 100]"),
    ("contrast_weight", 1e6, "in [0, 100]"),
    ("unlabeled_weight", 1e30, "in [0, 100]"),
    ("temperature", 1e-300, "in [0.001, 10]"),
    ("temperature", 20.0, "in [0.001, 10]"),
    ("base_temperature", 1e-5, "in [0.001, 10]"),
])
def test_float_fields_without_a_natural_bound_have_a_stated_one(name, value, rule):
    with pytest.raises(ValueError, match=re.escape(f"config field {name!r} must be {rule}, got {value!r}")):
        ExperimentConfig(**{name: value})


def test_scale_max_is_checked_before_scale_min():
    with pytest.raises(ValueError, match=re.escape("config field 'scale_max' must be in (0, 4], got nan")):
        ExperimentConfig(scale_max=math.nan)


@pytest.mark.parametrize("scales", ["1,inf", "nan", "0.5,8"])
def test_evaluation_scales_are_finite_and_bounded(scales):
    with pytest.raises(ValueError, match=re.escape("'eval_scales' must be comma-separated numbers in (0, 4]")):
        ExperimentConfig(eval_scales=scales)
