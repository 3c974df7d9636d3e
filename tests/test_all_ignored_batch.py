"""A batch whose pixels are all ``ignore_index``: every objective gives finite terms, a zero CE with a gradient, and
a training step that goes through (the run does not stop on a NaN)."""

import math

import pytest
import torch

from contrastseg.config import preset
from contrastseg.engine.train import build_model, build_optimizer, training_step
from contrastseg.methods import build_objective
from contrastseg.objectives import weighted_total

IGNORE = 255
SUPERVISED_METHODS = {
    "ce": dict(aux_weight=0.4),
    "pixel_contrast": dict(aux_weight=0.4, memory="both", memory_sampling="semi_hard"),
    "contextrast": dict(),
    "mask_classification": dict(),
}


def all_ignored_step_inputs(method: str, batch: int = 2):
    cfg = preset("smoke", method=method, device="cpu", amp=False, batch_size=batch, **SUPERVISED_METHODS[method])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    objective = build_objective(cfg, 9, IGNORE)
    images = torch.rand(batch, 3, cfg.image_size, cfg.image_size)
    labels = torch.full((batch, cfg.image_size, cfg.image_size), IGNORE, dtype=torch.int64)
    return cfg, model, objective, images, labels


@pytest.mark.parametrize("method", sorted(SUPERVISED_METHODS))
def test_an_all_ignored_batch_gives_finite_terms_and_a_zero_ce_with_a_gradient(method):
    _, model, objective, images, labels = all_ignored_step_inputs(method)
    terms = objective(model(images), labels, step=0)
    for name, value in terms.items():
        assert math.isfinite(value.item()), f"{method}: term {name} is {value.item()}"
    for name in ("ce", "aux"):
        if name in terms:
            assert terms[name].item() == 0.0 and terms[name].requires_grad
    total = weighted_total(terms, objective.weights(0))
    total.backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)


def test_ce_of_a_partly_ignored_batch_is_the_mean_over_its_valid_pixels():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 5, 5, generator=generator)
    labels = torch.randint(0, 4, (2, 5, 5), generator=generator)
    labels[0] = IGNORE
    labels[1, :2] = IGNORE
    objective = build_objective(preset("smoke", method="ce", aux_weight=0.4), 4, IGNORE)
    terms = objective({"logits": logits, "aux_logits": 2 * logits}, labels, step=0)
    valid = labels != IGNORE
    log_probabilities = logits.log_softmax(1).permute(0, 2, 3, 1)[valid]
    expected = -log_probabilities.gather(1, labels[valid][:, None]).mean()
    torch.testing.assert_close(terms["ce"], expected)
    torch.testing.assert_close(terms["aux"], torch.nn.functional.cross_entropy(2 * logits, labels,
                                                                                ignore_index=IGNORE))


@pytest.mark.parametrize("method", ["ce", "pixel_contrast"])
def test_a_training_step_on_an_all_ignored_batch_keeps_the_run_going(method):
    cfg, model, objective, images, labels = all_ignored_step_inputs(method)
    optimizer = build_optimizer(cfg, list(model.parameters()) + list(objective.parameters()))
    values = training_step(model, objective, optimizer, images, labels, step=0, lr=cfg.lr, amp=False)
    assert all(math.isfinite(value) for value in values.values()), values
    assert values["ce"] == 0.0
    # the next, normal batch (class 1 above class 2: enough pixels per class for anchors) trains as usual
    labels = torch.ones_like(labels)
    labels[:, labels.shape[1] // 2:] = 2
    values = training_step(model, objective, optimizer, images, labels, step=1, lr=cfg.lr, amp=False)
    assert all(math.isfinite(value) for value in values.values()) and values["ce"] > 0
