# %% [markdown]
# # Cross-method comparison: CE, pixel contrast, Contextrast, RC²L
#
# The three supervised methods on one backbone, schedule and data set, and RC²L against its own supervised baseline at
# one label share; mean and standard deviation over seeds, each method's gain over its baseline paired by seed with a
# paired t-interval, and whether each method's own term acted. At smoke the runs are far too short for the numbers
# to mean anything; they check the pipeline. The demo preset (3 seeds) is the one to read effects from.
#
# Design choices:
#
# - **The rows are those of the table notebooks**, with the same config overrides, so the run store gives back their
#   runs (same config hash) instead of training again: CE and pixel contrast in the batch (`+ in-batch contrast` of
#   `pixel_contrast/table_objectives`, the method's default), Contextrast with CCL and BANE (`CCL + BANE` of
#   `contextrast/table_components`, the full method), and the supervised baseline and RC²L at `label_fraction` (a share
#   that `rc2l/table_partitions` runs at smoke and demo).
# - **Two groups.** CE, pixel contrast and Contextrast train the preset's model (smoke: tiny CNN + FCN; demo: ResNet-18
#   + DeepLabV3) on every labeled training image with the preset's schedule. RC²L needs a mask-classification model, so
#   it is compared with the same model trained on the labeled share only (`config.MASK_CLASSIFICATION_SETTINGS`: the
#   same backbone, fewer steps at smoke, AdamW). Numbers of the two groups are not comparable with each other: other
#   head, other optimiser, a fraction of the labels.
# - **Paired differences.** Per seed, a method's mIoU minus its baseline's (CE, or the supervised baseline for RC²L)
#   with the same seed. The interval is the paired t-interval of their mean over seeds (`contrastseg.tables.t_interval`:
#   Student's t at n - 1 degrees of freedom). With 2 or 3 seeds it is wide (t = 12.7 at 2 seeds), which is what so
#   few seeds can say; a percentile bootstrap would give just the range of the differences, with a coverage far below
#   95 %. The summary prints every per-seed difference too; with one seed there is no interval (NaN).
# - **Training cost** is not in this table: a cached run's wall time depends on the load of the machine when it
#   trained. Step costs come from `benchmarks/step_time.py`, which measures the methods' steps side by side (an
#   RC²L step runs the student on labeled and unlabeled images and the EMA teacher on the unlabeled ones).
# - **The papers' numbers** are those the table notebooks show, for the rows that are these methods: pixel contrast
#   from the authors' README (Cityscapes, HRNet-W48 and DeepLabV3-R101), Contextrast from the authors' follow-up paper
#   (Contextrast++, Cityscapes). None was read in the papers' own tables: all are marked `verified: false`. RC²L's
#   numbers could not be read at all, so none is shown. Their settings differ from ours (real data, larger models):
#   compare directions, not values.
#

# %% tags=["parameters"]
preset = "smoke"  # "smoke" (any CPU) or "demo" (one GPU)
results_dir = ""  # where results.json and the figures go; empty: runs/notebooks/methods
seeds = [0, 1]  # one run per seed and method; the demo preset uses [0, 1, 2]
steps = 0  # 0: the preset's number of steps
show_progress = False
label_fraction = 0.125  # labeled share of RC²L and its supervised baseline (one of table_partitions' shares)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from contrastseg.results import results_dir_for, save_results, show_figure
from contrastseg.tables import (activity_lines, format_summary, paired_differences, reported_numbers, summarize,
                                train_rows)

# %matplotlib inline
results_dir = results_dir or str(results_dir_for("methods"))
share = f"1/{round(1 / label_fraction)}"
rows = {  # the overrides of the table notebooks' rows: the same runs
    "CE": {"method": "ce"},
    "pixel contrast": {"method": "pixel_contrast"},
    "Contextrast": {"method": "contextrast"},
    f"supervised, {share}": {"method": "mask_classification", "label_fraction": label_fraction},
    f"RC²L, {share}": {"method": "rc2l", "label_fraction": label_fraction},
}
baselines = {"pixel contrast": "CE", "Contextrast": "CE", f"RC²L, {share}": f"supervised, {share}"}
pd.DataFrame(rows).T.fillna("")

# %% [markdown]
# ## Train every method for every seed
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
# ## Mean and standard deviation over seeds
#
# `method_active`: share of the steps on which the method's own term was non-zero (mean over seeds).

# %%
summary = summarize(per_seed)
summary.round(3)

# %% [markdown]
# ## Each method minus its baseline, paired by seed
#
# `ci_low`, `ci_high`: paired t-interval (95 %) of the mean difference over seeds (`contrastseg.tables.t_interval`:
# Student's t at n - 1 degrees of freedom, wide with few seeds, as it should be), none with one. `per_seed`: the differences themselves.

# %%
pairs = {f"{row} - {baseline}": (row, baseline) for row, baseline in baselines.items()}
differences = paired_differences(per_seed, pairs, "miou")
differences.round(3)

# %% [markdown]
# ## The papers' numbers
#
# On Cityscapes with larger models; unverified (see above).

# %%
# the papers' rows that are these methods, renamed to our rows; RC²L's numbers could not be read
reported_rows = {("pixel_contrast", "objectives"): {"CE": "CE", "+ in-batch contrast": "pixel contrast"},
                 ("contextrast", "components"): {"CE": "CE", "CCL + BANE": "Contextrast"}}
parts = []
for (paper, table), names in reported_rows.items():
    numbers = reported_numbers(paper, table)
    parts.append(numbers.assign(row=numbers["row"].map(names), paper=paper, table=table).dropna(subset=["row"]))
reported = pd.concat(parts, ignore_index=True)
print(f"{(~reported['verified']).sum()} of {len(reported)} reported numbers are unverified")
reported

# %% [markdown]
# ## Figures
#
# Left of the dashed line: the preset's model on all labels; right: the mask-classification model on the labeled share.

# %%
np.random.seed(0)  # seaborn's strip jitter draws from numpy's global stream: the same dots on every run
fig, ax = plt.subplots(figsize=(6.5, 3.4))
sns.pointplot(per_seed, x="row", y="miou", errorbar="sd", linestyle="none", color="black", marker="_",
              markersize=14, capsize=0.2, ax=ax)
sns.stripplot(per_seed, x="row", y="miou", hue="seed", palette="deep", size=5, ax=ax)
ax.set_ylabel("val mIoU (mean ± sd; dots: seeds)")
ax.legend(title="seed", fontsize=8, title_fontsize=8)
ax.axvline(2.5, color="grey", lw=0.8, ls="--")  # left: all labels; right: the labeled share, mask classification
ax.set_xlabel("")
ax.tick_params(axis="x", rotation=30)
for tick in ax.get_xticklabels():
    tick.set_horizontalalignment("right")
sns.despine(fig)
fig.tight_layout()
show_figure(fig, results_dir, "methods")

# %%
np.random.seed(0)  # seaborn's strip jitter draws from numpy's global stream: the same dots on every run
points = differences["per_seed"].explode().astype(float).rename("difference").reset_index()
fig, ax = plt.subplots(figsize=(5.6, 3.2))
sns.stripplot(points, x="pair", y="difference", order=list(differences.index), color="grey", size=5, ax=ax)
ax.errorbar(range(len(differences)), differences["mean"], fmt="o", color="black", capsize=4,
            yerr=[differences["mean"] - differences["ci_low"], differences["ci_high"] - differences["mean"]])
ax.axhline(0, color="grey", lw=0.8)
ax.set_xlabel("")
ax.set_ylabel("mIoU difference (mean, 95 % t-interval)")
sns.despine(fig)
fig.tight_layout()
show_figure(fig, results_dir, "differences")

# %% [markdown]
# ## Summary
#
# The one output that the regression check (nbval) compares: mean +- std over seeds, and the
# paired differences with their interval and per seed, 3 decimals. At smoke: a pipeline check.

# %%
# NBVAL_CHECK_OUTPUT
results = {"preset": preset, "seeds": list(seeds), "label_fraction": label_fraction,
           "table": summary.reset_index().to_dict("records"),
           "per_seed": per_seed.drop(columns="config").to_dict("records"),
           "differences": differences.drop(columns="per_seed").reset_index().to_dict("records"),
           "reported": reported.to_dict("records")}
save_results(results_dir, results)
print(f"preset {preset}, seeds {list(seeds)}")
print("miou:")
print("\n".join(format_summary(summary, "miou")))
print("miou difference to the baseline: mean [95 % t-interval]; per seed")
for pair, row in differences.iterrows():
    per_seed_text = ", ".join(f"{value:+.3f}" for value in row["per_seed"])
    print(f"{pair}: {row['mean']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]; {per_seed_text}")
