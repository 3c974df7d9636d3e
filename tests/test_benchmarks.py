"""The benchmark scripts run end to end at a tiny size and write what they claim (so they do not rot unnoticed)."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_step_time(args: list[str], out: Path) -> dict:
    """Run benchmarks/step_time.py on one CPU thread with ``args`` (torch's count restored after); its JSON."""
    threads = torch.get_num_threads()
    try:
        load("step_time").main([*args, "--device", "cpu", "--threads", "1", "--warmup", "0", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return json.loads(out.read_text())


def test_step_time_compares_methods_side_by_side(tmp_path):
    result = run_step_time(["--preset", "smoke", "--steps", "2", "--methods", "ce", "contextrast",
                            "contextrast:bane=off"], tmp_path / "step_time.json")
    assert [row["method"] for row in result["rows"]] == ["ce", "contextrast", "contextrast:bane=off"]
    assert result["rows"][0]["ratio_to_first"] == 1.0
    assert all(len(row["times_ms"]) == 2 and row["median_ms"] > 0 for row in result["rows"])
    assert result["batch"] == "synthscapes samples" and result["crop"] == [64, 64] and result["batch_size"] == 8
    for row in result["rows"]:
        assert row["images_per_second"] == pytest.approx(8 / (row["median_ms"] / 1000), rel=1e-9)
        assert row["train_tflops"] > 0
        assert row["fraction_of_bf16_peak"] is None  # the CPU has no bf16 tensor-core peak
    step_flops = [row["train_tflops"] * row["median_ms"] for row in result["rows"]]  # each method's own model's
    assert step_flops[0] < step_flops[1] and step_flops[1] == pytest.approx(step_flops[2], rel=1e-9)


def test_step_time_runs_a_paper_setting_on_a_random_batch_at_its_crop(tmp_path):
    from contrastseg.config import preset
    from contrastseg.plan import forward_flops

    setting, tiny = "paper:pixel_contrast/cityscapes/hrnet_w48", "backbone=tiny,head=fcn,image_size=64,crop_width=96"
    result = run_step_time(["--preset", setting, "--batch-size", "2", "--steps", "1", "--methods", f"ce:{tiny}"],
                           tmp_path / "paper.json")
    assert result["batch"] == "random tensors at the crop size"  # Cityscapes is not on disk here
    assert result["crop"] == [64, 96] and result["batch_size"] == 2 and result["backbone"] == "tiny"
    (row,) = result["rows"]
    seconds = row["median_ms"] / 1000
    assert row["images_per_second"] == pytest.approx(2 / seconds, rel=1e-9)
    cfg = preset(setting, method="ce", backbone="tiny", head="fcn", image_size=64, crop_width=96, pretrained="")
    assert row["train_tflops"] == pytest.approx(3 * forward_flops(cfg, 64, 96) * 2 / seconds / 1e12, rel=1e-9)


def test_step_time_rejects_unknown_presets_and_booleans(capsys):
    step_time = load("step_time")
    with pytest.raises(SystemExit):
        step_time.main(["--preset", "papers", "--device", "cpu"])
    message = capsys.readouterr().err
    assert "demo, laptop, smoke" in message and "paper:<setting>" in message and "contextrast/cityscapes/hrnet_w48" in message
    with pytest.raises(SystemExit):
        step_time.main(["--preset", "paper:pixel_contrast/cityscapes/nope", "--device", "cpu"])
    assert "unknown paper setting" in capsys.readouterr().err
    assert step_time.parse_method("ce:channels_last=TRUE,compile=False") == ("ce", {"channels_last": True,
                                                                                    "compile": False})
    with pytest.raises(SystemExit, match="true or false"):
        step_time.parse_method("ce:channels_last=yes")


def test_bf16_peaks_take_the_longest_matching_gpu_name():
    peak = load("common").bf16_peak_tflops
    assert peak("NVIDIA H100 80GB HBM3") == 989 and peak("NVIDIA H100 PCIe") == 756
    assert peak("NVIDIA H100 NVL") == 835 and peak("NVIDIA H200") == 989 and peak("NVIDIA H200 NVL") == 835
    assert peak("NVIDIA A100-SXM4-80GB") == 312 and peak("NVIDIA L40S") == 362
    assert peak("NVIDIA GeForce RTX 4090") == 165
    assert peak("cpu") is None and peak("NVIDIA L40") is None and peak("NVIDIA Tesla T4") is None


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
         "boundary_iou_std": 0.01, "seeds": 2}],
        "differences": [{"pair": "+ contrast - CE", "mean": 0.03766, "std": 0.01, "ci_low": -0.002, "ci_high": 0.05,
                         "seeds": 2}]})
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
    assert "| + contrast - CE | +0.038 | 0.010 | [-0.002, +0.050] | 2 |" in text
    assert "steps cut to 10" in text and "torch" in text
    assert "(a figure notebook" in text and "error: cell 3: ValueError: boom" in text
    with pytest.raises(SystemExit):
        load("suite_tables").main([str(tmp_path / "nowhere")])


def test_suite_tables_shows_no_spread_for_one_seed(tmp_path):
    """One seed: the summary's std and the differences' std and interval are NaN ("nan" in results.json), shown as
    "mean (n=1)" and "-", never as a zero spread."""
    from contrastseg.results import save_results
    from contrastseg.tables import paired_differences, summarize

    per_seed = pd.DataFrame({"row": ["CE", "+ contrast"], "seed": [0, 0], "miou": [0.2731, 0.3]})
    save_results(tmp_path / "demo" / "table_x", {
        "seeds": [0], "table": summarize(per_seed, ("miou",)).reset_index().to_dict("records"),
        "differences": paired_differences(per_seed, {"d": ("+ contrast", "CE")}).drop(columns="per_seed")
        .reset_index().to_dict("records")})
    outcome = {"status": "ok", "seconds": 1.0, "results_dir": str(tmp_path / "demo" / "table_x")}
    (tmp_path / "demo" / "suite.json").write_text(json.dumps({"preset": "demo",
                                                              "notebooks": {"notebooks/table_x.ipynb": outcome}}))
    out = tmp_path / "tables.md"
    assert load("suite_tables").main([str(tmp_path / "demo"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| CE | 0.273 (n=1) | 1 |" in text and "± 0.000" not in text
    assert "| d | +0.027 | - | - | 1 |" in text


def test_laptop_calibration_plateau_rule():
    calibrate = load("calibrate_laptop")
    curve = [{"step": 100, "miou": 0.30}, {"step": 800, "miou": 0.46}, {"step": 900, "miou": 0.465},
             {"step": 1000, "miou": 0.468}]
    assert calibrate.plateau_gain(curve) == pytest.approx(0.468 - 0.46)  # the last point at or before 80 %
    row = {"miou": 0.468, "plateau_gain": 0.008, "train_seconds": 60.0}
    assert calibrate.meets_rule(row)
    assert not calibrate.meets_rule(row | {"plateau_gain": 0.011})
    assert not calibrate.meets_rule(row | {"miou": 0.449})
    assert not calibrate.meets_rule(row | {"train_seconds": 181.0})
