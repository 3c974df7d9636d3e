# %% [markdown]
# # RC²L: the four losses, each on and off (the paper's loss ablation)
#
# At one labeled share, the supervised baseline, RC²L with each unlabeled loss alone, with each left out (demo), and with all four. Expected from the paper's claims: every loss helps, and all four together most; the paper's ablation numbers could not be read.
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
results_dir = ""  # where results.json and the figures go; empty: runs/notebooks/table_losses
seeds = [0]  # one run per seed and row; the demo preset uses [0, 1, 2]
steps = 0  # 0: the preset's number of steps
show_progress = True
label_fraction = 0.125
leave_one_out = False  # also rows with one loss left out; the demo preset uses True


# %%
import pandas as pd

from contrastseg.methods.rc2l.config import REGION_LOSSES
from contrastseg.results import results_dir_for, save_results, show_figure
from contrastseg.tables import activity_lines, format_summary, paired_differences, summarize, train_rows
from contrastseg.viz import plot_rows

# %matplotlib inline
results_dir = results_dir or str(results_dir_for("table_losses"))
semi = {"method": "rc2l", "label_fraction": label_fraction}
rows = {"supervised only": {"method": "mask_classification", "label_fraction": label_fraction}}
rows |= {f"{name.upper()} only": semi | {"region_losses": name} for name in REGION_LOSSES}
if leave_one_out:
    rows |= {f"all but {name.upper()}": semi | {"region_losses": ",".join(n for n in REGION_LOSSES if n != name)}
             for name in REGION_LOSSES}
rows["all four"] = semi
pd.DataFrame(rows).T.fillna("")

# %% [markdown]
# ## Train every row for every seed

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
# ## Mean and standard deviation over seeds; each row minus supervised, paired by seed

# %%
summary = summarize(per_seed)
display(summary.round(3))
gain = paired_differences(per_seed, {row: (row, "supervised only") for row in rows if row != "supervised only"})
gain.round(3)

# %%
show_figure(plot_rows(per_seed), results_dir, "losses")

# %% [markdown]
# ## Summary
#
# The one output that the regression check (nbval) compares: mean +- std over seeds, 3 decimals.

# %%
# NBVAL_CHECK_OUTPUT
results = {"preset": preset, "seeds": list(seeds), "label_fraction": label_fraction,
           "table": summary.reset_index().to_dict("records"), "gain": gain.reset_index().to_dict("records")}
save_results(results_dir, results)
print(f"preset {preset}, seeds {list(seeds)}, labeled share {label_fraction}")
print("miou:")
print("\n".join(format_summary(summary, "miou")))
