"""Model building: timm's pretrained weights by name (never downloaded in a test), strict local weights files, the
reference code's head forms behind ``reference_heads``, and the timm version the library needs."""

import os
import re
from pathlib import Path

import pytest
import timm
import torch
from packaging.requirements import Requirement
from packaging.version import Version
from torch import nn

from contrastseg.config import ExperimentConfig, smoke
from contrastseg.engine.train import build_model
from contrastseg.models import build_segmentor
from contrastseg.models.backbones import create_timm_features, load_weights_file
from contrastseg.paper_settings import SETTINGS

K = 5
REPOSITORY = Path(__file__).resolve().parents[1]
FEATURES = dict(out_indices=(1, 2, 3, 4), output_stride=8)


# pretrained="timm": timm's own loading, by name


def test_timm_weights_are_asked_of_timm_by_name_without_touching_the_environment(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def create_model(name, **kwargs):
        calls.append((name, kwargs))
        return nn.Identity()

    monkeypatch.setattr(timm, "create_model", create_model)
    create_timm_features("resnet101s", "timm", **FEATURES)
    assert calls == [("resnet101s", dict(features_only=True, pretrained=True, **FEATURES))]
    assert "HF_HUB_OFFLINE" not in os.environ  # offline only when the user says so


def test_timm_errors_reach_the_user_as_timm_raised_them(monkeypatch):
    def create_model(name, **kwargs):
        raise RuntimeError("Hugging Face hub: no route to host")

    monkeypatch.setattr(timm, "create_model", create_model)
    with pytest.raises(RuntimeError, match="no route to host"):
        create_timm_features("resnet18", "timm", **FEATURES)


def test_timm_pretrained_loading_reads_a_local_file_through_pretrained_cfg_overlay(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    torch.manual_seed(1)
    source = timm.create_model("resnet18")  # the classification model, as timm's weights files hold it
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    body = create_timm_features("resnet18", "timm", pretrained_cfg_overlay=dict(file=str(path)), **FEATURES)
    for name, value in body.state_dict().items():
        assert torch.equal(value, source.state_dict()[name]), name


# a local weights file: strict


def test_a_local_file_that_matches_part_of_the_backbone_names_missing_and_unexpected_keys(tmp_path):
    state = build_segmentor("resnet18", "fcn", 3).backbone.body.state_dict()
    del state["layer4.1.bn2.weight"]
    state["head.extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"partial\.pth") as error:
        build_segmentor("resnet18", "fcn", 3, pretrained=str(path))
    assert re.search(r"missing keys .*layer4\.1\.bn2\.weight", str(error.value))
    assert re.search(r"unexpected keys .*head\.extra\.weight", str(error.value))


def test_a_partial_file_loads_what_matches_when_asked_not_to_be_strict(tmp_path):
    source = build_segmentor("resnet18", "fcn", 3).backbone.body
    state = {name: value for name, value in source.state_dict().items() if name.startswith("layer1.")}
    path = tmp_path / "layer1.pth"
    torch.save(state, path)
    target = build_segmentor("resnet18", "fcn", 3).backbone.body
    load_weights_file(target, path, strict=False)
    assert all(torch.equal(target.state_dict()[name], value) for name, value in state.items())
    torch.save({"unrelated.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="no parameter"):
        load_weights_file(target, path, strict=False)


@pytest.mark.parametrize("name", ["resnet18", "hrnet_w18_small"])
def test_a_classification_checkpoint_loads_without_its_classification_layers(tmp_path, name):
    torch.manual_seed(2)
    source = timm.create_model(name)  # with fc / classifier, incre_modules, ... that features_only leaves out
    path = tmp_path / f"{name}.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    body = build_segmentor(name, "fcn", 3, pretrained=str(path)).backbone.body
    for key, value in body.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_loading_a_weights_file_leaves_the_random_initialisation_of_the_heads_unchanged(tmp_path):
    torch.manual_seed(0)
    random = build_segmentor("resnet18", "fcn", 3, proj_dim=8)
    path = tmp_path / "resnet18.pth"
    torch.save(random.backbone.body.state_dict(), path)
    torch.manual_seed(0)
    loaded = build_segmentor("resnet18", "fcn", 3, proj_dim=8, pretrained=str(path))
    for name, value in random.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name


# reference_heads: the reference code's head forms


def conv_kernels(module: nn.Module) -> list[tuple[int, int]]:
    return [tuple(layer.kernel_size) for layer in module.modules() if isinstance(layer, nn.Conv2d)]


def dropouts(module: nn.Module) -> list[float]:
    return [layer.p for layer in module.modules() if isinstance(layer, nn.Dropout2d)]


def test_reference_hrnet_head_is_3x3_conv_bn_relu_dropout_then_the_classifier():
    default = build_segmentor("tiny", "hrnet", K).head
    assert conv_kernels(default) == [(1, 1), (1, 1)] and dropouts(default) == [0.0]
    reference = build_segmentor("tiny", "hrnet", K, reference_heads=True).head
    assert [type(layer) for layer in reference.block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert conv_kernels(reference) == [(3, 3), (1, 1)] and dropouts(reference) == [0.1]
    assert reference.classifier.in_channels == reference.channels == 160  # 16 + 32 + 48 + 64


def test_reference_ocr_head_starts_its_auxiliary_branch_with_a_3x3_conv():
    default = build_segmentor("tiny", "ocr", K).head
    reference = build_segmentor("tiny", "ocr", K, reference_heads=True).head
    assert conv_kernels(default.aux) == [(1, 1), (1, 1)]
    assert conv_kernels(reference.aux) == [(3, 3), (1, 1)]
    assert conv_kernels(reference.pixels) == conv_kernels(default.pixels)  # the rest of OCR is unchanged
    assert dropouts(reference) == dropouts(default) == [0.05]


@pytest.mark.parametrize("head", ["hrnet", "ocr"])
def test_reference_heads_give_the_same_outputs_shapes(head):
    model = build_segmentor("tiny", head, K, reference_heads=True, proj_dim=8).train()
    outputs = model(torch.rand(2, 3, 33, 47))
    assert outputs["logits"].shape == (2, K, 33, 47)
    assert outputs["coarse_logits"].shape == (2, K, 9, 12)
    assert outputs["decoder"].shape == (2, 160 if head == "hrnet" else 512, 9, 12)
    assert outputs["embedding"].shape == (2, 8, 9, 12)
    if head == "ocr":
        assert outputs["aux_logits"].shape == (2, K, 33, 47)


@pytest.mark.parametrize("head", ["fcn", "deeplabv3", "hrnet", "ocr"])
def test_reference_heads_off_keeps_the_random_initialisation(head):
    torch.manual_seed(0)
    explicit = build_segmentor("tiny", head, K, proj_dim=8, reference_heads=False).state_dict()
    torch.manual_seed(0)
    default = build_segmentor("tiny", head, K, proj_dim=8).state_dict()
    assert list(explicit) == list(default)
    assert all(torch.equal(explicit[name], default[name]) for name in default)


def test_build_model_passes_reference_heads_from_the_config():
    assert ExperimentConfig().reference_heads is False
    assert conv_kernels(build_model(smoke(head="hrnet")).head)[0] == (1, 1)
    assert conv_kernels(build_model(smoke(head="hrnet", reference_heads=True)).head)[0] == (3, 3)
    assert conv_kernels(build_model(smoke(head="ocr", reference_heads=True)).head.aux)[0] == (3, 3)


def test_paper_settings_with_hrnet_or_ocr_heads_use_the_reference_heads():
    dense = [setting for setting in SETTINGS.values() if setting.overrides.get("head") in ("hrnet", "ocr")]
    assert dense and all(setting.overrides.get("reference_heads") is True for setting in dense)
    assert not any(setting.overrides.get("reference_heads") for setting in SETTINGS.values()
                   if setting.overrides.get("head") not in ("hrnet", "ocr"))


# the timm version


TIMM_SYMBOLS_SINCE = {"ModelEmaV3": Version("0.9.16")}  # timm symbols the library imports -> first timm with them


def test_the_timm_requirement_admits_no_version_without_the_symbols_the_library_imports():
    tomllib = pytest.importorskip("tomllib")
    sources = "\n".join(path.read_text() for path in (REPOSITORY / "lib" / "contrastseg").rglob("*.py"))
    imported = set(re.findall(r"from timm[\w.]* import ([\w, ]+)", sources))
    names = {name.strip() for group in imported for name in group.split(",")}
    assert names <= set(TIMM_SYMBOLS_SINCE), f"add the first timm version of {names - set(TIMM_SYMBOLS_SINCE)}"
    needed = max(TIMM_SYMBOLS_SINCE[name] for name in names)
    dependencies = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]["dependencies"]
    (timm_requirement,) = [Requirement(text) for text in dependencies if Requirement(text).name == "timm"]
    lower_bounds = [Version(spec.version) for spec in timm_requirement.specifier if spec.operator in (">=", "==")]
    assert lower_bounds and max(lower_bounds) >= needed, str(timm_requirement.specifier)
    assert not timm_requirement.specifier.contains("0.9.15", prereleases=True)
