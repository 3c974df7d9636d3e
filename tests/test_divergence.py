"""The divergence guard: loss terms, the gradients' total norm, and before every checkpoint every parameter and
buffer (model, teacher, objective, optimizer) are checked; nothing non-finite is written, and a diverged run stops
with an error naming the step and the last (finite) checkpoint, without metrics and without being cached.

The learning rates here (1e6, 1e3, 100) make a smoke run diverge in a few steps. Config validation may come to
refuse such rates, so ``with_lr`` sets the field on a valid config with ``object.__setattr__`` (the config is a
frozen dataclass; its key and hash are computed from the fields on demand, so they follow), bypassing the check.
"""

import re

import pytest
import torch

from contrastseg import runs
from contrastseg.config import smoke
from contrastseg.engine import NonFiniteLossError, train
from contrastseg.engine.checkpoint import load_checkpoint, non_finite_tensors
from contrastseg.engine.train import (NonFiniteGradientError, NonFiniteStateError, build_model, build_optimizer,
                                      gradient_norm, training_step)
from contrastseg.methods import build_objective
from contrastseg.objectives import CrossEntropyObjective

# a checkpoint after every step: the guard must keep each of them finite
EVERY_STEP = dict(steps=12, checkpoint_every=1, num_train=16, num_val=4, batch_size=4, image_size=64, num_threads=1)


def with_lr(cfg, lr: float):
    """``cfg`` with learning rate ``lr``, whatever range config validation allows (see the module docstring)."""
    object.__setattr__(cfg, "lr", lr)
    return cfg


def state_tensors(state: dict) -> dict:
    return {part: state[part] for part in ("model", "objective", "optimizer", "teacher")}


def assert_stopped_with_a_finite_checkpoint(error: NonFiniteLossError, run_dir):
    """The message names a step and the last checkpoint (its step too), that checkpoint is the run's newest and
    every tensor of it is finite, and there are no metrics."""
    message = str(error)
    assert re.search(r"step \d+", message), message
    named = re.search(r"last good checkpoint is (\S+) \(step (\d+)\)", message)
    assert named, message
    assert named.group(1) == str(run_dir / "last.ckpt")
    state = load_checkpoint(run_dir / "last.ckpt")
    assert state["step"] == int(named.group(2))
    assert non_finite_tensors(state_tensors(state)) == []
    assert not (run_dir / "metrics.json").exists()


def test_a_huge_learning_rate_never_writes_a_non_finite_checkpoint(tmp_path):
    cfg = with_lr(smoke(**EVERY_STEP), 1e6)
    with pytest.raises(NonFiniteLossError) as stopped:
        train(cfg, tmp_path, progress=False)
    assert_stopped_with_a_finite_checkpoint(stopped.value, tmp_path)


def test_an_infinite_batchnorm_variance_stops_the_run_before_its_checkpoint(tmp_path):
    cfg = with_lr(smoke(**EVERY_STEP), 1e3)
    with pytest.raises(NonFiniteStateError, match=r"running_var") as stopped:
        train(cfg, tmp_path, progress=False)
    assert_stopped_with_a_finite_checkpoint(stopped.value, tmp_path)
    step = int(re.search(r"not finite at step (\d+)", str(stopped.value)).group(1))
    assert f"checkpoint of step {step} was not written" in str(stopped.value)
    assert load_checkpoint(tmp_path / "last.ckpt")["step"] == step - 1


def test_a_run_that_ends_non_finite_is_not_cached_as_finished(runs_root):
    # loss and gradients stay finite throughout; BatchNorm running variances overflow to inf before step 20
    cfg = with_lr(smoke(steps=20, checkpoint_every=20, num_train=32, num_val=4, batch_size=8, image_size=64,
                        num_threads=1), 100.0)
    with pytest.raises(NonFiniteStateError, match=r"step 20 .*running_var.*no checkpoint had been written yet"):
        runs.get_or_train(cfg, progress=False)
    run_dir = runs.run_dir_for(cfg)
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "last.ckpt").exists()
    assert runs.finished_runs() == []


class GradientNaNAtStep(CrossEntropyObjective):
    """Cross-entropy plus, at step 5 (counted from 0), a term whose value is 0 and whose gradient is NaN."""

    def forward(self, outputs, labels, step, unlabeled=None):
        terms = super().forward(outputs, labels, step)
        if step == 5:
            logits = outputs["logits"]
            terms["ce"] = terms["ce"] + (logits - logits.detach()).pow(2).sum().sqrt()
        return terms


def test_non_finite_gradients_skip_the_update_and_stop_the_run(tmp_path, register_objective):
    register_objective("gradient_nan_at_5", GradientNaNAtStep)
    cfg = smoke(method="gradient_nan_at_5", steps=12, checkpoint_every=4, num_train=16, num_val=4, batch_size=4,
                image_size=64, num_threads=1)
    with pytest.raises(NonFiniteGradientError, match=r"norm is not finite at step 6 .*last good checkpoint "
                                                     r".*last.ckpt \(step 4\)") as stopped:
        train(cfg, tmp_path, progress=False)
    assert isinstance(stopped.value, NonFiniteLossError)  # callers that catch the loss error catch this too
    assert_stopped_with_a_finite_checkpoint(stopped.value, tmp_path)


def test_a_training_step_with_non_finite_gradients_leaves_the_weights_alone(register_objective):
    register_objective("gradient_nan_at_5", GradientNaNAtStep)
    cfg = smoke(method="gradient_nan_at_5")
    torch.manual_seed(0)
    model = build_model(cfg)
    objective = build_objective(cfg, 9)
    optimizer = build_optimizer(cfg, model.parameters())
    images, labels = torch.rand(2, 3, 32, 32), torch.randint(0, 9, (2, 32, 32))
    training_step(model, objective, optimizer, images, labels, step=4, lr=0.01, amp=False)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(NonFiniteGradientError, match="step 6"):
        training_step(model, objective, optimizer, images, labels, step=5, lr=0.01, amp=False)
    parameter_names = {name for name, _ in model.named_parameters()}
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items()
               if name in parameter_names)


def test_gradient_norm_is_finite_unless_an_element_is_not():
    huge = torch.nn.Parameter(torch.zeros(4))
    huge.grad = torch.full((4,), 3e38)  # its float32 sum of squares would overflow
    none = torch.nn.Parameter(torch.zeros(2))
    assert gradient_norm([huge, none]) == pytest.approx(6e38)
    huge.grad[1] = float("inf")
    assert gradient_norm([huge]) == float("inf")
    huge.grad[1] = float("nan")
    assert gradient_norm([huge]) != gradient_norm([huge])
    assert gradient_norm([none]) == 0.0
