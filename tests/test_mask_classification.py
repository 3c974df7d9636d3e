import pytest
import torch
import torch.nn.functional as F

from contrastseg.models.backbones import TinyBackbone
from contrastseg.models.mask_classification import (MaskClassificationSegmentor, PixelDecoder,
                                                    sine_positional_encoding)

NUM_CLASSES, NUM_QUERIES, HIDDEN_DIM = 5, 7, 32


def tiny_model(seed: int = 0) -> MaskClassificationSegmentor:
    torch.manual_seed(seed)
    return MaskClassificationSegmentor(TinyBackbone(output_stride=8), num_classes=NUM_CLASSES,
                                       num_queries=NUM_QUERIES, hidden_dim=HIDDEN_DIM, decoder_layers=2, num_heads=4)


@pytest.fixture(scope="module")
def model_and_outputs():
    model = tiny_model()
    images = torch.rand(2, 3, 45, 61, generator=torch.Generator().manual_seed(1))
    return model, images, model(images)


def test_output_shapes_at_an_odd_size(model_and_outputs):
    model, images, outputs = model_and_outputs
    h, w = 12, 16  # stride 4 of 45 x 61: ceil(ceil(45 / 2) / 2), ceil(ceil(61 / 2) / 2)
    assert model.num_classes == NUM_CLASSES and model.num_queries == NUM_QUERIES
    assert outputs["class_logits"].shape == (2, NUM_QUERIES, NUM_CLASSES + 1)
    assert outputs["mask_logits"].shape == (2, NUM_QUERIES, h, w)
    assert outputs["pixel_features"].shape == (2, HIDDEN_DIM, h, w)
    assert outputs["mask_embeddings"].shape == (2, NUM_QUERIES, HIDDEN_DIM)
    assert outputs["semantic"].shape == (2, NUM_CLASSES, h, w)
    assert outputs["logits"].shape == (2, NUM_CLASSES, 45, 61)


def test_logits_are_the_upsampled_semantic_scores(model_and_outputs):
    _, _, outputs = model_and_outputs
    upsampled = F.interpolate(outputs["semantic"], size=(45, 61), mode="bilinear", align_corners=False)
    assert torch.equal(outputs["logits"].argmax(dim=1), upsampled.argmax(dim=1))


def test_semantic_is_the_class_weighted_sum_of_query_masks(model_and_outputs):
    _, _, outputs = model_and_outputs
    probabilities = outputs["class_logits"].softmax(dim=-1)
    masks = outputs["mask_logits"].sigmoid()
    expected = torch.zeros_like(outputs["semantic"])
    for query in range(NUM_QUERIES):
        for k in range(NUM_CLASSES):
            expected[:, k] += probabilities[:, query, k, None, None] * masks[:, query]
    assert torch.allclose(outputs["semantic"], expected, atol=1e-6)
    assert torch.allclose(outputs["mask_logits"], torch.einsum("bnc,bchw->bnhw", outputs["mask_embeddings"],
                                                               outputs["pixel_features"]), atol=1e-5)


def test_gradient_reaches_the_backbone_and_the_queries(model_and_outputs):
    model, _, outputs = model_and_outputs
    (outputs["mask_logits"].square().mean() + outputs["class_logits"].square().mean()).backward()
    first_conv = model.backbone.stem[0][0].weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    assert model.query_embeddings.weight.grad is not None and model.query_embeddings.weight.grad.abs().sum() > 0


def test_same_seed_gives_identical_outputs():
    images = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(2))
    first, second = tiny_model(seed=3)(images), tiny_model(seed=3)(images)
    for key in ("class_logits", "mask_logits", "logits"):
        assert torch.equal(first[key], second[key]), key


def test_eval_mode_with_one_image_and_bad_input():
    model = tiny_model().eval()
    with torch.no_grad():
        outputs = model(torch.rand(1, 3, 33, 29))
    assert outputs["logits"].shape == (1, NUM_CLASSES, 33, 29)
    assert torch.all(outputs["semantic"] >= 0) and torch.all(outputs["semantic"] <= NUM_QUERIES)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(1, 1, 32, 32))


def test_pixel_decoder_handles_levels_of_equal_size():
    decoder = PixelDecoder((4, 6, 8, 10), hidden_dim=8)
    levels = (torch.rand(1, 4, 9, 11), torch.rand(1, 6, 5, 6), torch.rand(1, 8, 5, 6), torch.rand(1, 10, 5, 6))
    pixel_features, coarsest = decoder(levels)
    assert pixel_features.shape == (1, 8, 9, 11) and coarsest.shape == (1, 8, 5, 6)


def test_sine_positional_encoding_matches_detr_at_one_position():
    encoding = sine_positional_encoding(torch.zeros(2, 8, 3, 4))
    assert encoding.shape == (2, 12, 8) and torch.equal(encoding[0], encoding[1])
    row, col = 1, 2  # normalised coordinates (row + 1) / h * 2π and (col + 1) / w * 2π
    y, x = (row + 1) / 3 * 2 * torch.pi, (col + 1) / 4 * 2 * torch.pi
    frequencies = torch.tensor([1.0, 1.0, 100.0, 100.0])  # 10000 ** (2 * (i // 2) / 4)
    expected = []
    for value in (y, x):
        phases = value / frequencies
        expected += [phases[0].sin(), phases[1].cos(), phases[2].sin(), phases[3].cos()]
    assert torch.allclose(encoding[0, row * 4 + col], torch.stack(expected), atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sine_positional_encoding(torch.zeros(1, 6, 2, 2))
