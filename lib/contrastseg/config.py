"""ExperimentConfig: one frozen dataclass of primitives that names a training run.

Its fields are the core's (data, model, optimisation, run, evaluation: ``CoreFields``) and every registered
method's (``contrastseg.methods.METHODS``: each method's ``MethodConfig``), flat, so that a notebook's parameters
map onto them one to one. The config is validated on creation, and its run key
(``ExperimentConfig.key``: the fields the run reads, its numerics class and ``RESULTS_FORMAT``) names the run's
folder in the run store (``contrastseg.runs``), so two notebooks that ask for the same run share one trained model,
and configs that differ only in fields the run does not read (another method's fields, the loader workers, the
evaluation protocol) name the same run.

Presets are plain functions: ``smoke()`` (any CPU, seconds) and ``demo()`` (one GPU, or a CPU slowly). Each takes
field overrides as keyword arguments::

    cfg = demo(seed=1, steps=500)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from typing import ClassVar

from contrastseg.method import Method, MethodConfig, check_fields, config_fields, type_name, weight_check
from contrastseg.methods import METHODS, method_named

PRESETS = ("smoke", "laptop", "demo", "paper")  # "paper" takes a setting, as "paper:<setting>" (see ``preset``)
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("sgd", "adamw")
SPEEDS = ("deterministic", "fast")

# Bounds of the float fields that have no natural one. Each lies far beyond every preset's and paper setting's
# value and short of where training breaks down numerically (an SGD step overflowing, a loss term that is inf or NaN
# from the first step, a rescale that no memory holds).
MAX_LR = 10.0
MAX_WEIGHT_DECAY = 1.0
MAX_POLY_POWER = 10.0
MAX_SCALE = 4.0  # the training rescale factor and the evaluation scales

RESULTS_FORMAT = 2
"""Part of every run key. Bump it in the same commit as any change that alters what an existing config computes
(a loss, a sampler, the data generation, the model's initialisation, the evaluation): every stored run then has a key
that no config asks for any more, so nothing stale is served, and the store reports those runs as older-format."""

# What the training loop itself reads; a method's (its config), a model's and a data set's own fields are declared
# beside them (``key_fields``). Fields outside every list (device, threads, workers, checkpoint interval, speed
# switches, the evaluation protocol) do not enter the key: the device enters through the numerics class instead.
TRAINING_FIELDS = ("method", "optimizer", "steps", "batch_size", "lr", "weight_decay", "poly_power", "seed",
                   "num_devices")
EVALUATION_FIELDS = ("boundary_width", "eval_scales", "eval_flip", "eval_window", "eval_split")


@dataclass(frozen=True)
class CoreFields:
    """The core's fields of ``ExperimentConfig``, with its methods; primitives only.

    Every field is checked on creation: names against their registries, numbers against their ranges (every float
    is finite; the error names the field, the value and the allowed range); each method's fields by its config.

    Data:
        dataset: data set name (``contrastseg.data.DATASETS``).
        data_root: folder of a data set on disk; empty means SynthScapes generated on the fly.
        image_size: height of the training crop (its side when square) and side of the synthetic images, in pixels.
        crop_width: width of the training crop; 0 = ``image_size`` (square). Cityscapes in the papers: 512 x 1024.
        base_size: shorter image side that the random rescale's factor 1 means; 0 = ``image_size``. The papers
            rescale real images by [0.5, 2.0] around their stored size (Cityscapes: 1024).
        scale_min, scale_max: range of the random rescale factor of the training augmentation.
        train_split: the split the training images come from ("train"; VOC's semi-supervised pool is "aug").
        num_train: training images used (0 = the whole split).
        num_val: images of the evaluation split used (``eval_split``; 0 = the whole split).
        label_fraction: share of the training images that keep their labels (a nested, deterministic partition,
            ``contrastseg.data.partitions``); semi-supervised methods use the rest without labels, the others leave
            them out. 1 = every image labeled.
        partition_file: a split list naming the labeled training images; overrides ``label_fraction``.
    Model:
        backbone: backbone name (``contrastseg.models.BACKBONES``).
        head: decode head name (``contrastseg.models.HEADS``).
        output_stride: backbone output stride, 8 or 16 (the papers use 8).
        aux_weight: weight of the auxiliary cross-entropy (0 = no auxiliary head): an FCN head on the backbone's
            third level, or OCR's soft object regions; the papers use 0.4.
        pretrained: empty for random initialisation; a path to a local weights file (its keys must match the
            backbone's); or ``"timm"`` for timm's default weights, loaded by timm (downloaded into the Hugging Face
            cache when not there, unless ``HF_HUB_OFFLINE=1`` is set).
        reference_heads: the reference code's head forms: HRNet head 3x3 conv + BN + ReLU + Dropout2d(0.1), OCR
            auxiliary head 3x3 conv.
        num_queries, mask_dim, decoder_layers: size of the mask-classification model (head "mask_classification"):
            queries N, width of its pixel decoder and transformer decoder, transformer decoder layers.
    Method:
        method: the method (``contrastseg.methods.METHODS``); its config's fields are the fields after these
            (``contrastseg.methods.<name>.config``, and the pieces that several methods share in
            ``contrastseg.method``).
    Optimisation (poly schedule):
        optimizer: "sgd" (with momentum) or "adamw" (the mask-classification literature's choice).
        steps, batch_size, lr, momentum, weight_decay, poly_power.
        amp: mixed precision (bf16 autocast) when training on CUDA; ignored on the CPU.
    Run:
        seed: seeds the model, the data order and the augmentation.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        num_devices: data-parallel processes (``contrastseg.engine.distributed``): the run store starts the run
            under ``torchrun --nproc-per-node num_devices`` (GPUs, or CPU processes with gloo). ``batch_size`` stays
            the global batch; the contrastive anchor budgets are per process.
        sync_bn: with several processes, BatchNorm statistics over the global batch (off: each process's share).
        speed: "deterministic" (deterministic kernels, no cuDNN autotuning; CI and CPU runs) or "fast" (cuDNN
            autotuning, TF32 matmuls on GPUs).
        channels_last: NHWC memory layout for the model and the images (faster convolutions with bf16 on GPUs).
        compile: ``torch.compile`` the model for training (the first steps compile; a GPU feature).
        num_threads: CPU threads for torch; pinned so that CPU runs are bit-reproducible (0 = torch's default).
        num_workers: data loader worker processes.
        checkpoint_every: steps between checkpoints.
        eval_every: steps between val evaluations during training, logged under "val" in the step log (the
            learning curve, ``RunResult.learning_curve``); 0 = only the final evaluation. Part of the run key when
            set, since the run then holds more than the same run without it (its training is the same).
        boundary_width: band width in pixels for the boundary IoU of the evaluation.
        eval_scales: comma-separated test scales, e.g. "0.5,0.75,1,1.25,1.5,1.75" (multi-scale inference sums the
            class probabilities over scales); "1" = single scale.
        eval_flip: add the horizontally flipped image at every scale.
        eval_window: sliding-window inference with windows of "HxW" pixels (overlap 1/3); empty = the whole image.
        eval_split: the split the evaluation reads, "val" (where choices are tuned) or "test" (where a claim is
            reported, so that a choice made on val does not inflate it); ``metrics["val"]`` holds its metrics.
    """

    dataset: str = "synthscapes"
    data_root: str = ""
    image_size: int = 64
    crop_width: int = 0
    base_size: int = 0
    scale_min: float = 0.75
    scale_max: float = 1.5
    train_split: str = "train"
    num_train: int = 256
    num_val: int = 64
    label_fraction: float = 1.0
    partition_file: str = ""

    backbone: str = "tiny"
    head: str = "fcn"
    output_stride: int = 8
    pretrained: str = ""
    aux_weight: float = 0.0
    num_queries: int = 100
    mask_dim: int = 256
    decoder_layers: int = 6
    reference_heads: bool = False

    method: str = "ce"

    optimizer: str = "sgd"
    steps: int = 300
    batch_size: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    amp: bool = True

    seed: int = 0
    device: str = "auto"
    num_devices: int = 1
    sync_bn: bool = True
    speed: str = "deterministic"
    channels_last: bool = False
    compile: bool = False
    num_threads: int = 2
    num_workers: int = 0
    checkpoint_every: int = 100
    eval_every: int = 0
    boundary_width: int = 2
    eval_scales: str = "1"
    eval_flip: bool = False
    eval_window: str = ""
    eval_split: str = "val"

    methods: ClassVar[dict[str, Method]] = {}
    """The methods whose config fields the class holds and whose names ``method`` takes
    (``experiment_config_class``; ``ExperimentConfig``: the registry's)."""

    def __post_init__(self) -> None:
        _check_types(self)
        _check_names(self)
        for method in self.methods.values():  # every method's fields, whichever method the run uses
            method.method_config(self)
        _check_ranges(self)

    def method_spec(self) -> Method:
        """The ``Method`` of ``self.method``."""
        return self.methods[self.method]

    def method_config(self) -> MethodConfig:
        """The fields of the run's method, as its config (``contrastseg.methods.<name>.config``)."""
        return self.method_spec().method_config(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ExperimentConfig":
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        _check_field_names(cls, values)
        return cls(**values)

    def key_fields(self) -> dict:
        """The fields this run reads, by name: the data set's, the model's, the training loop's and the method's.

        A field that the run does not read (a Contextrast field of a CE run, the EMA momentum of a supervised run,
        the momentum of AdamW) is left out, so changing it names the same run.
        """
        from contrastseg.data import DATA_FIELDS
        from contrastseg.models import model_fields

        names = [*DATA_FIELDS, *model_fields(self.head), *TRAINING_FIELDS, *self.method_spec().config.field_names()]
        if self.optimizer == "sgd":
            names.append("momentum")
        if self.num_devices > 1:
            names.append("sync_bn")
        if self.eval_every:
            names.append("eval_every")
        return {name: getattr(self, name) for name in sorted(set(names))}

    def numerics(self) -> str:
        """The number format the run trains in: "cpu-fp32", "cuda-bf16" (``amp``), "cuda-tf32" (``speed="fast"``)
        or "cuda-fp32". ``device="auto"`` resolves on this machine, so a GPU machine and a CPU machine never share
        a run."""
        import torch

        on_cuda = self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available())
        if not on_cuda:
            return "cpu-fp32"
        bf16 = not torch.cuda.is_available() or torch.cuda.is_bf16_supported()  # a CUDA machine's usual case
        if self.amp and bf16:
            return "cuda-bf16-tf32" if self.speed == "fast" else "cuda-bf16"
        return "cuda-tf32" if self.speed == "fast" else "cuda-fp32"

    def key(self) -> dict:
        """What names the run in the store: the results format, the numerics class and the fields the run reads."""
        return {"format": RESULTS_FORMAT, "numerics": self.numerics(), "fields": self.key_fields()}

    def hash(self) -> str:
        """The run key as 12 hex digits (the store's folder is ``<method>-<hash>``)."""
        text = json.dumps(self.key(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def evaluation_protocol(self) -> dict:
        """The evaluation fields, which are not part of the run key: one trained model, several protocols."""
        return {name: getattr(self, name) for name in EVALUATION_FIELDS}

    def crop_size(self) -> tuple[int, int]:
        """The training crop as (height, width)."""
        return self.image_size, self.crop_width or self.image_size

    def evaluation_scales(self) -> tuple[float, ...]:
        """``eval_scales`` as floats, e.g. (0.75, 1.0, 1.25)."""
        return tuple(float(scale) for scale in self.eval_scales.split(",") if scale.strip())

    def evaluation_window(self) -> tuple[int, int] | None:
        """``eval_window`` as (height, width), or None for whole-image inference."""
        if not self.eval_window:
            return None
        height, width = self.eval_window.lower().split("x")
        return int(height), int(width)

    def replace(self, **changes) -> "ExperimentConfig":
        """A copy with ``changes``; an unknown field name raises the error that lists the valid ones."""
        _check_field_names(type(self), changes)
        return dataclasses.replace(self, **changes)


def experiment_config_class(methods: dict[str, Method]) -> type:
    """The flat config class of ``methods``: ``CoreFields`` followed by every method's config fields (a field that
    several methods share once, where it first appears; ``contrastseg.method.config_fields``)."""
    method_fields = [(field.name, type_name(field), dataclasses.field(default=field.default))
                     for field in config_fields(methods.values())]
    clashes = sorted({name for name, _, _ in method_fields} & {f.name for f in fields(CoreFields)})
    if clashes:
        raise TypeError(f"method config field(s) {clashes} clash with the core's fields")
    namespace = {"__module__": __name__, "__doc__": EXPERIMENT_CONFIG_DOC, "methods": dict(methods)}
    return dataclasses.make_dataclass("ExperimentConfig", method_fields, bases=(CoreFields,), frozen=True,
                                      namespace=namespace)


EXPERIMENT_CONFIG_DOC = """Everything that defines one training run; primitives only, flat (a notebook's parameters).

The core's fields and their documentation: ``CoreFields``. After them, every registered method's config fields
(``contrastseg.methods.METHODS``), documented in each method's config class: ``methods.pixel_contrast.config``,
``methods.contextrast.config``, ``methods.rc2l.config``, and the pieces several methods share in
``contrastseg.method`` (``ContrastTermConfig``, ``PixelEmbeddingConfig``, ``SemiSupervisedConfig``). A field that
the run's method does not read is validated all the same, and left out of the run key.
"""

ExperimentConfig = experiment_config_class(METHODS)


def smoke(**overrides) -> ExperimentConfig:
    """Any CPU, seconds per run: tiny backbone, 64 px SynthScapes, 100 steps. For CI, nbval and first contact: a
    pipeline check, far too short for any method to show an effect (the ``laptop`` preset is the CPU evidence)."""
    base = ExperimentConfig(
        image_size=64, num_train=256, num_val=64, backbone="tiny", head="fcn",
        steps=100, batch_size=8, lr=0.02, checkpoint_every=50,
        proj_dim=32, max_samples=256, max_views=16, memory_size=256, num_positives=128, num_negatives=256,
        level_max_pixels=512, level_max_per_class=128, bane_max_per_class=64,
    )
    return base.replace(**overrides)


def laptop(**overrides) -> ExperimentConfig:
    """A laptop's CPU (2 cores), about a minute per CE run: the tiny CNN at 96 px, 512 training and 128 val images,
    2500 steps. The smallest setting whose CE baseline has reached its plateau (val mIoU gains < 0.01 over the last
    20 % of the steps) at val mIoU >= 0.45; calibrated by ``benchmarks/calibrate_laptop.py`` (results in
    ``benchmarks/results/laptop_calibration.md``). The contrastive budgets are the smoke preset's; mask
    classification and RC²L take ``MASK_CLASSIFICATION_SETTINGS["laptop"]``."""
    base = smoke(image_size=96, num_train=512, num_val=128, steps=2500, checkpoint_every=500)
    return base.replace(**overrides)


def demo(**overrides) -> ExperimentConfig:
    """One GPU (or a CPU, slowly): ResNet-18 at output stride 8 with DeepLabV3, 256 px SynthScapes."""
    base = ExperimentConfig(
        image_size=256, num_train=512, num_val=128, backbone="resnet18", head="deeplabv3",
        steps=2000, batch_size=8, lr=0.01, checkpoint_every=500,
    )
    return base.replace(**overrides)


MASK_CLASSIFICATION_SETTINGS = {
    "smoke": dict(head="mask_classification", num_queries=16, mask_dim=32, decoder_layers=2, optimizer="adamw",
                  lr=1e-3, weight_decay=1e-4, ema_momentum=0.99, steps=50,
                  confidence_threshold=0.5),
    "laptop": dict(head="mask_classification", num_queries=16, mask_dim=32, decoder_layers=2, optimizer="adamw",
                   lr=1e-3, weight_decay=1e-4, ema_momentum=0.99),
    "demo": dict(head="mask_classification", num_queries=50, mask_dim=128, decoder_layers=3, optimizer="adamw",
                 lr=5e-4, weight_decay=1e-4, ema_momentum=0.99),
}
"""Per preset, the overrides that turn it into a mask-classification setting (the model and the optimiser of the
supervised baseline and RC²L): fewer queries and layers than MaskFormer's 100 and 6
for the small synthetic images, AdamW as in MaskFormer, and an EMA momentum of 0.99 because the runs are short. At
smoke, 50 steps instead of 100, since an RC²L step costs three forward passes (about 7x a CE step on the CPU) and
the smoke runs only check the pipeline; and a teacher confidence threshold of 0.5 instead of 0.7, because within 50
steps the teacher's regions rarely reach 0.7 (at 0.7 the region terms were non-zero on 2 % of the steps, at 0.5 on
80 %), and the pipeline check is there to run the region losses. At laptop, smoke's model and optimiser for the preset's 2500 steps: the supervised
baseline on all labels plateaus there at val mIoU 0.547 (+0.005 over the last 20 % of the steps, 148 s of steps;
``benchmarks/results/laptop_calibration_mask_classification.md``)."""


def preset(name: str, **overrides) -> ExperimentConfig:
    """The named preset with overrides; an unknown name lists the valid ones.

    ``name`` is "smoke", "demo" or "paper:<setting>" (``contrastseg.paper_settings.SETTINGS``, e.g.
    "paper:pixel_contrast/cityscapes/hrnet_w48"). At smoke and demo, a method that needs a mask-classification model
    (``mask_classification``, ``rc2l``) gets the preset's ``MASK_CLASSIFICATION_SETTINGS`` under the overrides.
    """
    from contrastseg.registry import lookup

    kind, _, setting = name.partition(":")
    if kind == "paper":
        from contrastseg.paper_settings import SETTINGS, paper_setting

        if not setting:
            raise ValueError(f"the paper preset needs a setting, as 'paper:<setting>'; settings: "
                             f"{', '.join(SETTINGS)}")
        return ExperimentConfig.from_dict(paper_setting(setting).overrides | overrides)
    build = lookup({"smoke": smoke, "laptop": laptop, "demo": demo}, name, "preset")
    if method_named(overrides.get("method", "ce")).mask_classification:
        if name not in MASK_CLASSIFICATION_SETTINGS:
            raise ValueError(f"the {name} preset has no mask-classification settings yet (they are calibrated like "
                             f"its CE baseline); presets that have them: {', '.join(MASK_CLASSIFICATION_SETTINGS)}")
        overrides = MASK_CLASSIFICATION_SETTINGS[name] | overrides
    return build(**overrides)


def _check_field_names(config_class: type, values: dict) -> None:
    valid = {f.name for f in fields(config_class)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; valid fields: {', '.join(sorted(valid))}")


def _check_types(cfg: ExperimentConfig) -> None:
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        expected = {"int": int, "float": (int, float), "str": str, "bool": bool}[f.type]
        wrong_bool = isinstance(value, bool) and f.type in ("int", "float")
        if not isinstance(value, expected) or wrong_bool:
            raise TypeError(f"config field {f.name!r} must be {f.type}, got {value!r}")
        if f.type == "float" and isinstance(value, int):
            object.__setattr__(cfg, f.name, float(value))


def _check_names(cfg: ExperimentConfig) -> None:
    from contrastseg.data import DATASETS, SPLITS
    from contrastseg.models import BACKBONES, HEADS, MASK_CLASSIFICATION_HEADS
    from contrastseg.registry import lookup

    lookup(DATASETS, cfg.dataset, "data set")
    lookup(dict.fromkeys(SPLITS[cfg.dataset]), cfg.train_split, f"split of {cfg.dataset}")
    lookup(dict.fromkeys(SPLITS[cfg.dataset]), cfg.eval_split, f"split of {cfg.dataset}")
    lookup(BACKBONES, cfg.backbone, "backbone")
    lookup(HEADS, cfg.head, "head")
    method = lookup(cfg.methods, cfg.method, "method")
    lookup(dict.fromkeys(DEVICES), cfg.device, "device")
    lookup(dict.fromkeys(OPTIMIZERS), cfg.optimizer, "optimizer")
    lookup(dict.fromkeys(SPEEDS), cfg.speed, "speed")
    if method.mask_classification != (cfg.head in MASK_CLASSIFICATION_HEADS):
        raise ValueError(f"method {cfg.method!r} does not work with head {cfg.head!r}: the methods "
                         f"{sorted(m for m, spec in cfg.methods.items() if spec.mask_classification)} need a "
                         f"mask-classification head ({', '.join(MASK_CLASSIFICATION_HEADS)}), the others a dense one")
    if cfg.aux_weight > 0 and cfg.head in MASK_CLASSIFICATION_HEADS:
        raise ValueError(f"aux_weight > 0 asks for an auxiliary CE head, which head {cfg.head!r} does not have; "
                         f"use aux_weight=0")


def _parses(parse) -> bool:
    try:
        parse()
        return True
    except ValueError:
        return False


def _check_ranges(cfg: ExperimentConfig) -> None:
    checks = [
        ("image_size", 32 <= cfg.image_size <= 4096, "between 32 and 4096"),
        ("num_train", cfg.num_train >= 0, ">= 0 (0 = whole split)"),
        ("num_val", cfg.num_val >= 0, ">= 0 (0 = whole split)"),
        ("output_stride", cfg.output_stride in (8, 16, 32), "8, 16 or 32"),
        ("steps", cfg.steps >= 1, ">= 1"),
        ("batch_size", cfg.batch_size >= 1, ">= 1"),
        ("lr", 0 < cfg.lr <= MAX_LR, f"in (0, {MAX_LR:g}]"),
        ("momentum", 0 <= cfg.momentum < 1, "in [0, 1)"),
        ("weight_decay", 0 <= cfg.weight_decay <= MAX_WEIGHT_DECAY, f"in [0, {MAX_WEIGHT_DECAY:g}]"),
        ("poly_power", 0 <= cfg.poly_power <= MAX_POLY_POWER, f"in [0, {MAX_POLY_POWER:g}]"),
        ("num_threads", cfg.num_threads >= 0, ">= 0 (0 = torch's default)"),
        ("num_workers", cfg.num_workers >= 0, ">= 0"),
        ("num_devices", cfg.num_devices >= 1, ">= 1"),
        ("batch_size", cfg.batch_size % cfg.num_devices == 0, f"a multiple of num_devices ({cfg.num_devices})"),
        ("checkpoint_every", cfg.checkpoint_every >= 1, ">= 1"),
        ("eval_every", cfg.eval_every >= 0, ">= 0 (0 = only at the end)"),
        ("boundary_width", cfg.boundary_width >= 1, ">= 1"),
        ("crop_width", cfg.crop_width == 0 or 32 <= cfg.crop_width <= 4096, "0 (square) or between 32 and 4096"),
        ("base_size", cfg.base_size >= 0, ">= 0 (0 = image_size)"),
        ("scale_max", 0 < cfg.scale_max <= MAX_SCALE, f"in (0, {MAX_SCALE:g}]"),
        ("scale_min", 0 < cfg.scale_min <= cfg.scale_max, "in (0, scale_max]"),
        weight_check("aux_weight", cfg.aux_weight),
        ("eval_scales", _parses(cfg.evaluation_scales) and bool(cfg.evaluation_scales())
         and all(0 < scale <= MAX_SCALE for scale in cfg.evaluation_scales()),
         f'comma-separated numbers in (0, {MAX_SCALE:g}], e.g. "0.75,1,1.25"'),
        ("eval_window", _parses(cfg.evaluation_window) and min(cfg.evaluation_window() or (32,)) >= 32,
         'empty or "HxW" with both sides >= 32, e.g. "512x1024"'),
        ("label_fraction", 0 < cfg.label_fraction <= 1, "in (0, 1]"),
        ("num_queries", cfg.num_queries >= 1, ">= 1"),
        ("mask_dim", cfg.mask_dim >= 8 and cfg.mask_dim % 8 == 0, "a multiple of 8 (8 attention heads)"),
        ("decoder_layers", cfg.decoder_layers >= 1, ">= 1"),
    ]
    if cfg.dataset == "synthscapes" and not cfg.data_root:
        from contrastseg.data.synthscapes import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

        checks.append(("image_size", MIN_IMAGE_SIZE <= cfg.image_size <= MAX_IMAGE_SIZE,
                       f"between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} for SynthScapes generated on the fly"))
    check_fields(cfg, checks)  # and every float field finite, so that a new field without a range lets no NaN through
