"""The papers' training settings per (paper, data set, model): the ``paper`` preset.

A setting is named ``<paper>/<data set>/<model>``, e.g. ``pixel_contrast/cityscapes/hrnet_w48``, and chosen through
the preset name ``"paper:<setting>"``::

    cfg = preset("paper:pixel_contrast/cityscapes/hrnet_w48", method="pixel_contrast")

so a notebook's ``preset`` parameter carries it and no notebook code changes between presets. Where the values come
from is summarised in ``docs/methods.md#paper-settings``; each setting names its source, and ``verified`` says
whether the values were read in the paper itself. None could be: the
reference code's configs (pixel contrast) and our design defaults where the papers are silent stand in.

Data roots are relative (``"cityscapes"``) and resolved under ``$CONTRASTSEG_DATA`` (default ``./data``, see
``contrastseg.paths.resolve_data_root``), so a run's config hash does not depend on where the data lives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contrastseg.registry import lookup

MULTI_SCALE = "0.5,0.75,1,1.25,1.5,1.75,2"  # the reference's test scales (openseg *_TEST.json)
MULTI_SCALE_FROM_075 = "0.75,1,1.25,1.5,1.75,2"  # Contextrast's stated test scales (0.75 to 2.0, step 0.25)


@dataclass(frozen=True)
class DataSetNeeds:
    """Where a data set goes under the data root, and its validation split's size for the dry run's estimate.

    ``val_pixels`` is the mean number of pixels of a validation image.
    """

    folder: str
    val_images: int
    val_pixels: int


DATA_SETS = {
    "cityscapes": DataSetNeeds("cityscapes", 500, 1024 * 2048),
    "camvid": DataSetNeeds("camvid", 101, 720 * 960),
    "pascal_context": DataSetNeeds("pascal_context", 5105, 375 * 500),
    "coco_stuff10k": DataSetNeeds("coco_stuff10k", 1000, 480 * 640),
    "ade20k": DataSetNeeds("ade20k", 2000, 512 * 683),
    "voc_aug": DataSetNeeds("voc_aug", 1449, 375 * 500),
}


# Shared by every setting: the whole splits, GPU bookkeeping, and the optimiser family of the supervised papers.
COMMON = dict(num_train=0, num_val=0, pretrained="timm", num_threads=0, num_workers=8, checkpoint_every=1000,
              optimizer="sgd", momentum=0.9, poly_power=0.9, scale_min=0.5, scale_max=2.0)
# The reference's pixel-contrast hyper-parameters (tfzhou/ContrastiveSeg configs), at their real scale.
PIXEL_CONTRAST = dict(proj_dim=256, contrast_weight=0.1, contrast_warmup=5000, temperature=0.1, base_temperature=0.07,
                      max_samples=1024, max_views=100, memory_size=5000, pixels_per_update=10)
# The mask-classification model at MaskFormer's size, with its optimiser (design: unknown for RC²L).
MASKFORMER = dict(head="mask_classification", num_queries=100, mask_dim=256, decoder_layers=6, optimizer="adamw",
                  lr=1e-4, weight_decay=1e-4, ema_momentum=0.999, proj_dim=256)

# The papers' models; the HRNet and OCR heads in the pixel-contrast reference code's forms (tfzhou/ContrastiveSeg,
# ``reference_heads``).
MODELS = {
    "hrnet_w48": dict(backbone="hrnet_w48", head="hrnet", reference_heads=True),
    "hrnet_w48_ocr": dict(backbone="hrnet_w48", head="ocr", aux_weight=0.4, reference_heads=True),
    "deeplabv3_r101": dict(backbone="resnet101s", head="deeplabv3", output_stride=8, aux_weight=0.4),  # deep stem
    "maskformer_r101": dict(backbone="resnet101", output_stride=32, **MASKFORMER),
}


@dataclass(frozen=True)
class PaperSetting:
    """One (paper, data set, model) training setting.

    Args:
        name: ``<paper>/<data set>/<model>``.
        overrides: ExperimentConfig fields on top of the defaults (the method comes from the notebook's row).
        source: where the values come from; the parts that are design are named in ``note``.
        verified: the values were read in the paper itself.
        note: what is a design choice here.
    """

    name: str
    overrides: dict = field(repr=False)
    source: str
    verified: bool = False
    note: str = ""

    @property
    def paper(self) -> str:
        return self.name.split("/")[0]

    @property
    def dataset(self) -> str:
        return self.overrides["dataset"]


def _setting(paper: str, dataset: str, model: str, source: str, note: str = "", **values) -> PaperSetting:
    overrides = COMMON | MODELS[model] | (PIXEL_CONTRAST if paper == "pixel_contrast" else {}) \
        | dict(dataset=dataset, data_root=DATA_SETS[dataset].folder) | values
    return PaperSetting(f"{paper}/{dataset}/{model}", overrides, source, note=note)


CITYSCAPES_CROP = dict(image_size=512, crop_width=1024, base_size=1024)
_PC_SOURCE = "the reference's configs and scripts (the paper's Sec. 4.1 unread); docs/methods.md#paper-settings"
_CTX_SOURCE = "the paper's text without its tables; LR and WD are our choice; docs/methods.md#paper-settings"
_RC2L_SOURCE = "our choice: RC²L's settings are unknown; docs/methods.md#paper-settings"

SETTINGS: dict[str, PaperSetting] = {s.name: s for s in [
    *[_setting("pixel_contrast", "cityscapes", model, _PC_SOURCE, batch_size=8, steps=40000, lr=0.01,
               weight_decay=5e-4, **CITYSCAPES_CROP)
      for model in ("hrnet_w48", "hrnet_w48_ocr", "deeplabv3_r101")],
    *[_setting("pixel_contrast", dataset, model, _PC_SOURCE, "temperature 0.07 as in these data sets' configs",
               batch_size=16, steps=30000, lr=0.001, weight_decay=1e-4, image_size=520, base_size=520,
               temperature=0.07, eval_scales=MULTI_SCALE, eval_flip=True)
      for dataset in ("pascal_context", "coco_stuff10k") for model in ("hrnet_w48", "hrnet_w48_ocr")],
    *[_setting("pixel_contrast", "camvid", model, _PC_SOURCE, "crop 360 x 480 (the config's 480 x 360, W x H)",
               batch_size=16, steps=30000, lr=0.001, weight_decay=1e-4, image_size=360, crop_width=480,
               base_size=360, temperature=0.07, eval_scales=MULTI_SCALE, eval_flip=True)
      for model in ("hrnet_w48", "hrnet_w48_ocr")],
    *[_setting("contextrast", "cityscapes", model, _CTX_SOURCE, "single-scale val as the paper (after Pissas)",
               batch_size=8, steps=40000, lr=0.01, weight_decay=5e-4, **CITYSCAPES_CROP)
      for model in ("hrnet_w48", "hrnet_w48_ocr", "deeplabv3_r101")],
    _setting("contextrast", "camvid", "hrnet_w48", _CTX_SOURCE, "crop 720 x 720 and flip at test are design",
             batch_size=16, steps=6000, lr=0.01, weight_decay=5e-4, image_size=720, base_size=720,
             eval_scales=MULTI_SCALE_FROM_075, eval_flip=True),
    _setting("contextrast", "ade20k", "hrnet_w48", _CTX_SOURCE, "flip at test is design",
             batch_size=12, steps=80000, lr=0.01, weight_decay=1e-4, image_size=512, base_size=512,
             eval_scales=MULTI_SCALE_FROM_075, eval_flip=True),
    _setting("contextrast", "coco_stuff10k", "hrnet_w48", _CTX_SOURCE, "60k iterations and flip at test are design",
             batch_size=16, steps=60000, lr=0.001, weight_decay=1e-4, image_size=512, base_size=512,
             eval_scales=MULTI_SCALE_FROM_075, eval_flip=True),
    _setting("contextrast", "pascal_context", "hrnet_w48", _CTX_SOURCE,
             "30k iterations and flip at test are design", batch_size=16, steps=30000, lr=0.001, weight_decay=1e-4,
             image_size=512, base_size=512, eval_scales=MULTI_SCALE_FROM_075, eval_flip=True),
    _setting("rc2l", "voc_aug", "maskformer_r101", _RC2L_SOURCE, "blended VOC protocol, our nested partitions",
             train_split="aug", batch_size=8, unlabeled_batch_size=8, steps=40000, image_size=512,
             base_size=512),
    _setting("rc2l", "cityscapes", "maskformer_r101", _RC2L_SOURCE, "crop 768, 80k iterations, sliding window",
             batch_size=8, unlabeled_batch_size=8, steps=80000, image_size=768, base_size=1024,
             eval_window="768x768"),
]}


def paper_setting(name: str) -> PaperSetting:
    """The setting called ``name``; an unknown name raises a ValueError listing the valid ones."""
    return lookup(SETTINGS, name, "paper setting")


def settings_for(paper: str) -> list[str]:
    """The names of ``paper``'s settings, in definition order."""
    return [name for name, setting in SETTINGS.items() if setting.paper == paper]
