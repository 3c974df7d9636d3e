"""The supervised dense baseline: pixel cross-entropy (+ the auxiliary head's), the reference every dense method is
compared with. Its objective is the core's ``objectives.CrossEntropyObjective``, which the dense methods extend."""

from contrastseg.method import Method, MethodConfig


class CrossEntropyConfig(MethodConfig):
    """Cross-entropy has no fields of its own (the auxiliary head's weight ``aux_weight`` is the model's)."""


METHOD = Method("ce", CrossEntropyConfig, "contrastseg.objectives.cross_entropy:CrossEntropyObjective",
                summary="pixel cross-entropy, the dense baseline")
