"""The supervised mask-classification baseline: MaskFormer's set loss on a mask-classification model (the baseline
of RC²L). Its objective is the core's ``objectives.MaskClassificationObjective``, which RC²L extends."""

from contrastseg.method import Method, MethodConfig


class MaskClassificationConfig(MethodConfig):
    """The set loss has no fields of its own (the model's size is the core's ``num_queries``, ``mask_dim`` and
    ``decoder_layers``)."""


METHOD = Method("mask_classification", MaskClassificationConfig,
                "contrastseg.objectives.mask_classification:MaskClassificationObjective",
                summary="MaskFormer's set loss, the mask-classification baseline", mask_classification=True)
