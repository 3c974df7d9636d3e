# %% [markdown]
# # Pixel contrast: t-SNE of pixel embeddings, CE vs contrast
#
# The same validation pixels (class-balanced, at the feature stride), embedded by the CE baseline and by pixel
# contrast (in-batch), mapped to 2-D with openTSNE (same seed and settings for every panel). Panels: the backbone's last
# level of each model (the features both share), and the projection head's embedding of the contrast model (the space
# the loss shapes). The runs are the ones `table_objectives` trained (same configs, from the run store).
#
# Embeddings of more than 50 dimensions (the backbones' here) are mapped from their first 50 principal components,
# and the map cell prints how long each t-SNE took (its output is not compared by nbval).
#
# A t-SNE map shows neighbourhoods, not distances; the leave-one-out 5-nearest-neighbour accuracy in the original
# space (cosine) gives a number to go with each picture.

# %% tags=["parameters"]
preset = "smoke"  # "smoke" (any CPU) or "demo" (one GPU)
results_dir = ""  # where results.json and the figures go; empty: runs/notebooks/fig_tsne
seed = 0
steps = 0  # 0: the preset's number of steps
points_per_class = 100
show_progress = True

# %%
import time

import matplotlib.pyplot as plt

from contrastseg import runs, viz
from contrastseg.config import preset as preset_config
from contrastseg.data import dataset_info
from contrastseg.engine.train import build_split
from contrastseg.results import results_dir_for, save_results, show_figure

# %matplotlib inline
results_dir = results_dir or str(results_dir_for("fig_tsne"))
changes = {"seed": seed} | ({"steps": steps} if steps else {})
configs = {"CE": preset_config(preset, method="ce", **changes),
           "pixel contrast": preset_config(preset, method="pixel_contrast", **changes)}
models = {name: runs.get_or_train(cfg, progress=show_progress).load_model() for name, cfg in configs.items()}
info = dataset_info(configs["CE"].dataset)
val_set = build_split(configs["CE"], "val", configs["CE"].num_val)

# %%
panels = {
    "CE: backbone": (models["CE"], "backbone"),
    "contrast: backbone": (models["pixel contrast"], "backbone"),
    "contrast: projection": (models["pixel contrast"], "embedding"),
}
maps, knn, tsne_seconds = {}, {}, {}
for title, (model, output) in panels.items():
    embeddings, labels = viz.sample_pixel_embeddings(model, val_set, output=output, per_class=points_per_class,
                                                     seed=seed)
    knn[title] = viz.knn_accuracy(embeddings, labels, k=5)
    began = time.perf_counter()
    maps[title] = (viz.tsne_2d(embeddings, seed=seed), labels)
    tsne_seconds[title] = time.perf_counter() - began
    reduced = f", PCA to {viz.PCA_COMPONENTS}" if embeddings.shape[1] > viz.PCA_COMPONENTS else ""
    print(f"{title}: t-SNE of {len(labels)} x {embeddings.shape[1]} points{reduced}, "
          f"{tsne_seconds[title]:.1f} s")

fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0))
for ax, (title, (points, labels)) in zip(axes, maps.items()):
    viz.plot_embedding(points, labels, info.class_names, info.palette, title=f"{title} (5-NN acc {knn[title]:.2f})",
                       ax=ax)
show_figure(fig, results_dir, "tsne")

# %% [markdown]
# ## Summary
#
# The one output that nbval compares: 5-NN accuracy of each panel's embeddings, 3 decimals.

# %%
# NBVAL_CHECK_OUTPUT
results = {"preset": preset, "seed": seed, "knn_accuracy": knn}
save_results(results_dir, results)
for title, value in knn.items():
    print(f"{title}: 5-NN accuracy {value:.3f}")
