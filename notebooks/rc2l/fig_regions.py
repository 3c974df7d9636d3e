# %% [markdown]
# # RC²L: teacher regions and the student's matched regions on unlabeled images
#
# What the unlabeled losses compare, for the RC²L run of `table_partitions` at the chosen labeled share: the teacher's regions on the weak views after the confidence threshold (coloured by their pseudo-class), the student queries matched to them on the strong views (coloured by the class the student predicts for them), and the ground truth, which training never saw. CutMix is left out here to keep the panels readable. Below: how many regions pass the threshold and how often their pseudo-class agrees with the ground truth under their pixels.
#
# RC²L (Zhang, Wu, Ding, Zhao, Guo, IJCAI 2022) is semi-supervised: a MaskFormer-style segmentor predicts N regions
# (a class and a mask per query); an EMA teacher turns unlabeled images (weak view) into pseudo-regions, its queries
# whose top class probability reaches 0.7; the student, on a strong view of the same images (colour jitter,
# grayscale, blur, CutMix with the same boxes applied to the teacher's regions), has its queries matched to them
# (Hungarian), and four losses tie the two: region class consistency (RCC, the matched queries' classes), semantic
# mask consistency (SMC, class-level masks), region mask contrast (RMC, InfoNCE over the dice of matched masks against
# the image's other regions) and region feature contrast (RFC, InfoNCE over mask-pooled features against every
# region of the batch). Labeled images get MaskFormer's supervised set loss (class CE + mask BCE + mask dice).
#
# No public code exists, and only the paper's abstract, introduction and figure captions could be read: every loss
# form, weight and threshold here is our reconstruction (`contrastseg/methods/rc2l/objective.py`, `contrastseg/losses/region.py`,
# `docs/methods.md#rc2l`), each a config field: `confidence_threshold` (0.7), `unlabeled_weight` lambda_u = 1 for RCC
# and SMC, `contrast_weight` lambda_c = 0.1 for RMC and RFC, a sigmoid ramp of both over the first 10 % of the steps
# (`unlabeled_rampup`), `cutmix_probability` (0.5; 0 turns CutMix off), `region_losses` (which of the four are on),
# `ema_momentum` (0.99 at smoke and demo, after the mean-teacher ramp). The model at smoke and demo is smaller than
# MaskFormer (16 / 50 queries, 2 / 3 decoder layers; `config.MASK_CLASSIFICATION_SETTINGS`) and trained with AdamW.
#
# Partitions: the labeled images are a nested, deterministic share of the training split (`label_fraction`, or a
# split list in `partition_file`; SynthScapes' lists are in `data_scripts/splits/`); the rest are unlabeled (their
# labels never reach training). The supervised baseline is the same model with the set loss on the labeled share
# only. The paper's numbers (PASCAL VOC, Cityscapes) could not be read, so none is shown beside ours.

# %% tags=["parameters"]
preset = "smoke"  # "smoke" (any CPU) or "demo" (one GPU)
results_dir = ""  # where results.json and the figures go; empty: runs/notebooks/fig_regions
seed = 0
steps = 0  # 0: the preset's number of steps
show_progress = True
label_fraction = 0.125
num_images = 3
thresholds = [0.5, 0.7, 0.9]  # teacher confidence thresholds for the pseudo-label quality table


# %%
import pandas as pd
import torch

from contrastseg import runs, viz
from contrastseg.config import preset as preset_config
from contrastseg.data import dataset_info
from contrastseg.data.partitions import image_ids, split_labeled
from contrastseg.data.transforms import strong_photometric
from contrastseg.engine.train import build_split
from contrastseg.methods.rc2l.objective import inspect_regions
from contrastseg.samplers import downsample_labels
from contrastseg.results import results_dir_for, save_results, show_figure

# %matplotlib inline
results_dir = results_dir or str(results_dir_for("fig_regions"))
changes = {"seed": seed} | ({"steps": steps} if steps else {})
cfg = preset_config(preset, method="rc2l", label_fraction=label_fraction, **changes)
result = runs.get_or_train(cfg, progress=show_progress)
student, teacher = result.load_model(), result.load_model(teacher=True)
info = dataset_info(cfg.dataset)
train_images = build_split(cfg, "train", cfg.num_train)
_, unlabeled = split_labeled(image_ids(train_images), cfg.label_fraction, cfg.partition_file)
images, labels = map(torch.stack, zip(*[train_images[i] for i in unlabeled[:num_images]]))
torch.manual_seed(seed)
strong = torch.stack([strong_photometric()(image) for image in images])

# %% [markdown]
# ## Regions

# %%
found = inspect_regions(student, teacher, images, strong, cfg.confidence_threshold)
fig = viz.show_regions(images, strong, labels, found, info.class_names, info.palette)
show_figure(fig, results_dir, "regions", dpi=60)


# %% [markdown]
# ## Pseudo-label quality on the unlabeled images
#
# Per teacher threshold, over the panel's images: regions kept per image, the share of their pixels whose ground-truth class is the region's pseudo-class (ignored pixels left out), and the mean soft dice between each region and its matched student query.

# %%
def quality(threshold):
    found = inspect_regions(student, teacher, images, strong, threshold)
    coarse_labels = downsample_labels(labels, found[0]["teacher_masks"].shape[-2:])
    agree = total = 0
    for image_regions, image_labels in zip(found, coarse_labels):
        for mask, value in zip(image_regions["teacher_masks"], image_regions["teacher_classes"]):
            under = image_labels[mask]
            under = under[under != info.ignore_index]
            agree, total = agree + int((under == value).sum()), total + len(under)
    dice = torch.cat([r["dice"] for r in found])
    return {"threshold": threshold, "regions_per_image": len(dice) / len(found),
            "class_agreement": agree / total if total else float("nan"),
            "matched_dice": float(dice.mean()) if len(dice) else float("nan")}

pseudo = pd.DataFrame.from_records([quality(t) for t in thresholds]).set_index("threshold")
pseudo.round(3)

# %% [markdown]
# ## Summary
#
# The one output that nbval compares, 3 decimals.

# %%
# NBVAL_CHECK_OUTPUT
results = {"preset": preset, "seed": seed, "label_fraction": label_fraction,
           "pseudo_labels": pseudo.reset_index().to_dict("records")}
save_results(results_dir, results)
print(f"preset {preset}, seed {seed}, labeled share {label_fraction}")
for threshold, row in pseudo.iterrows():
    print(f"threshold {threshold}: {row['regions_per_image']:.2f} regions/image, "
          f"class agreement {row['class_agreement']:.3f}, matched dice {row['matched_dice']:.3f}")
