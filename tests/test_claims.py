"""Tests of the claims ledger (contrastseg.claims): the verdict rule, paired differences, the choices made on val,
records that resume a batch, the papers' evidence, the inference cost, and the teacher's evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from contrastseg import claims, runs
from contrastseg.claims import Claim
from contrastseg.claims import REGION_LOSSES
from contrastseg.config import preset, smoke
from contrastseg.engine.train import load_trained_model
from contrastseg.tables import t_interval

TINY = dict(steps=4, checkpoint_every=2, num_train=8, num_val=4, batch_size=4)


@pytest.mark.parametrize("low, high, expected", [
    (0.001, 0.02, "supported"), (-0.02, -0.001, "contradicted"), (-0.01, 0.01, "inconclusive"),
    (0.0, 0.02, "inconclusive"), (math.nan, math.nan, "inconclusive")])
def test_verdict_rule(low, high, expected):
    assert claims.verdict(low, high) == expected


def records(rows: dict[str, list[float]], column: str = "miou", **other: dict[str, list[float]]) -> pd.DataFrame:
    """Per-seed records: rows[name][seed] is the value of ``column``; ``other`` columns likewise."""
    out = []
    for name, values in rows.items():
        for seed, value in enumerate(values):
            record = {"row": name, "seed": seed, column: value}
            for extra, by_row in other.items():
                record[extra] = by_row.get(name, [math.nan] * len(values))[seed]
            out.append(record)
    return pd.DataFrame.from_records(out)


def test_ledger_table_pairs_by_seed_with_a_t_interval():
    per_seed = records({"CE": [0.50, 0.40, 0.45], "method": [0.52, 0.425, 0.48]})
    table = claims.ledger_table(per_seed, [Claim("pixel_contrast", "x", "method", "CE")], "smoke")
    row = table.iloc[0]
    differences = np.array([0.02, 0.025, 0.03])
    assert row["difference"] == pytest.approx(differences.mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(t_interval(differences))
    assert row["seeds"] == 3 and row["per_seed"] == pytest.approx(list(differences))
    assert row["verdict"] == "supported"  # 0.025 -+ 4.30 * 0.005 / sqrt(3): [0.013, 0.037]


def test_a_large_mean_with_a_wide_spread_is_inconclusive():
    per_seed = records({"CE": [0.5, 0.5], "method": [0.6, 0.45]})
    assert claims.ledger_table(per_seed, [Claim("rc2l", "x", "method", "CE")], "smoke")["verdict"][0] == \
        "inconclusive"


def test_teacher_claims_read_the_teacher_against_the_baselines_student():
    per_seed = records({"sup": [0.5, 0.5, 0.5], "semi": [0.4, 0.4, 0.41]}, "miou",
                       teacher_miou={"semi": [0.6, 0.61, 0.6]})
    table = claims.ledger_table(per_seed, [Claim("rc2l", "x", "semi", "sup"),
                                           Claim("rc2l", "y", "semi", "sup", metric="teacher_miou")], "smoke")
    assert table["verdict"].tolist() == ["contradicted", "supported"]


def test_the_best_single_region_loss_is_chosen_on_val_not_on_test():
    singles = [f"RC²L, {name.upper()} only, 1/8" for name in REGION_LOSSES]
    test = {singles[0]: [0.9, 0.9], singles[1]: [0.3, 0.3], singles[2]: [0.2, 0.2], singles[3]: [0.1, 0.1],
            "RC²L, 1/8": [0.35, 0.36]}
    val = {singles[0]: [0.1, 0.1], singles[1]: [0.5, 0.5], singles[2]: [0.2, 0.2], singles[3]: [0.3, 0.3],
           "RC²L, 1/8": [0.4, 0.4]}
    per_seed = records(test, "miou", val_miou=val)
    claim = Claim("rc2l", "x", "RC²L, 1/8", f"{claims.BEST_SINGLE}, 1/8")
    row = claims.ledger_table(per_seed, [claim], "smoke").iloc[0]
    assert row["baseline"] == singles[1]  # best on val (0.5), not the best on test (0.9)
    assert row["difference"] == pytest.approx(0.055)


def test_choose_weight_takes_the_best_mean_val_miou_and_the_smaller_weight_on_a_tie():
    tuning = records({"w 0.1": [0.5, 0.6], "w 1": [0.55, 0.55], "w 0.01": [0.4, 0.4]}, "val_miou")
    weight, means = claims.choose_weight(tuning, {0.01: "w 0.01", 0.1: "w 0.1", 1.0: "w 1"})
    assert weight == 0.1 and means[1.0] == pytest.approx(0.55)
    tied = records({"w 0.1": [0.5], "w 1": [0.5]}, "val_miou")
    assert claims.choose_weight(tied, {1.0: "w 1", 0.1: "w 0.1"})[0] == 0.1


def test_every_claim_names_rows_of_the_ledger():
    rows = claims.ledger_rows(0.1, 0.3)
    for claim in claims.ledger_claims():
        for name in (claim.row, claim.baseline):
            assert name in rows or name.startswith(claims.BEST_SINGLE), name
    assert rows["Contextrast, CCL"]["contrast_weight"] == 0.3
    assert rows["RC²L without region losses, 1/8"]["region_losses"] == ""
    assert rows["pixel contrast, random anchors"]["anchor_sampling"] == "random"


def test_measure_rows_appends_records_and_takes_them_back(tmp_path, monkeypatch):
    trained = []

    def fake_get_or_train(cfg, progress=False):
        trained.append(cfg.hash())
        return cfg

    def fake_measure(cfg, progress=False):
        return {"key": claims.record_key(cfg), "config": cfg.hash(), "seed": cfg.seed, "val_miou": 0.1 * cfg.seed,
                "miou": 0.2, "train_seconds": 1.0}

    monkeypatch.setattr(runs, "get_or_train", fake_get_or_train)
    monkeypatch.setattr(claims, "measure", fake_measure)
    rows = {"CE": {"method": "ce"}, "pc": {"method": "pixel_contrast"}}
    path = tmp_path / "records.jsonl"
    first = claims.measure_rows(rows, "smoke", [0, 1], records_file=path)
    assert len(trained) == 4 and len(path.read_text().splitlines()) == 4
    assert first[["row", "seed"]].values.tolist() == [["CE", 0], ["pc", 0], ["CE", 1], ["pc", 1]]  # seed after seed
    again = claims.measure_rows(rows, "smoke", [0, 1, 2], records_file=path)
    assert len(trained) == 6  # only seed 2 is new
    pd.testing.assert_frame_equal(again.iloc[:4].reset_index(drop=True), first)


def test_a_corrupt_record_line_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps({"key": "a"}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"records.jsonl, line 2"):
        claims.read_records(path)


def test_reported_evidence_pairs_the_rows_of_one_setting():
    claim = Claim("pixel_contrast", "x", "pc", "CE", reported=("pixel_contrast", "objectives",
                                                              "+ in-batch contrast", "CE"))
    text = claims.reported_evidence(claim)
    assert "+0.91 mIoU" in text and "+4.92 mIoU" in text and "unverified" in text
    assert claims.reported_evidence(Claim("rc2l", "x", "a", "b")) == "none found"
    assert claims.same_setting("Cityscapes val, HRNet-W48, 40k it", "Cityscapes val, HRNet-W48 (remark), no memory")
    assert not claims.same_setting("Cityscapes val, HRNet-W48", "Cityscapes val, DeepLabV3 R-101")


def test_training_parts_do_not_count_in_the_inference_cost():
    costs = claims.inference_costs({"CE": {"method": "ce"}, "pc": {"method": "pixel_contrast", "memory": "both"},
                                    "ctx": {"method": "contextrast"}, "sup": {"method": "mask_classification"},
                                    "semi": {"method": "rc2l"}}, "smoke")
    assert costs.loc["pc", "all_parameters"] > costs.loc["pc", "parameters"] == costs.loc["CE", "parameters"]
    assert costs.loc["ctx", "parameters"] == costs.loc["CE", "parameters"]
    assert costs.loc["ctx", "flops"] == costs.loc["CE", "flops"] > 0
    assert costs.loc["semi", "parameters"] == costs.loc["sup", "parameters"] == costs.loc["sup", "all_parameters"]
    aux = claims.inference_cost(smoke(method="ce", aux_weight=0.4))
    assert aux["all_parameters"] > aux["parameters"] == costs.loc["CE", "parameters"]  # the auxiliary head


def test_the_teacher_is_evaluated_apart_from_the_student(runs_root, monkeypatch):
    result = runs.get_or_train(preset("smoke", method="rc2l", label_fraction=0.5, **TINY), progress=False)
    loaded = []

    def spy(cfg, run_dir, device="cpu", teacher=False):
        loaded.append(teacher)
        return load_trained_model(cfg, run_dir, device, teacher=teacher)

    monkeypatch.setattr(runs, "load_trained_model", spy)
    student, teacher = result.evaluate(eval_split="test"), result.evaluate(eval_split="test", teacher=True)
    assert loaded == [False, True]
    stored = [json.loads(path.read_text()) for path in (result.run_dir / runs.EVALUATIONS_DIR).glob("*.json")]
    assert sorted(entry["model"] for entry in stored) == ["student", "teacher"]
    assert {entry["model"]: entry["val"] for entry in stored} == {"student": student, "teacher": teacher}
    assert result.evaluate(eval_split="test", teacher=True) == teacher and loaded == [False, True]  # read back
    teacher_model = load_trained_model(result.config, result.run_dir, teacher=True)
    student_model = load_trained_model(result.config, result.run_dir)
    assert any(not torch.equal(a, b) for a, b in zip(teacher_model.state_dict().values(),
                                                     student_model.state_dict().values()))


def test_measure_records_a_dense_run(runs_root):
    result = runs.get_or_train(smoke(method="pixel_contrast", eval_every=2, **TINY), progress=False)
    record = claims.measure(result)
    assert record["key"] == claims.record_key(result.config)
    assert 0 <= record["knn_accuracy"] <= 1 and math.isnan(record["teacher_miou"])
    assert record["miou"] == result.evaluate(eval_split="test")["miou"]
    assert [point["step"] for point in record["learning_curve"]] == [2, 4]
    json.dumps(record)  # a JSON line
