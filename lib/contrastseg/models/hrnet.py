"""HRNetV2 backbones (Wang et al., TPAMI 2020): timm's HRNet modules, run with the segmentation fusion.

The four levels are the four parallel branches of the last stage, finest first: for HRNetV2-W48 48, 96, 192 and 384
channels at strides 4, 8, 16 and 32 (W18: 18, 36, 72, 144; W18-small: 16, 32, 64, 128).

timm builds HRNet for ImageNet classification: ``features_only=True`` with its default ``feature_location="incre"``
returns the branches after the classification head's channel-increasing bottlenecks (128, 256, 512, 1024 channels
for every width), and ``out_indices`` 0 is the stride-2 stem. We ask for ``feature_location=""`` and
``out_indices=(1, 2, 3, 4)``: the raw branches, no classification layers. The parameter names are timm's, so
timm's ImageNet weights (those of the HRNet authors' classification release, which the segmentation papers
start from) load unchanged.

One difference from timm's forward: the classification HRNet upsamples the coarser branches in its fusion steps by
nearest neighbour with a fixed scale factor (inputs must then be multiples of 32), while the segmentation HRNet of
the papers' reference code resizes them bilinearly (``align_corners=True``) to the finer branch's size. The
``HRNetBackbone`` forward does the latter (``upsample_mode="bilinear"``, any input size); ``"nearest"`` gives timm's
forward exactly (for inputs that are multiples of 32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contrastseg.models.backbones import create_timm_features

HRNET_BACKBONES = ("hrnet_w18_small", "hrnet_w18", "hrnet_w48")
HRNET_OUTPUT_STRIDES = (4, 8, 16, 32)  # accepted and ignored, see HRNetBackbone


class HRNetBackbone(nn.Module):
    """An HRNetV2 from timm: the four branches of its last stage, finest first.

    ``output_stride`` does not apply: HRNet keeps a stride-4 branch throughout and its coarsest branch is always at
    stride 32, so ``reductions`` is (4, 8, 16, 32) whatever is asked. Any of 4, 8, 16, 32 is accepted (configs share
    one field with the ResNets, whose papers' value is 8) and ignored; other values raise.

    Args:
        name: one of ``HRNET_BACKBONES``.
        output_stride: accepted and ignored (see above).
        pretrained: ``""``, ``"timm"`` or a local weights file, as for ``TimmBackbone``.
        upsample_mode: how the fusion steps resize coarser branches: ``"bilinear"`` (``align_corners=True``, the
            segmentation HRNet) or ``"nearest"`` (timm's classification HRNet; inputs must be multiples of 32).

    Shape:
        images: (B, 3, H, W) -> four maps (B, C_l, ceil(H / r_l), ceil(W / r_l)), r = ``self.reductions``.
    """

    def __init__(self, name: str, output_stride: int = 32, pretrained: str = "", upsample_mode: str = "bilinear"):
        super().__init__()
        if name not in HRNET_BACKBONES:
            raise ValueError(f"unknown HRNet {name!r}; valid names: {', '.join(HRNET_BACKBONES)}")
        if output_stride not in HRNET_OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {HRNET_OUTPUT_STRIDES} (HRNet ignores it), "
                             f"got {output_stride}")
        if upsample_mode not in ("bilinear", "nearest"):
            raise ValueError(f"upsample_mode must be 'bilinear' or 'nearest', got {upsample_mode!r}")
        self.body = create_timm_features(name, pretrained, feature_location="", out_indices=(1, 2, 3, 4))
        self.upsample_mode = upsample_mode
        self.channels = tuple(self.body.feature_info.channels())
        self.reductions = tuple(self.body.feature_info.reduction())
        for stage in (self.body.stage2, self.body.stage3, self.body.stage4):
            for module in stage:
                drop_fixed_upsampling(module)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        body = self.body
        x = body.act1(body.bn1(body.conv1(images)))
        x = body.layer1(body.act2(body.bn2(body.conv2(x))))
        branches = [x]
        for transition, stage in ((body.transition1, body.stage2), (body.transition2, body.stage3),
                                  (body.transition3, body.stage4)):
            branches = self.transition(transition, branches)
            for module in stage:
                branches = self.exchange(module, branches)
        return tuple(branches)

    @staticmethod
    def transition(layers: nn.ModuleList, branches: list[torch.Tensor]) -> list[torch.Tensor]:
        """Into the next stage: existing branches through their layer (mostly identity), a new one from the coarsest."""
        return [layer(branches[min(index, len(branches) - 1)]) for index, layer in enumerate(layers)]

    def exchange(self, module: nn.Module, branches: list[torch.Tensor]) -> list[torch.Tensor]:
        """One HRNet module: each branch's residual blocks, then every output branch sums all resized branches.

        Coarser inputs go through their 1x1 conv-BN and are resized to the output branch (``upsample_mode``); finer
        ones through timm's strided 3x3 convolutions; the branch itself enters unchanged.
        """
        branches = [blocks(branch) for blocks, branch in zip(module.branches, branches)]
        if module.num_branches == 1:
            return branches
        fused = []
        for out_index, layers in enumerate(module.fuse_layers):
            size = branches[out_index].shape[-2:]
            total = None
            for in_index, (layer, branch) in enumerate(zip(layers, branches)):
                term = layer(branch)
                if in_index > out_index:
                    term = self.resize(term, size)
                total = term if total is None else total + term
            fused.append(module.fuse_act(total))
        return fused

    def resize(self, features: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if self.upsample_mode == "nearest":
            return F.interpolate(features, size=size, mode="nearest")
        return F.interpolate(features, size=size, mode="bilinear", align_corners=True)


def drop_fixed_upsampling(module: nn.Module) -> None:
    """Replace the fixed-factor ``nn.Upsample`` closing timm's coarse-to-fine fuse layers by an identity.

    ``HRNetBackbone.exchange`` resizes to the target branch's size instead. The upsampling has no parameters, so
    state dicts are unchanged.
    """
    if module.num_branches == 1:
        return
    for out_index, layers in enumerate(module.fuse_layers):
        for in_index in range(out_index + 1, len(layers)):
            if not isinstance(layers[in_index][-1], nn.Upsample):
                raise TypeError(f"unexpected timm HRNet fuse layer (a timm version change?): expected it to end "
                                f"with an nn.Upsample, got {layers[in_index]}")
            layers[in_index][-1] = nn.Identity()
