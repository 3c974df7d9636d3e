"""The pixel-contrast objective inside the engine: terms, warm-up, memory in checkpoints, projection head."""

import pytest
import torch

from contrastseg.config import preset, smoke
from contrastseg.engine import read_log, train
from contrastseg.engine.checkpoint import load_checkpoint
from contrastseg.engine.train import build_model
from contrastseg.methods import build_objective
from contrastseg.methods.pixel_contrast import objective as pixel_contrast_module
from contrastseg.methods.pixel_contrast.config import PixelContrastConfig
from contrastseg.methods.pixel_contrast.objective import PixelContrastObjective
from contrastseg.objectives import weighted_total

SHORT = dict(steps=8, checkpoint_every=4, num_train=16, num_val=4, batch_size=4)


def fake_outputs(batch=2, classes=3, dim=8, size=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    embedding = torch.nn.functional.normalize(torch.randn(batch, dim, size, size, generator=generator), dim=1)
    coarse = torch.randn(batch, classes, size, size, generator=generator).requires_grad_()
    logits = torch.nn.functional.interpolate(coarse, scale_factor=4, mode="bilinear")
    labels = torch.randint(0, classes, (batch, size * 4, size * 4), generator=generator)
    return {"logits": logits, "coarse_logits": coarse, "embedding": embedding.requires_grad_()}, labels


def test_warm_up_is_an_explicit_zero_weight_and_the_term_is_still_logged():
    objective = PixelContrastObjective(3, proj_dim=8, warmup_steps=5, contrast_weight=0.3, max_views=4)
    assert objective.weights(4)["contrast"] == 0.0 and objective.weights(5)["contrast"] == 0.3
    outputs, labels = fake_outputs()
    terms = objective(outputs, labels, step=0)
    assert set(terms) == {"ce", "contrast"} and terms["contrast"] > 0
    total = weighted_total(terms, objective.weights(0))
    assert torch.equal(total, terms["ce"])
    total.backward()
    assert outputs["embedding"].grad is None  # left out of the graph during the warm-up, not multiplied by zero


def test_memory_joins_the_contrast_set_after_the_first_step():
    objective = PixelContrastObjective(3, proj_dim=8, memory="both", memory_size=32, max_views=4)
    outputs, labels = fake_outputs()
    in_batch_only = objective(outputs, labels, step=0)["contrast"]
    objective.after_step(outputs, labels)
    rows, row_labels = objective.memory.contents()
    assert len(rows) > 0 and set(row_labels.tolist()) <= {0, 1, 2}
    torch.manual_seed(0)
    with_memory = objective(outputs, labels, step=1)["contrast"]
    assert not torch.isclose(in_batch_only, with_memory)


def test_projection_head_only_for_contrastive_methods_and_only_while_training():
    assert build_model(smoke()).projections is None
    model = build_model(smoke(method="pixel_contrast"))
    assert len(model.projections) == 1
    images = torch.rand(2, 3, 64, 64)
    assert model.train()(images)["embedding"].shape == (2, 32, 8, 8)
    assert "embedding" not in model.eval()(images)
    assert model.eval()(images, with_embedding=True)["embedding"].shape == (2, 32, 8, 8)


def test_objective_comes_from_the_config():
    objective = build_objective(smoke(method="pixel_contrast", memory="pixel", temperature=0.2), 9)
    assert isinstance(objective, PixelContrastObjective)
    assert objective.loss.temperature == 0.2 and objective.memory is not None


def test_memory_is_checkpointed_and_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    cfg = smoke(method="pixel_contrast", memory="both", **SHORT)
    train(cfg, tmp_path / "whole", progress=False)
    train(cfg, tmp_path / "split", progress=False, interrupt_at=6)
    train(cfg, tmp_path / "split", progress=False)
    whole, split = read_log(tmp_path / "whole"), read_log(tmp_path / "split")
    assert [r["contrast"] for r in whole] == [r["contrast"] for r in split]
    queue = load_checkpoint(tmp_path / "split" / "last.ckpt")["objective"]
    assert any(name.endswith("filled") and value.sum() > 0 for name, value in queue.items())


def full_pixel_queue(cfg, num_classes=9, seed=0):
    """Rows of a full pixel queue at the config's size: ``memory_size`` random unit rows per class."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.nn.functional.normalize(torch.randn(num_classes * cfg.memory_size, cfg.proj_dim,
                                                     generator=generator), dim=1)
    return rows, torch.arange(num_classes).repeat_interleave(cfg.memory_size)


@pytest.mark.parametrize("preset_name", ["smoke", "demo"])
def test_semi_hard_and_hardest_memory_sampling_pick_different_rows_at_the_presets(preset_name):
    selected = {}
    for mode in ("hardest", "semi_hard"):
        cfg = preset(preset_name, method="pixel_contrast", memory="pixel", memory_sampling=mode)
        objective = build_objective(cfg, 9)
        assert objective.semi_hard_pool == cfg.semi_hard_pool
        rows, row_labels = full_pixel_queue(cfg)
        anchors = torch.nn.functional.normalize(torch.randn(4, cfg.proj_dim, generator=torch.Generator()
                                                            .manual_seed(1)), dim=1)
        anchor_labels = torch.tensor([0, 3, 5, 8])
        torch.manual_seed(2)
        selected[mode] = objective.select_memory_rows(anchors, anchor_labels, rows, row_labels)
    positive = anchor_labels[:, None] == row_labels[None]
    for mask in selected.values():
        assert ((mask & positive).sum(1) == cfg.num_positives).all()
        assert ((mask & ~positive).sum(1) == cfg.num_negatives).all()
    for anchor in range(4):
        hardest, semi_hard = selected["hardest"][anchor], selected["semi_hard"][anchor]
        assert not torch.equal(hardest & positive[anchor], semi_hard & positive[anchor])
        assert not torch.equal(hardest & ~positive[anchor], semi_hard & ~positive[anchor])


def test_semi_hard_pool_is_checked_and_reaches_the_selection(monkeypatch):
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="semi_hard_pool"):
            smoke(semi_hard_pool=bad)
    assert "semi_hard_pool" in PixelContrastConfig.field_names()
    calls = []
    monkeypatch.setattr(pixel_contrast_module, "select_contrast",
                        lambda *args, **kwargs: calls.append((args, kwargs)) or torch.ones(2, 3, dtype=torch.bool))
    objective = build_objective(smoke(method="pixel_contrast", memory="pixel", memory_sampling="semi_hard",
                                      semi_hard_pool=0.3), 9)
    objective.select_memory_rows(torch.zeros(2, 32), torch.zeros(2, dtype=torch.long), torch.zeros(3, 32),
                                 torch.zeros(3, dtype=torch.long))
    assert calls and calls[0][1]["semi_hard_fraction"] == 0.3


def test_reference_quirks_contrast_with_the_memory_only_including_class_0_zero_rows(monkeypatch):
    objective = PixelContrastObjective(3, proj_dim=8, memory="both", memory_size=16, max_views=4,
                                       reference_quirks=True)
    outputs, labels = fake_outputs()
    calls = []
    original = objective.loss.forward
    monkeypatch.setattr(objective.loss, "forward", lambda *args, **kwargs: calls.append((args, kwargs))
                        or original(*args, **kwargs))
    objective(outputs, labels, step=0)
    objective.after_step(outputs, labels)
    objective(outputs, labels, step=1)
    for (anchors, anchor_labels, contrast, contrast_labels), kwargs in calls:
        assert kwargs.get("memory") is None  # no in-batch contrast: the anchors are not in the contrast set
        class_0 = contrast_labels == 0
        assert int(class_0.sum()) == 2 * 16 and not contrast[class_0].any()  # one zero block per queue
    assert set(calls[-1][0][3].tolist()) == {0, 1, 2}  # after a write: classes 1 and 2 from the memory
