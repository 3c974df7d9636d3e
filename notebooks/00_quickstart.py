# %% [markdown]
# # Quickstart: the cross-entropy baseline on SynthScapes
#
# This notebook trains the supervised baseline that every contrastive method in this suite is compared against:
# a segmentor trained with pixel-wise cross-entropy on **SynthScapes**, the built-in procedural street scenes.
# It then shows predictions beside the ground truth, the IoU of each class, and a t-SNE map of the pixel embeddings.
#
# * `preset = "smoke"`: tiny CNN, 64 px, a few hundred steps; about a minute on a laptop CPU.
# * `preset = "demo"`: ResNet-18 + DeepLabV3 at output stride 8, 256 px; minutes on a GPU.
#
# Trained runs are cached by the hash of their config (`contrastseg.runs`): running this notebook again, or a figure
# notebook that asks for the same config, reuses the run. SynthScapes itself is one fixed data set (data seed 0); the
# `seed` parameter changes the initialisation, the data order and the augmentation.
#
# The pixel embeddings of the CE baseline are the decode head's features before its classifier (there is no
# projection head without a contrastive loss), L2-normalised, sampled class-balanced at the feature stride.

# %% tags=["parameters"]
preset = "smoke"  # "smoke" (any CPU) or "demo" (one GPU)
results_dir = ""  # where results.json and the figures go; empty: runs/notebooks/00_quickstart
seed = 0
steps = 0  # 0: the preset's number of steps
device = "auto"  # "auto", "cpu" or "cuda"
tsne_points_per_class = 100
show_progress = True

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from contrastseg import runs, viz
from contrastseg.config import preset as preset_config
from contrastseg.data import dataset_info
from contrastseg.engine import predict
from contrastseg.engine.train import build_split
from contrastseg.results import results_dir_for, save_results, show_figure

# %matplotlib inline
overrides = {"seed": seed, "device": device} | ({"steps": steps} if steps else {})
cfg = preset_config(preset, **overrides)
info = dataset_info(cfg.dataset)
results_dir = results_dir or str(results_dir_for("00_quickstart"))
print(f"config {cfg.hash()}: {cfg.backbone} + {cfg.head}, {cfg.image_size} px, {cfg.steps} steps, seed {cfg.seed}")

# %% [markdown]
# ## Train (or load the cached run)

# %%
result = runs.get_or_train(cfg, progress=show_progress)
log = pd.DataFrame(result.log())
fig, ax = plt.subplots(figsize=(5, 2.6))
sns.lineplot(log, x="step", y="ce", ax=ax, linewidth=0.8)
ax.set_title("training cross-entropy")
sns.despine(fig)
show_figure(fig, results_dir, "loss_curve")

# %% [markdown]
# ## Predictions on validation images
#
# Black marks ignored pixels (the ego-vehicle hood and unlabelled clutter).

# %%
model = result.load_model()
val_set = build_split(cfg, "val", cfg.num_val)
images, labels = map(torch.stack, zip(*[val_set[i] for i in range(4)]))
fig = viz.show_predictions(images, labels, {"CE": predict(model, images)}, info.class_names, info.palette)
show_figure(fig, results_dir, "predictions")

# %% [markdown]
# ## IoU per class
#
# The thin pole class and the context-only pairs (road/sidewalk, sky/window) are where a baseline struggles.

# %%
fig = viz.plot_per_class_iou({"CE": result.metrics["val"]["per_class_iou"]}, info.class_names)
show_figure(fig, results_dir, "per_class_iou")

# %% [markdown]
# ## t-SNE of pixel embeddings
#
# openTSNE on a class-balanced sample of validation pixels, coloured by their ground-truth class.

# %%
embeddings, pixel_labels = viz.sample_pixel_embeddings(model, val_set, per_class=tsne_points_per_class, seed=seed)
points = viz.tsne_2d(embeddings, seed=seed)
fig = viz.plot_embedding(points, pixel_labels, info.class_names, info.palette, title="CE: decoder features")
show_figure(fig, results_dir, "tsne")

# %% [markdown]
# ## Summary
#
# The one output that the regression check (nbval) compares: numbers rounded to 3 decimals.

# %%
# NBVAL_CHECK_OUTPUT
val = result.metrics["val"]
summary = {
    "preset": preset,
    "config": cfg.hash(),
    "val_miou": round(val["miou"], 3),
    "val_pixel_accuracy": round(val["pixel_accuracy"], 3),
    "val_boundary_iou": round(val["boundary_iou"], 3),
    "final_train_ce": round(float(log["ce"].iloc[-20:].mean()), 3),
    "per_class_iou": {name: None if v is None else round(v, 3) for name, v in zip(info.class_names, val["per_class_iou"])},
}
save_results(results_dir, summary)
for key, value in summary.items():
    if key != "config":  # the hash changes whenever a config field is added; it is kept in results.json
        print(f"{key}: {value}")
