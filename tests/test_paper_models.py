"""The papers' segmentation models: DeepLabV3 (dilated ResNet-101, OS 8, auxiliary FCN head), HRNetV2-W48 and
OCRNet on HRNetV2-W48; shapes on small CPU inputs, OCR's spatial gather against a loop, the auxiliary CE term.

The two big models are built once per module (about 2 s each on one thread); the rest uses HRNet-W18-small and the
tiny backbone.
"""

from types import SimpleNamespace

import pytest
import timm
import torch

from contrastseg.models import build_segmentor, concat_levels, spatial_gather
from contrastseg.models.hrnet import HRNetBackbone
from contrastseg.methods.contextrast.objective import ContextrastObjective
from contrastseg.methods.pixel_contrast.objective import PixelContrastObjective
from contrastseg.objectives import CrossEntropyObjective, weighted_total

K = 5
SIZE = (64, 64)


@pytest.fixture(scope="module")
def deeplab():
    torch.manual_seed(0)
    return build_segmentor("resnet101s", "deeplabv3", K, output_stride=8, aux_head=True)


@pytest.fixture(scope="module")
def hrnet():
    torch.manual_seed(0)
    return build_segmentor("hrnet_w48", "hrnet", K, proj_dim=8, proj_levels=1)


@pytest.fixture(scope="module")
def ocr():
    torch.manual_seed(0)
    return build_segmentor("hrnet_w48", "ocr", K, proj_dim=8, proj_levels=4, aux_head=True)


def shapes(tensors):
    return [tuple(t.shape) for t in tensors]


def test_deeplabv3_resnet101_os8_has_an_auxiliary_head_on_the_third_level_while_training(deeplab):
    body = deeplab.backbone
    assert body.channels == (256, 512, 1024, 2048) and body.reductions == (4, 8, 8, 8)
    assert body.body.conv1[-1].out_channels == 128  # the reference's deep stem: 3x3 convs of 64, 64, 128
    assert deeplab.aux_head.block[0].in_channels == 1024 and deeplab.aux_head.channels == 256
    with torch.no_grad():
        outputs = deeplab.train()(torch.rand(1, 3, *SIZE))
        assert outputs["logits"].shape == (1, K, *SIZE) and outputs["coarse_logits"].shape == (1, K, 8, 8)
        assert outputs["aux_logits"].shape == (1, K, *SIZE)
        assert outputs["decoder"].shape == (1, 256, 8, 8)
        assert "aux_logits" not in deeplab.eval()(torch.rand(1, 3, *SIZE))
        assert deeplab.eval()(torch.rand(1, 3, *SIZE), with_aux=True)["aux_logits"].shape == (1, K, *SIZE)


def test_hrnetv2_w48_decodes_the_four_concatenated_branches_at_stride_4(hrnet):
    assert hrnet.backbone.channels == (48, 96, 192, 384) and hrnet.backbone.reductions == (4, 8, 16, 32)
    assert hrnet.aux_head is None
    with torch.no_grad():
        outputs = hrnet.train()(torch.rand(1, 3, *SIZE))
    assert shapes(outputs["levels"]) == [(1, 48, 16, 16), (1, 96, 8, 8), (1, 192, 4, 4), (1, 384, 2, 2)]
    assert outputs["logits"].shape == (1, K, *SIZE) and outputs["coarse_logits"].shape == (1, K, 16, 16)
    assert outputs["decoder"].shape == (1, 720, 16, 16)
    assert "aux_logits" not in outputs
    assert shapes(outputs["level_embeddings"]) == [(1, 8, 16, 16)]


def test_one_projection_on_a_multi_level_head_sees_the_720_channel_concatenation(hrnet):
    projection = hrnet.projections[0]
    assert projection.layers[0].in_channels == 720
    hrnet.eval()
    with torch.no_grad():
        outputs = hrnet(torch.rand(1, 3, *SIZE), with_embedding=True)
        expected = projection(concat_levels(outputs["levels"]))
    assert torch.equal(outputs["embedding"], expected)


def test_ocr_on_hrnet_w48_gives_soft_region_logits_while_training_only(ocr):
    assert ocr.aux_head is None  # OCR's soft object regions are its auxiliary output; no FCN head is added
    assert [p.layers[0].in_channels for p in ocr.projections] == [48, 96, 192, 384]
    with torch.no_grad():
        outputs = ocr.train()(torch.rand(1, 3, *SIZE))
        assert outputs["logits"].shape == (1, K, *SIZE) and outputs["coarse_logits"].shape == (1, K, 16, 16)
        assert outputs["aux_logits"].shape == (1, K, *SIZE)
        assert outputs["decoder"].shape == (1, 512, 16, 16)
        assert shapes(outputs["level_embeddings"]) == [(1, 8, 16, 16), (1, 8, 8, 8), (1, 8, 4, 4), (1, 8, 2, 2)]
        evaluated = ocr.eval()(torch.rand(1, 3, *SIZE))
    assert "aux_logits" not in evaluated and "level_embeddings" not in evaluated


def test_spatial_gather_matches_a_loop_over_regions_and_pixels():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 4, 5, generator=generator, dtype=torch.float64)
    region_logits = torch.randn(2, 4, 4, 5, generator=generator, dtype=torch.float64)
    expected = torch.zeros(2, 4, 3, dtype=torch.float64)
    for b in range(2):
        for k in range(4):
            weights = region_logits[b, k].exp() / region_logits[b, k].exp().sum()
            for y in range(4):
                for x in range(5):
                    expected[b, k] += weights[y, x] * features[b, :, y, x]
    assert torch.allclose(spatial_gather(features, region_logits), expected, atol=1e-12)


def test_hrnet_fuses_bilinearly_at_odd_sizes_and_nearest_reproduces_timm():
    torch.manual_seed(0)
    model = build_segmentor("hrnet_w18_small", "ocr", K)
    images = torch.rand(2, 3, 33, 47, requires_grad=True)
    outputs = model.train()(images)
    assert shapes(outputs["levels"]) == [(2, 16, 9, 12), (2, 32, 5, 6), (2, 64, 3, 3), (2, 128, 2, 2)]
    assert outputs["logits"].shape == (2, K, 33, 47) and outputs["aux_logits"].shape == (2, K, 33, 47)
    (outputs["logits"].sum() + outputs["aux_logits"].sum()).backward()
    assert images.grad.abs().sum() > 0

    nearest = HRNetBackbone("hrnet_w18_small", upsample_mode="nearest").eval()
    reference = timm.create_model("hrnet_w18_small", features_only=True, feature_location="",
                                  out_indices=(1, 2, 3, 4), pretrained=False).eval()
    reference.load_state_dict(nearest.body.state_dict())
    square = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(nearest(square), reference(square)):
            assert torch.equal(ours, theirs)


def test_hrnet_ignores_output_stride_and_names_are_checked():
    assert HRNetBackbone("hrnet_w18_small", output_stride=8).reductions == (4, 8, 16, 32)
    with pytest.raises(ValueError, match="output_stride"):
        HRNetBackbone("hrnet_w18_small", output_stride=12)
    with pytest.raises(ValueError, match="hrnet_w48"):
        build_segmentor("hrnet_w64", "hrnet", K)
    with pytest.raises(ValueError, match="ocr"):
        build_segmentor("tiny", "ocrnet", K)
    with pytest.raises(ValueError, match="aux_head"):
        build_segmentor("tiny", "mask_classification", K, aux_head=True)


def test_single_level_heads_project_the_last_level_as_before():
    torch.manual_seed(0)
    model = build_segmentor("tiny", "fcn", K, proj_dim=8).eval()
    with torch.no_grad():
        outputs = model(torch.rand(2, 3, *SIZE), with_embedding=True)
        assert torch.equal(outputs["embedding"], model.projections[0](outputs["levels"][-1]))
    assert model.aux_head is None and "aux_logits" not in model.train()(torch.rand(2, 3, *SIZE))


@pytest.mark.parametrize("head", ["hrnet", "ocr"])
def test_multi_level_heads_work_on_a_plain_backbone(head):
    model = build_segmentor("tiny", head, K, aux_head=True)
    outputs = model.train()(torch.rand(2, 3, 33, 47))
    assert outputs["logits"].shape == (2, K, 33, 47) and outputs["aux_logits"].shape == (2, K, 33, 47)
    assert outputs["coarse_logits"].shape == (2, K, 9, 12)  # the finest level's size
    assert outputs["decoder"].shape[1] == (160 if head == "hrnet" else 512)  # 16 + 32 + 48 + 64


def test_aux_term_is_weighted_by_the_config_and_absent_at_weight_zero():
    torch.manual_seed(0)
    model = build_segmentor("tiny", "fcn", 3, aux_head=True, proj_dim=8).train()
    outputs = model(torch.rand(2, 3, *SIZE))
    labels = torch.randint(0, 3, (2, *SIZE))

    objective = CrossEntropyObjective.from_config(SimpleNamespace(aux_weight=0.4), 3)
    terms = objective(outputs, labels, step=0)
    assert set(terms) == {"ce", "aux"} and objective.weights(0) == {"ce": 1.0, "aux": 0.4}
    total = weighted_total(terms, objective.weights(0))
    assert torch.allclose(total, terms["ce"] + 0.4 * terms["aux"])
    total.backward()
    assert model.aux_head.classifier.weight.grad.abs().sum() > 0

    off = CrossEntropyObjective.from_config(SimpleNamespace(aux_weight=0.0), 3)
    assert set(off(outputs, labels, step=0)) == {"ce"} and off.weights(0) == {"ce": 1.0}
    contrast = PixelContrastObjective(3, proj_dim=8, max_views=4, aux_weight=0.4)
    assert {"ce", "aux", "contrast"} <= set(contrast(outputs, labels, step=0))
    assert ContextrastObjective(3, levels=1, aux_weight=0.4).weights(0)["aux"] == 0.4
