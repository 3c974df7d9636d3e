"""The run explorer's callbacks on a tiny trained run, the cached class-balanced pixel sampler, the t-SNE backends
and settings, the t-SNE benchmark, and the stripping of widget views from committed notebooks."""

import importlib.util
import json
import sys
import types
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastseg import explore, runs, viz
from contrastseg.config import smoke
from contrastseg.metrics import inner_boundary
from contrastseg.nbtools import strip_volatile

# num_threads=0 keeps the thread count of the test process (CONTRASTSEG_TEST_THREADS)
TINY = dict(steps=4, num_train=8, num_val=4, batch_size=4, num_threads=0)
RUN = "tiny"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return runs.get_or_train(smoke(**TINY), root=tmp_path_factory.mktemp("runs"), progress=False)


@pytest.fixture(scope="module")
def explorer(tiny_run):
    return explore.RunExplorer({RUN: tiny_run}, per_class=20)


def image_with_ignored_pixels(explorer) -> int:
    return next(i for i in range(explorer.num_images) if (explorer.image(i)[1] == 255).any())


def test_error_map_is_a_wrong_prediction_on_a_labelled_pixel(explorer):
    labels = torch.tensor([[0, 1], [255, 2]])
    predictions = torch.tensor([[0, 2], [1, 2]])
    assert explore.error_map(predictions, labels).tolist() == [[False, True], [False, False]]

    index = image_with_ignored_pixels(explorer)
    _, labels = explorer.image(index)
    predictions = explorer.prediction(RUN, index)
    expected = np.array([[p != g and g != 255 for p, g in zip(p_row, g_row)]
                         for p_row, g_row in zip(predictions.tolist(), labels.tolist())])
    errors = explore.error_map(predictions, labels).numpy()
    assert np.array_equal(errors, expected)
    assert errors.any() and not errors[labels.numpy() == 255].any()


def test_boundary_band_is_inner_boundary_of_each_class_on_labelled_pixels(explorer):
    _, labels = explorer.image(image_with_ignored_pixels(explorer))
    band = explore.boundary_band(labels, explorer.info.num_classes, width=2)
    assert band.any() and not band[labels == 255].any()
    for cls in labels.unique().tolist():
        if cls == 255:
            continue
        inside = labels == cls
        assert torch.equal(band & inside, inner_boundary(inside[None, None], 2)[0, 0]), f"class {cls}"


def test_highlighting_a_class_keeps_exactly_its_pixels_and_dims_the_rest(explorer):
    image, labels = explorer.image(0)
    predictions = explorer.prediction(RUN, 0)
    road = explorer.class_index("road")
    plain = explore.compose_overlay(image, labels, predictions, explorer.info.palette, errors=True, boundary=True)
    highlighted = explore.compose_overlay(image, labels, predictions, explorer.info.palette, errors=True,
                                          boundary=True, highlight=road)
    kept = (labels == road).numpy()
    assert kept.any() and not kept.all()
    assert np.array_equal(highlighted[kept], plain[kept])
    assert np.allclose(highlighted[~kept], explore.DIMMED * plain[~kept])


def test_the_layers_draw_where_their_masks_say(explorer):
    image, labels = explorer.image(0)
    predictions = explorer.prediction(RUN, 0)
    palette = explorer.info.palette
    picture = image.permute(1, 2, 0).double().numpy()
    nothing = explore.compose_overlay(image, labels, predictions, palette, ground_truth=False, prediction=False)
    assert np.array_equal(nothing, picture)
    errors_only = explore.compose_overlay(image, labels, predictions, palette, ground_truth=False,
                                          prediction=False, errors=True)
    changed = (errors_only != picture).any(2)
    assert np.array_equal(changed, explore.error_map(predictions, labels).numpy())
    without_prediction = explore.compose_overlay(image, labels, None, palette, errors=True, ground_truth=False)
    assert np.array_equal(without_prediction, picture)


def test_tsne_highlight_and_click_select_the_class_of_the_point(explorer):
    sample, points = explorer.tsne_map(RUN, 0)
    assert points.shape == (len(sample.labels), 2)
    clicked = explorer.point_at(RUN, 0, *points[3])
    assert clicked["point"] == 3 and clicked["class"] == explorer.info.class_names[sample.labels[3]]
    _, labels = explorer.image(0)
    assert labels[clicked["pixel"]].item() == sample.labels[3]  # the pixel the point stands for has its class

    fig = explorer.tsne_figure(RUN, 0, highlight=clicked["class"], marked=clicked["point"])
    colours = fig.axes[0].collections[0].get_facecolors()[:, :3]
    grey = np.all(np.isclose(colours, viz.HIDDEN_COLOUR), axis=1)
    assert (~grey).sum() == (sample.labels == sample.labels[3]).sum()
    plt.close(fig)


def test_unknown_class_and_image_out_of_range_are_named(explorer):
    with pytest.raises(ValueError, match="unknown class 'tree'; valid names: .*road"):
        explorer.image_figure([RUN], 0, highlight="tree")
    with pytest.raises(IndexError, match=r"image index 4 is out of range: the data set has 4 images \(0 to 3\)"):
        explorer.image_figure([RUN], 4)
    with pytest.raises(ValueError, match="unknown run 'other'; valid names: tiny"):
        explorer.iou_table(["other"])


def test_figures_and_iou_table_of_the_picked_runs(explorer, tiny_run):
    table = explorer.iou_table([RUN])
    recorded = [np.nan if v is None else v for v in tiny_run.metrics["val"]["per_class_iou"]]
    assert list(table.index) == list(explorer.info.class_names)
    np.testing.assert_array_equal(table[RUN].to_numpy(), np.array(recorded, dtype=float))
    fig = explorer.image_figure([RUN], 1, errors=True, boundary=True, highlight="road", marked_pixel=(5, 7))
    assert [ax.get_title() for ax in fig.axes] == [f"{RUN}\nimage mIoU {explorer.image_miou(RUN, 1):.2f}"]
    plt.close(fig)
    fig = explorer.image_figure([], 1)
    assert [ax.get_title() for ax in fig.axes] == ["ground truth"]
    plt.close(fig)
    plt.close(explorer.iou_figure([RUN]))


def test_the_pixel_sample_is_cached_once_per_key_and_read_back(tiny_run, monkeypatch):
    folder = tiny_run.run_dir / explore.SAMPLES_FOLDER
    before = set(folder.glob("*.npz"))  # other tests' samples of the same run
    first = explore.cached_pixel_sample(tiny_run, images=2, per_class=5, seed=7)
    written = sorted(set(folder.glob("*.npz")) - before)
    assert len(written) == 1 and written[0].name.startswith("val-decoder-")
    assert json.loads(str(np.load(written[0])["key"])) == {"split": "val", "images": [0, 1], "per_class": 5,
                                                           "output": "decoder", "seed": 7}

    def must_not_run(*args, **kwargs):
        raise AssertionError("ran the model again")

    monkeypatch.setattr(runs.RunResult, "load_model", must_not_run)
    second = explore.cached_pixel_sample(tiny_run, images=[0, 1], per_class=5, seed=7)
    for name in ("embeddings", "labels", "image_index", "pixel"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))
    assert sorted(set(folder.glob("*.npz")) - before) == written
    with pytest.raises(AssertionError, match="ran the model again"):
        explore.cached_pixel_sample(tiny_run, images=2, per_class=5, seed=8)


def test_the_sampler_draws_min_of_per_class_and_what_each_class_has(tiny_run):
    model = tiny_run.load_model()
    dataset = explore.split_dataset(tiny_run.config, "val")
    available = torch.zeros(9, dtype=torch.long)
    for index in range(3):
        image, label = dataset[index]
        grid = viz.feature_map(model, image).shape[-2:]
        small = F.interpolate(label[None, None].float(), size=grid, mode="nearest").long().flatten()
        available += torch.bincount(small[small != 255], minlength=9)
    sample = viz.sample_pixels(model, dataset, per_class=6, images=range(3), seed=1)
    assert sample.class_counts(9).tolist() == available.clamp(max=6).tolist()
    assert (available > 6).any() and ((0 < available) & (available < 6)).any()  # both limits are exercised
    labels_at_pixels = [dataset[i][1][r, c].item() for i, (r, c) in zip(sample.image_index, sample.pixel)]
    assert labels_at_pixels == sample.labels.tolist()
    assert np.allclose(np.linalg.norm(sample.embeddings, axis=1), 1, atol=1e-5)
    with pytest.raises(IndexError, match="out of range"):
        viz.sample_pixels(model, dataset, images=[len(dataset)])
    with pytest.raises(ValueError, match="no 'embedding' output"):
        viz.sample_pixels(model, dataset, output="embedding", images=[0])


MASK_CLASSIFICATION_TINY = dict(method="mask_classification", head="mask_classification", num_queries=4, mask_dim=16,
                                decoder_layers=1, optimizer="adamw", lr=1e-3)
MASK_RUN = "mask classification"


@pytest.fixture(scope="module")
def mask_classification_run(tmp_path_factory):
    return runs.get_or_train(smoke(**TINY, **MASK_CLASSIFICATION_TINY), root=tmp_path_factory.mktemp("mask_runs"),
                             progress=False)


def test_the_explorer_shows_a_mask_classification_run_beside_a_dense_one(tiny_run, mask_classification_run):
    root = mask_classification_run.run_dir.parents[1]
    assert list(explore.finished_runs_like(tiny_run.config, root)) == [mask_classification_run.run_dir.name]
    explorer = explore.RunExplorer({RUN: tiny_run, MASK_RUN: mask_classification_run}, per_class=10)
    image, labels = explorer.image(0)
    assert explorer.prediction(MASK_RUN, 0).shape == labels.shape
    fig = explorer.image_figure([RUN, MASK_RUN], 0, errors=True, boundary=True, highlight="road")
    assert [ax.get_title().split("\n")[0] for ax in fig.axes[:2]] == [RUN, MASK_RUN]
    plt.close(fig)
    plt.close(explorer.iou_figure([RUN, MASK_RUN]))

    sample, points = explorer.tsne_map(MASK_RUN, 0)
    assert points.shape == (len(sample.labels), 2) and sample.embeddings.shape[1] == 16  # mask_dim
    clicked = explorer.point_at(MASK_RUN, 0, *points[0])
    assert labels[clicked["pixel"]].item() == sample.labels[0]
    plt.close(explorer.tsne_figure(MASK_RUN, 0, highlight=clicked["class"], marked=clicked["point"]))


def test_a_mask_classification_model_embeds_pixels_with_its_per_pixel_mask_embedding(mask_classification_run):
    model = mask_classification_run.load_model()
    image, _ = explore.split_dataset(mask_classification_run.config, "val")[0]
    with torch.no_grad():
        outputs = model(image.unsqueeze(0))
    assert torch.equal(viz.feature_map(model, image), outputs["pixel_features"][0])
    assert torch.equal(viz.feature_map(model, image, "backbone"), outputs["levels"][-1][0])
    with pytest.raises(ValueError, match="no 'embedding' output.*'decoder'.*per-pixel mask embedding"):
        viz.feature_map(model, image, "embedding")


def test_finished_runs_lists_readable_runs_like_the_config(tiny_run):
    root = tiny_run.run_dir.parents[1]
    stale = root / "store" / "ce-000000000000"
    stale.mkdir()
    (stale / "config.json").write_text(json.dumps({"no_such_field": 1}))
    (stale / "metrics.json").write_text("{}")
    assert list(explore.finished_runs_like(tiny_run.config, root)) == [tiny_run.run_dir.name]
    assert explore.finished_runs_like(tiny_run.config.replace(image_size=96), root) == {}


@pytest.mark.parametrize("cuda, importable, expected", [
    (False, {"cuml", "tsnecuda"}, "opentsne"),
    (True, {"cuml", "tsnecuda"}, "cuml"),
    (True, {"tsnecuda"}, "tsnecuda"),
    (True, set(), "opentsne"),
])
def test_tsne_backend_prefers_an_importable_gpu_package_on_a_gpu(monkeypatch, cuda, importable, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in importable else None)
    assert viz.tsne_backend() == expected


def test_tsne_backend_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="valid names: auto, opentsne, cuml, tsnecuda"):
        viz.tsne_backend("sklearn")
    with pytest.raises(ValueError, match="needs the tsnecuda package and a GPU"):
        viz.tsne_backend("tsnecuda")
    assert viz.tsne_backend("opentsne") == "opentsne"


def test_tsne_2d_hands_its_settings_to_the_gpu_package(monkeypatch):
    calls = {}

    class FakeTSNE:
        def __init__(self, **settings):
            calls["settings"] = settings

        def fit_transform(self, points):
            calls["dtype"] = points.dtype
            return np.zeros((len(points), 2), dtype=np.float32)

    cuml, manifold = types.ModuleType("cuml"), types.ModuleType("cuml.manifold")
    manifold.TSNE, cuml.manifold = FakeTSNE, manifold
    monkeypatch.setitem(sys.modules, "cuml", cuml)
    monkeypatch.setitem(sys.modules, "cuml.manifold", manifold)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "cuml" else None)
    points = viz.tsne_2d(np.random.default_rng(0).normal(size=(24_000, 4)), seed=3)
    assert points.shape == (24_000, 2) and points.dtype == np.float64 and calls["dtype"] == np.float32
    settings = calls["settings"]
    assert settings["learning_rate"] == 2000 and settings["method"] == "fft" and settings["init"] == "pca"
    assert settings["random_state"] == 3 and settings["learning_rate_method"] is None


def test_tsne_settings_for_large_n():
    assert viz.tsne_learning_rate(120_000) == 10_000 and viz.tsne_learning_rate(600) == 200
    assert viz.tsne_gradients(100_000, "opentsne") == "fft" and viz.tsne_gradients(500, "opentsne") == "bh"
    assert viz.tsne_gradients(500, "cuml") == "fft"


def test_tsne_2d_on_the_cpu_is_deterministic_for_a_seed():
    points = np.random.default_rng(0).normal(size=(60, 8))
    first = viz.tsne_2d(points, seed=1, n_jobs=1, backend="opentsne")
    assert first.shape == (60, 2)
    np.testing.assert_array_equal(first, viz.tsne_2d(points, seed=1, n_jobs=1, backend="opentsne"))


def test_tsne_benchmark_writes_its_record(tmp_path, tiny_run):
    spec = importlib.util.spec_from_file_location("tsne_scale_benchmark",
                                                  Path(__file__).resolve().parents[1] / "benchmarks" / "tsne_scale.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    points, labels = benchmark.gaussian_mixture(300, 256, 3, seed=0)
    assert points.shape == (300, 256) and set(labels.tolist()) == {0, 1, 2}
    assert viz.knn_accuracy(points, labels) > 0.95  # at the default D the classes are separate clusters
    out = tmp_path / "tsne.json"
    benchmark.main(["--n", "120", "--dim", "16", "--classes", "3", "--threads", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["n"] == 120 and result["dim"] == 16 and result["backend"] == "opentsne" and result["seconds"] > 0
    assert result["threads"] == 1 and "openTSNE" in result["versions"] and result["command"].startswith("python")
    explore.cached_pixel_sample(tiny_run, images=2, per_class=10)
    cached = next((tiny_run.run_dir / explore.SAMPLES_FOLDER).glob("*.npz"))
    benchmark.main(["--embeddings", str(cached), "--n", "15", "--threads", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["n"] == 15 and result["points"] == str(cached)


def test_committed_notebooks_keep_no_widget_views():
    widget_view = nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json":
                                                               {"model_id": "abc"}, "text/plain": "VBox()"})
    printed = nbformat.v4.new_output("stream", name="stdout", text="kept\n")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("ui", outputs=[widget_view, printed])])
    strip_volatile(notebook)
    assert [output.output_type for output in notebook.cells[0].outputs] == ["stream"]
