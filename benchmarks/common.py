"""What every benchmark script shares: the device's name for the record, its bf16 peak, and writing the JSON result."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

# Dense bf16 tensor-core peak in TFLOP/s: NVIDIA's datasheets (H100, H200, A100, L40S; their bf16 figures are with
# sparsity, these are half of them, dense) and the Ada Lovelace whitepaper (RTX 4090, bf16 with fp32 accumulation).
# Keyed by a substring of the name torch reports (torch.cuda.get_device_name): "NVIDIA H100 80GB HBM3" is the H100
# SXM5, then "NVIDIA H100 PCIe", "NVIDIA H100 NVL" (835 per GPU), "NVIDIA H200" (SXM), "NVIDIA H200 NVL".
BF16_PEAK_TFLOPS = {
    "H100 80GB HBM3": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
    "H200": 989.0, "H200 NVL": 835.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0,
}


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name from /proc/cpuinfo (the architecture where that is missing)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def bf16_peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of the GPU called ``device_name`` (``BF16_PEAK_TFLOPS``), or None for a CPU or an unknown
    GPU. The longest key found in the name (case-insensitively) wins, so "H100 PCIe" is not taken for the SXM part."""
    matches = [key for key in BF16_PEAK_TFLOPS if key.lower() in device_name.lower()]
    return BF16_PEAK_TFLOPS[max(matches, key=len)] if matches else None


def write_result(result: dict, out: Path) -> None:
    """Write ``result`` as indented JSON to ``out`` (folders created) and say where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
