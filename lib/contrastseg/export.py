"""Deployment: a trained segmentor as it predicts, without what only training needs, in files torch alone reads.

A trained model carries parts that only training uses: the projection heads of pixel contrast and Contextrast
(``Segmentor.projections``) and the auxiliary FCN head (``Segmentor.aux_head``, with ``aux_weight`` > 0). Besides
the model, a run trains an objective that may own modules (RC²L's region projector) and, for a semi-supervised
method, keeps an EMA teacher. None of these reaches the prediction, which is the argmax of the model's ``"logits"``
(``engine.evaluate.predict``): this is where the papers' "no extra inference cost" is shown, by dropping them.
``DeployedSegmentor`` is that prediction path alone: it maps normalised images to the class scores evaluation reads.
Its input is normalised outside the module, as a deployment pipeline's preprocessing step does, and ``model.json``
states the mean and standard deviation to normalise with.

``export_model(model, cfg, path)`` (and ``runs.RunResult.export(path)``, which calls it with a finished run's
model) writes the folder ``path``:

* ``model.pt2``: the deployed module as a ``torch.export`` program (``torch.export.export``, ``torch.export.save``),
  exported on the CPU with the batch (from 1 up), the height and the width dynamic (``Dim.AUTO``: torch infers the
  sizes the program accepts; ``model.json`` lists them, and the program checks its input when it is called and
  raises naming the size condition that failed, e.g. a side too small for the backbone's coarsest level). Torch
  alone loads and runs it:

      program = torch.export.load("model.pt2").module()
      logits = program((images - mean) / std)     # images (B, 3, H, W) RGB in [0, 1]; mean, std from model.json

  ``torch.export.passes.move_to_device_pass(program, "cuda")`` (``program`` as ``torch.export.load`` returns it,
  before ``.module()``) moves it to a GPU. The program computes what the eager model computes, to the bit for the
  dense models; for a mask-classification model it differs in the last bits from the eager model under
  ``torch.no_grad`` (as evaluation runs it), where eager attention takes PyTorch's fused inference path and the
  program the plain one (at most 4e-6 on scores up to 10 at the demo preset, the same argmax).
* ``state_dict.pt``: the deployed module's plain state dict (tensors only, ``torch.load(..., weights_only=True)``):
  the trained model's keys under ``segmentor.``, without ``projections.*`` and ``aux_head.*``.
* ``model.json``: the architecture (``build_segmentor``'s arguments: backbone, head, number of classes, output
  stride, and the head's own ones, ``deployed_architecture``), the input (layout, dtype, normalisation mean and
  standard deviation, the sizes the program accepts, the example size it was exported at), the output and what its
  scores are, the data set's class names and ignore index, the method, the run key and its hash, whether the model
  is an EMA teacher, and the torch version.

``load_deployed(path)`` rebuilds the ``DeployedSegmentor`` from ``model.json`` and ``state_dict.pt`` for users who
have this library (and timm, for the ResNet backbones): the architecture is built with random weights (never a
pretrained download) and the state dict loaded into it, strictly.

Costs: ``deployment_costs(cfg)`` counts the parameters and the forward FLOPs of one image at the config's size
(``torch.utils.flop_counter``) of the training model (the model with its projection and auxiliary heads, run in
training mode, plus the objective's own parameters) and of the deployed module; ``benchmarks/deployed_costs.py``
writes that table for every method. The claims ledger's inference cost (``claims.inference_cost``) is read from it.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from contrastseg.config import ExperimentConfig
from contrastseg.data import dataset_info
from contrastseg.engine.evaluate import class_probabilities
from contrastseg.engine.train import build_model
from contrastseg.methods import build_objective
from contrastseg.models import (MASK_CLASSIFICATION_HEADS, MaskClassificationSegmentor, Segmentor, build_segmentor,
                                model_fields)

if TYPE_CHECKING:
    from contrastseg.runs import RunResult

PROGRAM_NAME = "model.pt2"
STATE_DICT_NAME = "state_dict.pt"
ARCHITECTURE_NAME = "model.json"
EXPORT_FORMAT = 1
"""The version of the folder's layout and of ``model.json``'s keys; ``load_deployed`` refuses other versions."""
TRAINING_ONLY_FIELDS = ("pretrained", "aux_weight")
"""The model fields (``models.model_fields``) that do not shape the deployed module: the initial weights and the
auxiliary head."""
INPUT_DIMS = ("batch", "channels", "height", "width")


class DeployedSegmentor(nn.Module):
    """The prediction path of a trained segmentor: normalised images in, the class scores evaluation reads out.

    A copy of ``segmentor`` without its projection heads and auxiliary head (a ``MaskClassificationSegmentor`` has
    neither and is copied whole), in eval mode; the caller's model is left as it is. Its ``mean`` and ``std``
    (``segmentor``'s, non-persistent buffers) are what the input is to be normalised with.

    Args:
        segmentor: a ``Segmentor`` or a ``MaskClassificationSegmentor``, e.g. ``RunResult.load_model()``.

    Shape:
        images: (B, 3, H, W) float, ``(image - mean) / std`` of RGB images in [0, 1].
        returns: (B, K, H, W): a dense model's class logits, or a mask-classification model's semantic scores
            (MaskFormer's semantic inference; class probabilities summed over queries); either way the model's
            ``"logits"``, whose argmax over K is the prediction.
    """

    def __init__(self, segmentor: Segmentor | MaskClassificationSegmentor):
        super().__init__()
        if not isinstance(segmentor, (Segmentor, MaskClassificationSegmentor)):
            raise TypeError(f"DeployedSegmentor takes a Segmentor or a MaskClassificationSegmentor, "
                            f"got {type(segmentor).__name__}")
        segmentor = copy.deepcopy(segmentor)
        if isinstance(segmentor, Segmentor):
            segmentor.projections = None
            segmentor.aux_head = None
        self.segmentor = segmentor.eval()
        self.eval()

    @property
    def mean(self) -> torch.Tensor:
        """(1, 3, 1, 1): the per-channel mean the input is normalised with."""
        return self.segmentor.mean

    @property
    def std(self) -> torch.Tensor:
        """(1, 3, 1, 1): the per-channel standard deviation the input is normalised with."""
        return self.segmentor.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.segmentor.forward_normalised(images)["logits"]


def deployed_architecture(cfg: ExperimentConfig) -> dict:
    """The arguments of ``models.build_segmentor`` that build the deployed module of ``cfg``: the model fields of its
    head (``models.model_fields``) less those that only training reads (``TRAINING_ONLY_FIELDS``), and the data
    set's number of classes."""
    fields = [name for name in model_fields(cfg.head) if name not in TRAINING_ONLY_FIELDS]
    return {name: getattr(cfg, name) for name in fields} | {"num_classes": dataset_info(cfg.dataset).num_classes}


def build_deployed(architecture: dict) -> DeployedSegmentor:
    """The deployed module of ``architecture`` (``deployed_architecture``), with random weights.

    Raises:
        ValueError: an argument that ``build_segmentor`` does not take or a required one missing (the message lists
            those it takes), or an unknown backbone or head name (listing the valid ones).
    """
    parameters = inspect.signature(build_segmentor).parameters
    unknown = sorted(set(architecture) - set(parameters))
    missing = sorted(name for name, parameter in parameters.items()
                     if parameter.default is inspect.Parameter.empty and name not in architecture)
    if unknown or missing:
        raise ValueError(f"architecture arguments unknown {unknown}, missing {missing}; build_segmentor takes "
                         f"{list(parameters)}")
    return DeployedSegmentor(build_segmentor(**architecture))


def export_model(model: Segmentor | MaskClassificationSegmentor, cfg: ExperimentConfig, path: str | Path, *,
                 teacher: bool = False, trained_commit: str | None = None) -> Path:
    """Write the deployed form of ``model`` (trained under ``cfg``) into the folder ``path``: ``model.pt2``,
    ``state_dict.pt`` and ``model.json`` (see the module docstring); files of an earlier export there are replaced.

    The program is exported on the CPU from an example batch of two images of ``cfg.image_size`` pixels (its values
    do not matter), with the batch, the height and the width dynamic (the module docstring says how).

    Args:
        model: the trained model (``RunResult.load_model()``); it is not changed.
        cfg: the run's config, for the architecture, the data set and the run key.
        teacher: ``model`` is the run's EMA teacher (recorded in ``model.json``).
        trained_commit: the git commit the model was trained with, recorded in ``model.json`` when given.

    Returns:
        ``path``.
    """
    deployed = DeployedSegmentor(model).cpu()
    architecture = deployed_architecture(cfg)
    state = deployed.state_dict()
    load_matching_state(build_deployed(architecture), state, "the model", architecture)  # as load_deployed will
    if not hasattr(torch.export.Dim, "AUTO"):
        raise RuntimeError(f"export_model needs a torch whose torch.export has Dim.AUTO (inferred dynamic sizes); "
                           f"this is torch {torch.__version__}")
    example = torch.zeros(2, 3, cfg.image_size, cfg.image_size)
    sizes = {0: torch.export.Dim("batch", min=1), 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    program = torch.export.export(deployed, (example,), dynamic_shapes={"images": sizes})
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path / PROGRAM_NAME)
    torch.save({name: tensor.detach().clone() for name, tensor in state.items()}, path / STATE_DICT_NAME)
    info = dataset_info(cfg.dataset)
    description = {
        "format": EXPORT_FORMAT,
        "architecture": architecture,
        "input": {"name": "images", "layout": "(B, 3, H, W)", "dtype": "float32",
                  "normalisation": "(image - mean) / std per channel, the image RGB with values in [0, 1]",
                  "mean": deployed.mean.flatten().tolist(), "std": deployed.std.flatten().tolist(),
                  "sizes": program_input_sizes(program), "example_size": [cfg.image_size, cfg.image_size]},
        "output": {"layout": "(B, K, H, W)", "dtype": "float32", "scores": output_scores(cfg.head),
                   "prediction": "argmax over K"},
        "class_names": list(info.class_names), "ignore_index": info.ignore_index, "dataset": cfg.dataset,
        "method": cfg.method, "teacher": teacher, "run_key": cfg.key(), "run_hash": cfg.hash(),
        "trained_commit": trained_commit, "torch_version": torch.__version__,
        "files": {"program": PROGRAM_NAME, "state_dict": STATE_DICT_NAME},
    }
    (path / ARCHITECTURE_NAME).write_text(json.dumps(description, indent=1) + "\n", encoding="utf-8")
    return path


def export_run(result: RunResult, path: str | Path, teacher: bool = False) -> Path:
    """``export_model`` of a finished run's model (its EMA teacher with ``teacher``) into the folder ``path``."""
    return export_model(result.load_model(teacher=teacher), result.config, path, teacher=teacher,
                        trained_commit=result.trained_commit)


def output_scores(head: str) -> str:
    """What the deployed module's output of a model with ``head`` holds, in words (for ``model.json``)."""
    if head in MASK_CLASSIFICATION_HEADS:
        return ("semantic scores: the sum over queries of each query's class probability times its mask probability "
                "(MaskFormer's semantic inference), bilinearly upsampled to the input size")
    return "class logits, bilinearly upsampled to the input size"


def program_input_sizes(program: torch.export.ExportedProgram) -> dict:
    """The sizes of the input that ``program`` accepts, per dimension (``INPUT_DIMS``): ``{"min", "max"}``, max None
    when unbounded; a static dimension has min == max. These are torch's range constraints; the program checks
    further conditions (guards) on the sizes when it is called."""
    (name,) = program.graph_signature.user_inputs
    placeholder = next(node for node in program.graph.nodes if node.op == "placeholder" and node.name == name)
    sizes = {}
    for name, size in zip(INPUT_DIMS, placeholder.meta["val"].shape):
        if isinstance(size, int):
            sizes[name] = {"min": size, "max": size}
            continue
        bounds = program.range_constraints[size.node.expr]
        unbounded = math.isinf(float(bounds.upper))  # (torch's integer infinity calls itself finite)
        sizes[name] = {"min": int(bounds.lower), "max": None if unbounded else int(bounds.upper)}
    return sizes


def read_description(path: str | Path) -> dict:
    """``model.json`` of the export folder ``path``.

    Raises:
        FileNotFoundError: the folder has no ``model.json`` (the message names it). ValueError: it is not JSON, it
            is of another export format, or it lacks a key the loader reads (the message names the file).
    """
    file = Path(path) / ARCHITECTURE_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {ARCHITECTURE_NAME} in {path}: not a folder written by export_model "
                                f"(RunResult.export)")
    try:
        description = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{file} is not valid JSON ({error})") from error
    if not isinstance(description, dict) or description.get("format") != EXPORT_FORMAT:
        found = description.get("format") if isinstance(description, dict) else None
        raise ValueError(f"{file} is of export format {found!r}; this code reads format {EXPORT_FORMAT}")
    missing = sorted({"architecture", "input"} - set(description))
    if missing:
        raise ValueError(f"{file} lacks the keys {missing}")
    return description


def load_matching_state(deployed: DeployedSegmentor, state: dict, source: str, architecture: dict) -> None:
    """Load ``state`` into ``deployed`` (built from ``architecture``) strictly.

    Raises:
        ValueError: the keys or the shapes differ; the message names ``source`` and the architecture, and lists the
            missing, unexpected and misshapen keys (torch's message).
    """
    try:
        deployed.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{source} does not match the architecture {architecture}: {error}") from error


def load_deployed(path: str | Path, device: str | torch.device = "cpu") -> DeployedSegmentor:
    """The deployed module saved in the export folder ``path``, rebuilt from ``model.json`` and ``state_dict.pt``,
    in eval mode on ``device``.

    Raises:
        FileNotFoundError: ``model.json`` or ``state_dict.pt`` is missing (named). ValueError: ``model.json`` is
            damaged or names an unknown architecture (``read_description``, ``build_deployed``), or the state dict
            does not match the architecture (``load_matching_state``: the message names the file and the keys).
    """
    path = Path(path)
    description = read_description(path)
    state_file = path / STATE_DICT_NAME
    if not state_file.is_file():
        raise FileNotFoundError(f"no {STATE_DICT_NAME} in {path}; the state dict is written beside {ARCHITECTURE_NAME}")
    deployed = build_deployed(description["architecture"])
    state = torch.load(state_file, map_location="cpu", weights_only=True)
    load_matching_state(deployed, state, f"{state_file}", description["architecture"])
    return deployed.to(device).eval()


def count_forward_flops(module: nn.Module, images: torch.Tensor) -> float:
    """FLOPs of ``module(images)``, counted by ``torch.utils.flop_counter`` (convolutions, matrix products and
    attention; elementwise operations, normalisations and interpolation count 0)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:  # (under no_grad the module tracker fails on attention)
        module(images)
    return float(counter.get_total_flops())


def count_parameters(*modules: nn.Module) -> int:
    """The number of parameters of ``modules`` together."""
    return int(sum(parameter.numel() for module in modules for parameter in module.parameters()))


def prediction_parameters(model: nn.Module, images: torch.Tensor) -> int:
    """The number of parameters of ``model`` that its prediction depends on: those that get a gradient from the
    class scores (``engine.evaluate.class_probabilities``) of an eval-mode forward pass of ``images``. It measures,
    without knowing the model's parts, what ``DeployedSegmentor`` keeps by construction."""
    was_training = model.training
    scores = class_probabilities(model.eval()(images))
    model.train(was_training)
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    gradients = torch.autograd.grad(scores.sum(), parameters, allow_unused=True)
    return int(sum(parameter.numel() for parameter, gradient in zip(parameters, gradients) if gradient is not None))


def deployment_costs(cfg: ExperimentConfig) -> dict:
    """Parameters and forward FLOPs of one ``cfg.image_size`` image, of the training model and of the deployed one.

    The models are built with random weights (``cfg.pretrained`` is not loaded: counts do not depend on weights),
    under a forked random state (seed 0), so the caller's random stream is left as it was.

    Returns:
        ``model_parameters`` (the model with its projection and auxiliary heads), ``objective_parameters`` (the
        objective's own modules, e.g. RC²L's region projector), ``training_parameters`` (their sum),
        ``training_flops`` (the model in training mode, which computes the projection and auxiliary heads; the
        losses are not counted), ``deployed_parameters`` and ``deployed_flops`` (``DeployedSegmentor``), and
        ``prediction_parameters`` (``prediction_parameters`` of the model: equal to ``deployed_parameters`` when the
        deployed module keeps exactly what the prediction needs).
    """
    cfg = cfg.replace(pretrained="")
    info = dataset_info(cfg.dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(cfg)
        objective = build_objective(cfg, info.num_classes, info.ignore_index)
        image = torch.rand(1, 3, cfg.image_size, cfg.image_size)
        deployed = DeployedSegmentor(model)
        return {"model_parameters": count_parameters(model), "objective_parameters": count_parameters(objective),
                "training_parameters": count_parameters(model, objective),
                "training_flops": count_forward_flops(model.train(), image),
                "deployed_parameters": count_parameters(deployed),
                "deployed_flops": count_forward_flops(deployed, (image - deployed.mean) / deployed.std),
                "prediction_parameters": prediction_parameters(model, image)}


__all__ = ["ARCHITECTURE_NAME", "DeployedSegmentor", "EXPORT_FORMAT", "PROGRAM_NAME", "STATE_DICT_NAME",
           "build_deployed", "count_forward_flops", "count_parameters", "deployed_architecture", "deployment_costs",
           "export_model", "export_run", "load_deployed", "prediction_parameters", "read_description"]
