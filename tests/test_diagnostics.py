"""Per-step diagnostics: each objective's counts in the step log, the "did the method act" share of a run, its text
line in the table helpers, and the report's flag on a row whose method term was mostly zero. Tiny runs on the CPU."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from contrastseg.config import smoke
from contrastseg.engine import read_log, train
from contrastseg.methods import METHODS, build_objective
from contrastseg.report import write_report
from contrastseg.results import save_results
from contrastseg.tables import (activity_line, activity_lines, method_activity, method_terms, summarize,
                                train_rows)

TINY = dict(steps=3, checkpoint_every=3, num_train=8, num_val=4, batch_size=4)
RC2L_TINY = dict(method="rc2l", head="mask_classification", num_queries=8, mask_dim=16, decoder_layers=1,
                 proj_dim=8, optimizer="adamw", lr=1e-3, steps=3, checkpoint_every=3, num_train=16, num_val=4,
                 batch_size=4, label_fraction=0.5, cutmix_probability=1.0)
NEVER_ELIGIBLE = 100_000
"""``max_views`` above the pixels of any class in a 64 px image: no (image, class) pair gives anchors."""


def diagnostics_of(run_dir) -> list[dict]:
    log = read_log(run_dir)
    assert log and all(isinstance(line["diagnostics"], dict) for line in log)
    return [line["diagnostics"] for line in log]


def test_every_objective_names_its_method_terms():
    assert method_terms("ce") == () and method_terms("mask_classification") == ()
    assert method_terms("pixel_contrast") == ("contrast",) and method_terms("contextrast") == ("contrast",)
    assert method_terms("rc2l") == ("rcc", "smc", "rmc", "rfc")
    assert all(isinstance(method.objective_class().method_terms, tuple) for method in METHODS.values())


def test_supervised_runs_log_empty_diagnostics_and_the_loss_values_stay_flat(tmp_path):
    train(smoke(**TINY), tmp_path, progress=False)
    log = read_log(tmp_path)
    assert [line["diagnostics"] for line in log] == [{}] * TINY["steps"]
    assert all(isinstance(line["ce"], float) and isinstance(line["loss"], float) for line in log)
    assert math.isnan(method_activity(log, method_terms("ce"))["active_share"])
    assert activity_line(method_activity(log, ()), "ce") == "no method term (a supervised baseline)"


def test_pixel_contrast_logs_anchors_hard_share_and_memory_fill(tmp_path):
    train(smoke(method="pixel_contrast", memory="both", **TINY), tmp_path, progress=False)
    steps = diagnostics_of(tmp_path)
    assert all(step["anchors"] > 0 and step["anchor_pairs"] > 0 for step in steps)
    assert all(0.0 <= step["hard_anchor_share"] <= 1.0 for step in steps)
    # the queues are written after each step: empty at the first forward, filling afterwards, never above capacity
    assert steps[0]["memory_fill_pixel"] == 0.0 and steps[0]["memory_fill_segment"] == 0.0
    assert all(0.0 < step["memory_fill_pixel"] <= 1.0 and 0.0 < step["memory_fill_segment"] <= 1.0
               for step in steps[1:])
    log = read_log(tmp_path)
    activity = method_activity(log, method_terms("pixel_contrast"))
    assert activity["steps"] == TINY["steps"]
    # anchors of one class only have no negative: the term can be 0 on a step that drew anchors
    assert activity["active_share"] == sum(line["contrast"] != 0 for line in log) / len(log) > 0
    line = activity_line(activity, "pixel_contrast")
    assert line.startswith("contrast term non-zero on ") and "anchors/step" in line
    assert "% hard" in line and "pixel memory" in line and "segment memory" in line


def test_pixel_contrast_diagnostics_count_the_hard_anchors_of_the_forward():
    objective = build_objective(smoke(method="pixel_contrast", max_views=4, max_samples=64), num_classes=3)
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[:, :, 4:] = 1
    coarse_logits = torch.zeros(2, 3, 8, 8)
    coarse_logits[:, 0] = 1.0  # predicts class 0 everywhere: every class-1 anchor is hard
    outputs = {"logits": torch.randn(2, 3, 8, 8), "coarse_logits": coarse_logits,
               "embedding": torch.nn.functional.normalize(torch.randn(2, 4, 8, 8), dim=1)}
    objective(outputs, labels, step=0)
    counts = objective.diagnostics()
    assert counts == {"anchors": 16, "anchor_pairs": 4, "hard_anchor_share": 0.5}  # 4 pairs x 4 views, half hard


@pytest.mark.filterwarnings("ignore:hard_anchor_sampling drew no anchor")  # the point of the test
def test_pixel_contrast_without_eligible_anchors_is_idle(tmp_path):
    train(smoke(method="pixel_contrast", max_views=NEVER_ELIGIBLE, **TINY), tmp_path, progress=False)
    log = read_log(tmp_path)
    assert all(line["diagnostics"]["anchors"] == 0 and line["contrast"] == 0.0 for line in log)
    activity = method_activity(log, method_terms("pixel_contrast"))
    assert activity["active_share"] == 0.0
    assert activity_line(activity, "pixel_contrast").startswith("contrast term non-zero on 0 % of 3 steps")


def test_contextrast_logs_anchors_pixels_and_bane_negatives_per_level(tmp_path):
    cfg = smoke(method="contextrast", **{**TINY, "steps": 2})
    train(cfg, tmp_path, progress=False)
    num_classes = build_objective(cfg, num_classes=9).num_classes
    for step in diagnostics_of(tmp_path):
        assert set(step) == {f"{name}_level{level}" for name in ("anchors", "pixels", "bane_negatives")
                             for level in range(1, cfg.contrast_levels + 1)}
        for level in range(1, cfg.contrast_levels + 1):
            assert 1 <= step[f"anchors_level{level}"] <= num_classes
            assert 0 < step[f"pixels_level{level}"] <= cfg.level_max_pixels
            assert step[f"bane_negatives_level{level}"] >= 0
    line = activity_line(method_activity(read_log(tmp_path), ("contrast",)), "contextrast")
    assert "anchors (classes) per level" in line and "BANE negatives per level" in line


def test_contextrast_without_bane_selects_no_negative(tmp_path):
    train(smoke(method="contextrast", bane="off", contrast_levels=1, **{**TINY, "steps": 1}), tmp_path,
          progress=False)
    (step,) = diagnostics_of(tmp_path)
    assert step["bane_negatives_level1"] == 0 and step["anchors_level1"] > 0


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_rc2l_logs_teacher_regions_matches_and_coverage(tmp_path, threshold):
    train(smoke(**RC2L_TINY, confidence_threshold=threshold), tmp_path, progress=False)
    log = read_log(tmp_path)
    steps = diagnostics_of(tmp_path)
    assert all(set(step) == {"teacher_regions", "matched_regions", "pseudo_label_coverage"} for step in steps)
    activity = method_activity(log, method_terms("rc2l"))
    if threshold == 0.0:  # every query with a non-empty mask is kept
        assert all(step["teacher_regions"] > 0 and step["matched_regions"] > 0 for step in steps)
        assert all(0.0 < step["pseudo_label_coverage"] <= 1.0 for step in steps)
        assert activity["active_share"] == 1.0
    else:  # no class probability reaches 1: the teacher keeps nothing and every unlabeled term is zero
        assert all(step == {"teacher_regions": 0.0, "matched_regions": 0.0, "pseudo_label_coverage": 0.0}
                   for step in steps)
        assert all(line[term] == 0.0 for line in log for term in ("rcc", "smc", "rmc", "rfc"))
        assert activity["active_share"] == 0.0
        line = activity_line(activity, "rc2l")
        assert line.startswith("one of the rcc/smc/rmc/rfc terms non-zero on 0 % of 3 steps; 0 teacher regions")


def test_mask_classification_logs_no_diagnostics(tmp_path):
    train(smoke(**{**RC2L_TINY, "method": "mask_classification", "steps": 1}), tmp_path, progress=False)
    assert diagnostics_of(tmp_path) == [{}]


def test_method_activity_reads_only_logged_terms_and_averages_diagnostics():
    log = [{"step": 1, "ce": 1.0, "rcc": 0.0, "diagnostics": {"teacher_regions": 0.0}},
           {"step": 2, "ce": 0.9, "rcc": 0.5, "diagnostics": {"teacher_regions": 2.0}},
           {"step": 3, "ce": 0.8, "rcc": 0.0},  # a line without diagnostics (an older log)
           {"step": 4, "ce": 0.7, "rcc": 0.0, "diagnostics": {"teacher_regions": 1.0}}]
    activity = method_activity(log, ("rcc", "smc", "rmc", "rfc"))
    assert activity == {"terms": ["rcc"], "steps": 4, "active_share": 0.25,
                        "diagnostics": {"teacher_regions": 1.0}}
    assert activity_line(activity, "rc2l").startswith("rcc term non-zero on 25 % of 4 steps; 1 teacher regions")
    assert math.isnan(method_activity([], ("contrast",))["active_share"])
    assert activity_line(method_activity([], ("contrast",)), "pixel_contrast") == "no logged step"


TABLE_ROWS = {"in-batch contrast": {"method": "pixel_contrast", "max_views": 4, "num_train": 8, "num_val": 4,
                                    "batch_size": 4, "checkpoint_every": 3},  # several classes give anchors
              "no eligible anchor": {"method": "pixel_contrast", "max_views": NEVER_ELIGIBLE, "num_train": 8,
                                     "num_val": 4, "batch_size": 4, "checkpoint_every": 3}}


@pytest.mark.filterwarnings("ignore:hard_anchor_sampling drew no anchor")  # the point of the test
def test_train_rows_gives_each_row_its_activity_and_the_report_flags_the_idle_row(runs_root, tmp_path):
    per_seed = train_rows(TABLE_ROWS, "smoke", [0], steps=3, progress=False)
    active, idle = per_seed["method_active"]
    assert active > 0.5 and idle == 0.0
    lines = activity_lines(per_seed)
    assert lines[0].startswith("in-batch contrast (seed 0): contrast term non-zero on ")
    assert lines[1].startswith("no eligible anchor (seed 0): contrast term non-zero on 0 % of 3 steps; 0 anchors")
    summary = summarize(per_seed)
    assert list(summary["method_active"]) == [active, 0.0]

    save_results(tmp_path / "table", {"table": summary.reset_index().to_dict("records")})
    outcome = {"notebook": "notebooks/pixel_contrast/table_x.ipynb", "title": "Table X", "status": "ok",
               "results_dir": str(tmp_path / "table")}
    page = write_report(tmp_path, [outcome], title="T").read_text()
    assert page.count('class="badge idle">method idle') == 1
    assert "row <b>no eligible anchor</b>: its method term was non-zero on 0 % of its steps (zero on 100 %)" in page
    assert "row <b>in-batch contrast</b>" not in page
    assert "1 row(s) with an idle method" in page  # in the contents too


def test_train_rows_records_no_wall_time(runs_root):
    """A cached run's wall time depends on the machine's load when it trained: the table helpers leave it out
    (step costs come from benchmarks/step_time.py, measured side by side)."""
    per_seed = train_rows({"CE": {"method": "ce", "num_train": 8, "num_val": 4, "batch_size": 4,
                                  "checkpoint_every": 2}}, "smoke", [0], steps=2, progress=False)
    assert not [column for column in per_seed.columns if "second" in column or "time" in column]
    assert per_seed.loc[0, "activity"] == "no method term (a supervised baseline)"
    assert math.isnan(per_seed.loc[0, "method_active"])


def test_report_flags_nothing_without_activity_shares(tmp_path):
    save_results(tmp_path / "table", {"table": pd.DataFrame({"row": ["CE"], "miou_mean": [0.3], "miou_std": [0.01],
                                                              "seeds": [2]}).to_dict("records")})
    outcome = {"notebook": "notebooks/x/table_y.ipynb", "title": "Y", "status": "ok",
               "results_dir": str(tmp_path / "table")}
    assert "method idle" not in write_report(tmp_path, [outcome], title="T").read_text()
