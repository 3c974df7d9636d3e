"""What a method is to the core: a ``Method`` (name, config, objective, what it needs of the engine) and the config
pieces that several methods share.

A method lives in its own folder, ``contrastseg/methods/<name>/``, whose ``__init__.py`` defines ``METHOD``; the
registry ``contrastseg.methods.METHODS`` lists them. The core (config, engine, run store, tables) reaches a method
only through the registry: the flat ``ExperimentConfig`` takes each method's config fields, the engine builds the
objective that ``Method.objective`` names, and the semi-supervised and mask-classification flags choose the engine's
path and the model's head.

A method's config is a small frozen dataclass of primitives (``MethodConfig``): its fields are the ones the method
reads, they enter the run key of the method's runs (and only of those), and its ``checks`` validate them. Several
methods reading the same field (the contrastive weight, the temperature) take it from one of the shared pieces below,
so that a field has one declaration, one default and one check.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from dataclasses import dataclass, fields
from typing import Any

MAX_LOSS_WEIGHT = 100.0
TEMPERATURE_RANGE = (1e-3, 10.0)  # InfoNCE tau (the papers: 0.07 to 0.2); logits similarity / tau stay within ±1000

Check = tuple[str, bool, str]
"""A field check: (field name, whether the value is valid, the rule as the error states it)."""


def type_name(field: dataclasses.Field) -> str:
    """A field's type as written: "int", "float", "str" or "bool" (an annotation or its string form)."""
    return field.type if isinstance(field.type, str) else field.type.__name__


def check_fields(config, checks: list[Check]) -> None:
    """Raise the first failed check as ``config field 'name' must be <rule>, got <value>``.

    Every float field of ``config`` must also be finite, whether a check names it or not.
    """
    checks = list(checks) + [(f.name, math.isfinite(getattr(config, f.name)), "a finite number")
                             for f in fields(config) if type_name(f) == "float"]
    for name, ok, rule in checks:
        if not ok:
            raise ValueError(f"config field {name!r} must be {rule}, got {getattr(config, name)!r}")


def one_of(name: str, value: str, valid: tuple[str, ...], kind: str) -> None:
    """Raise ``unknown <kind> 'value'; valid names: ...`` unless ``value`` is one of ``valid``."""
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid names: {', '.join(sorted(valid))}")


def weight_check(name: str, value: float) -> Check:
    return name, 0 <= value <= MAX_LOSS_WEIGHT, f"in [0, {MAX_LOSS_WEIGHT:g}]"


def temperature_check(name: str, value: float) -> Check:
    return name, TEMPERATURE_RANGE[0] <= value <= TEMPERATURE_RANGE[1], "in [{:g}, {:g}]".format(*TEMPERATURE_RANGE)


@dataclass(frozen=True)
class MethodConfig:
    """Base of a method's config: frozen primitives, validated on creation by ``checks``.

    A subclass declares its fields with defaults and docstrings of their own (those defaults are the flat
    ``ExperimentConfig``'s), and extends ``checks``; ``from_fields`` builds it from the flat config.
    """

    def __post_init__(self) -> None:
        check_fields(self, self.checks())

    def checks(self) -> list[Check]:
        """The field checks of this config (a subclass adds its own to its bases')."""
        return []

    def projection_levels(self) -> int:
        """How many of the backbone's last levels the model projects for this method (0: no projection head)."""
        return 0

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_fields(cls, values: Any) -> "MethodConfig":
        """This config from an object holding its fields as attributes (an ``ExperimentConfig``)."""
        return cls(**{name: getattr(values, name) for name in cls.field_names()})


@dataclass(frozen=True)
class ContrastTermConfig(MethodConfig):
    """A contrastive term: its weight and InfoNCE temperature (pixel contrast, Contextrast, RC²L's RMC and RFC).

    Fields:
        contrast_weight: weight of the contrastive term in the total loss (RC²L: lambda_c of RMC and RFC).
        temperature: the InfoNCE temperature tau.
    """

    contrast_weight: float = 0.1
    temperature: float = 0.1

    def checks(self) -> list[Check]:
        return super().checks() + [weight_check("contrast_weight", self.contrast_weight),
                                   temperature_check("temperature", self.temperature)]


@dataclass(frozen=True)
class PixelEmbeddingConfig(ContrastTermConfig):
    """A contrastive term on projected pixel embeddings (pixel contrast, Contextrast).

    Fields:
        proj_dim: embedding size of the projection head.
        contrast_warmup: steps during which the contrastive term has weight 0 (it is still computed and logged).
    """

    proj_dim: int = 256
    contrast_warmup: int = 0

    def checks(self) -> list[Check]:
        return super().checks() + [("proj_dim", self.proj_dim >= 1, ">= 1"),
                                   ("contrast_warmup", self.contrast_warmup >= 0, ">= 0")]


@dataclass(frozen=True)
class SemiSupervisedConfig(MethodConfig):
    """What the engine reads for a semi-supervised method (``contrastseg.engine.semi``): the EMA teacher and the
    unlabeled stream.

    Fields:
        ema_momentum: the teacher's EMA momentum m, reached through the mean-teacher ramp min(1 - 1 / (step + 1), m).
        cutmix_probability: chance that a student's strong view gets a CutMix box from another unlabeled image.
        unlabeled_batch_size: unlabeled images per step (0 = ``batch_size``).
    """

    ema_momentum: float = 0.999
    cutmix_probability: float = 0.5
    unlabeled_batch_size: int = 0

    def checks(self) -> list[Check]:
        return super().checks() + [
            ("ema_momentum", 0 <= self.ema_momentum < 1, "in [0, 1)"),
            ("cutmix_probability", 0 <= self.cutmix_probability <= 1, "in [0, 1]"),
            ("unlabeled_batch_size", self.unlabeled_batch_size >= 0, ">= 0 (0 = batch_size)"),
        ]


@dataclass(frozen=True)
class Method:
    """A method as the registry lists it.

    Attributes:
        name: the value of the config field ``method``.
        config: its ``MethodConfig`` class.
        objective: its objective class, or "module:Class" naming it (imported on first use, so that the config
            and the registry load without torch). The objective protocol: ``objectives.CrossEntropyObjective``.
        summary: one line for listings.
        semi_supervised: the engine adds unlabeled images and an EMA teacher (``engine.semi``); the method's config
            then includes ``SemiSupervisedConfig``.
        mask_classification: the method needs a mask-classification model (head "mask_classification"); the
            others need a dense head.
    """

    name: str
    config: type[MethodConfig]
    objective: Any
    summary: str = ""
    semi_supervised: bool = False
    mask_classification: bool = False

    def __post_init__(self) -> None:
        if self.semi_supervised and not issubclass(self.config, SemiSupervisedConfig):
            raise TypeError(f"method {self.name!r} is semi-supervised, so its config must extend "
                            f"SemiSupervisedConfig (the engine reads the teacher's fields)")

    def objective_class(self) -> type:
        """The objective class (imported here when ``objective`` names it)."""
        if not isinstance(self.objective, str):
            return self.objective
        module, _, name = self.objective.partition(":")
        return getattr(importlib.import_module(module), name)

    def method_config(self, values: Any) -> MethodConfig:
        """The method's config taken from the flat config ``values`` (validated on creation)."""
        return self.config.from_fields(values)


def config_fields(methods) -> list[dataclasses.Field]:
    """The fields of every method's config, once each, in the order of ``methods`` (a shared field where it first
    appears).

    Raises:
        TypeError: two methods declare a field of the same name with another type or default.
    """
    collected: dict[str, dataclasses.Field] = {}
    for method in methods:
        for field in fields(method.config):
            known = collected.get(field.name)
            if known is None:
                collected[field.name] = field
            elif (type_name(known), known.default) != (type_name(field), field.default):
                raise TypeError(f"config field {field.name!r} of method {method.name!r} is {field.type} = "
                                f"{field.default!r}, but another method declares it as {known.type} = "
                                f"{known.default!r}; share one declaration")
    return list(collected.values())
