"""The run key: only the fields a run reads, a numerics class, a results format; what the store and the suite do
with it (older formats reported, provenance recorded, forced retraining, evaluation protocols without retraining,
notebooks rerun exactly when one of their runs changed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
import torch

from contrastseg import config, runs
from contrastseg.config import TRAINING_FIELDS, ExperimentConfig, preset, smoke
from contrastseg.data import DATA_FIELDS
from contrastseg.engine.distributed import Distributed
from contrastseg.engine.train import (build_model, build_optimizer, checkpoint_state, evaluate_run, random_state,
                                      resume)
from contrastseg.models import model_fields
from contrastseg.methods import METHODS, build_objective
from contrastseg.provenance import git_commit

TINY = dict(steps=4, checkpoint_every=2, num_train=8, num_val=4, batch_size=4)

# A valid other value for every field that some method reads (the smoke preset's values are the starting point).
OTHER_VALUES = {
    "aux_weight": 0.4, "proj_dim": 16, "contrast_weight": 0.3, "contrast_warmup": 5, "temperature": 0.2,
    "base_temperature": 0.1, "anchor_sampling": "random", "max_samples": 128, "max_views": 8, "memory": "pixel",
    "memory_size": 128, "pixels_per_update": 5, "memory_sampling": "hardest", "num_positives": 64,
    "num_negatives": 128, "reference_quirks": True, "contrast_levels": 2, "reverse_level_weights": True,
    "anchor_mixing": 0.25, "detach_anchors": True, "level_max_pixels": 256, "level_max_per_class": 64,
    "bane": "replace", "bane_fraction": 0.4, "bane_max_per_class": 32, "bane_literal": True,
    "confidence_threshold": 0.9, "region_losses": "rcc,smc", "unlabeled_weight": 0.5, "unlabeled_rampup": 0.2,
    "rcc_unmatched": True, "ema_momentum": 0.9, "cutmix_probability": 0.25, "unlabeled_batch_size": 2,
    "semi_hard_pool": 0.5, "region_proj_dim": 64, "reference_heads": True,
}
METHOD_ONLY = ("bane_fraction", "ema_momentum", "temperature", "memory", "anchor_mixing", "region_losses",
               "confidence_threshold", "cutmix_probability", "contrast_weight", "proj_dim")


def test_a_ce_key_ignores_fields_that_only_other_methods_read():
    base = smoke()
    for name in METHOD_ONLY:
        assert base.replace(**{name: OTHER_VALUES[name]}).hash() == base.hash(), name
    assert base.replace(momentum=0.5, optimizer="adamw").hash() == base.replace(optimizer="adamw").hash()
    assert smoke(num_queries=7).hash() == base.hash()  # a dense model has no queries
    assert smoke(sync_bn=False).hash() == base.hash()  # one process: no BatchNorm synchronisation
    assert smoke(reference_heads=True).hash() == base.hash()  # the FCN head has one form
    assert smoke(head="hrnet", reference_heads=True).hash() != smoke(head="hrnet").hash()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_field_a_method_reads_changes_its_key(method):
    base = preset("smoke", method=method)
    read = set(base.key_fields())
    for name in sorted(read - set(TRAINING_FIELDS) - set(DATA_FIELDS) - {"head", "backbone", "method"}):
        if name not in OTHER_VALUES or (name == "aux_weight" and base.head == "mask_classification"):
            continue
        other = base.replace(**{name: OTHER_VALUES[name]})
        assert other.hash() != base.hash(), f"{method}: {name} does not change the key"
    assert base.replace(seed=1).hash() != base.hash()
    assert base.replace(steps=base.steps + 1).hash() != base.hash()
    assert base.replace(num_train=base.num_train // 2).hash() != base.hash()


class RecordingConfig:
    """An ExperimentConfig stand-in that records every field read from it."""

    def __init__(self, cfg: ExperimentConfig):
        self._cfg, self.read = cfg, set()

    def __getattr__(self, name):
        value = getattr(self._cfg, name)
        if not callable(value):
            self.read.add(name)
        else:  # helper methods read fields too (crop_size reads crop_width)
            helper_reads = {"crop_size": "crop_width"}
            if name in helper_reads:
                self.read.add(helper_reads[name])
        return value


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_key_holds_every_field_that_the_objective_and_the_model_read(method, monkeypatch):
    cfg = preset("smoke", method=method)
    recording = RecordingConfig(cfg)
    METHODS[method].objective_class().from_config(recording, 9, 255)
    METHODS[method].method_config(recording).projection_levels()
    missing = recording.read - set(cfg.key_fields())
    assert not missing, f"{method} reads {sorted(missing)}, which its run key leaves out"
    assert set(model_fields(cfg.head)) <= set(cfg.key_fields())


def test_cpu_and_cuda_runs_never_share_a_key():
    assert smoke(device="cpu").hash() != smoke(device="cuda").hash()
    assert smoke(device="cpu").numerics() == "cpu-fp32"
    assert smoke(device="cuda").numerics() == "cuda-bf16"
    assert smoke(device="cuda", amp=False).numerics() == "cuda-fp32"
    assert smoke(device="cuda", amp=False, speed="fast").numerics() == "cuda-tf32"
    assert smoke(device="cuda", amp=False).hash() != smoke(device="cuda").hash()
    assert smoke(device="cpu", amp=False).hash() == smoke(device="cpu").hash()  # amp does nothing on a CPU
    if not torch.cuda.is_available():
        assert smoke(device="auto").hash() == smoke(device="cpu").hash()


def test_the_results_format_is_part_of_the_key(monkeypatch):
    before = smoke().hash()
    monkeypatch.setattr(config, "RESULTS_FORMAT", config.RESULTS_FORMAT + 1)
    assert smoke().hash() != before


def test_bookkeeping_and_evaluation_fields_stay_out_of_the_key():
    base = smoke()
    assert base.hash() == smoke(num_workers=4, checkpoint_every=7, num_threads=1, channels_last=True).hash()
    assert base.hash() == smoke(eval_scales="0.75,1", eval_flip=True, boundary_width=3).hash()
    assert base.hash() != smoke(num_devices=2).hash()  # per-process anchor budgets: not the same run


def test_presets_reject_unknown_fields_with_the_list_of_valid_ones():
    for make in (lambda: smoke(not_a_field=1), lambda: preset("demo", not_a_field=1),
                 lambda: preset("paper:pixel_contrast/cityscapes/hrnet_w48", not_a_field=1),
                 lambda: smoke().replace(not_a_field=1)):
        with pytest.raises(ValueError, match=r"unknown config field\(s\) \['not_a_field'\]; valid fields: amp"):
            make()


def test_metrics_record_the_commit_packages_and_key(runs_root):
    result = runs.get_or_train(smoke(**TINY), progress=False)
    assert torch.__version__.startswith(result.metrics["packages"]["torch"])
    assert result.metrics["commit"]
    assert result.metrics["run_key"] == json.loads((result.run_dir / runs.KEY_NAME).read_text())
    assert result.metrics["run_key"]["numerics"] == "cpu-fp32"
    assert result.trained_commit == git_commit()
    assert result.trained_elsewhere == (result.trained_commit == "unknown")  # trained by this very code


def test_a_run_of_another_commit_is_reused_and_said(runs_root, monkeypatch):
    result = runs.get_or_train(smoke(**TINY), progress=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text()) | {"commit": "0000000"}
    (result.run_dir / "metrics.json").write_text(json.dumps(metrics))
    monkeypatch.setattr(runs, "train", lambda *a, **k: pytest.fail("a cached run was retrained"))
    again = runs.get_or_train(smoke(**TINY), progress=False)
    assert again.trained_commit == "0000000" and again.trained_elsewhere
    assert "0000000" in runs.describe_provenance([again, again])


def test_force_retrains_a_stored_run(runs_root, monkeypatch):
    first = runs.get_or_train(smoke(**TINY), progress=False)
    (first.run_dir / "metrics.json").write_text(json.dumps(first.metrics | {"marker": 1}))
    assert "marker" in runs.get_or_train(smoke(**TINY), progress=False).metrics
    forced = runs.get_or_train(smoke(**TINY), progress=False, force=True)
    assert "marker" not in forced.metrics and forced.metrics["val"] == first.metrics["val"]


def test_an_older_format_store_is_reported_and_not_reused(runs_root):
    cfg = smoke(**TINY)
    old = runs_root / "store" / "ce-0123456789ab"
    old.mkdir(parents=True)
    (old / "config.json").write_text(json.dumps(cfg.to_dict()))
    (old / "metrics.json").write_text(json.dumps({"val": {"miou": 0.99}}))
    runs._REPORTED_STORES.clear()
    with pytest.warns(UserWarning, match="1 run\\(s\\) of an older results format.*ce-0123456789ab"):
        result = runs.get_or_train(cfg, progress=False)
    assert result.run_dir != old and result.metrics["val"]["miou"] != 0.99
    assert runs.older_runs() == [old]
    assert [r.run_dir for r in runs.finished_runs()] == [result.run_dir]


def test_another_evaluation_protocol_evaluates_the_stored_model_without_retraining(runs_root, monkeypatch):
    single = runs.get_or_train(smoke(**TINY), progress=False)
    monkeypatch.setattr(runs, "train", lambda *a, **k: pytest.fail("retrained for another protocol"))
    protocols = []

    def spy(cfg, *args, **kwargs):
        protocols.append(cfg.evaluation_protocol())
        return evaluate_run(cfg, *args, **kwargs)

    monkeypatch.setattr(runs, "evaluate_run", spy)
    flipped = runs.get_or_train(smoke(**TINY, eval_flip=True, eval_scales="0.75,1"), progress=False)
    assert flipped.run_dir == single.run_dir
    assert flipped.metrics["protocol"]["eval_flip"] and not single.metrics["protocol"]["eval_flip"]
    assert protocols == [flipped.config.evaluation_protocol()]  # evaluated once, under the new protocol
    assert len(list((single.run_dir / runs.EVALUATIONS_DIR).glob("*.json"))) == 1
    assert single.evaluate(eval_flip=True, eval_scales="0.75,1") == flipped.metrics["val"]
    again = runs.get_or_train(smoke(**TINY), progress=False)
    assert again.metrics["val"] == single.metrics["val"]
    with pytest.raises(ValueError, match="only evaluation fields"):
        single.evaluate(seed=3)


def test_resume_gives_each_process_its_own_random_state(tmp_path):
    cfg = smoke(**TINY)
    model = build_model(cfg)
    objective = build_objective(cfg, 9)
    optimizer = build_optimizer(cfg, model.parameters())
    torch.manual_seed(1)
    first = random_state()
    torch.manual_seed(2)
    second = random_state()
    state = checkpoint_state(cfg, model, objective, optimizer, 2, 1.0, rng=[first, second])
    torch.save(state, tmp_path / "last.ckpt")
    for rank, expected in enumerate((first, second)):
        torch.manual_seed(99)
        resume(cfg, tmp_path, model, objective, optimizer, world=Distributed(rank, 2, rank))
        assert torch.equal(torch.get_rng_state(), expected["cpu"]), rank
    with pytest.raises(ValueError, match="random state of 2 process"):
        resume(cfg, tmp_path, model, objective, optimizer)


def test_the_run_store_lock_is_cross_platform():
    source = Path(runs.__file__).read_text()
    assert "fcntl" not in source and "FileLock" in source


def _notebook(path: Path, source: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('preset = "smoke"\nresults_dir = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, path)
    return path


@pytest.mark.multiprocess
def test_the_suite_reruns_a_notebook_exactly_when_one_of_its_runs_changed(tmp_path, monkeypatch):
    from contrastseg.suite import run_suite

    store = tmp_path / "runs"
    monkeypatch.setenv("CONTRASTSEG_RUNS", str(store))
    _notebook(tmp_path / "nb.ipynb", "from contrastseg import runs\nfrom contrastseg.config import smoke\n"
              f"runs.get_or_train(smoke(**{TINY!r}), progress=False)")
    (tmp_path / "manifest.yaml").write_text("- notebook: nb.ipynb\n  title: one run\n")

    def skipped() -> bool:
        result = run_suite("smoke", tmp_path / "manifest.yaml", tmp_path / "out", progress=False)
        assert result.ok, result.outcomes[0].error
        return result.outcomes[0].skipped

    assert not skipped()
    stamp = json.loads((tmp_path / "out" / "smoke" / "nb" / ".suite_stamp.json").read_text())
    assert [r["run"] for r in stamp["runs"]] == [runs.run_dir_for(smoke(**TINY)).name]
    assert skipped()
    monkeypatch.setattr(config, "RESULTS_FORMAT", config.RESULTS_FORMAT + 1)  # the run's key changes
    assert not skipped()
    monkeypatch.undo()
    monkeypatch.setenv("CONTRASTSEG_RUNS", str(store))
    skipped()  # the stamp was written under the other key rules
    assert skipped()
    (metrics_path,) = (store / "store").glob("*/metrics.json")
    metrics_path.write_text(json.dumps(json.loads(metrics_path.read_text()) | {"commit": "0000000"}))
    result = run_suite("smoke", tmp_path / "manifest.yaml", tmp_path / "out", progress=False)
    assert result.outcomes[0].skipped and "0000000" in result.outcomes[0].provenance
    assert "other commit" in result.report_path.read_text() and "0000000" in result.report_path.read_text()
    for path in (store / "store").glob("*/metrics.json"):  # the run is gone from the store
        os.remove(path)
    assert not skipped()


def test_a_stored_model_is_evaluated_on_the_test_split_without_retraining(runs_root, monkeypatch):
    import importlib

    engine_train = importlib.import_module("contrastseg.engine.train")  # the module, not the train function

    single = runs.get_or_train(smoke(**TINY), progress=False)
    monkeypatch.setattr(runs, "train", lambda *a, **k: pytest.fail("retrained for the test split"))
    splits = []
    original = engine_train.build_split

    def spy(cfg, split, length):
        splits.append(split)
        return original(cfg, split, length)

    monkeypatch.setattr(engine_train, "build_split", spy)
    on_test = runs.get_or_train(smoke(**TINY, eval_split="test"), progress=False)
    assert on_test.run_dir == single.run_dir and splits == ["test"]
    assert on_test.metrics["protocol"]["eval_split"] == "test"
    assert smoke(eval_split="test").hash() == smoke().hash()
    with pytest.raises(ValueError, match="split of synthscapes"):
        smoke(eval_split="tset")
