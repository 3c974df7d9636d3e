"""Speed switches of a run: deterministic or fast kernels, channels-last layout, torch.compile.

Two modes (config field ``speed``):

* ``"deterministic"`` (default; CI and every CPU run): no cuDNN autotuning, cuDNN's deterministic algorithms, full
  float32 matmuls. On the CPU the same seed and thread count then give bit-identical runs. On GPUs a few backward
  kernels (bilinear upsampling, scatter-add) accumulate with atomics and stay non-deterministic in their last bits;
  we do not call ``torch.use_deterministic_algorithms``, which would stop the run at the first such kernel.
* ``"fast"``: cuDNN autotuning (``benchmark``) and TF32 matmuls and convolutions on GPUs that have them.

bf16 autocast on GPUs is the separate field ``amp`` (``evaluate.autocast_for``), because it changes what a run
computes and so is part of the run's hash; these switches are not.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

COMPILE_BACKEND = "inductor"  # torch.compile's default; tests switch to "eager", which needs no C++ compiler


def configure_kernels(speed: str) -> None:
    """Set torch's global kernel choices for ``speed`` ("deterministic" or "fast")."""
    fast = speed == "fast"
    torch.backends.cudnn.benchmark = fast
    torch.backends.cudnn.deterministic = not fast
    torch.backends.cuda.matmul.allow_tf32 = fast
    torch.backends.cudnn.allow_tf32 = fast


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def training_forward(model: nn.Module, channels_last: bool, compile: bool) -> Callable:
    """The callable a training step runs ``model`` through: the model itself (moved to channels-last when asked;
    its parameters are shared) or ``torch.compile(model)``. Checkpoints keep saving ``model``'s own state dict."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return torch.compile(model, backend=COMPILE_BACKEND) if compile else model
