"""The pixel-contrast objective inside the engine: terms, warm-up, memory in checkpoints, projection head."""


import torch

from contrastseg.config import smoke
from contrastseg.engine import read_log, train
from contrastseg.engine.checkpoint import load_checkpoint
from contrastseg.engine.train import build_model
from contrastseg.objectives import PixelContrastObjective, build_objective, weighted_total

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
