"""The benchmark scripts run end to end at a tiny size and write what they claim (so they do not rot unnoticed)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_time_compares_methods_side_by_side(tmp_path):
    out = tmp_path / "step_time.json"
    threads = torch.get_num_threads()
    try:
        load("step_time").main(["--preset", "smoke", "--device", "cpu", "--steps", "2", "--warmup", "0",
                                "--methods", "ce", "contextrast", "contextrast:bane=off", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert [row["method"] for row in result["rows"]] == ["ce", "contextrast", "contextrast:bane=off"]
    assert result["rows"][0]["ratio_to_first"] == 1.0
    assert all(len(row["times_ms"]) == 2 and row["median_ms"] > 0 for row in result["rows"])


def test_bane_benchmark_times_the_distance_transform_within_bane(tmp_path):
    benchmark = load("contextrast_bane")
    labels, predictions = benchmark.blob_maps(2, (64, 64), 5, 0.2, torch.Generator().manual_seed(0))
    assert (predictions != labels).float().mean().item() == pytest.approx(0.2, abs=0.08)
    out = tmp_path / "bane.json"
    benchmark.main(["--scale", "demo", "--repeats", "1", "--threads", "0", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["level_sizes"] == [[64, 64], [32, 32], [32, 32], [32, 32]]
    assert 0 < result["distance_transform_ms"] and result["bane_selected_per_step"] > 0
    assert result["edt_masks_per_step"] > 0


def test_suite_tables_turns_a_batch_into_markdown(tmp_path):
    from contrastseg.results import save_results

    table_dir, figure_dir = tmp_path / "demo" / "table_x", tmp_path / "demo" / "fig_y"
    save_results(table_dir, {"seeds": [0, 1], "table": [
        {"row": "CE", "miou_mean": 0.51234, "miou_std": 0.01, "boundary_iou_mean": 0.2, "boundary_iou_std": 0.0,
         "seeds": 2},
        {"row": "+ contrast", "miou_mean": 0.55, "miou_std": 0.02, "boundary_iou_mean": 0.25,
         "boundary_iou_std": 0.01, "seeds": 2}]})
    save_results(figure_dir, {"seed": 0})
    (tmp_path / "demo" / "suite.json").write_text(json.dumps({"preset": "demo", "notebooks": {
        "notebooks/table_x.ipynb": {"status": "ok", "seconds": 12.0, "results_dir": str(table_dir)},
        "notebooks/fig_y.ipynb": {"status": "ok", "seconds": 3.0, "results_dir": str(figure_dir)},
        "notebooks/broken.ipynb": {"status": "failed", "seconds": 1.0, "results_dir": str(tmp_path / "none"),
                                   "error": "cell 3: ValueError: boom"}}}))
    out = tmp_path / "tables.md"
    assert load("suite_tables").main([str(tmp_path / "demo"), "--note", "steps cut to 10", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| row | val mIoU | boundary IoU | seeds |" in text  # only the metrics the table holds
    assert "| CE | 0.512 ± 0.010 | 0.200 ± 0.000 | 2 |" in text
    assert "steps cut to 10" in text and "torch" in text
    assert "(a figure notebook" in text and "error: cell 3: ValueError: boom" in text
    with pytest.raises(SystemExit):
        load("suite_tables").main([str(tmp_path / "nowhere")])
