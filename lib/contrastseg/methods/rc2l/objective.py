"""RC²L (Zhang et al., IJCAI 2022): the supervised set loss plus four region terms on unlabeled images.

``RC2LObjective`` (method ``"rc2l"``) extends the supervised mask-classification objective
(``objectives.MaskClassificationObjective``: Hungarian matching of queries to ground-truth regions, class CE, mask
BCE and dice) with four unlabeled terms. The teacher (the EMA of the student, run on the
weak view) gives pseudo-regions: queries whose top class probability reaches ``confidence_threshold``, masks at
sigmoid > 0.5. With CutMix the student sees a mixed strong view, and the teacher's regions are mixed with the same
boxes: an image keeps its own regions outside its box and takes its partner's regions inside it (regions left empty
are dropped). The student's queries are matched to these regions like to ground truth, and:

* ``rcc`` (region class consistency): the class loss of the matched student queries with the teacher's region
  classes as targets; with ``rcc_unmatched`` also every other query towards "no object" (MaskFormer's rule for
  ground truth). Off by default: a region the teacher filtered out is unknown, not empty, and early in training,
  when the teacher keeps no region at all, that rule trains the student to see nothing in unlabeled images (at the
  smoke preset, one seed, RC²L read 0.294 / 0.282 val mIoU at 1/8 / 1/2 labeled with it and 0.301 / 0.300 without);
* ``smc`` (semantic mask consistency): BCE + dice between the student's semantic map (MaskFormer's inference,
  sum over queries of class probability x mask probability) and the union of the teacher's masks per class, for the
  classes the teacher kept, over every pixel;
* ``rmc`` (region mask contrast): InfoNCE whose similarity is the dice between a matched student mask and the
  teacher's masks of the same image (the positive is its own region);
* ``rfc`` (region feature contrast): InfoNCE between mask-average-pooled region features, student (soft masks over
  the student's pixel features) against teacher (binary masks over the teacher's pixel features, CutMix-ed), each
  through the objective's region projector, with every teacher region of the batch as a negative. The projector is
  two linear layers, mask_dim -> mask_dim -> ``region_proj_dim``, ReLU between, L2-normalised output: the method's
  256 -> 256 -> 128 (the decoder's query width, a hidden layer of 256, 128 out) at MaskFormer's mask_dim of 256. Its
  output size is its own field, apart from ``proj_dim`` (the dense methods' projection head).

Total = 2 x class + 5 x mask_bce + 5 x mask_dice (Mask2Former's weights) + r(step) x (lambda_u x (rcc + smc) +
lambda_c x (rmc + rfc)), r the sigmoid ramp exp(-5 (1 - t)^2) over the first ``unlabeled_rampup`` of the steps
(Laine & Aila).

Reconstructed (only the paper's abstract, introduction and figure captions could be read; ``docs/methods.md#rc2l``),
each a choice of ours: every loss's exact form (see ``losses.region`` and ``losses`` in this folder), the matching cost, the loss weights and the
ramp (applied to all four unlabeled terms, since all of them rest on the teacher's regions), the threshold, the
projector (applied to the teacher's features too, without gradient), CutMix on (``cutmix_probability``; it cuts the
teacher's regions with the same boxes, and ``cutmix_probability=0`` keeps the views uncut and aligned), and
masks compared at the mask logits' resolution (stride 4) for matching and the unlabeled terms, but at the labels'
resolution for the supervised mask losses (matched masks upsampled), so thin classes keep their pixels.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from contrastseg.losses.region import dice_similarity, mask_average_pool
from contrastseg.methods.rc2l.config import REGION_LOSSES, region_loss_names
from contrastseg.methods.rc2l.losses import (RegionClassConsistencyLoss, RegionFeatureContrastLoss,
                                             RegionMaskContrastLoss, SemanticMaskConsistencyLoss)
from contrastseg.objectives.mask_classification import NO_OBJECT_WEIGHT, MaskClassificationObjective, Regions
from contrastseg.samplers.region_matching import semantic_targets, teacher_regions

if TYPE_CHECKING:
    from contrastseg.engine.semi import UnlabeledOutputs

CONSISTENCY_TERMS = ("rcc", "smc")
CONTRAST_TERMS = ("rmc", "rfc")


def sigmoid_rampup(step: int, rampup_steps: float) -> float:
    """exp(-5 (1 - t)^2) with t = step / rampup_steps clipped to [0, 1]; 1 from the start when rampup_steps is 0."""
    if rampup_steps <= 0:
        return 1.0
    t = min(max(step / rampup_steps, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


class RC2LObjective(MaskClassificationObjective):
    """RC²L: the supervised set loss plus region-level consistency (RCC, SMC) and contrast (RMC, RFC) on unlabeled
    images against an EMA teacher. See the module docstring for every term and choice.

    Args:
        num_classes, ignore_index: as for the supervised loss.
        mask_dim: channels of the model's pixel features (the projector's input).
        region_proj_dim: output size of the region projector (mask_dim -> mask_dim -> region_proj_dim, ReLU
            between, L2-normalised output; the method's 128).
        region_losses: the unlabeled terms to compute, a subset of ("rcc", "smc", "rmc", "rfc").
        confidence_threshold: a teacher query becomes a region when its top class probability reaches this.
        unlabeled_weight: lambda_u of RCC and SMC.
        contrast_weight: lambda_c of RMC and RFC.
        rampup_steps: steps of the sigmoid ramp of the unlabeled weights (0: none).
        mask_temperature, feature_temperature: InfoNCE temperatures of RMC and RFC (0.1 each, a choice of ours).
        rcc_unmatched: RCC also pushes unmatched queries towards "no object" (see the module docstring).

    Diagnostics (``diagnostics()``, of the last forward, this process's batch; none without unlabeled terms):

    * ``teacher_regions``: regions the teacher kept per unlabeled image (mean; 0 when no query reaches
      ``confidence_threshold``, and the unlabeled terms then have no region to work on);
    * ``matched_regions``: student queries matched to a (CutMix-ed) teacher region, per unlabeled image (mean);
    * ``pseudo_label_coverage``: share of the unlabeled pixels (at the mask resolution, after CutMix) under a kept
      region.

    Shape:
        outputs: the student's dict on the labeled images; labels: (B, H, W) int64;
        unlabeled: the student's dict on the CutMix-ed strong views, the teacher's on the weak views, and the CutMix
        boxes (``engine.semi.UnlabeledOutputs``); required when a region loss is on.
    """

    method_terms = CONSISTENCY_TERMS + CONTRAST_TERMS

    def __init__(self, num_classes: int, ignore_index: int = 255, *, mask_dim: int = 256, region_proj_dim: int = 128,
                 region_losses: tuple[str, ...] = REGION_LOSSES, confidence_threshold: float = 0.7,
                 unlabeled_weight: float = 1.0, contrast_weight: float = 0.1, rampup_steps: float = 0.0,
                 mask_temperature: float = 0.1, feature_temperature: float = 0.1, rcc_unmatched: bool = False):
        super().__init__(num_classes, ignore_index)
        unknown = sorted(set(region_losses) - set(REGION_LOSSES))
        if unknown:
            raise ValueError(f"unknown region losses {unknown}; valid names: {', '.join(REGION_LOSSES)}")
        self.region_losses = tuple(name for name in REGION_LOSSES if name in region_losses)
        self.confidence_threshold = confidence_threshold
        self.unlabeled_weight, self.contrast_weight = unlabeled_weight, contrast_weight
        self.rampup_steps = rampup_steps
        self.rcc_unmatched = rcc_unmatched
        self.rcc_loss = RegionClassConsistencyLoss(NO_OBJECT_WEIGHT)
        self.smc_loss = SemanticMaskConsistencyLoss()
        self.rmc_loss = RegionMaskContrastLoss(mask_temperature)
        self.rfc_loss = RegionFeatureContrastLoss(feature_temperature)
        self.projector = nn.Sequential(nn.Linear(mask_dim, mask_dim), nn.ReLU(inplace=True),
                                       nn.Linear(mask_dim, region_proj_dim))

    @classmethod
    def from_config(cls, cfg, num_classes: int, ignore_index: int = 255) -> "RC2LObjective":
        return cls(num_classes, ignore_index, mask_dim=cfg.mask_dim, region_proj_dim=cfg.region_proj_dim,
                   region_losses=region_loss_names(cfg.region_losses), confidence_threshold=cfg.confidence_threshold,
                   unlabeled_weight=cfg.unlabeled_weight, contrast_weight=cfg.contrast_weight,
                   rampup_steps=cfg.unlabeled_rampup * cfg.steps, feature_temperature=cfg.temperature,
                   rcc_unmatched=cfg.rcc_unmatched)

    def forward(self, outputs: dict, labels: torch.Tensor, step: int,
                unlabeled: UnlabeledOutputs | None = None) -> dict[str, torch.Tensor]:
        terms = self.set_loss(outputs, labels)
        self.last_counts = {}
        if self.region_losses:
            if unlabeled is None:
                raise ValueError("RC²L's region losses need the step's unlabeled outputs (the engine passes them to "
                                 "a semi-supervised method's objective)")
            terms |= self.unlabeled_terms(unlabeled.student, unlabeled.teacher, unlabeled.cutmix)
        return terms

    def pseudo_regions(self, teacher: dict, cutmix) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The teacher's regions per image, mixed like the student's view: own regions outside the CutMix box, the
        partner's inside it, empty ones dropped.

        Returns:
            classes[b] (T_b,) int64 and masks[b] (T_b, h, w) float {0, 1}, at the teacher's mask resolution.
        """
        class_logits, mask_logits = teacher["class_logits"].float(), teacher["mask_logits"].float()
        own = [teacher_regions(class_logits[b], mask_logits[b], self.confidence_threshold)[:2]
               for b in range(len(class_logits))]
        box = cutmix.resized(mask_logits.shape[-2:]).float()
        classes, masks = [], []
        for image, partner in enumerate(cutmix.partner.tolist()):
            mixed_classes = torch.cat([own[image][0], own[partner][0]])
            mixed_masks = torch.cat([own[image][1] * (1 - box[image]), own[partner][1] * box[image]])
            keep = mixed_masks.flatten(1).sum(1) > 0
            classes.append(mixed_classes[keep])
            masks.append(mixed_masks[keep])
        with torch.no_grad():
            self.last_counts = {"teacher_regions": sum(len(regions) for regions, _ in own) / len(own),
                                "pseudo_label_coverage": torch.stack([(m.sum(0) > 0).float().mean()
                                                                      for m in masks]).mean()}
        return classes, masks

    def unlabeled_terms(self, student: dict, teacher: dict, cutmix) -> dict[str, torch.Tensor]:
        """RCC, SMC, RMC and RFC (those switched on) of the student's strong views against the teacher's regions."""
        class_logits, mask_logits = student["class_logits"].float(), student["mask_logits"].float()
        region_classes, region_masks = self.pseudo_regions(teacher, cutmix)
        regions = Regions.match(class_logits, mask_logits, region_classes, region_masks)
        self.last_counts["matched_regions"] = len(regions) / len(class_logits)
        terms = {}
        if "rcc" in self.region_losses:
            if self.rcc_unmatched:
                terms["rcc"] = self.rcc_loss(class_logits, regions.query_targets)
            else:  # the matched queries only, as one "image" of R queries (R = 0 gives a zero with a gradient)
                matched = class_logits[regions.image_index, regions.query_index]
                terms["rcc"] = self.rcc_loss(matched[None], regions.classes[None])
        if "smc" in self.region_losses:
            semantic, present = zip(*(semantic_targets(c, m, self.num_classes)
                                      for c, m in zip(region_classes, region_masks)))
            terms["smc"] = self.smc_loss(student["semantic"].float(), torch.stack(semantic), torch.stack(present))
        matched_logits = mask_logits[regions.image_index, regions.query_index]
        if "rmc" in self.region_losses:
            terms["rmc"] = self.rmc_loss(matched_logits.flatten(1), regions.masks.flatten(1), regions.image_index)
        if "rfc" in self.region_losses:
            student_features = mask_average_pool(student["pixel_features"].float(), matched_logits.sigmoid(),
                                                 regions.image_index)
            with torch.no_grad():
                teacher_features = mask_average_pool(cutmix.mix_with_partner(teacher["pixel_features"].float()),
                                                     regions.masks, regions.image_index)
                teacher_embeddings = F.normalize(self.projector(teacher_features), dim=1)
            terms["rfc"] = self.rfc_loss(F.normalize(self.projector(student_features), dim=1), teacher_embeddings)
        return terms

    @classmethod
    def describe_activity(cls, means: dict[str, float]) -> list[str]:
        phrases = []
        if "teacher_regions" in means:
            phrases.append(f"{means['teacher_regions']:.3g} teacher regions per unlabeled image")
        if "matched_regions" in means:
            phrases.append(f"{means['matched_regions']:.3g} matched")
        if "pseudo_label_coverage" in means:
            phrases.append(f"{100 * means['pseudo_label_coverage']:.0f} % of unlabeled pixels covered")
        return phrases

    def weights(self, step: int) -> dict[str, float]:
        ramp = sigmoid_rampup(step, self.rampup_steps)
        unlabeled = {name: ramp * (self.unlabeled_weight if name in CONSISTENCY_TERMS else self.contrast_weight)
                     for name in self.region_losses}
        return super().weights(step) | unlabeled


@torch.no_grad()
def inspect_regions(student: nn.Module, teacher: nn.Module, weak: torch.Tensor, strong: torch.Tensor,
                    threshold: float = 0.7) -> list[dict]:
    """What RC²L's unlabeled terms see on a few images (no CutMix): the teacher's regions on the weak views and the
    student queries matched to them on the strong views.

    Returns:
        Per image, a dict of numpy-ready tensors: "teacher_classes" (T,), "teacher_masks" (T, h, w) bool,
        "teacher_confidence" (T,), "student_classes" (T,) (the matched queries' own top classes), "student_masks"
        (T, h, w) bool (their masks at sigmoid > 0.5), "dice" (T,) (soft dice of each matched pair).

    Shape:
        weak, strong: (B, 3, H, W) float in [0, 1].
    """
    teacher_out, student_out = teacher.eval()(weak), student.eval()(strong)
    per_image = []
    for image in range(len(weak)):
        class_logits = teacher_out["class_logits"][image].float()
        classes, masks, queries = teacher_regions(class_logits, teacher_out["mask_logits"][image].float(), threshold)
        # a teacher has as many queries as the student, so every teacher region gets a query, in the teacher's order
        regions = Regions.match(student_out["class_logits"][image:image + 1].float(),
                                student_out["mask_logits"][image:image + 1].float(), [classes], [masks])
        matched_logits = student_out["mask_logits"][image, regions.query_index].float()
        dice = dice_similarity(matched_logits.sigmoid().flatten(1), masks.flatten(1)).diagonal()
        per_image.append({
            "teacher_classes": classes, "teacher_masks": masks > 0.5,
            "teacher_confidence": class_logits.softmax(-1)[queries, classes],
            "student_classes": student_out["class_logits"][image, regions.query_index, :-1].argmax(-1),
            "student_masks": matched_logits > 0, "dice": dice,
        })
    return per_image
