"""RC²L and the supervised mask-classification objective: planted predictions, query permutation, teacher regions
under CutMix, empty teachers, the loss switches and weights, and a resumable semi-supervised run."""

import math

import pytest
import torch

from contrastseg.config import smoke
from contrastseg.engine import read_log, train
from contrastseg.engine.checkpoint import load_checkpoint
from contrastseg.engine.semi import CutMix
from contrastseg.methods.rc2l.config import RC2LConfig
from contrastseg.methods.rc2l.objective import RC2LObjective, sigmoid_rampup
from contrastseg.objectives import MaskClassificationObjective

NUM_CLASSES = 4
CONFIDENT = 12.0


def planted_outputs(labels: torch.Tensor, num_queries: int = 6, stride: int = 2, noise: float = 0.0, seed: int = 0,
                    requires_grad: bool = False):
    """Outputs whose query q predicts class q's region of each image confidently (class q absent: "no object").

    Shape: labels (B, H, W) -> class_logits (B, N, K + 1), mask_logits (B, N, H / stride, W / stride).
    """
    generator = torch.Generator().manual_seed(seed)
    coarse = labels[:, ::stride, ::stride]
    batch = len(labels)
    class_logits = torch.full((batch, num_queries, NUM_CLASSES + 1), -CONFIDENT)
    mask_logits = torch.full((batch, num_queries, *coarse.shape[-2:]), -CONFIDENT)
    for image in range(batch):
        for query in range(num_queries):
            if query < NUM_CLASSES and (coarse[image] == query).any():
                class_logits[image, query, query] = CONFIDENT
                mask_logits[image, query][coarse[image] == query] = CONFIDENT
            else:
                class_logits[image, query, NUM_CLASSES] = CONFIDENT
    class_logits += noise * torch.randn(class_logits.shape, generator=generator)
    mask_logits += noise * torch.randn(mask_logits.shape, generator=generator)
    features = torch.randn(batch, 8, *coarse.shape[-2:], generator=generator)
    for leaf in (class_logits, mask_logits, features):
        leaf.requires_grad_(requires_grad)
    outputs = {"class_logits": class_logits, "mask_logits": mask_logits, "pixel_features": features}
    outputs["semantic"] = torch.einsum("bnk,bnhw->bkhw", class_logits.softmax(-1)[..., :-1], mask_logits.sigmoid())
    return outputs


def label_maps(batch: int = 2, size: int = 16) -> torch.Tensor:
    labels = torch.zeros(batch, size, size, dtype=torch.long)
    labels[0, :, size // 2:] = 1
    labels[0, :3, :3] = 255
    labels[1, size // 2:] = 2
    labels[1, :4, :4] = 3
    return labels


def test_planted_predictions_give_a_near_zero_set_loss_and_worse_ones_more():
    labels = label_maps()
    objective = MaskClassificationObjective(NUM_CLASSES)
    planted = objective(planted_outputs(labels), labels, step=0)
    assert set(planted) == {"class", "mask_bce", "mask_dice"}
    # the upsampled masks blur at region edges, so the mask terms are small but not zero
    assert planted["class"] < 1e-4 and planted["mask_bce"] < 0.2 and planted["mask_dice"] < 0.05
    noisy = objective(planted_outputs(labels, noise=8.0), labels, step=0)
    assert all(noisy[name] > planted[name] for name in planted)


def test_set_loss_does_not_depend_on_the_order_of_the_queries():
    labels = label_maps()
    outputs = planted_outputs(labels, noise=3.0, seed=1)
    order = torch.tensor([4, 2, 5, 0, 3, 1])
    shuffled = {name: value[:, order] if name in ("class_logits", "mask_logits") else value
                for name, value in outputs.items()}
    objective = MaskClassificationObjective(NUM_CLASSES)
    first, second = objective(outputs, labels, 0), objective(shuffled, labels, 0)
    for name in first:
        torch.testing.assert_close(first[name], second[name])


def rc2l_outputs(labels, teacher_labels, student_noise=2.0):
    return (planted_outputs(labels, noise=student_noise, seed=2, requires_grad=True),
            planted_outputs(teacher_labels, seed=3))


def test_teacher_regions_are_cut_and_pasted_with_the_students_cutmix_box():
    labels = label_maps()
    _, teacher = rc2l_outputs(labels, labels)
    box = torch.zeros(2, 16, 16, dtype=torch.bool)
    box[0, :, :8] = True  # image 0 shows image 1's left half
    cutmix = CutMix(box, torch.tensor([1, 0]))
    classes, masks = RC2LObjective(NUM_CLASSES).pseudo_regions(teacher, cutmix)
    # image 0 keeps its own regions outside the box (its class 0 filled the left half, under the box: gone) and
    # takes image 1's regions inside it
    coarse = labels[:, ::2, ::2]
    left = torch.zeros(8, 8, dtype=torch.bool)
    left[:, :4] = True
    expected = {}
    for image_labels, inside in ((coarse[0], ~left), (coarse[1], left)):
        for value in image_labels[inside].unique().tolist():
            if value == 255:
                continue
            mask = torch.zeros(8, 8)
            mask[inside & (image_labels == value)] = 1
            expected[value] = expected.get(value, torch.zeros(8, 8)) + mask
    got = {int(c): m for c, m in zip(classes[0], masks[0])}
    assert sorted(got) == sorted(expected)
    for value in expected:
        torch.testing.assert_close(got[value], expected[value])
    # image 1 has no box: its own regions, unchanged
    assert sorted(classes[1].tolist()) == sorted(v for v in coarse[1].unique().tolist() if v != 255)


def test_all_below_threshold_teacher_gives_zero_region_terms_with_gradients():
    labels = label_maps()
    student, teacher = rc2l_outputs(labels, labels)
    teacher["class_logits"] = torch.zeros_like(teacher["class_logits"])  # uniform: top probability 0.2 < 0.7
    cutmix = CutMix(torch.zeros(2, 16, 16, dtype=torch.bool), torch.tensor([1, 0]))
    terms = RC2LObjective(NUM_CLASSES, mask_dim=8, region_proj_dim=4).unlabeled_terms(student, teacher, cutmix)
    assert set(terms) == {"rcc", "smc", "rmc", "rfc"}
    for name in terms:
        assert terms[name].item() == 0.0 and terms[name].requires_grad
    sum(terms.values()).backward()
    for leaf in (student["class_logits"], student["mask_logits"], student["pixel_features"]):
        assert leaf.grad is None or (torch.isfinite(leaf.grad).all() and not leaf.grad.any())
    # MaskFormer's rule instead: every query is pushed to "no object"
    student, _ = rc2l_outputs(labels, labels)
    objective = RC2LObjective(NUM_CLASSES, mask_dim=8, region_proj_dim=4, rcc_unmatched=True)
    rcc = objective.unlabeled_terms(student, teacher, cutmix)["rcc"]
    expected = torch.nn.functional.cross_entropy(student["class_logits"].flatten(0, 1), torch.full((12,), NUM_CLASSES))
    torch.testing.assert_close(rcc, expected)


def test_rcc_scores_the_matched_queries_against_the_teacher_classes():
    labels = label_maps()
    student, teacher = rc2l_outputs(labels, labels, student_noise=1.0)
    cutmix = CutMix(torch.zeros(2, 16, 16, dtype=torch.bool), torch.tensor([1, 0]))
    rcc = RC2LObjective(NUM_CLASSES, region_losses=("rcc",)).unlabeled_terms(student, teacher, cutmix)["rcc"]
    # planted: query q holds class q's region, so the matched queries are the classes present, in order
    logits, targets = [], []
    for image in range(2):
        for value in sorted(v for v in labels[image, ::2, ::2].unique().tolist() if v != 255):
            logits.append(student["class_logits"][image, value])
            targets.append(value)
    expected = torch.nn.functional.cross_entropy(torch.stack(logits), torch.tensor(targets))
    torch.testing.assert_close(rcc, expected)


def test_region_terms_reward_a_student_that_agrees_with_the_teacher():
    labels = label_maps()
    objective = RC2LObjective(NUM_CLASSES, mask_dim=8, region_proj_dim=4)
    cutmix = CutMix(torch.zeros(2, 16, 16, dtype=torch.bool), torch.tensor([1, 0]))
    agreeing, teacher = rc2l_outputs(labels, labels, student_noise=0.5)
    agreeing["pixel_features"] = teacher["pixel_features"]
    other_labels = labels.flip(-1).roll(1, 0)
    disagreeing, _ = rc2l_outputs(other_labels, labels, student_noise=0.5)
    good = objective.unlabeled_terms(agreeing, teacher, cutmix)
    bad = objective.unlabeled_terms(disagreeing, teacher, cutmix)
    for name in ("rcc", "smc", "rmc"):
        assert good[name] < bad[name], name


def test_switches_and_weights():
    objective = RC2LObjective(NUM_CLASSES, region_losses=("rmc", "rcc"), unlabeled_weight=2.0, contrast_weight=0.5,
                              rampup_steps=10)
    assert objective.region_losses == ("rcc", "rmc")
    weights = objective.weights(10)
    assert weights == {"class": 2.0, "mask_bce": 5.0, "mask_dice": 5.0, "rcc": 2.0, "rmc": 0.5}
    assert objective.weights(5)["rcc"] == pytest.approx(2.0 * math.exp(-5 * 0.25))
    assert sigmoid_rampup(0, 0) == 1.0 and sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    with pytest.raises(ValueError, match="unknown region losses"):
        RC2LObjective(NUM_CLASSES, region_losses=("rmc", "pixel"))
    with pytest.raises(ValueError, match="mask-classification head"):
        smoke(method="rc2l")
    with pytest.raises(ValueError, match="mask-classification head"):
        smoke(method="ce", head="mask_classification")


RC2L_TINY = dict(method="rc2l", head="mask_classification", num_queries=8, mask_dim=16, decoder_layers=1,
                 proj_dim=8, optimizer="adamw", lr=1e-3, steps=8, checkpoint_every=4, num_train=16, num_val=4,
                 batch_size=4, label_fraction=0.5, confidence_threshold=0.2, cutmix_probability=1.0)


def test_semi_supervised_run_logs_every_term_and_resumes_exactly(tmp_path):
    cfg = smoke(**RC2L_TINY)
    whole = train(cfg, tmp_path / "whole", progress=False)
    log = read_log(tmp_path / "whole")
    assert {"class", "mask_bce", "mask_dice", "rcc", "smc", "rmc", "rfc", "loss"} <= set(log[-1])
    assert any(record["rmc"] > 0 for record in log)  # the low threshold lets teacher regions through
    state = load_checkpoint(tmp_path / "whole" / "last.ckpt")
    assert state["teacher"] is not None and any(key.startswith("module.") for key in state["teacher"])
    assert train(cfg, tmp_path / "split", progress=False, interrupt_at=6) is None
    resumed = train(cfg, tmp_path / "split", progress=False)
    assert [r["loss"] for r in read_log(tmp_path / "split")] == [r["loss"] for r in log]
    assert resumed["val"] == whole["val"]


def test_supervised_baseline_trains_on_the_labeled_images_only(tmp_path):
    cfg = smoke(**{**RC2L_TINY, "method": "mask_classification", "steps": 2, "label_fraction": 0.25})
    train(cfg, tmp_path, progress=False)
    assert "rcc" not in read_log(tmp_path)[-1]


def projector_layer_sizes(objective):
    return [(layer.in_features, layer.out_features) for layer in objective.projector
            if isinstance(layer, torch.nn.Linear)]


def test_region_projector_is_mask_dim_to_mask_dim_to_region_proj_dim():
    from contrastseg.config import preset
    from contrastseg.methods import build_objective
    from contrastseg.paper_settings import SETTINGS

    cfg = preset("smoke", method="rc2l")  # mask_dim 32, proj_dim 32
    assert projector_layer_sizes(build_objective(cfg, 9)) == [(32, 32), (32, 128)]
    other = cfg.replace(region_proj_dim=16, proj_dim=64)  # proj_dim (the dense methods' head) plays no part
    assert projector_layer_sizes(build_objective(other, 9)) == [(32, 32), (32, 16)]
    paper = preset(f"paper:{next(name for name in SETTINGS if name.startswith('rc2l/'))}", method="rc2l")
    assert projector_layer_sizes(build_objective(paper, 21)) == [(256, 256), (256, 128)]  # the method's sizes
    assert "region_proj_dim" in RC2LConfig.field_names() and "proj_dim" not in RC2LConfig.field_names()
    with pytest.raises(ValueError, match="region_proj_dim"):
        cfg.replace(region_proj_dim=0)
