"""The paper preset: every setting validates, the manifest's paper batch covers them, and the dry run plans a batch
(runs, data needed, GPU-hour estimate) without training anything."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from contrastseg.config import preset, smoke
from contrastseg.paper_settings import DATA_SETS, SETTINGS, paper_setting, settings_for
from contrastseg.paths import resolve_data_root
from contrastseg.plan import PlannedNotebook, estimate, forward_flops, format_plan, read_plan, record
from contrastseg.suite import executions, load_manifest, main, plan_suite
from test_suite import write_notebook

REPO = Path(__file__).resolve().parents[1]
PAPER_METHODS = {"pixel_contrast": ("ce", "pixel_contrast"), "contextrast": ("ce", "contextrast"),
                 "rc2l": ("mask_classification", "rc2l")}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_paper_setting_validates_with_its_papers_methods(name):
    setting = paper_setting(name)
    for method in PAPER_METHODS[setting.paper]:
        cfg = preset(f"paper:{name}", method=method)
        assert cfg.dataset == setting.dataset and cfg.method == method
        assert cfg.num_train == 0 and cfg.steps >= 1000 and cfg.pretrained == "timm"
    assert setting.dataset in DATA_SETS and setting.source


def test_paper_preset_errors_name_the_valid_settings():
    with pytest.raises(ValueError, match="pixel_contrast/cityscapes/hrnet_w48"):
        preset("paper")
    with pytest.raises(ValueError, match="paper setting.*valid"):
        preset("paper:pixel_contrast/nowhere/hrnet_w48")


def test_cityscapes_settings_train_on_512_by_1024_crops_of_full_images():
    cfg = preset("paper:pixel_contrast/cityscapes/hrnet_w48", method="pixel_contrast")
    assert cfg.crop_size() == (512, 1024) and cfg.base_size == 1024 and (cfg.scale_min, cfg.scale_max) == (0.5, 2)
    assert cfg.memory_size == 5000 and cfg.contrast_warmup == 5000 and cfg.batch_size == 8 and cfg.steps == 40000
    assert preset("paper:pixel_contrast/cityscapes/deeplabv3_r101").aux_weight == 0.4


def test_relative_data_roots_resolve_under_the_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("CONTRASTSEG_DATA", str(tmp_path))
    assert resolve_data_root("cityscapes") == str(tmp_path / "cityscapes")
    assert resolve_data_root("/abs/cityscapes") == "/abs/cityscapes"
    assert resolve_data_root("") == ""


def test_the_manifests_paper_batch_runs_every_setting():
    planned = executions(load_manifest(REPO / "notebooks" / "manifest.yaml"), "paper")
    used = {execution.parameters["preset"].removeprefix("paper:") for execution in planned}
    assert used == set(SETTINGS)
    assert len({execution.name for execution in planned}) == len(planned)  # executed copies do not collide
    assert {n for n in settings_for("rc2l")} <= used


def test_manifest_rejects_unknown_settings_and_settings_outside_paper(tmp_path):
    write_notebook(tmp_path / "nb.ipynb", ["x = 1"])
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("- notebook: nb.ipynb\n  parameters:\n    paper: {settings: [nope/nowhere/none]}\n")
    with pytest.raises(ValueError, match="unknown paper settings"):
        load_manifest(manifest)
    manifest.write_text("- notebook: nb.ipynb\n  parameters:\n    demo: {settings: [rc2l/voc_aug/maskformer_r101]}\n")
    with pytest.raises(ValueError, match="paper-preset key"):
        load_manifest(manifest)


def test_flop_estimate_scales_with_crop_batch_and_steps():
    cfg = smoke(method="ce")
    small, large = forward_flops(cfg, 64, 64), forward_flops(cfg, 128, 128)
    assert small > 0 and large == pytest.approx(4 * small, rel=0.05)
    one = estimate(cfg)
    assert estimate(cfg.replace(steps=2 * cfg.steps)).train_flops == pytest.approx(2 * one.train_flops)
    assert estimate(cfg.replace(batch_size=2 * cfg.batch_size)).train_flops == pytest.approx(2 * one.train_flops)
    flipped = estimate(cfg.replace(eval_flip=True, eval_scales="1,2"))
    assert flipped.eval_flops == pytest.approx(one.eval_flops * 2 * 5)
    assert estimate(cfg.replace(method="pixel_contrast")).train_flops > one.train_flops


def test_paper_model_estimate_is_in_a_plausible_range():
    """HRNet-W48 at 512 x 1024, batch 8, 40k steps: hundreds of PFLOPs, i.e. days on one GPU, not minutes."""
    cfg = preset("paper:pixel_contrast/cityscapes/hrnet_w48", method="ce")
    hours = estimate(cfg).gpu_hours
    assert 1 < hours < 1000


def test_plan_records_round_trip_and_format(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRASTSEG_DATA", str(tmp_path / "data"))
    path = tmp_path / "plan.jsonl"
    configs = [smoke(method="ce"), smoke(method="ce"), smoke(method="pixel_contrast")]
    for cfg in configs:
        record(cfg, path)
    assert read_plan(path) == configs
    city = preset("paper:contextrast/cityscapes/hrnet_w48", method="ce")
    text = format_plan([PlannedNotebook("table_a", "smoke", configs),
                        PlannedNotebook("fig_b", "smoke", configs[:1], error="RuntimeError: dry run"),
                        PlannedNotebook("table_c", "paper:x", [city])])
    lines = text.splitlines()
    assert any(line.split()[:3] == ["table_a", "2", "2"] for line in lines)
    assert any(line.split()[:3] == ["fig_b", "1", "0"] for line in lines)  # its run is table_a's
    assert "planning stopped: RuntimeError" in text
    assert f"cityscapes: {tmp_path / 'data' / 'cityscapes'} (MISSING)" in text
    assert "prepare_cityscapes.py" in text and "synthscapes: generated on the fly" in text


@pytest.mark.multiprocess
def test_dry_run_lists_runs_without_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CONTRASTSEG_RUNS", str(tmp_path / "store"))
    cells = ["from contrastseg.tables import train_rows",
             "rows = {'CE': {'method': 'ce'}, 'contrast': {'method': 'pixel_contrast'}}\n"
             "per_seed = train_rows(rows, preset, seeds, steps=steps)\n"
             "assert per_seed['miou'].isna().all()",
             "from contrastseg import runs\nfrom contrastseg.config import preset as p\n"
             "runs.get_or_train(p(preset, method='ce', seed=seeds[0])).load_model()"]
    write_notebook(tmp_path / "nbs" / "table_x.ipynb", cells,
                   'preset = "smoke"\nresults_dir = ""\nseeds = [0]\nsteps = 0\nshow_progress = True')
    manifest = tmp_path / "nbs" / "manifest.yaml"
    manifest.write_text("- notebook: table_x.ipynb\n  parameters:\n    smoke: {seeds: [0, 1]}\n"
                        "    paper: {settings: [pixel_contrast/camvid/hrnet_w48]}\n")
    planned = plan_suite("smoke", manifest, progress=False)
    assert len(planned) == 1 and len(planned[0].configs) == 5
    assert {(c.method, c.seed) for c in planned[0].configs} == {("ce", 0), ("ce", 1), ("pixel_contrast", 0),
                                                                ("pixel_contrast", 1)}
    assert "planned, not trained" in planned[0].error
    assert not (tmp_path / "store").exists()  # nothing trained, nothing stored
    assert main(["--preset", "paper", "--manifest", str(manifest), "--dry-run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "table_x@camvid-hrnet_w48" in out and "camvid:" in out and "prepare_camvid.py" in out
    hours = float(next(line for line in out.splitlines() if line.startswith("total")).split()[-1])
    assert math.isfinite(hours) and hours > 0


def test_estimate_counts_mask_classification_models_through_the_cpu_fallback():
    """The mask-classification model uses autocast, which the meta device lacks: FLOPs are counted on the CPU."""
    supervised = estimate(preset("smoke", method="mask_classification"))
    semi = estimate(preset("smoke", method="rc2l"))
    assert supervised.train_flops > 0 and semi.train_flops > 2 * supervised.train_flops
