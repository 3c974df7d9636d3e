"""Deployment export: ``RunResult.export`` writes the prediction path alone, torch alone runs the program, the library
rebuilds the module from its state dict, and the cost table counts training against deployed models.

Each case is a smoke run trained a few steps, then exported; every comparison is against the run's trained model
as evaluation calls it (``model(images)["logits"]``, images in [0, 1]).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contrastseg import runs
from contrastseg.config import preset
from contrastseg.export import (ARCHITECTURE_NAME, PROGRAM_NAME, STATE_DICT_NAME, DeployedSegmentor, build_deployed,
                                deployed_architecture, deployment_costs, export_model, load_deployed)
from contrastseg.models.segmentor import IMAGENET_MEAN, IMAGENET_STD

TINY = dict(steps=2, checkpoint_every=2, num_train=8, num_val=4, batch_size=4)
CASES = {
    "ce": {"method": "ce"},
    "ce with an auxiliary head": {"method": "ce", "aux_weight": 0.4},
    "pixel_contrast": {"method": "pixel_contrast"},
    "contextrast": {"method": "contextrast"},
    "mask_classification": {"method": "mask_classification"},
    "rc2l": {"method": "rc2l"},
}
TRAINING_ONLY_PREFIXES = ("segmentor.projections.", "segmentor.aux_head.")
INPUT_NAME = "input.pt"  # the saved input the torch-only process reads (written beside the export by these tests)


def normalised(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> the deployed module's input, with the library's ImageNet statistics."""
    return (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


class Exported:
    """One case: its run, its export folder, a saved input batch (three images, the export's example had two) and
    the trained model's logits on it."""

    def __init__(self, result: runs.RunResult, folder: Path):
        self.result, self.folder = result, folder
        self.images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        torch.save(self.images, folder / INPUT_NAME)
        self.model = result.load_model()
        with torch.no_grad():
            self.expected = self.model(self.images)["logits"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Exported]:
    root = tmp_path_factory.mktemp("export")
    cases = {}
    for name, overrides in CASES.items():
        result = runs.get_or_train(preset("smoke", **overrides, **TINY), root=root / "runs", progress=False)
        folder = result.export(root / name.replace(" ", "_"))
        cases[name] = Exported(result, folder)
    return cases


TORCH_ONLY_SCRIPT = """
import sys
for blocked in ("contrastseg", "timm"):  # before anything else: these imports now fail
    sys.modules[blocked] = None
import json, pathlib
import torch
for blocked in ("contrastseg", "timm"):
    try:
        __import__(blocked)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{blocked} could be imported")
for folder in map(pathlib.Path, sys.argv[1:]):
    description = json.loads((folder / "model.json").read_text())
    mean = torch.tensor(description["input"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(description["input"]["std"]).view(1, 3, 1, 1)
    images = torch.load(folder / "input.pt", weights_only=True)
    program = torch.export.load(folder / "model.pt2").module()
    with torch.no_grad():
        torch.save(program((images - mean) / std), folder / "torch_only_output.pt")
loaded = sorted(name for name, module in sys.modules.items()
                if name.split(".")[0] in ("contrastseg", "timm") and module is not None)
if loaded:
    raise SystemExit(f"imported {loaded}")
print("torch only:", len(sys.argv) - 1, "programs")
"""


@pytest.fixture(scope="module")
def torch_only_outputs(exported) -> dict[str, torch.Tensor]:
    """Each case's program run on its saved input by one Python process that cannot import contrastseg or timm."""
    folders = [str(case.folder) for case in exported.values()]
    finished = subprocess.run([sys.executable, "-c", TORCH_ONLY_SCRIPT, *folders], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "PYTHONPATH": ""})
    assert finished.returncode == 0, finished.stderr[-4000:]
    assert "torch only: 6 programs" in finished.stdout
    return {name: torch.load(case.folder / "torch_only_output.pt", weights_only=True)
            for name, case in exported.items()}


@pytest.mark.multiprocess
@pytest.mark.parametrize("case", CASES)
def test_torch_alone_runs_the_program_as_the_trained_model_predicts(exported, torch_only_outputs, case):
    assert torch_only_outputs[case].shape == (3, 9, 64, 64)
    torch.testing.assert_close(torch_only_outputs[case], exported[case].expected)


@pytest.mark.parametrize("case", CASES)
def test_the_state_dict_rebuilds_the_deployed_module(exported, case):
    folder, trained = exported[case].folder, exported[case].model
    state = torch.load(folder / STATE_DICT_NAME, weights_only=True)
    assert not [key for key in state if key.startswith(TRAINING_ONLY_PREFIXES)]
    assert {f"segmentor.{key}" for key in trained.state_dict()} - set(state) == \
        {f"segmentor.{key}" for key in trained.state_dict() if key.startswith(("projections.", "aux_head."))}
    deployed = load_deployed(folder)
    assert not deployed.training
    with torch.no_grad():
        torch.testing.assert_close(deployed(normalised(exported[case].images)), exported[case].expected)


def test_the_training_only_heads_are_in_the_trained_models_and_not_in_the_deployed_ones(exported):
    for case in ("pixel_contrast", "contextrast"):
        assert exported[case].model.projections is not None
    assert exported["ce with an auxiliary head"].model.aux_head is not None
    for case in exported.values():
        state = load_deployed(case.folder).state_dict()
        assert not [key for key in state if key.startswith(TRAINING_ONLY_PREFIXES)]


@pytest.mark.parametrize("case", ["ce", "rc2l"])
def test_the_program_takes_other_batches_and_sizes(exported, case):
    program = torch.export.load(exported[case].folder / PROGRAM_NAME).module()
    model = exported[case].model
    sizes = json.loads((exported[case].folder / ARCHITECTURE_NAME).read_text())["input"]["sizes"]
    assert sizes["batch"] == {"min": 1, "max": None} and sizes["channels"] == {"min": 3, "max": 3}
    assert sizes["height"]["max"] is None and sizes["width"]["max"] is None
    for shape in [(1, 3, 64, 64), (2, 3, 96, 80), (1, 3, 65, 47)]:
        images = torch.rand(shape, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            torch.testing.assert_close(program(normalised(images)), model(images)["logits"])


def test_model_json_describes_the_architecture_the_input_and_the_run(exported):
    case = exported["ce with an auxiliary head"]
    description = json.loads((case.folder / ARCHITECTURE_NAME).read_text())
    cfg = case.result.config
    assert description["architecture"] == {"backbone": "tiny", "head": "fcn", "output_stride": 8, "num_classes": 9}
    assert description["input"]["mean"] == pytest.approx(IMAGENET_MEAN)
    assert description["input"]["std"] == pytest.approx(IMAGENET_STD)
    assert description["input"]["example_size"] == [64, 64]
    assert description["class_names"][:2] == ["road", "sidewalk"] and len(description["class_names"]) == 9
    assert description["run_key"] == json.loads(json.dumps(cfg.key())) and description["run_hash"] == cfg.hash()
    assert description["method"] == "ce" and description["teacher"] is False
    assert description["torch_version"] == torch.__version__
    assert description["trained_commit"] == case.result.trained_commit
    mask = json.loads((exported["rc2l"].folder / ARCHITECTURE_NAME).read_text())
    assert mask["architecture"] == {"backbone": "tiny", "head": "mask_classification", "output_stride": 8,
                                    "num_queries": 16, "mask_dim": 32, "decoder_layers": 2, "num_classes": 9}
    assert "semantic scores" in mask["output"]["scores"] and "logits" in description["output"]["scores"]


def test_the_teacher_of_a_semi_supervised_run_is_exported_on_request(exported, tmp_path):
    result = exported["rc2l"].result
    folder = result.export(tmp_path / "teacher", teacher=True)
    assert json.loads((folder / ARCHITECTURE_NAME).read_text())["teacher"] is True
    images = exported["rc2l"].images
    with torch.no_grad():
        teacher = result.load_model(teacher=True)(images)["logits"]
        assert not torch.equal(teacher, exported["rc2l"].expected)  # two steps of EMA already differ
        torch.testing.assert_close(load_deployed(folder)(normalised(images)), teacher)


def test_the_deployed_module_leaves_the_trained_model_as_it_was(exported):
    model = exported["pixel_contrast"].model
    deployed = DeployedSegmentor(model)
    assert deployed.segmentor.projections is None and model.projections is not None
    assert model.training is False and deployed.segmentor.backbone is not model.backbone


@pytest.mark.parametrize("method", ["ce", "pixel_contrast", "contextrast", "mask_classification", "rc2l"])
def test_the_deployed_module_keeps_exactly_the_parameters_the_prediction_depends_on(method):
    costs = deployment_costs(preset("smoke", method=method))
    assert costs["deployed_parameters"] == costs["prediction_parameters"] > 0
    assert costs["training_parameters"] == costs["model_parameters"] + costs["objective_parameters"]
    assert costs["deployed_flops"] > 0


def test_training_parts_cost_parameters_and_flops_only_in_training():
    costs = {name: deployment_costs(preset("smoke", **overrides)) for name, overrides in CASES.items()}
    for name in ("ce", "mask_classification"):
        assert costs[name]["training_parameters"] == costs[name]["deployed_parameters"]
        assert costs[name]["training_flops"] == costs[name]["deployed_flops"]
    for name in ("pixel_contrast", "contextrast", "ce with an auxiliary head"):  # projection or auxiliary heads
        assert costs[name]["training_parameters"] > costs[name]["deployed_parameters"]
        assert costs[name]["training_flops"] > costs[name]["deployed_flops"] == costs["ce"]["deployed_flops"]
        assert costs[name]["deployed_parameters"] == costs["ce"]["deployed_parameters"]
    rc2l = costs["rc2l"]  # the region projector is the objective's; the model is the supervised one
    assert rc2l["objective_parameters"] > 0 and rc2l["model_parameters"] == rc2l["deployed_parameters"]
    assert rc2l["deployed_flops"] == costs["mask_classification"]["deployed_flops"]


def test_costs_leave_the_callers_random_stream_as_it_was():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    deployment_costs(preset("smoke", method="pixel_contrast"))
    assert torch.equal(torch.rand(3), expected)


def test_loading_names_a_missing_or_damaged_file(exported, tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.json in"):
        load_deployed(tmp_path)
    source = exported["ce"].folder
    description = json.loads((source / ARCHITECTURE_NAME).read_text())
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / ARCHITECTURE_NAME).write_text(json.dumps(description))
    with pytest.raises(FileNotFoundError, match="no state_dict.pt in"):
        load_deployed(folder)
    state = torch.load(source / STATE_DICT_NAME, weights_only=True)
    torch.save(state | {"segmentor.projections.0.layers.0.weight": torch.zeros(1)}, folder / STATE_DICT_NAME)
    with pytest.raises(ValueError, match=r"(?s)state_dict.pt does not match the architecture .*Unexpected key\(s\) in "
                                         r"state_dict: \"segmentor.projections"):
        load_deployed(folder)
    (folder / ARCHITECTURE_NAME).write_text(json.dumps(description | {"format": 99}))
    with pytest.raises(ValueError, match="of export format 99; this code reads format 1"):
        load_deployed(folder)
    (folder / ARCHITECTURE_NAME).write_text("{")
    with pytest.raises(ValueError, match="model.json is not valid JSON"):
        load_deployed(folder)


def test_an_unknown_architecture_lists_the_valid_names():
    architecture = deployed_architecture(preset("smoke"))
    with pytest.raises(ValueError, match="tiny"):
        build_deployed(architecture | {"backbone": "tinny"})
    with pytest.raises(ValueError, match=r"architecture arguments unknown \['depth'\], missing \[\]; "
                                         r"build_segmentor takes \['backbone', 'head', 'num_classes', 'output_stride'"):
        build_deployed(architecture | {"depth": 3})
    with pytest.raises(ValueError, match=r"unknown \[\], missing \['num_classes'\]"):
        build_deployed({name: value for name, value in architecture.items() if name != "num_classes"})


def test_a_model_that_its_config_does_not_describe_is_refused(exported, tmp_path):
    cfg = exported["ce"].result.config.replace(head="deeplabv3")
    with pytest.raises(ValueError, match="the model does not match the architecture .*'head': 'deeplabv3'"):
        export_model(exported["ce"].model, cfg, tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()


def test_the_cost_benchmark_writes_the_table_it_prints(tmp_path, capsys):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "deployed_costs.py"
    spec = importlib.util.spec_from_file_location("deployed_costs_benchmark", script)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    threads = torch.get_num_threads()
    try:
        benchmark.main(["--presets", "smoke", "--methods", "ce", "pixel_contrast", "--threads", "1",
                        "--out", str(tmp_path / "costs.md")])
    finally:
        torch.set_num_threads(threads)
    text = (tmp_path / "costs.md").read_text()
    assert text in capsys.readouterr().out
    assert "`python benchmarks/deployed_costs.py --presets smoke --methods ce pixel_contrast" in text
    ce, pixel = [line for line in text.splitlines() if line.startswith("| smoke")]
    assert "| ce | tiny + fcn | 128,961 (128,961 + 0) | 20.81 M | 128,961 | 20.81 M | 0 (0.0 %) |" in ce
    assert "| pixel_contrast | tiny + fcn | 135,329 (135,329 + 0) | 21.6 M | 128,961 | 20.81 M | 6,368 (4.7 %) |" \
        in pixel
