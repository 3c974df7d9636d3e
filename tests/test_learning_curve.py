"""Learning curves: val metrics every ``eval_every`` steps, without changing what the run trains."""

import pytest
import torch

from contrastseg import runs
from contrastseg.config import preset, smoke

TINY = dict(steps=6, checkpoint_every=3, num_train=8, num_val=4, batch_size=4)


@pytest.mark.parametrize("method", ["ce", "pixel_contrast"])
def test_a_curve_is_logged_and_the_run_trains_exactly_as_without_one(runs_root, method):
    plain = runs.get_or_train(preset("smoke", method=method, **TINY), progress=False)
    curved = runs.get_or_train(preset("smoke", method=method, eval_every=2, **TINY), progress=False)
    assert curved.run_dir != plain.run_dir  # the curve is part of what the run holds
    assert [point["step"] for point in curved.learning_curve()] == [2, 4, 6]
    assert all(0 <= point["miou"] <= 1 for point in curved.learning_curve())
    assert curved.learning_curve()[-1]["miou"] == curved.metrics["val"]["miou"]
    assert [line["loss"] for line in curved.log()] == [line["loss"] for line in plain.log()]
    assert curved.metrics["val"] == plain.metrics["val"]
    for a, b in zip(plain.load_model().state_dict().values(), curved.load_model().state_dict().values()):
        assert torch.equal(a, b)


def test_a_run_without_curve_has_its_final_point_only(runs_root):
    result = runs.get_or_train(smoke(**TINY), progress=False)
    assert [point["step"] for point in result.learning_curve()] == [6]
    assert smoke(eval_every=0).hash() == smoke().hash()
    with pytest.raises(ValueError, match="eval_every"):
        smoke(eval_every=-1)
