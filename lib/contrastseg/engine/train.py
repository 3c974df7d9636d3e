"""The training loop: SGD with a poly schedule, named loss terms logged as JSON lines, atomic checkpoints, resume.

``train(cfg, run_dir)`` is resumable: it continues from ``run_dir/last.ckpt`` when one exists, and because the batch
at each step and its augmentation depend only on (seed, step) (see ``batching``), a run that was interrupted and
resumed on the CPU ends with the same weights as one that was not.

What a run folder holds and how each file survives a crash:

* ``last.ckpt`` and ``previous.ckpt``: the newest checkpoint and the one before it (``checkpoint``: written atomically,
  loaded with ``weights_only=True``). A resume takes ``last.ckpt``; when it cannot be read or is not finite, it takes
  ``previous.ckpt`` with a warning naming both, moves the failed one to ``damaged.ckpt`` and replays the steps after
  the previous one, which gives the same weights. Temporary files of a write that was killed are deleted on resume.
  ``previous.ckpt`` is deleted once the run has its metrics.
* ``log.jsonl``: one JSON line per step, flushed and fsynced as it is written; a last line cut short by a kill is left
  out with a warning naming the file, and the log is rewritten (atomically) on resume.
* ``metrics.json``: written atomically once the run is evaluated; ``read_metrics`` names the file when it is damaged.
* ``tensorboard/``: TensorBoard event files, a view of the log and the metrics (``engine.tensorboard``): each event
  appended as it comes, all of them in the file at every checkpoint; a resumed run hides those of the steps it replays.

The divergence guard: a step whose loss terms or whose gradients' total norm are not finite takes no update, and the
run stops (``NonFiniteLossError``, ``NonFiniteGradientError``); before every checkpoint every parameter and buffer of
the model, the teacher and the objective, and the optimizer's state, is checked, and a state that is not finite is
never written: the run stops (``NonFiniteStateError``) without a checkpoint of it and without metrics. Each error
names the step and the last checkpoint, which is finite.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from contrastseg.config import ExperimentConfig
from contrastseg.data import build_dataset, check_dataset_files, dataset_info
from contrastseg.data.partitions import image_ids, split_labeled
from contrastseg.paths import resolve_data_root
from contrastseg.provenance import training_provenance
from contrastseg.engine.batching import SeededAugmentation, StepBatchSampler, augmentation
from contrastseg.engine.checkpoint import (load_checkpoint, non_finite_tensors, read_json_mapping,
                                           remove_stale_temporaries, save_checkpoint, write_text_atomically)
from contrastseg.engine.distributed import Distributed, convert_sync_batchnorm
from contrastseg.engine.evaluate import autocast_for, evaluate
from contrastseg.engine.speed import configure_kernels, memory_format, training_forward
from contrastseg.engine.tensorboard import TENSORBOARD_DIR, ScalarBoard
from contrastseg.models import build_segmentor
from contrastseg.methods import build_objective
from contrastseg.objectives import weighted_total

if TYPE_CHECKING:  # torchvision (the augmentations) and timm (the EMA teacher) load only where a run trains
    from contrastseg.engine.semi import EmaTeacher, UnlabeledViews

CHECKPOINT_NAME = "last.ckpt"
PREVIOUS_CHECKPOINT_NAME = "previous.ckpt"
DAMAGED_CHECKPOINT_NAME = "damaged.ckpt"
LOG_NAME = "log.jsonl"
METRICS_NAME = "metrics.json"
TRAINING_FILES = (CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME, LOG_NAME, METRICS_NAME)
"""The files training writes into a run folder (atomically, through temporary files beside them)."""
DATA_SEED = 0  # the synthetic data set is one fixed data set; a run's seed varies the model, order and augmentation


class NonFiniteLossError(FloatingPointError):
    """The run diverged: something became NaN or infinite, and the run stopped without writing it or metrics.

    Raised as such when a loss term is not finite (before the update); its subclasses ``NonFiniteGradientError`` and
    ``NonFiniteStateError`` say that the gradients or the training state were. The message names the step and the
    last checkpoint, whose every tensor is finite.
    """


class NonFiniteGradientError(NonFiniteLossError):
    """The loss terms were finite, but the gradients' total norm was not; the update was skipped."""


class NonFiniteStateError(NonFiniteLossError):
    """Loss and gradients were finite, but a parameter or buffer (a BatchNorm running variance, a memory bank, an
    optimizer buffer) was not when a checkpoint was due; the checkpoint was not written."""


def poly_lr(base_lr: float, step: int, total_steps: int, power: float) -> float:
    return base_lr * (1 - step / total_steps) ** power


def build_model(cfg: ExperimentConfig) -> torch.nn.Module:
    """The Segmentor of ``cfg``, with a projection head when the method needs one."""
    levels = cfg.method_config().projection_levels()
    return build_segmentor(cfg.backbone, cfg.head, dataset_info(cfg.dataset).num_classes, cfg.output_stride,
                           cfg.pretrained, proj_dim=cfg.proj_dim if levels else 0, proj_levels=max(levels, 1),
                           num_queries=cfg.num_queries, mask_dim=cfg.mask_dim, decoder_layers=cfg.decoder_layers,
                           aux_head=cfg.aux_weight > 0, reference_heads=cfg.reference_heads)


def build_split(cfg: ExperimentConfig, split: str, length: int):
    return build_dataset(cfg.dataset, split, root=resolve_data_root(cfg.data_root), image_size=cfg.image_size,
                         length=length or None, seed=DATA_SEED)


def build_training_sets(cfg: ExperimentConfig) -> tuple[Subset, Subset]:
    """The labeled and the unlabeled images of the training split under ``cfg``'s partition (no augmentation).

    Without a partition (``label_fraction`` 1, no ``partition_file``) every image is labeled, and the unlabeled set
    is the whole split again: a semi-supervised method then learns from every image both ways (the "full" setting).
    """
    images = build_split(cfg, cfg.train_split, cfg.num_train)
    labeled, unlabeled = split_labeled(image_ids(images), cfg.label_fraction, cfg.partition_file)
    return Subset(images, labeled), Subset(images, unlabeled or labeled)


def build_optimizer(cfg: ExperimentConfig, parameters) -> torch.optim.Optimizer:
    """SGD with momentum (the supervised papers) or AdamW (the mask-classification literature), at ``cfg.lr``."""
    parameters = list(parameters)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train(cfg: ExperimentConfig, run_dir: str | Path, *, progress: bool = True,
          interrupt_at: int | None = None) -> dict | None:
    """Train (or resume) the run described by ``cfg`` in ``run_dir``, then evaluate it on the val split.

    Under torchrun every process calls this; they train data-parallel (``contrastseg.engine.distributed``) and
    process 0 writes the files.

    Args:
        cfg: the experiment.
        run_dir: folder for ``last.ckpt``, ``previous.ckpt``, ``log.jsonl`` and ``metrics.json``.
        progress: show tqdm bars (on process 0).
        interrupt_at: stop after this many steps as if the process had been killed (for tests); returns None.

    Returns:
        The metrics written to ``metrics.json``: ``{"val": {...}, "steps", "train_seconds", ...}``.

    Raises:
        NonFiniteLossError: the run diverged (a loss term, the gradients' total norm, or a parameter or buffer before
            a checkpoint became NaN or inf; see the subclasses); the message names the step and the last checkpoint,
            which is finite. Nothing non-finite is written, and there is no ``metrics.json``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    world, device = start_process(cfg)
    progress = progress and world.is_main
    check_dataset_files(cfg)  # every listed image and label of the train and eval splits opens, before any step
    model, objective, optimizer, semi = build_training(cfg, device, world)
    teacher = semi.teacher if semi is not None else None
    if world.active:  # equal weights everywhere, but each process its own dropout masks
        torch.manual_seed(cfg.seed + world.rank * 1_000_003)
    if world.is_main:
        remove_stale_temporaries(run_dir, TRAINING_FILES)
    resumed = resume(cfg, run_dir, model, objective, optimizer, teacher, world)
    start_step, elapsed = resumed.step, resumed.train_seconds
    kept = SavedCheckpoint(resumed.checkpoint, resumed.step)  # the newest checkpoint; every tensor of it is finite
    forward = build_training_loss(cfg, model, objective, device, world)
    layout = memory_format(cfg.channels_last)
    loader, unlabeled_set = training_loader(cfg, start_step, device, world)
    log = StepLog(run_dir / LOG_NAME, keep_steps_below=start_step) if world.is_main else None
    board = ScalarBoard(run_dir / TENSORBOARD_DIR, start_step) if world.is_main else None  # a view of the log
    if semi is not None:
        semi.start(unlabeled_set, start_step, pin_memory=device.type == "cuda")

    model.train()
    bar = tqdm(total=cfg.steps, initial=start_step, desc=f"train {cfg.method}", disable=not progress)
    step = start_step
    for images, labels in loader:
        began = time.perf_counter()
        images = images.to(device, non_blocking=True, memory_format=layout)
        labels = labels.to(device, non_blocking=True)
        lr = poly_lr(cfg.lr, step, cfg.steps, cfg.poly_power)
        views = semi.views(step, device, layout) if semi is not None else None
        try:
            values = training_step(model, objective, optimizer, images, labels, step, lr, cfg.amp, views, teacher,
                                   forward=forward, world=world)
        except NonFiniteGradientError as error:
            raise NonFiniteGradientError(f"{error}; training stopped; {kept.describe()}") from None
        if not all(math.isfinite(v) for v in values.values()):
            raise NonFiniteLossError(non_finite_message(step, values, kept))
        step += 1
        seconds = time.perf_counter() - began
        elapsed += seconds
        # a learning-curve point: every process evaluates its share, process 0 logs it with the step
        curve = ({"val": evaluate_between_steps(cfg, model, device, world)}
                 if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps else {})
        if log is not None:
            line = {"step": step, "lr": lr, **values, "seconds": seconds, "diagnostics": objective.diagnostics(),
                    **curve}
            log.write(line)
            board.write_line(line)
        bar.update()
        bar.set_postfix(loss=f"{values['loss']:.3f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            kept = save_checked_checkpoint(cfg, run_dir, model, objective, optimizer, teacher, step, elapsed, kept,
                                           world)
            if board is not None:
                board.flush()
        if interrupt_at is not None and step >= interrupt_at and step < cfg.steps:
            bar.close()
            if board is not None:
                board.close()
            world.barrier()
            return None
    bar.close()
    return finish_run(cfg, run_dir, model, device, world, elapsed, progress, board)


def start_process(cfg: ExperimentConfig) -> tuple[Distributed, torch.device]:
    """This process's place among torchrun's processes and its device, its thread count and kernels, and the seed
    of the model's initialisation."""
    world, device = Distributed.from_environment(cfg.device)
    if world.world_size != cfg.num_devices and world.active:
        raise ValueError(f"the config asks for num_devices={cfg.num_devices}, but torchrun started "
                         f"{world.world_size} processes")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    configure_kernels(cfg.speed)
    torch.manual_seed(cfg.seed)
    return world, device


def build_training(cfg: ExperimentConfig, device: torch.device, world: Distributed = Distributed()):
    """What a run trains: the model (SyncBatchNorm under data parallelism, process 0's weights everywhere), the
    method's objective, the optimizer over both, and for a semi-supervised method its ``SemiSupervision`` (the
    EMA teacher; None otherwise).

    Returns:
        (model, objective, optimizer, semi-supervision or None).
    """
    info = dataset_info(cfg.dataset)
    model = build_model(cfg)
    if world.active and cfg.sync_bn:
        model = convert_sync_batchnorm(model, device)
    model = model.to(device)
    world.broadcast_parameters(model)
    objective = build_objective(cfg, info.num_classes, info.ignore_index).to(device)
    # objectives may own parameters (RC²L's region projector); the others have none
    optimizer = build_optimizer(cfg, [*model.parameters(), *objective.parameters()])
    semi = None
    if cfg.method_spec().semi_supervised:
        from contrastseg.engine.semi import SemiSupervision

        semi = SemiSupervision(cfg, model, world)
    return model, objective, optimizer, semi


def training_loader(cfg: ExperimentConfig, start_step: int, device: torch.device,
                    world: Distributed = Distributed()) -> tuple[DataLoader, Subset]:
    """The loader of the labeled batches from ``start_step`` on (this process's share of each), and the unlabeled
    training images (``build_training_sets``)."""
    labeled_set, unlabeled_set = build_training_sets(cfg)
    train_set = SeededAugmentation(labeled_set, augmentation(cfg), cfg.seed)
    sampler = StepBatchSampler(len(train_set), cfg.batch_size, cfg.steps, cfg.seed, start_step, world.rank,
                               world.world_size)
    # the loader's own generator keeps it from drawing its worker seed out of the global stream that dropout uses
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(cfg.seed))
    return loader, unlabeled_set


def save_checked_checkpoint(cfg: ExperimentConfig, run_dir: Path, model, objective, optimizer,
                            teacher: EmaTeacher | None, step: int, elapsed: float, kept: SavedCheckpoint,
                            world: Distributed = Distributed()) -> SavedCheckpoint:
    """Check the training state of every process and write the checkpoint of ``step`` (process 0).

    Returns:
        The new newest checkpoint.

    Raises:
        NonFiniteStateError: a process's state holds NaN or inf; nothing is written.
    """
    state = training_state(model, objective, optimizer, teacher)  # checked, then written as it is
    non_finite = non_finite_tensors(state)
    shares = world.gather_objects({"rng": random_state(), "non_finite": non_finite})
    diverged = list(dict.fromkeys(name for share in shares for name in share["non_finite"]))
    if diverged:
        raise NonFiniteStateError(non_finite_state_message(step, diverged, kept))
    if world.is_main:
        save_checkpoint(checkpoint_state(cfg, model, objective, optimizer, step, elapsed, teacher,
                                         [share["rng"] for share in shares], state=state),
                        run_dir / CHECKPOINT_NAME, previous=run_dir / PREVIOUS_CHECKPOINT_NAME)
    return SavedCheckpoint(run_dir / CHECKPOINT_NAME, step)


def finish_run(cfg: ExperimentConfig, run_dir: Path, model, device: torch.device, world: Distributed,
               elapsed: float, progress: bool, board: ScalarBoard | None = None) -> dict:
    """Evaluate the trained model and write ``metrics.json`` (process 0), then the val metrics into ``board`` at
    the last step (process 0's, closed here); the metrics."""
    metrics = {
        "val": evaluate_run(cfg, model, device, world, progress),
        "protocol": cfg.evaluation_protocol(),
        "steps": cfg.steps,
        "train_seconds": elapsed,
        "config_hash": cfg.hash(),
        "run_key": cfg.key(),
        "device": device_name(device),
        "num_devices": world.world_size,
        **({"gradient_sync": world.gradient_sync} if world.active else {}),  # how gradients were averaged
        "torch": torch.__version__,
        "deterministic": device.type == "cpu",
        **training_provenance(),
    }
    if world.is_main:
        write_text_atomically(run_dir / METRICS_NAME, json.dumps(metrics, indent=1))
        (run_dir / PREVIOUS_CHECKPOINT_NAME).unlink(missing_ok=True)  # the final checkpoint is last.ckpt
    if board is not None:
        board.write_metrics(cfg.steps, metrics["val"], dataset_info(cfg.dataset).class_names)
        board.close()
    world.barrier()
    return metrics


def evaluate_run(cfg: ExperimentConfig, model: torch.nn.Module, device: torch.device,
                 world: Distributed = Distributed(), progress: bool = True) -> dict:
    """The metrics of ``model`` under ``cfg``'s evaluation protocol (split, scales, flip, window, boundary width);
    under data parallelism each process evaluates its share and the counts are summed."""
    info = dataset_info(cfg.dataset)
    val_set = build_split(cfg, cfg.eval_split, cfg.num_val)
    if world.active:
        val_set = Subset(val_set, range(world.rank, len(val_set), world.world_size))
    return evaluate(model, val_set, info.num_classes, batch_size=max(cfg.batch_size // world.world_size, 1),
                    device=device, boundary_width=cfg.boundary_width, ignore_index=info.ignore_index, amp=cfg.amp,
                    progress=progress, scales=cfg.evaluation_scales(), flip=cfg.eval_flip,
                    window=cfg.evaluation_window(), world=world)


CURVE_METRICS = ("miou", "pixel_accuracy", "boundary_iou")


def evaluate_between_steps(cfg: ExperimentConfig, model: torch.nn.Module, device: torch.device,
                           world: Distributed = Distributed()) -> dict:
    """A learning-curve point: ``CURVE_METRICS`` of ``model`` on val, in the middle of training. The random state
    is kept as it was (the val loader draws a seed from it), so a run with a curve trains exactly like one without."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        val = evaluate_run(cfg, model, device, world, progress=False)
    return {name: val[name] for name in CURVE_METRICS}


class StepLoss(NamedTuple):
    """What ``TrainingLoss`` returns for one step.

    Attributes:
        total: the weighted total loss, () float, with gradient (the only tensor that has one, so that under DDP the
            search for unused parameters starts from what the backward will actually reach).
        terms: every unweighted term by name, () float each, detached.
        outputs: the student's outputs on the labeled images, detached (what ``objective.after_step`` reads).
    """

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    outputs: dict


class TrainingLoss(nn.Module):
    """The student model and the objective as one module, whose forward is a training step's forward: the module
    that DistributedDataParallel wraps (``Distributed.data_parallel``), so that the objective's own parameters are
    averaged with the model's and a semi-supervised step's two student passes are one forward to DDP's reducer.

    ``forward(images, labels, step, unlabeled, teacher, amp)`` runs the student on the labeled images and, given
    ``unlabeled`` views and the EMA ``teacher``, the student on the CutMix-ed strong views and the teacher on the
    weak views (no gradient), all under bf16 autocast on CUDA (``amp``); then the objective (outside autocast) and
    ``weighted_total``; it returns a ``StepLoss``. The teacher is an argument, not a submodule, so it is never a DDP
    parameter; ``state_dict`` is never taken of this module (the loop saves the model's and the objective's own).

    Args:
        model: the student (a Segmentor); a submodule, ``student``.
        objective: the method's objective; a submodule, ``objective``.
        run_student: the callable that runs the student (``speed.training_forward``: the model or its compiled form;
            default the model).

    Shape:
        images: (B, 3, H, W) float; labels: (B, H, W) int64.
    """

    def __init__(self, model: nn.Module, objective: nn.Module, run_student=None):
        super().__init__()
        self.student, self.objective = model, objective
        # kept out of the module tree: a compiled student shares the student's parameters, registered once above
        object.__setattr__(self, "run_student", model if run_student is None else run_student)

    def forward(self, images: torch.Tensor, labels: torch.Tensor, step: int, unlabeled: UnlabeledViews | None = None,
                teacher: EmaTeacher | None = None, amp: bool = True) -> StepLoss:
        with autocast_for(images.device, amp):
            outputs = self.run_student(images)
            unlabeled_outputs = unlabeled.outputs(self.run_student, teacher) if unlabeled is not None else None
        terms = self.objective(outputs, labels, step, unlabeled_outputs)
        total = weighted_total(terms, self.objective.weights(step))
        return StepLoss(total, {name: value.detach() for name, value in terms.items()}, detached(outputs))


def detached(value):
    """``value`` with every tensor in it detached (dicts, lists and tuples are followed; anything else is kept)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, dict):
        return {key: detached(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(detached(item) for item in value)
    return value


def build_training_loss(cfg: ExperimentConfig, model: nn.Module, objective: nn.Module, device: torch.device,
                        world: Distributed = Distributed()) -> nn.Module:
    """The module a run's training steps go through: ``TrainingLoss`` of ``model`` (in channels-last and compiled
    as ``cfg`` asks, ``speed.training_forward``) and ``objective``, wrapped in DistributedDataParallel when
    ``world`` trains data-parallel with ``gradient_sync`` "ddp" (``Distributed.data_parallel``)."""
    loss = TrainingLoss(model, objective, training_forward(model, cfg.channels_last, cfg.compile))
    return world.data_parallel(loss, device)


def training_step(model, objective, optimizer, images: torch.Tensor, labels: torch.Tensor, step: int, lr: float,
                  amp: bool = True, unlabeled: UnlabeledViews | None = None,
                  teacher: EmaTeacher | None = None, forward: nn.Module | None = None,
                  world: Distributed = Distributed()) -> dict[str, float]:
    """One optimisation step: forward (bf16 autocast on CUDA), named loss terms, backward, update, memory writes.

    With ``unlabeled`` views and a ``teacher`` (a semi-supervised method), the student also sees the CutMix-ed
    strong views and the teacher the weak ones (no gradient); the objective gets both outputs and the boxes as its
    ``unlabeled`` argument (``engine.semi.UnlabeledOutputs``), and the teacher follows the student after the update.

    The update is skipped when a term is not finite, so the weights stay those of the last good step; the caller
    sees it in the returned values. When the terms are finite but the gradients' total norm (``gradient_norm``) is
    not, the update is skipped too and ``NonFiniteGradientError`` is raised. On CUDA the step ends with a
    synchronisation, so the wall time around it is the step's time.

    ``forward`` is the module the step's forward goes through: a ``TrainingLoss`` of ``model`` and ``objective``
    (``build_training_loss``: with the student compiled when the config asks, and wrapped in DistributedDataParallel
    under data parallelism); default ``TrainingLoss(model, objective)``. ``model`` itself is what the teacher
    follows. Under data parallelism (``world``) the values are the means over processes, so every process skips or
    takes the update alike, and the gradients are averaged over processes before the update (by DDP during the
    backward, else by ``Distributed.average_gradients`` after it), so every process sees the same gradient norm.

    Returns:
        Every term's value by name, and "loss" (the weighted total).
    """
    forward = TrainingLoss(model, objective) if forward is None else forward
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = forward(images, labels, step, unlabeled, teacher, amp)
    values = {name: value.item() for name, value in loss.terms.items()} | {"loss": loss.total.item()}
    values = world.mean_values(values, images.device)
    if all(math.isfinite(v) for v in values.values()):
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        if not isinstance(forward, DistributedDataParallel):  # DDP averaged them during the backward
            world.average_gradients(parameters)
        norm = gradient_norm(parameters)
        if not math.isfinite(norm):
            raise NonFiniteGradientError(f"the gradients' total norm is not finite at step {step + 1} "
                                         f"(norm={norm}, loss={values['loss']:.4g}); the update was skipped")
        optimizer.step()
        objective.after_step(loss.outputs, labels)
        if teacher is not None:
            teacher.update(model, step)
        if images.device.type == "cuda":
            torch.cuda.synchronize(images.device)
    return values


def gradient_norm(parameters) -> float:
    """The total 2-norm of the parameters' gradients (those without one left out; 0.0 when none has one), reduced
    in float64, so that it is not finite exactly when a gradient element is NaN or infinite."""
    gradients = [p.grad for p in parameters if p.grad is not None]
    if not gradients:
        return 0.0
    norms = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float64) for g in gradients])
    return torch.linalg.vector_norm(norms).item()


class Resumed(NamedTuple):
    """Where a run continues: its step, training seconds so far, and the checkpoint it continues from (None: from
    the start)."""

    step: int
    train_seconds: float
    checkpoint: Path | None


class SavedCheckpoint(NamedTuple):
    """The newest checkpoint of a run as the training loop knows it: its path (None: none yet) and step."""

    path: Path | None
    step: int

    def describe(self) -> str:
        if self.path is None:
            return "no checkpoint had been written yet"
        return f"the last good checkpoint is {self.path} (step {self.step}), whose every tensor is finite"


def training_state(model, objective, optimizer, teacher: EmaTeacher | None = None) -> dict:
    """The state that a checkpoint keeps and the divergence guard checks: the model's, the objective's (memory
    banks, own parameters), the optimizer's and the teacher's (None without one) state dicts."""
    return {"model": model.state_dict(), "objective": objective.state_dict(), "optimizer": optimizer.state_dict(),
            "teacher": teacher.state_dict() if teacher is not None else None}


def usable_checkpoint(run_dir: Path, set_aside: bool = True) -> tuple[Path, dict] | None:
    """The newest checkpoint of ``run_dir`` that reads back and is finite, and its state: ``last.ckpt``, else
    ``previous.ckpt`` (with a warning that names both); None when the folder has neither.

    Args:
        set_aside: move a failed ``last.ckpt`` to ``damaged.ckpt`` when ``previous.ckpt`` takes over, so that the
            next checkpoint does not turn it into ``previous.ckpt`` (process 0 does; the others only read).

    Raises:
        RuntimeError: checkpoints exist, but none reads back finite; the message names each and why.
    """
    failed = []
    for name in (CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME):
        path = run_dir / name
        try:
            state = load_checkpoint(path)
        except FileNotFoundError:
            continue
        except RuntimeError as error:
            failed.append((path, str(error)))
            continue
        non_finite = non_finite_tensors({key: state.get(key) for key in ("model", "objective", "optimizer",
                                                                          "teacher")})
        if non_finite:
            failed.append((path, f"checkpoint {path} holds {len(non_finite)} tensor(s) with NaN or inf values, "
                                 f"e.g. {', '.join(non_finite[:3])}"))
            continue
        if name == PREVIOUS_CHECKPOINT_NAME:
            reason = failed[0][1] if failed else f"there is no {run_dir / CHECKPOINT_NAME} (a write was interrupted)"
            moved = ""
            if failed and set_aside:
                os.replace(failed[0][0], run_dir / DAMAGED_CHECKPOINT_NAME)
                moved = f"; the failed file is now {run_dir / DAMAGED_CHECKPOINT_NAME}"
            warnings.warn(f"{reason}; the run continues from {path} (step {state.get('step')}) and replays the steps "
                          f"after it{moved}", stacklevel=3)
        return path, state
    if failed:
        raise RuntimeError(f"no checkpoint of {run_dir} can be resumed from: "
                           + "; ".join(reason for _, reason in failed) + "; delete them to train the run afresh")
    return None


def resume(cfg: ExperimentConfig, run_dir: Path, model, objective, optimizer,
           teacher: EmaTeacher | None = None, world: Distributed = Distributed()) -> Resumed:
    """Load the newest usable checkpoint (``usable_checkpoint``: ``last.ckpt``, else ``previous.ckpt``) into
    model, objective (memory banks), optimizer and teacher, and this process's random state (a checkpoint holds one
    per process).

    Returns:
        (step, training seconds so far, the checkpoint's path); (0, 0.0, None) without a checkpoint.
    """
    found = usable_checkpoint(run_dir, set_aside=world.is_main)
    if found is None:
        return Resumed(0, 0.0, None)
    path, state = found
    if state.get("config_hash") != cfg.hash():
        raise ValueError(f"checkpoint {path} belongs to run key {state.get('config_hash')}, not {cfg.hash()}")
    if len(state["rng"]) != world.world_size:
        raise ValueError(f"checkpoint {path} holds the random state of {len(state['rng'])} process(es), "
                         f"but the run has {world.world_size}")
    model.load_state_dict(state["model"])
    objective.load_state_dict(state["objective"])
    optimizer.load_state_dict(state["optimizer"])
    if teacher is not None:
        teacher.load_state_dict(state["teacher"])
    # dropout and other in-model randomness continue where they were, each process from its own state
    rng = state["rng"][world.rank]
    torch.set_rng_state(rng["cpu"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return Resumed(state["step"], state.get("train_seconds", 0.0), path)


def random_state() -> dict:
    """This process's torch random state (CPU, and every CUDA device when there are any)."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def checkpoint_state(cfg: ExperimentConfig, model, objective, optimizer, step: int, elapsed: float,
                     teacher: EmaTeacher | None = None, rng: list[dict] | None = None,
                     state: dict | None = None) -> dict:
    """Everything a resume needs, as tensors and plain values (it loads with ``weights_only=True``): the
    ``training_state`` (``state`` when the caller has built it already), the step, ``rng`` (one ``random_state()``
    per process, by rank; default: this one's), the training seconds, the config as a dict and its hash."""
    state = state if state is not None else training_state(model, objective, optimizer, teacher)
    return state | {
        "step": step, "rng": rng if rng is not None else [random_state()],
        "train_seconds": elapsed, "config": cfg.to_dict(), "config_hash": cfg.hash()}


def load_trained_model(cfg: ExperimentConfig, run_dir: str | Path, device: str = "cpu",
                       teacher: bool = False) -> torch.nn.Module:
    """The model of a finished (or checkpointed) run, in eval mode; its EMA teacher with ``teacher=True``.

    It is read from ``last.ckpt`` only (a finished run's final state; ``previous.ckpt`` holds an earlier step)."""
    model = build_model(cfg)
    state = load_checkpoint(Path(run_dir) / CHECKPOINT_NAME)
    if teacher:
        if state.get("teacher") is None:
            raise ValueError(f"run {run_dir} has no teacher: method {cfg.method!r} is not semi-supervised")
        prefix = "module."  # EmaTeacher keeps the averaged model as its submodule "module"
        model.load_state_dict({key[len(prefix):]: value for key, value in state["teacher"].items()
                               if key.startswith(prefix)})
    else:
        model.load_state_dict(state["model"])
    return model.to(device).eval()


def non_finite_message(step: int, values: dict, kept: SavedCheckpoint) -> str:
    """The error of a step whose loss terms are not finite (``step`` counted from 0)."""
    terms = ", ".join(f"{name}={value:.4g}" for name, value in values.items())
    return f"loss is not finite at step {step + 1} ({terms}); training stopped before the update; {kept.describe()}"


def non_finite_state_message(step: int, names: list[str], kept: SavedCheckpoint) -> str:
    """The error of a checkpoint not written because tensors ``names`` of the training state are not finite
    (``step`` counted from 1, as checkpoints are)."""
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (f"the training state is not finite at step {step} ({len(names)} tensor(s) with NaN or inf values: "
            f"{shown}), although loss and gradients were; the run diverged between step {kept.step} and step "
            f"{step}; the checkpoint of step {step} was not written; {kept.describe()}")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


class StepLog:
    """A JSON-lines log of training steps; on resume, lines past the checkpoint are dropped so no step appears twice.

    A line holds "step", "lr", every loss term and "loss" (flat), "seconds", and "diagnostics": the objective's counts
    of that step's forward (``diagnostics()``, process 0's batch), a dict by name. Each line is flushed and fsynced
    as it is written; the rewrite on resume is atomic, and drops a last line cut short (``log_lines``).
    """

    def __init__(self, path: Path, keep_steps_below: int):
        self.path = path
        kept = [text for text, record in log_lines(path) if record["step"] <= keep_steps_below]
        write_text_atomically(path, "".join(text + "\n" for text in kept))

    def write(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
            stream.flush()
            os.fsync(stream.fileno())


def log_lines(path: Path) -> list[tuple[str, dict]]:
    """(text, record) of every line of the step log ``path``, oldest first; [] without the file.

    A last line that is not a JSON record (cut short when the process was killed or the disk was full) is left out
    with a warning that names the file.

    Raises:
        ValueError: a line before the last is not a JSON record; the message names the file and the line.
    """
    if not path.exists():
        return []
    numbered = [(number, text) for number, text in enumerate(path.read_text(encoding="utf-8", errors="replace")
                                                              .splitlines(), 1) if text.strip()]
    lines = []
    for position, (number, text) in enumerate(numbered):
        try:
            record = json.loads(text)
            if not isinstance(record, dict) or "step" not in record:
                raise ValueError("not a step record")
        except ValueError as error:
            if position == len(numbered) - 1:
                warnings.warn(f"the last line ({number}) of the step log {path} is cut short (the process was killed "
                              f"or the disk was full while writing it); it is left out", stacklevel=3)
                break
            raise ValueError(f"line {number} of the step log {path} is damaged ({error}); delete the run folder to "
                             f"train it afresh") from error
        lines.append((text, record))
    return lines


def read_log(run_dir: str | Path) -> list[dict]:
    """The logged steps of a run, oldest first (a last line cut short is left out, with a warning)."""
    return [record for _, record in log_lines(Path(run_dir) / LOG_NAME)]


def read_metrics(run_dir: str | Path) -> dict:
    """The ``metrics.json`` of a finished run.

    Raises:
        FileNotFoundError: the run has not finished.
        ValueError: the file is damaged; the message names it.
    """
    path = Path(run_dir) / METRICS_NAME
    try:
        metrics = read_json_mapping(path)
    except ValueError as error:
        raise ValueError(f"the metrics file {path} is damaged ({error}); delete it to evaluate the run again from "
                         f"its checkpoint, or retrain the run (force=True)") from error
    return metrics
