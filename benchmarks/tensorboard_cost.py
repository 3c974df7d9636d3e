"""What the TensorBoard scalars cost a training step: the time process 0 spends writing a step's scalars, against the
step's own time, on a real run of each method.

    python benchmarks/tensorboard_cost.py --preset smoke --steps 40 --methods ce pixel_contrast contextrast rc2l \
        --out benchmarks/results/tensorboard_cost_smoke_cpu.json

Each method trains one run of the preset (``engine.train.train``, into a temporary folder) with
``ScalarBoard.write_line`` timed where the loop calls it: turning the step's log line into scalars and handing them
to the writer's thread (which appends them to the event file beside the training). The step's time is its "seconds"
in the log (forward, loss, backward, update), which does not include the write. The first step is left out of both
(its time holds the first use of every kernel). Writes JSON with the medians, the means, their ratio, the number of
scalars a step writes, the device, the versions, the machine's load average (a shared machine makes steps slower,
not the write cheaper) and the command.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import tensorboard
import torch

from contrastseg.config import preset
from contrastseg.engine import read_log, train
from contrastseg.engine.tensorboard import ScalarBoard, line_scalars

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, write_result  # noqa: E402


@contextmanager
def timed_writes(seconds: list[float]):
    """Within the block, every ``ScalarBoard.write_line`` appends its wall time to ``seconds``."""
    write_line = ScalarBoard.write_line

    def timed(board, line):
        began = time.perf_counter()
        write_line(board, line)
        seconds.append(time.perf_counter() - began)

    ScalarBoard.write_line = timed
    try:
        yield
    finally:
        ScalarBoard.write_line = write_line


def measure(method: str, preset_name: str, steps: int) -> dict:
    """Train one run of ``method`` and compare the time of its scalar writes with its steps' (the first left out)."""
    cfg = preset(preset_name, method=method, steps=steps)
    writes: list[float] = []
    with tempfile.TemporaryDirectory() as folder, timed_writes(writes):
        train(cfg, Path(folder), progress=False)
        log = read_log(folder)
    step_seconds = [line["seconds"] for line in log][1:]
    writes = writes[1:]
    return {"method": method, "scalars_per_step": len(line_scalars(log[-1])), "steps_timed": len(writes),
            "write_median_ms": statistics.median(writes) * 1e3, "write_mean_ms": statistics.mean(writes) * 1e3,
            "step_median_ms": statistics.median(step_seconds) * 1e3,
            "step_mean_ms": statistics.mean(step_seconds) * 1e3,
            "ratio_of_medians": statistics.median(writes) / statistics.median(step_seconds)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--steps", type=int, default=40, help="steps of each run (the first is not timed)")
    parser.add_argument("--methods", nargs="+", default=["ce", "pixel_contrast", "contextrast", "rc2l"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tensorboard_cost_smoke_cpu.json"))
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error(f"--steps must be at least 2 (the first step is not timed), got {args.steps}")
    load_before = os.getloadavg()
    rows = [measure(method, args.preset, args.steps) for method in args.methods]
    for row in rows:
        print(f"{row['method']}: {row['scalars_per_step']} scalars a step, write {row['write_median_ms']:.3f} ms, "
              f"step {row['step_median_ms']:.1f} ms (medians), {row['ratio_of_medians']:.2%}")
    result = {"preset": args.preset, "steps": args.steps, "rows": rows,
              "device": device_name(torch.device("cpu")), "cpu_count": os.cpu_count(),
              "load_average_before_after": [load_before[0], os.getloadavg()[0]],
              "torch": torch.__version__, "tensorboard": tensorboard.__version__,
              "python": platform.python_version(),
              "command": " ".join(["python", "benchmarks/tensorboard_cost.py", *(argv if argv is not None
                                                                                 else sys.argv[1:])])}
    write_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
