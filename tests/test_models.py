import pytest
import torch

from contrastseg.models import build_segmentor


@pytest.mark.parametrize("backbone, head", [("tiny", "fcn"), ("tiny", "deeplabv3"), ("resnet18", "deeplabv3")])
@pytest.mark.parametrize("size", [(33, 47), (64, 64)])
def test_output_shapes_at_odd_sizes_and_gradient_reaches_input(backbone, head, size):
    torch.manual_seed(0)
    model = build_segmentor(backbone, head, num_classes=5, output_stride=8)
    images = torch.rand(2, 3, *size, requires_grad=True)
    outputs = model(images)
    assert outputs["logits"].shape == (2, 5, *size)
    assert len(outputs["levels"]) == 4
    last = outputs["levels"][-1]
    assert last.shape[-2:] == ((size[0] + 7) // 8, (size[1] + 7) // 8)
    assert outputs["decoder"].shape[-2:] == last.shape[-2:]
    outputs["logits"].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_output_stride_16_halves_the_last_level():
    model = build_segmentor("tiny", "fcn", num_classes=3, output_stride=16)
    assert model.backbone.reductions == (4, 8, 16, 16)
    assert model(torch.rand(1, 3, 64, 64))["levels"][-1].shape[-1] == 4


def test_unknown_names_and_missing_weights_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="resnet50"):
        build_segmentor("vgg", "fcn", 3)
    with pytest.raises(ValueError, match="fcn"):
        build_segmentor("tiny", "psp", 3)
    missing = tmp_path / "weights.pth"
    with pytest.raises(FileNotFoundError, match="weights.pth"):
        build_segmentor("resnet18", "fcn", 3, pretrained=str(missing))


def test_local_weights_file_is_loaded_by_path(tmp_path):
    source = build_segmentor("resnet18", "fcn", 3)
    path = tmp_path / "resnet18.pth"
    torch.save(source.backbone.body.state_dict(), path)
    loaded = build_segmentor("resnet18", "fcn", 3, pretrained=str(path))
    for name, value in source.backbone.body.state_dict().items():
        assert torch.equal(value, loaded.backbone.body.state_dict()[name]), name


def test_one_projection_head_per_level_only_while_training():
    model = build_segmentor("tiny", "fcn", num_classes=3, proj_dim=8, proj_levels=4)
    images = torch.rand(2, 3, 64, 64)
    outputs = model.train()(images)
    assert [e.shape for e in outputs["level_embeddings"]] == [(2, 8, 16, 16), (2, 8, 8, 8), (2, 8, 8, 8), (2, 8, 8, 8)]
    assert torch.allclose(outputs["level_embeddings"][0].norm(dim=1), torch.ones(2, 16, 16), atol=1e-5)
    assert outputs["embedding"] is outputs["level_embeddings"][-1]
    assert "level_embeddings" not in model.eval()(images)
    with pytest.raises(ValueError, match="proj_levels"):
        build_segmentor("tiny", "fcn", num_classes=3, proj_dim=8, proj_levels=5)
