# %% [markdown]
# # Explorer: runs, images, errors, boundaries and pixel embeddings
#
# Pick runs and a validation image; switch the layers drawn over the picture (the ground truth as class outlines,
# the prediction as a translucent fill, errors in red, and in yellow the ground truth's boundary band: the pixels that
# boundary IoU scores); compare the picked runs' IoU per class; and look at the t-SNE map of that image's pixel
# embeddings beside the picture. Choosing a class in "highlight" (or clicking a point of the t-SNE map) lights up that
# class's pixels in the picture and its points in the map; the clicked point's own pixel gets a ring.
#
# The runs are the CE baseline of `00_quickstart` and the pixel-contrast run of `pixel_contrast/fig_tsne` (the same
# configs, so the run store trains them once for all three notebooks), and every other finished run of the store on
# the same data at the same size. Every view is a function of `contrastseg.explore`; this notebook only wires widgets
# to them, and below the widgets calls each view once, so a headless run (papermill, nbval, the report) shows them too.
#
# Clicking points needs a live matplotlib canvas: install `ipympl` and set `click_to_select = True` (JupyterLab).
# The t-SNE maps use one image's pixels at the feature map's resolution, at most `tsne_points_per_class` per class;
# the samples are cached in each run's folder (`pixel_samples/`).

# %% tags=["parameters"]
preset = "smoke"  # "smoke" (any CPU) or "demo" (one GPU)
results_dir = ""  # where results.json and the figures go; empty: runs/notebooks/explorer
seed = 0
steps = 0  # 0: the preset's number of steps
device = "auto"  # where the models run: "auto", "cpu" or "cuda"
image_index = 0  # the val image shown first
highlight = "sidewalk"  # the class highlighted first; "" for none
output = "decoder"  # the t-SNE's feature map: "decoder", "backbone", or "embedding" (contrastive runs only)
tsne_points_per_class = 100
click_to_select = False  # True: click t-SNE points to pick their class (needs the ipympl package)
show_progress = False

# %%
import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display

from contrastseg import explore, runs
from contrastseg.config import preset as preset_config
from contrastseg.results import results_dir_for, save_results, show_figure

if click_to_select:
    # %matplotlib widget
else:
    # %matplotlib inline
results_dir = results_dir or str(results_dir_for("explorer"))
changes = {"seed": seed, "device": device} | ({"steps": steps} if steps else {})
configs = {"CE": preset_config(preset, **changes),  # 00_quickstart's run
           "pixel contrast": preset_config(preset, method="pixel_contrast", **changes)}  # fig_tsne's
trained = {name: runs.get_or_train(cfg, progress=show_progress) for name, cfg in configs.items()}
others = {name: result for name, result in explore.finished_runs_like(configs["CE"]).items()
          if result.run_dir not in {run.run_dir for run in trained.values()}}
explorer = explore.RunExplorer(trained | others, output=output, per_class=tsne_points_per_class, seed=seed,
                               device=device)
info = explorer.info

# %% [markdown]
# ## The explorer
#
# The picture (one panel per picked run), the per-class IoU of the picked runs on the whole val split, and the t-SNE
# map of the picture's pixels under one run.

# %%
run_names = list(explorer.runs)
pick_runs = widgets.SelectMultiple(options=run_names, value=tuple(trained), description="runs",
                                   rows=min(6, len(run_names)))
pick_image = widgets.IntSlider(value=image_index, min=0, max=explorer.num_images - 1, description="val image")
pick_class = widgets.Dropdown(options=[("(none)", None)] + [(name, name) for name in info.class_names],
                              value=highlight or None, description="highlight")
tsne_run = widgets.Dropdown(options=run_names, value=list(trained)[-1], description="t-SNE of")
layers = {"ground_truth": widgets.Checkbox(value=True, description="ground truth"),
          "prediction": widgets.Checkbox(value=True, description="prediction"),
          "errors": widgets.Checkbox(value=False, description="errors"),
          "boundary": widgets.Checkbox(value=False, description="boundary band")}
image_view, iou_view, tsne_view = widgets.Output(), widgets.Output(), widgets.Output()
clicked = {"point": None, "pixel": None}


def show_in(view, fig):
    with view:
        view.clear_output(wait=True)
        if click_to_select:
            display(fig.canvas)  # a live ipympl canvas, which reports clicks
        else:
            display(fig)
            plt.close(fig)


def on_click(event):
    if event.inaxes is None:
        return
    point = explorer.point_at(tsne_run.value, pick_image.value, event.xdata, event.ydata)
    clicked.update(point=point["point"], pixel=point["pixel"])
    if pick_class.value == point["class"]:
        draw_picture_and_map()
    else:
        pick_class.value = point["class"]  # which redraws both


def draw_image(_=None):
    switches = {name: box.value for name, box in layers.items()}
    show_in(image_view, explorer.image_figure(pick_runs.value, pick_image.value, highlight=pick_class.value,
                                              marked_pixel=clicked["pixel"], **switches))


def draw_iou(_=None):
    show_in(iou_view, explorer.iou_figure(pick_runs.value))


def draw_tsne(_=None):
    fig = explorer.tsne_figure(tsne_run.value, pick_image.value, highlight=pick_class.value,
                               marked=clicked["point"])
    fig.canvas.mpl_connect("button_press_event", on_click)
    show_in(tsne_view, fig)


def draw_picture_and_map(_=None):
    draw_image()
    draw_tsne()


def draw_new_image(_=None):
    clicked.update(point=None, pixel=None)
    draw_picture_and_map()


def draw_new_runs(_=None):
    draw_image()
    draw_iou()


pick_runs.observe(draw_new_runs, names="value")
pick_image.observe(draw_new_image, names="value")
tsne_run.observe(draw_new_image, names="value")
pick_class.observe(draw_picture_and_map, names="value")
for box in layers.values():
    box.observe(draw_image, names="value")
draw_new_runs()
draw_tsne()
display(widgets.VBox([widgets.HBox([pick_runs, widgets.VBox([pick_image, pick_class, tsne_run])]),
                      widgets.HBox(list(layers.values())), image_view, widgets.HBox([iou_view, tsne_view])]))

# %% [markdown]
# ## Each view once
#
# What the widgets show at this notebook's parameters, as plain figures: every layer over the picture with
# `highlight` lit up; the per-class IoU of the two runs; and the t-SNE map of the pixel-contrast run with a click on
# one of its points, which highlights that point's class in the map and in the picture and rings the point's pixel.

# %%
picked = list(trained)
fig = explorer.image_figure(picked, image_index, errors=True, boundary=True, highlight=highlight or None)
show_figure(fig, results_dir, "image_layers")

# %%
display(explorer.iou_table(picked).round(3))
show_figure(explorer.iou_figure(picked), results_dir, "per_class_iou")

# %%
tsne_of = picked[-1]
sample, points = explorer.tsne_map(tsne_of, image_index)
click = explorer.point_at(tsne_of, image_index, *points[len(points) // 2])  # a click right on a point
show_figure(explorer.tsne_figure(tsne_of, image_index, highlight=click["class"], marked=click["point"]), results_dir,
            "tsne")
fig = explorer.image_figure([tsne_of], image_index, prediction=False, highlight=click["class"],
                            marked_pixel=click["pixel"])
show_figure(fig, results_dir, "tsne_click")

# %% [markdown]
# ## Summary
#
# The one output that nbval compares (3 decimals): each run's val mIoU, and its mIoU and error rate on the picture;
# the picture's boundary-band and highlighted pixels; the t-SNE sample's points per class and the clicked class.

# %%
# NBVAL_CHECK_OUTPUT
_, labels = explorer.image(image_index)
labelled = int((labels != info.ignore_index).sum())
summary = {
    "preset": preset,
    "image": image_index,
    "runs": {name: {"val_miou": round(result.metrics["val"]["miou"], 3),
                    "image_miou": round(explorer.image_miou(name, image_index), 3),
                    "image_error_rate": round(
                        int(explore.error_map(explorer.prediction(name, image_index), labels).sum()) / labelled, 3)}
             for name, result in trained.items()},
    "boundary_band_pixels": int(explore.boundary_band(labels, info.num_classes, explorer.band_width).sum()),
    "highlighted_pixels": {highlight: int((labels == explorer.class_index(highlight)).sum())} if highlight else {},
    "tsne_points_per_class": dict(zip(info.class_names, sample.class_counts(info.num_classes).tolist())),
    "clicked_class": click["class"],
}
save_results(results_dir, summary)
for key, value in summary.items():
    print(f"{key}: {value}")
