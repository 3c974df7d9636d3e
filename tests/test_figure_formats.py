"""Figures for papers: ``save_figure`` writes a PNG for the report and vector forms (PDF by default, SVG on request),
the same bytes for the same figure, and large scatters are embedded in vector files as an image."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from contrastseg import suite, viz
from contrastseg.results import DEFAULT_VECTOR_FORMATS, save_figure


def line_figure() -> Figure:
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [0, 1], label="a line")
    return fig


def test_a_figure_is_saved_as_png_and_as_pdf_by_default(tmp_path):
    assert DEFAULT_VECTOR_FORMATS == ("pdf",)
    path = save_figure(line_figure(), tmp_path, "curve")
    assert path == tmp_path / "curve.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "curve.pdf").read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.pdf", "curve.png"]


def test_the_vector_formats_are_a_parameter(tmp_path):
    save_figure(line_figure(), tmp_path / "both", "curve.png", vector_formats=("svg", "pdf"))
    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == ["curve.pdf", "curve.png", "curve.svg"]
    assert "<svg" in (tmp_path / "both" / "curve.svg").read_text()
    save_figure(line_figure(), tmp_path / "png", "curve", vector_formats=())
    assert [p.name for p in (tmp_path / "png").iterdir()] == ["curve.png"]
    with pytest.raises(ValueError, match="unknown vector format.s. 'eps'; valid formats: pdf, svg"):
        save_figure(line_figure(), tmp_path / "bad", "curve", vector_formats=("eps",))
    assert not (tmp_path / "bad").exists()
    assert save_figure(line_figure(), "", "curve", vector_formats=("svg",)) is None


def test_saving_a_figure_again_writes_the_same_bytes(tmp_path):
    for folder in ("first", "second"):
        save_figure(line_figure(), tmp_path / folder, "curve", vector_formats=("svg", "pdf"))
    for name in ("curve.png", "curve.pdf", "curve.svg"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name


def embedding_figure(num_points: int) -> Figure:
    generator = np.random.default_rng(0)
    points, labels = generator.normal(size=(num_points, 2)), generator.integers(0, 3, num_points)
    return viz.plot_embedding(points, labels, ["a", "b", "c"], [(255, 0, 0), (0, 255, 0), (0, 0, 255)])


def test_a_large_scatter_is_an_image_in_vector_files_and_leaves_the_png_as_it_was(tmp_path, monkeypatch):
    many = viz.RASTERIZED_POINTS + 1
    save_figure(embedding_figure(many), tmp_path / "large", "tsne", vector_formats=("svg",))
    save_figure(embedding_figure(100), tmp_path / "small", "tsne", vector_formats=("svg",))
    assert "<image" in (tmp_path / "large" / "tsne.svg").read_text()
    assert "<image" not in (tmp_path / "small" / "tsne.svg").read_text()

    monkeypatch.setattr("contrastseg.viz.plots.RASTERIZED_POINTS", many)  # the same scatter as vector dots
    save_figure(embedding_figure(many), tmp_path / "dots", "tsne", vector_formats=("svg",))
    assert "<image" not in (tmp_path / "dots" / "tsne.svg").read_text()
    assert (tmp_path / "large" / "tsne.svg").stat().st_size < (tmp_path / "dots" / "tsne.svg").stat().st_size / 2
    assert (tmp_path / "dots" / "tsne.png").read_bytes() == (tmp_path / "large" / "tsne.png").read_bytes()


def test_a_rerun_of_the_suite_removes_the_vector_figures_of_the_last_run(tmp_path):
    save_figure(line_figure(), tmp_path, "curve", vector_formats=("svg", "pdf"))
    (tmp_path / "notes.txt").write_text("kept")
    suite._clear_results(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
