"""The training loop: SGD with a poly schedule, named loss terms logged as JSON lines, atomic checkpoints, resume.

``train(cfg, run_dir)`` is resumable: it continues from ``run_dir/last.ckpt`` when one exists, and because the batch
at each step and its augmentation depend only on (seed, step) (see ``batching``), a run that was interrupted and
resumed on the CPU ends with the same weights as one that was not.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from contrastseg.config import ExperimentConfig
from contrastseg.data import build_dataset, dataset_info
from contrastseg.data.partitions import image_ids, split_labeled
from contrastseg.paths import resolve_data_root
from contrastseg.provenance import training_provenance
from contrastseg.engine.batching import SeededAugmentation, StepBatchSampler
from contrastseg.engine.checkpoint import load_checkpoint, save_checkpoint
from contrastseg.engine.distributed import Distributed, convert_sync_batchnorm
from contrastseg.engine.evaluate import autocast_for, evaluate
from contrastseg.engine.speed import configure_kernels, memory_format, training_forward
from contrastseg.models import build_segmentor
from contrastseg.objectives import OBJECTIVES, build_objective, weighted_total
from contrastseg.registry import lookup

if TYPE_CHECKING:  # torchvision (the augmentations) and timm (the EMA teacher) load only where a run trains
    from contrastseg.engine.semi import CutMix, EmaTeacher

CHECKPOINT_NAME = "last.ckpt"
LOG_NAME = "log.jsonl"
METRICS_NAME = "metrics.json"
DATA_SEED = 0  # the synthetic data set is one fixed data set; a run's seed varies the model, order and augmentation


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the run stopped before the update, and the last checkpoint is intact."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for, but torch sees no CUDA device; use device='auto' or 'cpu'")
    return torch.device(name)


def poly_lr(base_lr: float, step: int, total_steps: int, power: float) -> float:
    return base_lr * (1 - step / total_steps) ** power


def build_model(cfg: ExperimentConfig) -> torch.nn.Module:
    """The Segmentor of ``cfg``, with a projection head when the method needs one."""
    levels = lookup(OBJECTIVES, cfg.method, "method").projection_levels(cfg)
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


def augmentation(cfg: ExperimentConfig):
    """The training images' joint augmentation under ``cfg``: crop size, rescale range and its base size."""
    from contrastseg.data.transforms import train_transform

    return train_transform(cfg.crop_size(), (cfg.scale_min, cfg.scale_max), base_size=cfg.base_size or None)


def build_optimizer(cfg: ExperimentConfig, parameters) -> torch.optim.Optimizer:
    """SGD with momentum (the supervised papers) or AdamW (the mask-classification literature), at ``cfg.lr``."""
    parameters = list(parameters)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def unlabeled_batches(cfg: ExperimentConfig, unlabeled: Subset, start_step: int, pin_memory: bool,
                      world: Distributed = Distributed()):
    """An iterator of (weak, strong) batches of unlabeled images for steps ``start_step ..``, seeded like the rest
    (this process's share of each under data parallelism)."""
    from contrastseg.data.transforms import WeakStrongViews, strong_photometric

    batch_size = cfg.unlabeled_batch_size or cfg.batch_size
    seed = cfg.seed + 7919  # the unlabeled stream must not repeat the labeled one's order and augmentation
    views = SeededAugmentation(unlabeled, WeakStrongViews(augmentation(cfg), strong_photometric()),
                               seed)
    sampler = StepBatchSampler(len(views), batch_size, cfg.steps, seed, start_step, world.rank, world.world_size)
    return iter(DataLoader(views, batch_sampler=sampler, num_workers=cfg.num_workers, pin_memory=pin_memory,
                           generator=torch.Generator().manual_seed(seed)))


def train(cfg: ExperimentConfig, run_dir: str | Path, *, progress: bool = True,
          interrupt_at: int | None = None) -> dict | None:
    """Train (or resume) the run described by ``cfg`` in ``run_dir``, then evaluate it on the val split.

    Under torchrun every process calls this; they train data-parallel (``contrastseg.engine.distributed``) and
    process 0 writes the files.

    Args:
        cfg: the experiment.
        run_dir: folder for ``last.ckpt``, ``log.jsonl`` and ``metrics.json``.
        progress: show tqdm bars (on process 0).
        interrupt_at: stop after this many steps as if the process had been killed (for tests); returns None.

    Returns:
        The metrics written to ``metrics.json``: ``{"val": {...}, "steps", "train_seconds", ...}``.

    Raises:
        NonFiniteLossError: a loss term became NaN or inf; the message names the step and the last good checkpoint.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    world, device = Distributed.from_environment(cfg.device)
    if world.world_size != cfg.num_devices and world.active:
        raise ValueError(f"the config asks for num_devices={cfg.num_devices}, but torchrun started "
                         f"{world.world_size} processes")
    progress = progress and world.is_main
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    configure_kernels(cfg.speed)
    torch.manual_seed(cfg.seed)
    info = dataset_info(cfg.dataset)

    model = build_model(cfg)
    if world.active and cfg.sync_bn:
        model = convert_sync_batchnorm(model, device)
    model = model.to(device)
    world.broadcast_parameters(model)
    objective = build_objective(cfg, info.num_classes, info.ignore_index).to(device)
    # objectives may own parameters (RC²L's region projector); the others have none
    optimizer = build_optimizer(cfg, [*model.parameters(), *objective.parameters()])
    teacher = None
    if objective.semi_supervised:
        from contrastseg.engine.semi import CutMix, EmaTeacher

        teacher = EmaTeacher(model, cfg.ema_momentum)
    if world.active:  # equal weights everywhere, but each process its own dropout masks
        torch.manual_seed(cfg.seed + world.rank * 1_000_003)
    start_step, elapsed = resume(cfg, run_dir, model, objective, optimizer, teacher, world)
    forward = training_forward(model, cfg.channels_last, cfg.compile)
    layout = memory_format(cfg.channels_last)

    labeled_set, unlabeled_set = build_training_sets(cfg)
    train_set = SeededAugmentation(labeled_set, augmentation(cfg), cfg.seed)
    sampler = StepBatchSampler(len(train_set), cfg.batch_size, cfg.steps, cfg.seed, start_step, world.rank,
                               world.world_size)
    # the loader's own generator keeps it from drawing its worker seed out of the global stream that dropout uses
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(cfg.seed))
    log = StepLog(run_dir / LOG_NAME, keep_steps_below=start_step) if world.is_main else None
    unlabeled = (unlabeled_batches(cfg, unlabeled_set, start_step, device.type == "cuda", world)
                 if teacher else None)

    model.train()
    bar = tqdm(total=cfg.steps, initial=start_step, desc=f"train {cfg.method}", disable=not progress)
    step = start_step
    for images, labels in loader:
        began = time.perf_counter()
        images = images.to(device, non_blocking=True, memory_format=layout)
        labels = labels.to(device, non_blocking=True)
        lr = poly_lr(cfg.lr, step, cfg.steps, cfg.poly_power)
        views = None
        if teacher is not None:
            weak, strong = (view.to(device, non_blocking=True, memory_format=layout) for view in next(unlabeled))
            boxes = CutMix.draw(len(strong), *strong.shape[-2:], cfg.cutmix_probability, cfg.seed,
                                step * world.world_size + world.rank, device)
            views = UnlabeledViews(weak, strong, boxes)
        values = training_step(model, objective, optimizer, images, labels, step, lr, cfg.amp, views, teacher,
                               forward=forward, world=world)
        if not all(math.isfinite(v) for v in values.values()):
            raise NonFiniteLossError(non_finite_message(step, values, run_dir / CHECKPOINT_NAME))
        step += 1
        seconds = time.perf_counter() - began
        elapsed += seconds
        # a learning-curve point: every process evaluates its share, process 0 logs it with the step
        curve = ({"val": evaluate_between_steps(cfg, model, device, world)}
                 if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps else {})
        if log is not None:
            log.write({"step": step, "lr": lr, **values, "seconds": seconds, "diagnostics": objective.diagnostics(),
                       **curve})
        bar.update()
        bar.set_postfix(loss=f"{values['loss']:.3f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            rng = world.gather_objects(random_state())  # every process takes part; process 0 writes
            if world.is_main:
                save_checkpoint(checkpoint_state(cfg, model, objective, optimizer, step, elapsed, teacher, rng),
                                run_dir / CHECKPOINT_NAME)
        if interrupt_at is not None and step >= interrupt_at and step < cfg.steps:
            bar.close()
            world.barrier()
            return None
    bar.close()

    metrics = {
        "val": evaluate_run(cfg, model, device, world, progress),
        "protocol": cfg.evaluation_protocol(),
        "steps": cfg.steps,
        "train_seconds": elapsed,
        "config_hash": cfg.hash(),
        "run_key": cfg.key(),
        "device": device_name(device),
        "num_devices": world.world_size,
        "torch": torch.__version__,
        "deterministic": device.type == "cpu",
        **training_provenance(),
    }
    if world.is_main:
        (run_dir / METRICS_NAME).write_text(json.dumps(metrics, indent=1))
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


@dataclass
class UnlabeledViews:
    """A step's unlabeled images: weak views (teacher), strong views before CutMix (student), and the CutMix boxes.

    Shape:
        weak, strong: (B, 3, H, W) float in [0, 1].
    """

    weak: torch.Tensor
    strong: torch.Tensor
    cutmix: CutMix


def training_step(model, objective, optimizer, images: torch.Tensor, labels: torch.Tensor, step: int, lr: float,
                  amp: bool = True, unlabeled: UnlabeledViews | None = None,
                  teacher: EmaTeacher | None = None, forward=None,
                  world: Distributed = Distributed()) -> dict[str, float]:
    """One optimisation step: forward (bf16 autocast on CUDA), named loss terms, backward, update, memory writes.

    With ``unlabeled`` views and a ``teacher`` (semi-supervised objectives), the student also sees the CutMix-ed
    strong views (``outputs["unlabeled"]``), the teacher the weak ones (``outputs["teacher"]``, no gradient), the
    objective gets the boxes as ``outputs["cutmix"]``, and the teacher follows the student after the update.

    The update is skipped when a term is not finite, so the weights stay those of the last good step; the caller
    sees it in the returned values. On CUDA the step ends with a synchronisation, so the wall time around it is the
    step's time.

    ``forward`` is the callable that runs the student (``speed.training_forward``: the model, or its compiled
    form); ``model`` itself is what the teacher follows. Under data parallelism (``world``) the values are the
    means over processes, so every process skips or takes the update alike, and the gradients are averaged over
    processes before it.

    Returns:
        Every term's value by name, and "loss" (the weighted total).
    """
    forward = model if forward is None else forward
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast_for(images.device, amp):
        outputs = forward(images)
        if unlabeled is not None:
            outputs["unlabeled"] = forward(unlabeled.cutmix.mix_with_partner(unlabeled.strong))
            outputs["teacher"] = teacher(unlabeled.weak)
            outputs["cutmix"] = unlabeled.cutmix
    terms = objective(outputs, labels, step)
    total = weighted_total(terms, objective.weights(step))
    values = {name: value.item() for name, value in terms.items()} | {"loss": total.item()}
    values = world.mean_values(values, images.device)
    if all(math.isfinite(v) for v in values.values()):
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        world.average_gradients([p for group in optimizer.param_groups for p in group["params"]])
        optimizer.step()
        objective.after_step(outputs, labels)
        if teacher is not None:
            teacher.update(model, step)
        if images.device.type == "cuda":
            torch.cuda.synchronize(images.device)
    return values


def resume(cfg: ExperimentConfig, run_dir: Path, model, objective, optimizer,
           teacher: EmaTeacher | None = None, world: Distributed = Distributed()) -> tuple[int, float]:
    """Load ``last.ckpt`` into model, objective (memory banks), optimizer and teacher if it exists, and this
    process's random state (a checkpoint holds one per process).

    Returns:
        (step, training seconds so far); (0, 0.0) without a checkpoint.
    """
    path = run_dir / CHECKPOINT_NAME
    if not path.exists():
        return 0, 0.0
    state = load_checkpoint(path)
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
    return state["step"], state.get("train_seconds", 0.0)


def random_state() -> dict:
    """This process's torch random state (CPU, and every CUDA device when there are any)."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def checkpoint_state(cfg: ExperimentConfig, model, objective, optimizer, step: int, elapsed: float,
                     teacher: EmaTeacher | None = None, rng: list[dict] | None = None) -> dict:
    """Everything a resume needs; ``rng`` holds one ``random_state()`` per process, by rank (default: this one's)."""
    return {"model": model.state_dict(), "objective": objective.state_dict(), "optimizer": optimizer.state_dict(),
            "teacher": teacher.state_dict() if teacher is not None else None, "step": step,
            "rng": rng if rng is not None else [random_state()],
            "train_seconds": elapsed, "config": cfg.to_dict(), "config_hash": cfg.hash()}


def load_trained_model(cfg: ExperimentConfig, run_dir: str | Path, device: str = "cpu",
                       teacher: bool = False) -> torch.nn.Module:
    """The model of a finished (or checkpointed) run, in eval mode; its EMA teacher with ``teacher=True``."""
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


def non_finite_message(step: int, values: dict, checkpoint: Path) -> str:
    terms = ", ".join(f"{name}={value:.4g}" for name, value in values.items())
    if checkpoint.exists():
        kept = f"the last good checkpoint is {checkpoint} (step {load_checkpoint(checkpoint)['step']})"
    else:
        kept = "no checkpoint had been written yet"
    return f"loss is not finite at step {step + 1} ({terms}); training stopped before the update; {kept}"


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


class StepLog:
    """A JSON-lines log of training steps; on resume, lines past the checkpoint are dropped so no step appears twice.

    A line holds "step", "lr", every loss term and "loss" (flat), "seconds", and "diagnostics": the objective's counts
    of that step's forward (``diagnostics()``, process 0's batch), a dict by name.
    """

    def __init__(self, path: Path, keep_steps_below: int):
        self.path = path
        kept = []
        if path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= keep_steps_below]
        path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with self.path.open("a") as stream:
            stream.write(json.dumps(record) + "\n")


def read_log(run_dir: str | Path) -> list[dict]:
    """The logged steps of a run, oldest first."""
    path = Path(run_dir) / LOG_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
