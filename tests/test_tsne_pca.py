"""t-SNE at scale: ``tsne_2d`` maps embeddings of more than 50 dimensions from their first 50 principal components,
deterministically, and leaves embeddings of 50 dimensions or fewer as they are."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from contrastseg import viz

ROOT = Path(__file__).resolve().parents[1]


def test_principal_components_are_the_svds_with_fixed_signs():
    points = np.random.default_rng(0).normal(size=(300, 64)) * np.linspace(3, 0.1, 64)
    reduced = viz.principal_components(points, 50)
    assert reduced.shape == (300, 50) and reduced.dtype == np.float64
    centred = points - points.mean(0)
    _, _, directions = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(reduced), np.abs(centred @ directions[:50].T), atol=1e-9)
    variances = reduced.var(0)
    assert np.all(np.diff(variances) <= 1e-9)  # largest variance first
    loadings = np.linalg.lstsq(centred, reduced, rcond=None)[0]  # (D, 50): each component's direction
    assert np.all(loadings[np.abs(loadings).argmax(0), np.arange(50)] > 0)  # the largest loading is positive
    np.testing.assert_array_equal(viz.principal_components(-points, 50), viz.principal_components(-points, 50))
    whole = viz.principal_components(points, 64)  # a rotation: distances stay
    np.testing.assert_allclose(np.linalg.norm(whole[0] - whole[1:], axis=1),
                               np.linalg.norm(points[0] - points[1:], axis=1), rtol=1e-9)


def test_tsne_maps_more_than_50_dimensions_from_50_principal_components():
    points = np.random.default_rng(1).normal(size=(80, 64))
    settings = {"seed": 2, "n_jobs": 1, "backend": "opentsne", "n_iter": 100}
    assert viz.PCA_COMPONENTS == 50
    reduced_map = viz.tsne_2d(points, **settings)
    np.testing.assert_array_equal(reduced_map, viz.tsne_2d(points, **settings))
    np.testing.assert_array_equal(reduced_map,
                                  viz.tsne_2d(viz.principal_components(points, 50), pca_components=None, **settings))
    assert not np.array_equal(reduced_map, viz.tsne_2d(points, pca_components=None, **settings))


def test_tsne_of_50_dimensions_or_fewer_is_unchanged():
    points = np.random.default_rng(3).normal(size=(80, 16))  # the smoke preset's decoder features are 16-D
    settings = {"seed": 0, "n_jobs": 1, "backend": "opentsne", "n_iter": 100}
    np.testing.assert_array_equal(viz.tsne_2d(points, **settings),
                                  viz.tsne_2d(points, pca_components=None, **settings))


def test_the_benchmark_times_the_map_with_and_without_the_pca_step(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("tsne_scale_benchmark", ROOT / "benchmarks" / "tsne_scale.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    out = tmp_path / "tsne.json"
    benchmark.main(["--n", "150", "--dim", "64", "--classes", "3", "--threads", "1", "--n-iter", "100",
                    "--out", str(out)])
    result = json.loads(out.read_text())
    with_pca, without = result["timings"]["pca"], result["timings"]["no_pca"]
    assert with_pca["pca_components"] == 50 and without["pca_components"] is None
    assert 0 < with_pca["pca_seconds"] < with_pca["seconds"] and without["seconds"] > 0
    assert result["seconds"] == with_pca["seconds"]  # tsne_2d's default
    assert result["speedup"] == round(without["seconds"] / with_pca["seconds"], 2)
    printed = capsys.readouterr().out
    assert "PCA to 50 dimensions" in printed and "without PCA" in printed

    benchmark.main(["--n", "150", "--dim", "64", "--classes", "3", "--threads", "1", "--n-iter", "100",
                    "--pca", "off", "--out", str(out)])
    result = json.loads(out.read_text())
    assert list(result["timings"]) == ["no_pca"] and result["seconds"] == result["timings"]["no_pca"]["seconds"]
