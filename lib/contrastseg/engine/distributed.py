"""Data-parallel training under torchrun: one process per device, gradients averaged over processes every step.

``python -m contrastseg.train`` started by ``torchrun --nproc-per-node N`` (or across nodes with torchrun's usual
``--nnodes``, ``--node-rank`` and ``--rdzv-endpoint`` flags) finds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its
environment; ``Distributed.from_environment`` joins the process group (NCCL on GPUs, gloo on CPUs) and picks the
device ``cuda:LOCAL_RANK``. Without those variables it is a world of one and every method below is a no-op, so the
engine has one code path.

How the work is split (the semantics a user has to know):

* ``batch_size`` is the global batch: at step s every process takes its contiguous share of the batch that a single
  process would draw at step s, with the same per-sample augmentation, so the images seen are those of
  the single-process run (``batching.StepBatchSampler``'s rank and world size). ``batch_size`` must divide by the
  number of processes.
* Gradients are averaged over processes during the backward, by ``torch.nn.parallel.DistributedDataParallel``
  (DDP), over every parameter the optimizer holds, model and objective alike (RC²L's region projector is one). DDP
  wraps ``engine.train.TrainingLoss``, one module that holds the student model and the objective: its forward runs
  the student on the labeled images and, for a semi-supervised method, on the CutMix-ed strong views too (both
  passes inside the one wrapped forward, so the reducer sees one forward per backward), the EMA teacher on the weak
  views (an argument of the forward, not a submodule: never a DDP parameter, never broadcast), and the objective;
  it returns the weighted total loss with gradient and the terms and outputs detached. DDP's reducer all-reduces
  the gradients in buckets (``bucket_cap_mb``, 25 MB; the first 1 MB) while the backward still runs, so the
  communication of the late layers' gradients overlaps the computation of the early layers'.
* How DDP is set up (``Distributed.data_parallel``): ``find_unused_parameters=True``, because a parameter may get no
  gradient on one process (a head whose term had no pixels there, a term whose weight is 0 during a warm-up); the
  reducer then searches the graph of the total loss every step (one traversal, on the CPU) and counts such a
  parameter as a zero gradient on that process. A parameter with a gradient on some process ends with the mean on
  every process (so the optimizer treats it alike everywhere); one without a gradient on every process keeps
  ``grad=None``, as in a single-process run (torch prints once that it found no unused parameter when a step
  has none: expected, since other steps may). No buffer broadcast at each forward (``forward_sync_buffers=False``,
  ``broadcast_buffers=False`` in older torch versions): each process keeps its own BatchNorm
  running statistics when ``sync_bn`` is off (with it they are equal anyway), and memory banks, equal on every
  process by construction, are not sent again at every forward. Checkpoints, the EMA teacher, evaluation and
  ``objective.after_step`` use the unwrapped model and objective, so ``state_dict`` keys carry no ``module.`` prefix
  and checkpoints load as they always have. Gradients are read after the backward, reduced, so the divergence guard
  (``engine.train.gradient_norm``) sees the same norm on every process and every process skips alike. bf16 autocast
  covers the student and teacher passes inside the wrapped forward, not the objective (as without DDP). With
  ``compile``, the student inside the wrapped forward is ``torch.compile``'d (``speed.training_forward``); because
  it runs inside DDP's forward, dynamo's DDP optimizer splits its graph at the bucket boundaries, so the overlap is
  kept.
* ``CONTRASTSEG_GRADIENT_SYNC`` (``GRADIENT_SYNC_ENV``; read by ``Distributed.from_environment``, which checks the
  value) chooses how gradients are synchronised: ``ddp`` (the default, above) or ``allreduce``: the model is not
  wrapped, and after the whole backward every gradient is averaged in one flattened all-reduce
  (``average_gradients``), with the same treatment of missing gradients and no overlap with the backward (one
  all-reduce of 260 MB per step for HRNet-W48 in float32). Both give the same update up to the order of float
  additions (DDP divides by the number of processes before summing, ``allreduce`` after). The choice is not part
  of the run key: it changes how the mean is computed, not what is computed. ``benchmarks/step_time.py
  --gradient-sync ddp allreduce`` times both side by side under torchrun.
* What DDP cannot serve: no case of this project; ``allreduce`` stays as the comparison and as the fallback for
  one condition that DDP adds. Its bucket all-reduces and the collectives in the backward of synchronised BatchNorm
  (``SyncBatchNorm``, ``CpuSyncBatchNorm``) share one process group, so every process must issue them in the same
  order. With the same graph on every process this holds: the BatchNorm backwards run in the same order everywhere,
  and buckets are launched in bucket order once their gradients are there. A parameter that the loss reaches on
  some processes only (where it is unused, DDP marks it ready at the backward's first gradient) can make its bucket
  ready at a different moment on different processes, and torch does not promise that the bucket's all-reduce then
  keeps its place among the BatchNorm collectives; where it does not, the processes pair collectives that do not
  match, or wait on each other. With a parameter reached on process 0 only and synchronised BatchNorm, on two gloo
  processes (``tests/test_distributed.py``), the order held and the gradients are right. The objectives of this
  project keep the graphs alike anyway (a term with no pixels, anchors or regions on a process is a zero still
  connected to its inputs); an objective that builds a different graph on each process and hangs under DDP trains
  with ``allreduce``, whose communication starts only after the whole backward, or with ``sync_bn=False``.
* A step that takes no backward (the divergence guard's skipped update) does not upset the reducer, which searches
  the graph afresh at every forward. A world of one never wraps anything: a single-process run goes through
  ``TrainingLoss`` unwrapped, so its numbers do not depend on the gradient synchronisation.
* BatchNorm: ``sync_bn`` converts every BatchNorm to ``torch.nn.SyncBatchNorm`` on GPUs and to ``CpuSyncBatchNorm``
  (below; torch's SyncBatchNorm refuses CPU tensors) on CPUs, so batch statistics are those of the global batch, as
  in the single-process run. Without it each process normalises over its own share.
* A loss that averages over pixels averages over each process's share, and the gradients are then averaged over
  processes: where the shares hold different numbers of ignored pixels, a pixel weighs slightly more on the process
  with fewer valid ones than in the single-process mean (as in mmsegmentation's DDP training).
* Loss terms are averaged over processes for the log and for the NaN check, so every process stops at the same step.
* Contrastive budgets are per process: ``max_samples`` anchors (pixel contrast) and ``level_max_pixels`` (Contextrast)
  are drawn from each process's share of the batch, as in the reference code, so N processes contrast N times as
  many anchors per step as one; anchors meet the contrast rows of their own process only. Memory banks are written
  with every process's rows, gathered in rank order, so all processes hold the same memory
  (``contrastseg.methods.pixel_contrast.memory.gather_rows_from_all_ranks``).
* Evaluation is sharded (image i on process i mod N) and the metric counts are summed over processes.
* Process 0 writes the log, the checkpoints and the metrics; every process reads the checkpoint on resume.
"""

from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
PLAIN_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
GRADIENT_SYNC_ENV = "CONTRASTSEG_GRADIENT_SYNC"
GRADIENT_SYNCS = ("ddp", "allreduce")
"""The ways gradients are averaged over processes: DistributedDataParallel's bucketed all-reduce during the
backward, or one flattened all-reduce after it (``average_gradients``); the first is the default."""
DDP_PARAMETERS = inspect.signature(DistributedDataParallel).parameters  # which keyword names this torch's DDP takes


def resolve_device(name: str) -> torch.device:
    """The torch device of a config's ``device`` field ("auto": CUDA when torch sees a GPU, else the CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for, but torch sees no CUDA device; use device='auto' or 'cpu'")
    return torch.device(name)


def gradient_sync_from_environment() -> str:
    """The gradient synchronisation that ``$CONTRASTSEG_GRADIENT_SYNC`` names (``GRADIENT_SYNCS``; "ddp" when unset).

    Raises:
        ValueError: the variable names another; the message lists the valid names.
    """
    value = os.environ.get(GRADIENT_SYNC_ENV, GRADIENT_SYNCS[0])
    if value not in GRADIENT_SYNCS:
        raise ValueError(f"{GRADIENT_SYNC_ENV}={value!r} is not a gradient synchronisation; valid: "
                         f"{', '.join(GRADIENT_SYNCS)}")
    return value


@dataclass(frozen=True)
class Distributed:
    """This process's place among the data-parallel processes, and how gradients are averaged over them
    (``gradient_sync``, one of ``GRADIENT_SYNCS``); a world of one outside torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    gradient_sync: str = GRADIENT_SYNCS[0]

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device_name: str = "auto", timeout_minutes: float = 60) -> tuple["Distributed",
                                                                                               torch.device]:
        """Join the process group that torchrun set up, if any, and return (context, this process's device).

        Args:
            device_name: the config's device ("auto", "cpu" or "cuda"); "auto" takes a GPU when there is one.
            timeout_minutes: how long a collective may wait (the evaluation of a large val set included).
        """
        device = resolve_device(device_name)
        gradient_sync = gradient_sync_from_environment()
        if not all(name in os.environ for name in TORCHRUN_VARIABLES) or int(os.environ["WORLD_SIZE"]) == 1:
            return cls(gradient_sync=gradient_sync), device
        context = cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]),
                      gradient_sync)
        if device.type == "cuda":
            if context.local_rank >= torch.cuda.device_count():
                raise RuntimeError(f"process {context.rank} has local rank {context.local_rank}, but this machine has "
                                   f"{torch.cuda.device_count()} GPU(s); start at most that many processes per node")
            device = torch.device("cuda", context.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(minutes=timeout_minutes))
        return context, device

    def gather_objects(self, value) -> list:
        """Every process's ``value`` (picklable), by rank; ``[value]`` outside torchrun."""
        if not self.active:
            return [value]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def mean_values(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        """Each named value averaged over processes (the same keys, in the same order, on every process)."""
        if not self.active:
            return values
        stacked = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
        dist.all_reduce(stacked)
        return dict(zip(values, (stacked / self.world_size).tolist()))

    def data_parallel(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` wrapped in DistributedDataParallel when there are several processes and ``gradient_sync`` is
        "ddp" (set up as the module docstring says); ``module`` itself otherwise, and in a world of one always.

        Its backward then leaves every gradient averaged over processes; the module is what the caller keeps for its
        state dict."""
        if not self.active or self.gradient_sync != "ddp":
            return module
        # "no buffer broadcast at each forward": forward_sync_buffers in recent torch versions, which deprecate the
        # older broadcast_buffers with a warning; torch versions without it know only broadcast_buffers
        no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in DDP_PARAMETERS
                          else {"broadcast_buffers": False})
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=True, **no_buffer_sync)

    def average_gradients(self, parameters: list[nn.Parameter]) -> None:
        """Replace every gradient by its mean over processes, in one flattened all-reduce (``gradient_sync``
        "allreduce"; under DDP the backward has done it).

        A parameter without a gradient on some process counts as a zero gradient there; it ends with a gradient on
        every process if it had one on any (so the optimizer treats it alike everywhere) and keeps None otherwise.
        """
        if not self.active or not parameters:
            return
        reference = parameters[0]
        has_gradient = torch.tensor([p.grad is not None for p in parameters], dtype=torch.float32,
                                    device=reference.device)
        dist.all_reduce(has_gradient)
        taking_part = [p for p, count in zip(parameters, has_gradient.tolist()) if count > 0]
        if not taking_part:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                          for p in taking_part])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for parameter in taking_part:
            size = parameter.numel()
            parameter.grad = flat[offset:offset + size].view_as(parameter).to(parameter.dtype).clone()
            offset += size

    def broadcast_parameters(self, module: nn.Module) -> None:
        """Copy process 0's parameters and buffers to every process (the seeds make them equal already; this
        guarantees it, whatever a backbone's initialisation draws)."""
        if not self.active:
            return
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)

    def sum_tensors(self, tensors: list[torch.Tensor]) -> None:
        """Sum each tensor over processes, in place (on CPU tensors, through the process's device for NCCL)."""
        if not self.active:
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        for tensor in tensors:
            moved = tensor.to(device) if device is not None else tensor
            dist.all_reduce(moved)
            if moved is not tensor:
                tensor.copy_(moved.cpu())

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def leave_process_group() -> None:
    """Wait for every process of the group, then destroy it (a no-op without one). A torchrun process calls this
    before it exits: a gloo group left to the interpreter's teardown while another process still uses it can abort
    the process ("terminate called without an active exception")."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``model`` as a synchronised one: torch's SyncBatchNorm on GPUs, ``CpuSyncBatchNorm``
    on CPUs. Parameter and buffer names stay those of the BatchNorm, so checkpoints load either way."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            if type(child) not in PLAIN_BATCHNORMS:
                raise TypeError(f"{name} is a {type(child).__name__}, a BatchNorm subclass whose extra behaviour a "
                                f"CpuSyncBatchNorm would drop; use sync_bn=False or plain BatchNorm layers")
            setattr(model, name, CpuSyncBatchNorm.from_batchnorm(child))
        else:
            convert_sync_batchnorm(child, device)
    return model


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the batch over all processes, on CPUs (gloo).

    Two differentiable all-reduces per layer (``torch.distributed.nn.functional.all_reduce``): the per-channel sum and
    count, then the per-channel sum of squared deviations from the global mean, so the statistics are the
    two-pass ones and gradients flow through both. In eval mode, or in a world of one, it is plain BatchNorm.

    Shape:
        input: (B, C, ...) -> the same.
    """

    @classmethod
    def from_batchnorm(cls, batchnorm: nn.modules.batchnorm._BatchNorm) -> "CpuSyncBatchNorm":
        converted = cls(batchnorm.num_features, batchnorm.eps, batchnorm.momentum, batchnorm.affine,
                        batchnorm.track_running_stats)
        converted.load_state_dict(batchnorm.state_dict())
        converted.train(batchnorm.training)
        return converted

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        if self.momentum is None:
            raise NotImplementedError("CpuSyncBatchNorm needs a momentum (cumulative averaging is not supported)")
        reduce_dims = [0, *range(2, input.dim())]
        shape = [1, -1, *[1] * (input.dim() - 2)]
        local_count = input.numel() // input.shape[1]
        sums = torch.cat([input.sum(reduce_dims), input.new_full((1,), float(local_count))])
        sums = dist_nn.all_reduce(sums)
        count = sums[-1]
        mean = sums[:-1] / count
        centred = input - mean.view(shape)
        variance = dist_nn.all_reduce(centred.pow(2).sum(reduce_dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                unbiased = variance * count / (count - 1).clamp(min=1)
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(unbiased.detach(), self.momentum)
        normalised = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            normalised = normalised * self.weight.view(shape) + self.bias.view(shape)
        return normalised
