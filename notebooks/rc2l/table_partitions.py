# %% [markdown]
# # RC²L: supervised-only vs RC²L per label fraction (the paper's main comparison)
#
# For each share of labeled training images, the supervised baseline (the same mask-classification model, labeled images only) and RC²L (the same labeled images plus the rest unlabeled), over seeds; then RC²L's gain over the baseline, paired by seed, with its spread. At smoke the runs are far too short for the numbers to mean anything; they check the pipeline.
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
results_dir = ""  # where results.json and the figures go; empty: runs/notebooks/table_partitions
seeds = [0]  # one run per seed and row; the demo preset uses [0, 1, 2]
steps = 0  # 0: the preset's number of steps
show_progress = True
fractions = [0.125, 0.5]  # labeled shares; the demo preset uses [0.0625, 0.125, 0.25, 0.5]


# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from contrastseg.results import results_dir_for, save_results, show_figure
from contrastseg.tables import (activity_lines, format_differences, format_summary, paired_differences, summarize,
                                train_rows)

# %matplotlib inline
results_dir = results_dir or str(results_dir_for("table_partitions"))
names = {fraction: f"1/{round(1 / fraction)}" if fraction < 1 else "full" for fraction in fractions}
rows = {}
for fraction in fractions:
    rows[f"supervised, {names[fraction]}"] = {"method": "mask_classification", "label_fraction": fraction}
    rows[f"RC²L, {names[fraction]}"] = {"method": "rc2l", "label_fraction": fraction}
pd.DataFrame(rows).T

# %% [markdown]
# ## Train every row for every seed
#
# Runs come from the run store when a notebook trained them before (same config hash).

# %%
per_seed = train_rows(rows, preset, seeds, steps=steps, progress=show_progress)
per_seed.round(3)

# %% [markdown]
# ## Did the method act?
#
# Per run, the share of training steps on which the method's own loss term was non-zero, and the mean of the counts its
# objective logs every step (anchors, BANE negatives, teacher regions, ...; `contrastseg.tables.method_activity`). A row
# whose term was zero on most of its steps did not try the method: the suite's report flags it.

# %%
print("\n".join(activity_lines(per_seed)))

# %% [markdown]
# ## Mean and standard deviation over seeds; RC²L minus supervised, paired by seed

# %%
summary = summarize(per_seed)
display(summary.round(3))
pairs = {names[f]: (f"RC²L, {names[f]}", f"supervised, {names[f]}") for f in fractions}
gain = paired_differences(per_seed, pairs, "miou")
gain.round(3)

# %%
plot = per_seed.assign(method=per_seed["row"].str.split(",").str[0],
                       fraction=per_seed["row"].str.split(", ").str[1])
fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
sns.pointplot(plot, x="fraction", y="miou", hue="method", errorbar="sd", dodge=0.2, ax=axes[0],
              order=[names[f] for f in fractions])
axes[0].set_ylabel("val mIoU")
axes[0].set_xlabel("labeled share")
axes[1].errorbar(range(len(gain)), gain["mean"], yerr=gain["std"], fmt="o", color="black", capsize=3)
axes[1].axhline(0, color="grey", lw=0.8)
axes[1].set_xticks(range(len(gain)), gain.index)
axes[1].set_xlabel("labeled share")
axes[1].set_ylabel("RC²L - supervised (mIoU)")
sns.despine(fig)
fig.tight_layout()
show_figure(fig, results_dir, "partitions")

# %% [markdown]
# ## Summary
#
# The one output that the regression check (nbval) compares: mean +- std over seeds, 3 decimals.

# %%
# NBVAL_CHECK_OUTPUT
results = {"preset": preset, "seeds": list(seeds), "table": summary.reset_index().to_dict("records"),
           "gain": gain.reset_index().to_dict("records")}
save_results(results_dir, results)
print(f"preset {preset}, seeds {list(seeds)}")
print("miou:")
print("\n".join(format_summary(summary, "miou")))
print("RC²L - supervised, miou:")
print("\n".join(format_differences(gain)))
