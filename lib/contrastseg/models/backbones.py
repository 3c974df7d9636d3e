"""Backbones: multi-level feature extractors with a common interface.

Every backbone is an ``nn.Module`` that maps images (B, 3, H, W) to a tuple of four feature maps, finest first,
and exposes ``channels`` (per level) and ``reductions`` (stride of each level relative to the input). ResNets come
from timm (``features_only=True``, dilated to the requested output stride); HRNets (``models.hrnet``) give their
four parallel branches; ``TinyBackbone`` is a small plain CNN for CPU smoke runs and tests.

ResNet-101 variants: ``resnet101`` is the plain (7x7-stem) ResNet-101. The papers' DeepLabV3 uses the reference
code's "deep base" ResNet-101, whose stem is three 3x3 convolutions (64, 64, 128 channels) with plain strided 1x1
shortcuts: timm's ``resnet101s`` is that architecture. ``resnet101d`` (stem 32, 32, 64 and average-pool shortcuts,
the ResNet-D tweaks) is registered too for its stronger ImageNet weights, but is the farther match.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

TIMM_BACKBONES = ("resnet18", "resnet50", "resnet101", "resnet101s", "resnet101d")


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 kernel_size: int = 3) -> nn.Sequential:
    """Convolution (no bias, "same" padding), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=dilation * (kernel_size // 2),
                  dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(nn.Module):
    """A four-stage plain CNN for CPU smoke runs: a stride-4 stem, then one stride-2 (or dilated) stage per level.

    Stages past ``output_stride`` keep the resolution and grow their dilation instead, as dilated ResNets do.

    Shape:
        images: (B, 3, H, W) -> four maps (B, C_l, ceil(H / r_l), ceil(W / r_l)), r = ``self.reductions``.
    """

    def __init__(self, output_stride: int = 8, widths: tuple[int, ...] = (16, 32, 48, 64)):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(3, widths[0] // 2, stride=2), conv_bn_relu(widths[0] // 2, widths[0]))
        stages, reductions, reduction, dilation = [], [], 2, 1
        in_channels = widths[0]
        for level, width in enumerate(widths):
            stride = 2 if level == 0 or reduction < output_stride else 1
            if stride == 1:
                dilation *= 2
            reduction *= stride
            stages.append(nn.Sequential(conv_bn_relu(in_channels, width, stride=stride, dilation=dilation),
                                        conv_bn_relu(width, width, dilation=dilation)))
            reductions.append(reduction)
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.channels = tuple(widths)
        self.reductions = tuple(reductions)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.stem(images)
        levels = []
        for stage in self.stages:
            x = stage(x)
            levels.append(x)
        return tuple(levels)


class TimmBackbone(nn.Module):
    """A timm model with ``features_only=True``: the four stages after the stem (strides 4, 8, 16, 32 before dilation).

    Shape:
        images: (B, 3, H, W) -> four maps (B, C_l, ceil(H / r_l), ceil(W / r_l)), r = ``self.reductions``.
    """

    def __init__(self, name: str, output_stride: int = 8, pretrained: str = ""):
        super().__init__()
        self.body = create_timm_features(name, pretrained, output_stride=output_stride, out_indices=(1, 2, 3, 4))
        self.channels = tuple(self.body.feature_info.channels())
        self.reductions = tuple(min(r, output_stride) for r in self.body.feature_info.reduction())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.body(images))


def create_timm_features(name: str, pretrained: str = "", **kwargs) -> nn.Module:
    """``timm.create_model(name, features_only=True, **kwargs)`` with this library's ``pretrained`` rules.

    Args:
        name: the timm model name.
        pretrained: ``""`` (random initialisation), ``"timm"`` (timm's default weights for ``name``, loaded by timm
            as ``timm.create_model(name, pretrained=True)`` does: from the Hugging Face hub cache, downloaded when
            not there, unless the environment sets ``HF_HUB_OFFLINE=1``) or the path of a local weights file
            (``load_weights_file``, strict).
        **kwargs: further arguments of ``timm.create_model`` (``out_indices``, ``output_stride``, ...).
    """
    import timm

    if pretrained == "timm":
        return timm.create_model(name, features_only=True, pretrained=True, **kwargs)
    body = timm.create_model(name, features_only=True, pretrained=False, **kwargs)
    if pretrained:
        load_weights_file(body, Path(pretrained), classification_keys=timm_classification_keys(name, body))
    return body


def timm_classification_keys(name: str, body: nn.Module) -> set[str]:
    """The state-dict keys of timm's full model ``name`` that its ``features_only`` model ``body`` leaves out (the
    classifier, and for HRNet its classification branches): a checkpoint of the full model holds them.

    The full model is built on the meta device (no memory, no weights) and under a forked RNG, so building it
    leaves the random initialisation of what is built next unchanged.
    """
    import timm

    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        full = timm.create_model(name, pretrained=False)
    return set(full.state_dict()) - set(body.state_dict())


def load_weights_file(module: nn.Module, path: Path, *, strict: bool = True,
                      classification_keys: set[str] = frozenset()) -> None:
    """Load a local state dict (``.pth``/``.pt`` or ``.safetensors``) into ``module``.

    A checkpoint dict may hold the state dict under ``"state_dict"`` or ``"model"``. Keys in
    ``classification_keys`` (layers of a full classification model that ``module`` leaves out) are dropped first.

    Args:
        strict: every key of ``module`` must be in the file and every other key of the file must be dropped; when
            False, what matches is loaded and the rest is left as it is (at least one key must match).

    Raises:
        FileNotFoundError: no such file. ValueError: the keys do not match (the message names the file and lists
        the missing and the unexpected keys), or with ``strict=False`` no key matches.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state))
    state = {key: value for key, value in state.items() if key not in classification_keys}
    expected = set(module.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if strict and (missing or unexpected):
        raise ValueError(f"pretrained weights file {path} does not match the backbone: "
                         f"missing keys {key_list(missing)}; unexpected keys {key_list(unexpected)} "
                         f"(load_weights_file(..., strict=False) loads the keys that match)")
    if len(missing) == len(expected):
        raise ValueError(f"no parameter of the backbone matched the keys in {path}")
    module.load_state_dict(state, strict=False)


def key_list(keys: list[str], shown: int = 20) -> str:
    """``keys`` for an error message: the first ``shown`` of them, and how many more there are."""
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"({len(keys)}) {keys[:shown]}{more}"
