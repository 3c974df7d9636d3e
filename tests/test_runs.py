"""The run store: caching by config hash, the lock against concurrent training, loading a trained model."""

import json
import threading
import time

import pytest
import torch

from contrastseg import runs
from contrastseg.config import smoke
from contrastseg.data import dataset_info

TINY = dict(steps=6, checkpoint_every=3, num_train=8, num_val=4, batch_size=4)


def test_trains_once_then_returns_the_cached_run(runs_root, monkeypatch):
    cfg = smoke(**TINY)
    first = runs.get_or_train(cfg, progress=False)
    assert first.run_dir == runs_root / "store" / f"ce-{cfg.hash()}"
    assert 0 <= first.metrics["val"]["miou"] <= 1
    assert json.loads((first.run_dir / "config.json").read_text()) == cfg.to_dict()

    def must_not_train(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(runs, "train", must_not_train)
    second = runs.get_or_train(cfg, progress=False)
    assert second.metrics == first.metrics
    with pytest.raises(AssertionError, match="trained again"):
        runs.get_or_train(cfg.replace(seed=5), progress=False)


def test_a_second_caller_waits_for_the_lock_and_reuses_the_result(runs_root, monkeypatch):
    cfg = smoke(**TINY)
    run_dir = runs.run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    monkeypatch.setattr(runs, "train", lambda *a, **k: pytest.fail("trained although another process did"))
    results = []
    with runs.run_lock(run_dir):  # "another process" is training this run
        waiter = threading.Thread(target=lambda: results.append(runs.get_or_train(cfg, progress=False)))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive() and not results
        (run_dir / "metrics.json").write_text(json.dumps({"val": {"miou": 0.5}}))
    waiter.join(timeout=10)
    assert results[0].metrics == {"val": {"miou": 0.5}}


def test_trained_model_loads_and_predicts(runs_root):
    result = runs.get_or_train(smoke(**TINY), progress=False)
    model = result.load_model()
    assert not model.training
    num_classes = dataset_info("synthscapes").num_classes
    assert model(torch.rand(1, 3, 64, 64))["logits"].shape == (1, num_classes, 64, 64)
    assert len(result.log()) == TINY["steps"]


def test_a_list_of_configs_gives_one_result_per_config_in_order_each_run_trained_once(runs_root, monkeypatch):
    trained = []

    def counted_train(cfg, run_dir, progress=True):
        trained.append(cfg.hash())
        return real_train(cfg, run_dir, progress=progress)

    real_train = runs.train
    monkeypatch.setattr(runs, "train", counted_train)
    first, second = smoke(**TINY), smoke(**TINY, seed=1)
    flipped = first.replace(eval_flip=True)  # the same run under another evaluation protocol
    results = runs.get_or_train([first, second, first, flipped], progress=False, slots=[])
    assert [result.config for result in results] == [first, second, first, flipped]
    assert sorted(trained) == sorted([first.hash(), second.hash()])  # no slots: in this process, each run once
    assert results[0].run_dir == results[3].run_dir == runs.run_dir_for(first)
    assert results[3].metrics["protocol"] == flipped.evaluation_protocol()
    assert results[0].metrics == runs.get_or_train(first, progress=False).metrics
    assert results[1].metrics == runs.get_or_train(second, progress=False).metrics
    assert len(trained) == 2


def test_run_dir_is_for_one_config_and_slots_for_a_list(tmp_path):
    cfg = smoke(**TINY)
    with pytest.raises(ValueError, match="run_dir is for one config"):
        runs.get_or_train([cfg], run_dir=tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="slots are for a list"):
        runs.get_or_train(cfg, slots=["", ""], progress=False)
    assert not (tmp_path / "run").exists()
